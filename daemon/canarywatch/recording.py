"""The recording format: JSON Lines of observations, shared by ``record``, ``replay`` and tests.

One observation per line::

    {"at": "2026-08-04T14:08:02Z", "source": "kubernetes-events", "data": {...}}

``data`` is the watch event (``{"type", "object"}``) for ``kubernetes-events`` and ``canaries``,
the exposition text (a string) for ``flagger-metrics`` and the decoded webhook body for
``flagger-webhook``. An optional ``cluster`` names the cluster the observation came from.
Blank lines and lines starting with ``#`` are skipped, so recordings can carry comments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from canarywatch.errors import CanarywatchError
from canarywatch.model import RECORDABLE_SOURCES, Observation, SourceName


class RecordingError(CanarywatchError):
    """A recording line is not valid; the message names the file and line."""


def parse_time(text: str) -> datetime:
    """RFC 3339 (``Z`` or an offset) to an aware UTC datetime; ``ValueError`` otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError("expected an RFC 3339 timestamp string")
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; milliseconds only when they are not zero."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def decode_line(line: str, *, where: str = "<recording>") -> Observation | None:
    """One line to an observation; ``None`` for blank/comment lines; ``RecordingError`` if bad."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    try:
        raw = json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise RecordingError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise RecordingError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        at = parse_time(raw.get("at"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise RecordingError(f"{where}: field 'at': {exc}") from None
    try:
        source = SourceName(str(raw.get("source")))
    except ValueError:
        names = ", ".join(sorted(s.value for s in RECORDABLE_SOURCES))
        raise RecordingError(
            f"{where}: field 'source': {raw.get('source')!r} is not one of {names}"
        ) from None
    if source not in RECORDABLE_SOURCES:
        raise RecordingError(f"{where}: field 'source': {source.value!r} cannot be recorded")
    if "data" not in raw:
        raise RecordingError(f"{where}: field 'data' is missing")
    data = raw["data"]
    _check_data(source, data, where)
    cluster = raw.get("cluster", "")
    if not isinstance(cluster, str):
        raise RecordingError(f"{where}: field 'cluster' must be a string")
    return Observation(at=at, source=source, data=data, cluster=cluster)


def _check_data(source: SourceName, data: object, where: str) -> None:
    if source in (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES):
        if not isinstance(data, dict) or "type" not in data or "object" not in data:
            raise RecordingError(
                f"{where}: field 'data': a {source.value} observation is a watch event "
                '{"type": ..., "object": ...}'
            )
    elif source is SourceName.FLAGGER_METRICS:
        if not isinstance(data, str):
            raise RecordingError(
                f"{where}: field 'data': a flagger-metrics observation is the exposition text"
            )
    elif not isinstance(data, dict):
        raise RecordingError(
            f"{where}: field 'data': a flagger-webhook observation is the JSON body object"
        )


def encode(obs: Observation) -> str:
    """One observation as one compact JSON line (without the newline)."""
    record: dict[str, object] = {
        "at": format_time(obs.at),
        "source": obs.source.value,
        "data": obs.data,
    }
    if obs.cluster:
        record["cluster"] = obs.cluster
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


def iter_lines(lines: Iterable[str], *, name: str = "<recording>") -> Iterator[Observation]:
    for number, line in enumerate(lines, start=1):
        obs = decode_line(line, where=f"{name}:{number}")
        if obs is not None:
            yield obs


def read(path: str | Path) -> list[Observation]:
    """Every observation of a recording file, in file order."""
    p = Path(path)
    try:
        with p.open(encoding="utf-8") as fh:
            return list(iter_lines(fh, name=str(p)))
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read recording: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{p}: recording is not UTF-8 text") from None


def in_time_order(observations: Iterable[Observation]) -> list[Observation]:
    """Stable sort by ``at``: lines with the same stamp keep their file order."""
    return sorted(observations, key=lambda o: o.at)


class RecordingWriter:
    """Appends observations to a text stream, one flushed line each."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.count = 0

    def write(self, obs: Observation) -> None:
        self._stream.write(encode(obs) + "\n")
        self._stream.flush()
        self.count += 1
