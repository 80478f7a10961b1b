"""Kubernetes Events about Flagger Canaries → ``CanaryEvent``.

The input is one watch event (``{"type", "object"}``) holding a core/v1 Event or its
events.k8s.io/v1 view; both shapes are read. What a message *means* is the catalogue's business
(``normalise.messages``). This module decides which watch events are *news*:

- client-go folds identical repeats into one Event object and PATCHes ``count`` (a MODIFIED), and
  aggregation rewrites the message of one object in place. A MODIFIED whose ``count`` rose or whose
  message changed is a new occurrence.
- A relist after 410 Gone or a reconnect re-delivers objects unchanged. Same ``resourceVersion``,
  or same count and message, is a ``repeat`` and produces nothing.
- DELETED is the apiserver's TTL expiring an Event, never news. The object is forgotten, so
  client-go's re-creation under the same name (ADDED, ``count`` continued) still counts.

That memory is this normaliser's only state. It is bounded (least recently seen objects are
dropped first), which at worst turns a very old re-delivery into one extra occurrence. Downstream
identity rules (``pipeline.correlate``) absorb that.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from canarywatch.lru import BoundedLru
from canarywatch.model import (
    CanaryRef,
    JSONValue,
    Normalised,
    Observation,
    Outcome,
    SourceName,
)
from canarywatch.normalise.messages import classify, safe_excerpt, strip_aggregation, to_event

DEFAULT_MEMORY = 8192
"""Event objects remembered for repeat detection: twice client-go's own 4096-entry cache."""

_CANARY_KIND = "Canary"
_FLAGGER_GROUP = "flagger.app"
_NEWS_TYPES = frozenset({"ADDED", "MODIFIED"})
_QUIET_TYPES = frozenset({"BOOKMARK", "ERROR"})
"""Watch-protocol events the source handles itself; seeing one here is not a fault."""


@dataclass(frozen=True, slots=True)
class EventView:
    """The fields canarywatch reads from an Event, whichever API version delivered it."""

    key: str
    """The Event object's identity: ``metadata.uid``, else ``namespace/name``."""
    resource_version: str
    canary: CanaryRef
    canary_uid: str
    event_type: str
    """``Normal`` or ``Warning`` (free text in the API; not validated)."""
    message: str
    count: int
    last_seen: datetime | None


def _mapping(value: JSONValue) -> Mapping[str, JSONValue]:
    return value if isinstance(value, Mapping) else MappingProxyType({})


def _text(value: JSONValue) -> str:
    return value if isinstance(value, str) else ""


def _first_text(obj: Mapping[str, JSONValue], *keys: str) -> str:
    for key in keys:
        text = _text(obj.get(key))
        if text:
            return text
    return ""


def _count(value: JSONValue) -> int | None:
    # bool is an int subclass; a JSON true is not a count.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def parse_time(value: JSONValue) -> datetime | None:
    """An RFC 3339 ``Time``/``MicroTime`` as an aware UTC datetime, ``None`` if absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def last_seen_of(obj: Mapping[str, JSONValue]) -> datetime | None:
    """An Event's last occurrence: ``series.lastObservedTime``, ``lastTimestamp`` (or its
    events.k8s.io name), ``eventTime``, then ``metadata.creationTimestamp``; ``None`` when
    none can be read. Also what a backlog is sorted by (``normalise.timing``), read without
    the rest of the Event."""
    series = _mapping(obj.get("series"))
    return (
        parse_time(series.get("lastObservedTime"))
        or parse_time(obj.get("lastTimestamp"))
        or parse_time(obj.get("deprecatedLastTimestamp"))
        or parse_time(obj.get("eventTime"))
        or parse_time(_mapping(obj.get("metadata")).get("creationTimestamp"))
    )


def read_event(obj: JSONValue, *, cluster: str = "") -> EventView | str:
    """Narrow a decoded Event (core/v1 or events.k8s.io/v1) into an ``EventView``.

    Returns a short, log-safe note instead when the object is not a usable Event. The reader
    rule follows ``reference/kubernetes-watch.md`` §1.7.
    """
    if not isinstance(obj, Mapping):
        return "object is not a mapping"
    meta = _mapping(obj.get("metadata"))
    regarding = _mapping(obj.get("involvedObject") or obj.get("regarding"))
    namespace = _text(regarding.get("namespace")) or _text(meta.get("namespace"))
    name = _text(regarding.get("name"))
    if not namespace or not name:
        return "event names no involved object"
    key = _text(meta.get("uid"))
    if not key:
        event_name = _text(meta.get("name"))
        if not event_name:
            return "event has neither metadata.uid nor metadata.name"
        key = f"{_text(meta.get('namespace')) or namespace}/{event_name}"
    series = _mapping(obj.get("series"))
    count = (
        _count(series.get("count"))
        or _count(obj.get("count"))
        or _count(obj.get("deprecatedCount"))
        or 1
    )
    last_seen = last_seen_of(obj)
    return EventView(
        key=key,
        resource_version=_text(meta.get("resourceVersion")),
        canary=CanaryRef(namespace=namespace, name=name, cluster=cluster),
        canary_uid=_text(regarding.get("uid")),
        event_type=_text(obj.get("type")),
        message=_first_text(obj, "message", "note"),
        count=count,
        last_seen=last_seen,
    )


def _is_canary(obj: Mapping[str, JSONValue]) -> bool:
    regarding = _mapping(obj.get("involvedObject") or obj.get("regarding"))
    if regarding.get("kind") != _CANARY_KIND:
        return False
    api_version = _text(regarding.get("apiVersion"))
    return not api_version or api_version.split("/", 1)[0] == _FLAGGER_GROUP


@dataclass(frozen=True, slots=True)
class _Seen:
    resource_version: str
    count: int
    message: str


class KubeEventNormaliser:
    """Turns Kubernetes-Event observations into ``Normalised`` answers; never raises.

    Stateful only in its bounded memory of Event objects (see the module docstring). Feed it
    every observation of one cluster's Event source, in watch order.
    """

    def __init__(self, *, memory: int = DEFAULT_MEMORY) -> None:
        if memory < 1:
            raise ValueError("memory must be at least 1")
        # Ordered by write: each read is followed at once by a put, which refreshes.
        self._seen: BoundedLru[tuple[str, str], _Seen] = BoundedLru(memory, refresh_on_read=False)

    def __len__(self) -> int:
        """How many Event objects are remembered."""
        return len(self._seen)

    def __call__(self, observation: Observation) -> Normalised:
        data = observation.data
        if not isinstance(data, Mapping):
            return Normalised(Outcome.MALFORMED, note="watch event is not a mapping")
        kind = data.get("type")
        obj = data.get("object")
        if kind in _QUIET_TYPES:
            return Normalised(Outcome.IGNORED, note=f"watch {kind}")
        if kind != "DELETED" and kind not in _NEWS_TYPES:
            return Normalised(Outcome.MALFORMED, note="unknown watch event type")
        if not isinstance(obj, Mapping):
            return Normalised(Outcome.MALFORMED, note="watch event has no object")
        if not _is_canary(obj):
            return Normalised(Outcome.IGNORED, note="event is not about a Flagger Canary")
        view = read_event(obj, cluster=observation.cluster)
        if isinstance(view, str):
            return Normalised(Outcome.MALFORMED, note=view)
        memory_key = (observation.cluster, view.key)
        if kind == "DELETED":
            self._seen.pop(memory_key)
            return Normalised(Outcome.IGNORED, note="event expired")
        if self._is_repeat(memory_key, view):
            return Normalised(Outcome.REPEAT)
        return self._classify(observation, view)

    def _is_repeat(self, memory_key: tuple[str, str], view: EventView) -> bool:
        """Remember ``view``; say whether it re-delivers an occurrence already seen."""
        message = strip_aggregation(view.message)
        previous = self._seen.get(memory_key)
        self._seen.put(memory_key, _Seen(view.resource_version, view.count, message))
        if previous is None:
            return False
        if view.resource_version and view.resource_version == previous.resource_version:
            return True
        return view.count <= previous.count and message == previous.message

    @staticmethod
    def _classify(observation: Observation, view: EventView) -> Normalised:
        match = classify(view.message)
        if match is None:
            kind = view.event_type or "untyped"
            return Normalised(
                Outcome.UNKNOWN, note=f"unknown {kind} message: {safe_excerpt(view.message)}"
            )
        hints = {"canary_uid": view.canary_uid} if view.canary_uid else {}
        # Which occurrence of which Event this is: lets the correlator recognise the same
        # occurrence re-delivered by the initial list after a restart (its memory survives
        # restarts, this normaliser's does not).
        hints["occurrence"] = f"{view.key}#{view.count}#{zlib.crc32(view.message.encode())}"
        event = to_event(
            match,
            canary=view.canary,
            message=view.message,
            source=SourceName.KUBERNETES_EVENTS,
            observed_at=observation.at,
            occurred_at=view.last_seen,
            hints=MappingProxyType(hints),
        )
        if event is None:
            return Normalised(Outcome.INFORMATIONAL, note=match.entry)
        return Normalised(Outcome.TRANSITION, (event,))
