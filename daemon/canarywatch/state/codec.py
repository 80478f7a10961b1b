"""Exact JSON encodings of events and notifications, for what the state store keeps.

The public shape (``canarywatch.formats.jsonout``) rounds times to the millisecond and leaves out
``hints``; stored state must come back *equal* (a restored correlator compares hints and times),
so these encoders add ``hints`` and write times with full precision and their own offset. The
result is still the public shape, field for field, and ``jsonout.event_from_json`` /
``notification_from_json`` decode both.
"""

from __future__ import annotations

from datetime import datetime

from canarywatch.formats.jsonout import (
    event_from_json,
    event_to_json,
    notification_from_json,
    notification_to_json,
)
from canarywatch.model import CanaryEvent, JSONValue, Notification

__all__ = ["decode_event", "decode_notification", "encode_event", "encode_notification"]


def exact_time(dt: datetime) -> str:
    """ISO 8601 with microseconds and the datetime's own offset (none for a naive one)."""
    return dt.isoformat(timespec="microseconds")


def encode_event(ev: CanaryEvent) -> dict[str, JSONValue]:
    """``event_to_json`` plus ``hints``, with exact ``observed_at``/``occurred_at``."""
    out: dict[str, JSONValue] = dict(event_to_json(ev))
    out["observed_at"] = exact_time(ev.observed_at)
    out["occurred_at"] = exact_time(ev.occurred_at) if ev.occurred_at is not None else None
    out["hints"] = dict(sorted(ev.hints.items()))
    return out


def encode_notification(n: Notification) -> dict[str, JSONValue]:
    """``notification_to_json`` with exact ``at`` and events encoded by ``encode_event``."""
    out: dict[str, JSONValue] = dict(notification_to_json(n))
    out["at"] = exact_time(n.created_at)
    out["events"] = [encode_event(ev) for ev in n.events]
    return out


decode_event = event_from_json
decode_notification = notification_from_json
