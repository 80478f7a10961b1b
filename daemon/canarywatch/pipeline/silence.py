"""Silences: "mute every event whose labels match these matchers, from this instant to that one".

Alertmanager's semantics: a silence mutes an event when *all* its matchers match the event's
labels (a missing label matches as the empty string) and it is active, i.e.
``starts_at <= now < ends_at``. A silence still to start mutes nothing yet; one that has ended
mutes nothing again. The pipeline asks after inhibition; ``mutes`` answers the id of the first
silence that mutes the event (config silences first, then runtime ones in the order they were
added) so the suppression can be logged against it.

Two sources, kept apart:

- **config silences** (``silences:`` in the config file) are read-only here. Their ids are
  derived from their content (``config-`` + a hash of matchers, window, author and comment), so
  the same declaration keeps its id across restarts. They cannot be expired through the control
  API: edit the config file (and restart) to change or end one.
- **runtime silences** live in the ``StateStore`` (added with ``canarywatch silence add`` through
  the control API). ``reload()`` re-reads them; the control API calls it after every change.

Matchers are parsed once per silence and cached: a reload reuses the parsed form of every silence
whose matchers did not change, so ``mutes`` never parses.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from canarywatch.config.muting import Silence as SilenceConfig
from canarywatch.labels.matchers import Matcher, matches_all, parse_matchers
from canarywatch.model import CanaryEvent
from canarywatch.state.base import SilenceRecord, StateStore

__all__ = [
    "CONFIG_ID_PREFIX",
    "ParsedSilence",
    "SilenceOrigin",
    "SilenceState",
    "Silencer",
    "config_silence_id",
]

CONFIG_ID_PREFIX = "config-"
"""Every config silence's id starts with this; runtime ids are UUIDs and never do."""


class SilenceOrigin(enum.StrEnum):
    CONFIG = "config"
    RUNTIME = "runtime"


class SilenceState(enum.StrEnum):
    """Alertmanager's three silence states."""

    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class ParsedSilence:
    """A silence with its matchers parsed, whichever source it came from."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    origin: SilenceOrigin

    def active(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at

    def state(self, at: datetime) -> SilenceState:
        if at < self.starts_at:
            return SilenceState.PENDING
        if at < self.ends_at:
            return SilenceState.ACTIVE
        return SilenceState.EXPIRED

    def matches(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def config_silence_id(silence: SilenceConfig) -> str:
    """The stable id of a config silence: ``config-`` + 16 hex digits of a content hash.

    Matchers are hashed in their canonical spelling and times in UTC, so reformatting the YAML
    (quoting, spacing, ``Z`` vs ``+00:00``) keeps the id; changing what the silence means does not.
    """
    content = {
        "matchers": [str(m) for m in parse_matchers(silence.matchers)],
        "starts_at": _utc_text(silence.starts_at),
        "ends_at": _utc_text(silence.ends_at),
        "created_by": silence.created_by,
        "comment": silence.comment,
    }
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return CONFIG_ID_PREFIX + hashlib.sha256(blob).hexdigest()[:16]


def _from_config(silence: SilenceConfig) -> ParsedSilence:
    return ParsedSilence(
        id=config_silence_id(silence),
        matchers=parse_matchers(silence.matchers),
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        created_by=silence.created_by,
        comment=silence.comment,
        origin=SilenceOrigin.CONFIG,
    )


class Silencer:
    """Answers "which silence mutes this event now?" over config and runtime silences."""

    def __init__(
        self,
        store: StateStore | None = None,
        config_silences: Sequence[SilenceConfig] = (),
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._store = store
        self._log = log or structlog.get_logger().bind(component="stage.silence")
        configured: dict[str, ParsedSilence] = {}
        for silence in config_silences:
            parsed = _from_config(silence)
            configured.setdefault(parsed.id, parsed)  # an identical declaration twice is one
        self._config: tuple[ParsedSilence, ...] = tuple(configured.values())
        self._runtime: tuple[ParsedSilence, ...] = ()
        self._parsed: dict[tuple[str, ...], tuple[Matcher, ...]] = {}
        self.reload()

    def __bool__(self) -> bool:
        return bool(self._config or self._runtime)

    def replace_config_silences(self, config_silences: Sequence[SilenceConfig]) -> None:
        """A reloaded config's silences replace the old ones (runtime silences stay)."""
        configured: dict[str, ParsedSilence] = {}
        for silence in config_silences:
            parsed = _from_config(silence)
            configured.setdefault(parsed.id, parsed)
        self._config = tuple(configured.values())

    def reload(self) -> None:
        """Re-read the runtime silences from the store (those not yet expired)."""
        if self._store is None:
            return
        self._set_runtime(self._store.silences())

    def _set_runtime(self, records: Iterable[SilenceRecord]) -> None:
        cache: dict[tuple[str, ...], tuple[Matcher, ...]] = {}
        runtime: list[ParsedSilence] = []
        for record in records:
            matchers = self._parsed.get(record.matchers) or cache.get(record.matchers)
            if matchers is None:
                try:
                    matchers = parse_matchers(record.matchers)
                except ValueError as exc:
                    # Stored by hand or by another version: skip it, loudly, rather than stop.
                    self._log.warning("silence_unusable", silence_id=record.id, error=str(exc))
                    continue
            cache[record.matchers] = matchers
            runtime.append(
                ParsedSilence(
                    id=record.id,
                    matchers=matchers,
                    starts_at=record.starts_at,
                    ends_at=record.ends_at,
                    created_by=record.created_by,
                    comment=record.comment,
                    origin=SilenceOrigin.RUNTIME,
                )
            )
        self._parsed = cache
        self._runtime = tuple(runtime)

    def mutes(self, event: CanaryEvent, now: datetime) -> str | None:
        """The id of the silence muting ``event`` at ``now``, or ``None``."""
        for silence in (*self._config, *self._runtime):
            if silence.active(now) and silence.matches(event.labels):
                return silence.id
        return None

    def is_config(self, id: str) -> bool:
        """Whether ``id`` names a silence declared in the config file."""
        return any(s.id == id for s in self._config)

    @property
    def config_silences(self) -> tuple[ParsedSilence, ...]:
        """The config silences, in file order (expired ones included)."""
        return self._config

    @property
    def runtime_silences(self) -> tuple[ParsedSilence, ...]:
        """The runtime silences as of the last ``reload`` (not expired then)."""
        return self._runtime
