"""The recording format: JSON Lines of observations, shared by ``record``, ``replay`` and tests.

One observation per line::

    {"at": "2026-08-04T14:08:02Z", "source": "kubernetes-events", "data": {...}}

``data`` is the watch event (``{"type", "object"}``) for ``kubernetes-events`` and ``canaries``,
the exposition text (a string) for ``flagger-metrics`` and the decoded webhook body for
``flagger-webhook``. An optional ``cluster`` names the cluster the observation came from.
Blank lines and lines starting with ``#`` are skipped, so recordings can carry comments.

``data`` is checked against the shape its source has (an Event's ``message`` is a string, a
webhook body names its canary): the normalisers skip what they cannot read without a word, so a
line the live sources could not have produced is a ``RecordingError`` naming the field here,
instead of a replay that silently prints nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO, TypeAlias

from canarywatch.errors import CanarywatchError
from canarywatch.formats.jsonout import format_time
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
    problem = _mismatch(data, _SHAPES[source], ("data",))
    if problem is not None:
        raise RecordingError(f"{where}: {problem}")


@dataclass(frozen=True, slots=True)
class _Required:
    """A key that must be there (and, for a string, not empty)."""

    shape: _Shape


@dataclass(frozen=True, slots=True)
class _OneOf:
    """A string that is one of a few words."""

    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _MapOf:
    """An object whose every value has one shape (labels, annotations)."""

    shape: _Shape


_Shape: TypeAlias = (
    type | tuple[type, ...] | _OneOf | _MapOf | Mapping[str, "_Shape | _Required"] | list["_Shape"]
)
"""What a value must be: a type (or one of several); an object whose listed keys, when there
and not null, have their shapes (other keys are free); a list of one shape."""

_META: Final[_Shape] = {
    "name": str,
    "namespace": str,
    "uid": str,
    "resourceVersion": str,
    "creationTimestamp": str,
    "labels": _MapOf(str),
    "annotations": _MapOf(str),
}
_REF: Final[_Shape] = {
    "kind": str,
    "name": str,
    "namespace": str,
    "uid": str,
    "apiVersion": str,
    "resourceVersion": str,
    "fieldPath": str,
}
_EVENT: Final[_Shape] = {
    "kind": str,
    "apiVersion": str,
    "metadata": _META,
    "involvedObject": _REF,
    "regarding": _REF,
    "reason": str,
    "message": str,
    "note": str,
    "type": str,
    "action": str,
    "count": int,
    "deprecatedCount": int,
    "firstTimestamp": str,
    "lastTimestamp": str,
    "eventTime": str,
    "deprecatedFirstTimestamp": str,
    "deprecatedLastTimestamp": str,
    "series": {"count": int, "lastObservedTime": str},
    "reportingComponent": str,
    "reportingController": str,
    "reportingInstance": str,
    "source": {"component": str, "host": str},
}
_ANALYSIS: Final[_Shape] = {
    "threshold": int,
    "maxWeight": int,
    "stepWeight": int,
    "iterations": int,
}
_CANARY: Final[_Shape] = {
    "kind": str,
    "apiVersion": str,
    "metadata": _META,
    "spec": {
        "targetRef": {"kind": str, "name": str, "apiVersion": str},
        "analysis": _ANALYSIS,
        "canaryAnalysis": _ANALYSIS,
    },
    "status": {
        "phase": str,
        "canaryWeight": int,
        "failedChecks": int,
        "iterations": int,
        "lastAppliedSpec": str,
        "lastPromotedSpec": str,
        "lastTransitionTime": str,
        "conditions": [
            {
                "type": str,
                "status": str,
                "reason": str,
                "message": str,
                "lastUpdateTime": str,
                "lastTransitionTime": str,
            }
        ],
    },
}
_WATCH_TYPES: Final = _OneOf(("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"))
_SHAPES: Final[Mapping[SourceName, _Shape]] = {
    SourceName.KUBERNETES_EVENTS: {"type": _Required(_WATCH_TYPES), "object": _Required(_EVENT)},
    SourceName.CANARIES: {"type": _Required(_WATCH_TYPES), "object": _Required(_CANARY)},
    SourceName.FLAGGER_METRICS: str,
    SourceName.FLAGGER_WEBHOOK: {
        "name": _Required(str),
        "namespace": _Required(str),
        "phase": str,
        "checksum": str,
        "metadata": _Required(
            {"eventMessage": _Required(str), "eventType": str, "timestamp": (str, int)}
        ),
    },
}
"""The fields the normalisers read, by source; anything else in ``data`` is not looked at."""

_KINDS: Final = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    dict: "an object",
    list: "a list",
}


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return _KINDS.get(type(value), type(value).__name__)


def _mismatch(value: object, shape: _Shape, path: tuple[str, ...]) -> str | None:
    """What is wrong with ``value`` (``field 'data.name': expected a string, got a number``)."""
    where = f"field {'.'.join(path)!r}"
    if isinstance(shape, _OneOf):
        if value not in shape.words:
            return f"{where}: expected one of {', '.join(shape.words)}"
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where}: expected a list, got {_kind(value)}"
        for index, item in enumerate(value):
            problem = _mismatch(item, shape[0], (*path[:-1], f"{path[-1]}[{index}]"))
            if problem is not None:
                return problem
        return None
    if isinstance(shape, _MapOf | Mapping):
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {_kind(value)}"
        fields = {key: shape.shape for key in value} if isinstance(shape, _MapOf) else shape
        for key, field in fields.items():
            required = isinstance(field, _Required)
            inner = field.shape if isinstance(field, _Required) else field
            item = value.get(key)
            if item is None:
                if required:
                    return f"field {'.'.join((*path, key))!r} is missing"
                continue
            if required and item == "":
                return f"field {'.'.join((*path, key))!r} is empty"
            problem = _mismatch(item, inner, (*path, key))
            if problem is not None:
                return problem
        return None
    types = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) and bool not in types:
        return f"{where}: expected {_kinds(types)}, got true or false"
    if not isinstance(value, types):
        return f"{where}: expected {_kinds(types)}, got {_kind(value)}"
    return None


def _kinds(types: tuple[type, ...]) -> str:
    return " or ".join(_KINDS.get(t, t.__name__) for t in types)


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
