"""The JSON shape of canarywatch's public output.

``canarywatch replay`` and the ``jsonl`` sink print exactly these objects, so the field names are
a public interface (they follow ``reference/transitions.md``): add fields, never rename them.
Everything here is pure; ``dumps`` is deterministic so outputs can be diffed and golden-tested.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from canarywatch.model import CanaryEvent, Notification


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


def event_to_json(ev: CanaryEvent) -> dict[str, object]:
    """One event as the public JSON object (see the module docstring)."""
    return {
        "canary": str(ev.canary),
        "cluster": ev.canary.cluster,
        "namespace": ev.canary.namespace,
        "name": ev.canary.name,
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
    """One notification: when, to whom, firing/resolved, its group and its events in order."""
    return {
        "at": format_time(n.created_at),
        "receiver": n.receiver,
        "status": n.status.value,
        "group": dict(sorted(n.group_labels.items())),
        "group_key": n.group_key,
        "events": [event_to_json(ev) for ev in n.events],
    }


def dumps(obj: object) -> str:
    """Compact JSON with sorted keys and real (not ``\\u``-escaped) non-ASCII characters."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
