"""The JSON shape of canarywatch's public output.

``canarywatch replay`` and the ``jsonl`` sink print exactly these objects, so the field names are
a public interface (they follow ``reference/transitions.md``): add fields, never rename them.
Everything here is pure; ``dumps`` is deterministic so outputs can be diffed and golden-tested.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

from canarywatch.model import (
    EMPTY_MAPPING,
    CanaryEvent,
    CanaryRef,
    JSONValue,
    Notification,
    NotificationStatus,
    Phase,
    Severity,
    SourceName,
    Transition,
)


def format_time(dt: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; milliseconds only when they are non-zero.

    A naive datetime is taken to be UTC already (canarywatch never makes one; this only keeps
    odd input from shifting by the host's offset).
    """
    utc = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    # Not strftime: "%Y" does not zero-pad years below 1000 on every platform.
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
        f"T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    millis = utc.microsecond // 1000
    if millis:
        text += f".{millis:03d}"
    return text + "Z"


def canary_to_json(ref: CanaryRef) -> dict[str, str]:
    """The fields naming a canary in every JSON object about one: ``canary``
    (``namespace/name``), then ``cluster``, ``namespace`` and ``name``."""
    return {
        "canary": str(ref),
        "cluster": ref.cluster,
        "namespace": ref.namespace,
        "name": ref.name,
    }


def event_to_json(ev: CanaryEvent) -> dict[str, object]:
    """One event as the public JSON object (see the module docstring)."""
    return {
        **canary_to_json(ev.canary),
        "transition": ev.transition.value,
        "severity": ev.severity.value,
        "phase": ev.phase.value if ev.phase is not None else None,
        "weight": ev.weight,
        "failed_checks": ev.failed_checks,
        "message": ev.message,
        "reason": ev.reason,
        "detail": ev.detail,
        "target": ev.target,
        "rollout": ev.rollout,
        "episode": ev.episode,
        "labels": dict(sorted(ev.labels.items())),
        "observed_at": format_time(ev.observed_at),
        "occurred_at": format_time(ev.occurred_at) if ev.occurred_at is not None else None,
        "sources": [s.value for s in ev.sources],
    }


def notification_to_json(n: Notification) -> dict[str, object]:
    """One notification: when, to whom, firing/resolved, its group and its events in order.

    ``"repeat": true`` is added only to a ``repeat_interval`` re-send of still-firing events.
    """
    out: dict[str, object] = {
        "at": format_time(n.created_at),
        "receiver": n.receiver,
        "status": n.status.value,
        "group": dict(sorted(n.group_labels.items())),
        "group_key": n.group_key,
        "events": [event_to_json(ev) for ev in n.events],
    }
    if n.repeat:
        out["repeat"] = True
    return out


# --- decoding: the inverse of the two functions above ----------------------------------------
#
# ``event_from_json(event_to_json(ev)) == ev`` for every event whose times are millisecond-exact
# and whose ``hints`` are empty: the public shape rounds times to the millisecond and leaves
# hints out. Both decoders therefore also accept any RFC 3339 time (full microseconds, any
# offset, or none for a naive time) and an optional ``hints`` object, which is how the state
# store (``canarywatch.state.codec``) persists events exactly. Malformed input raises
# ``ValueError`` naming the field; nothing here guesses.


_E = TypeVar("_E", bound=enum.StrEnum)


def _invalid(where: str, problem: str) -> ValueError:
    # One exception type for every malformed input (wrong type included), so a caller
    # decoding stored or received JSON has a single thing to catch.
    return ValueError(f"{where}: {problem}")


def _field(d: Mapping[str, JSONValue], key: str, where: str) -> JSONValue:
    try:
        return d[key]
    except KeyError:
        raise ValueError(f"{where}: missing field {key!r}") from None


def _object(value: JSONValue, where: str) -> Mapping[str, JSONValue]:
    if not isinstance(value, Mapping):
        raise _invalid(where, f"expected a JSON object, got {type(value).__name__}")
    return value


def _str(d: Mapping[str, JSONValue], key: str, where: str) -> str:
    value = _field(d, key, where)
    if not isinstance(value, str):
        raise _invalid(f"{where}.{key}", f"expected a string, got {type(value).__name__}")
    return value


def _opt_int(d: Mapping[str, JSONValue], key: str, where: str) -> int | None:
    value = _field(d, key, where)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"{where}.{key}", f"expected an integer or null, not {type(value).__name__}")
    return value


def _str_map(value: JSONValue, where: str) -> Mapping[str, str]:
    obj = _object(value, where)
    if not obj:
        return EMPTY_MAPPING
    out: dict[str, str] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise _invalid(where, "expected string keys and values")
        out[k] = v
    return out


def _time(value: JSONValue, where: str) -> datetime:
    if not isinstance(value, str):
        raise _invalid(where, f"expected an RFC 3339 time, got {type(value).__name__}")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{where}: not an RFC 3339 time: {value[:64]!r}") from None


def _enum(cls: type[_E], value: JSONValue, where: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise ValueError(f"{where}: unknown {cls.__name__} {str(value)[:64]!r}") from None


def event_from_json(d: JSONValue) -> CanaryEvent:
    """The event ``event_to_json`` describes (see the decoding note above for exactness)."""
    w = "event"
    obj = _object(d, w)
    phase = _field(obj, "phase", w)
    occurred = _field(obj, "occurred_at", w)
    episode = _opt_int(obj, "episode", w)
    if episode is None:
        raise ValueError(f"{w}.episode: expected an integer, got null")
    sources = _field(obj, "sources", w)
    if not isinstance(sources, list):
        raise _invalid(f"{w}.sources", "expected a list")
    return CanaryEvent(
        canary=CanaryRef(
            namespace=_str(obj, "namespace", w),
            name=_str(obj, "name", w),
            cluster=_str(obj, "cluster", w),
        ),
        transition=_enum(Transition, _field(obj, "transition", w), f"{w}.transition"),
        observed_at=_time(_field(obj, "observed_at", w), f"{w}.observed_at"),
        sources=tuple(_enum(SourceName, s, f"{w}.sources") for s in sources),
        severity=_enum(Severity, _field(obj, "severity", w), f"{w}.severity"),
        phase=None if phase is None else _enum(Phase, phase, f"{w}.phase"),
        weight=_opt_int(obj, "weight", w),
        failed_checks=_opt_int(obj, "failed_checks", w),
        message=_str(obj, "message", w),
        reason=_str(obj, "reason", w),
        detail=_str(obj, "detail", w),
        target=_str(obj, "target", w),
        rollout=_str(obj, "rollout", w),
        episode=episode,
        occurred_at=None if occurred is None else _time(occurred, f"{w}.occurred_at"),
        hints=_str_map(obj.get("hints", {}), f"{w}.hints"),
        labels=_str_map(_field(obj, "labels", w), f"{w}.labels"),
    )


def notification_from_json(d: JSONValue) -> Notification:
    """The notification ``notification_to_json`` describes; events as in ``event_from_json``."""
    w = "notification"
    obj = _object(d, w)
    events = _field(obj, "events", w)
    if not isinstance(events, list):
        raise _invalid(f"{w}.events", "expected a list")
    return Notification(
        receiver=_str(obj, "receiver", w),
        status=_enum(NotificationStatus, _field(obj, "status", w), f"{w}.status"),
        group_key=_str(obj, "group_key", w),
        group_labels=_str_map(_field(obj, "group", w), f"{w}.group"),
        events=tuple(event_from_json(ev) for ev in events),
        created_at=_time(_field(obj, "at", w), f"{w}.at"),
        repeat=obj.get("repeat") is True,
    )


def dumps(obj: object) -> str:
    """Compact JSON with sorted keys and real (not ``\\u``-escaped) non-ASCII characters."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
