"""``MemoryStateStore``: the ``StateStore`` contract in plain dicts, for tests and ``replay``.

It behaves like ``SqliteStateStore`` in everything a caller can observe (the shared tests run
against both): the same validation, ordering, id allocation, microsecond time precision and
JSON-only snapshots. It just forgets everything when the process ends.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from canarywatch.clock import Clock, SystemClock
from canarywatch.formats.jsonout import dumps
from canarywatch.identity import fingerprint
from canarywatch.model import JSONValue, Notification, NotificationStatus
from canarywatch.state.base import (
    BoundSinkMemory,
    LastNotification,
    OutboxItem,
    SilenceRecord,
    StateError,
    check_limit,
    check_meta_key,
    check_silence,
    check_sink_value,
    from_us,
    to_us,
)
from canarywatch.state.codec import encode_notification

if TYPE_CHECKING:
    from canarywatch.sinks import SinkMemory

_fingerprint = fingerprint  # ``outbox_holds`` takes a parameter of that name

_PENDING, _DEAD, _DONE = "pending", "dead", "done"


@dataclass(slots=True)
class _LogRecord:
    receiver: str
    group_key: str
    status: NotificationStatus
    fingerprints: frozenset[str]
    at_us: int


@dataclass(slots=True)
class _OutboxRow:
    id: int
    receiver: str
    notification: Notification
    created_us: int
    state: str = _PENDING
    attempts: int = 0
    last_error: str | None = None
    last_attempt_us: int | None = None
    next_attempt_us: int | None = None
    finished_us: int | None = None

    def item(self) -> OutboxItem:
        return OutboxItem(
            id=self.id,
            receiver=self.receiver,
            notification=self.notification,
            created_at=from_us(self.created_us),
            attempts=self.attempts,
            last_error=self.last_error,
            last_attempt_at=None if self.last_attempt_us is None else from_us(self.last_attempt_us),
            next_attempt_at=None if self.next_attempt_us is None else from_us(self.next_attempt_us),
        )


class MemoryStateStore:
    """A ``StateStore`` that keeps everything in memory (see the module docstring)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.RLock()
        self._closed = False
        self._log: list[_LogRecord] = []
        self._outbox: dict[int, _OutboxRow] = {}
        self._next_id = 1
        self._silences: dict[str, SilenceRecord] = {}
        self._sink: dict[tuple[str, str], dict[str, str]] = {}
        self._canaries: dict[str, str] = {}
        self._meta: dict[str, str] = {}

    def __repr__(self) -> str:
        return "MemoryStateStore()"

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("state store (memory) is closed")

    # -- notification log -------------------------------------------------------------------

    def record_notification(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        at_us = to_us(at)
        with self._lock:
            self._check_open()
            self._record(receiver, group_key, NotificationStatus(status), fingerprints, at_us)

    async def record_notification_async(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        self.record_notification(receiver, group_key, status, fingerprints, at)

    def _record(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at_us: int,
    ) -> None:
        self._log.append(_LogRecord(receiver, group_key, status, frozenset(fingerprints), at_us))

    def sent(self, receiver: str, fingerprint: str, status: NotificationStatus) -> datetime | None:
        with self._lock:
            self._check_open()
            times = [
                r.at_us
                for r in self._log
                if r.receiver == receiver and r.status == status and fingerprint in r.fingerprints
            ]
        return from_us(max(times)) if times else None

    def last_notification(self, receiver: str, group_key: str) -> LastNotification | None:
        with self._lock:
            self._check_open()
            latest: _LogRecord | None = None
            for r in self._log:  # in recording order, so ">=" keeps the last of equal times
                mine = r.receiver == receiver and r.group_key == group_key
                if mine and (latest is None or r.at_us >= latest.at_us):
                    latest = r
        if latest is None:
            return None
        firing = latest.status is NotificationStatus.FIRING
        return LastNotification(
            at=from_us(latest.at_us),
            firing=latest.fingerprints if firing else frozenset(),
            resolved=frozenset() if firing else latest.fingerprints,
        )

    # -- outbox -----------------------------------------------------------------------------

    def outbox_put(self, receiver: str, notification: Notification, at: datetime) -> int:
        return self.outbox_put_many([(receiver, notification)], at)[0]

    def outbox_put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        created_us = to_us(at)
        for _, notification in items:
            encode_notification(notification)  # fail the same way the SQLite store would
        encoded = {key: dumps(dict(data)) for key, data in (canary_states or {}).items()}
        ids: list[int] = []
        with self._lock:
            self._check_open()
            for receiver, notification in items:
                id_ = self._next_id
                self._next_id += 1
                self._outbox[id_] = _OutboxRow(id_, receiver, notification, created_us)
                ids.append(id_)
            self._canaries.update(encoded)
        return ids

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        return self.outbox_put_many(items, at, canary_states=canary_states)

    def outbox_holds(self, receiver: str, fingerprint: str, status: NotificationStatus) -> bool:
        status = NotificationStatus(status)
        with self._lock:
            self._check_open()
            return any(
                row.state != _DONE
                and row.receiver == receiver
                and row.notification.status is status
                and any(_fingerprint(ev) == fingerprint for ev in row.notification.events)
                for row in self._outbox.values()
            )

    def _items(self, state: str, receiver: str | None = None) -> list[_OutboxRow]:
        rows = [
            r
            for r in self._outbox.values()
            if r.state == state and (receiver is None or r.receiver == receiver)
        ]
        return sorted(rows, key=lambda r: (r.created_us, r.id))

    def outbox_pending(self, receiver: str | None = None, *, limit: int = 100) -> list[OutboxItem]:
        check_limit(limit)
        with self._lock:
            self._check_open()
            return [r.item() for r in self._items(_PENDING, receiver)[:limit]]

    def outbox_attempted(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        now_us = to_us(self._clock.now())
        next_us = None if next_attempt_at is None else to_us(next_attempt_at, "next_attempt_at")
        with self._lock:
            self._check_open()
            row = self._outbox.get(id)
            if row is not None and row.state == _PENDING:
                row.attempts += 1
                row.last_error = error_reason
                row.last_attempt_us = now_us
                row.next_attempt_us = next_us

    async def outbox_attempted_async(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        self.outbox_attempted(id, error_reason, next_attempt_at=next_attempt_at)

    def outbox_done(self, id: int, at: datetime) -> None:
        at_us = to_us(at)
        with self._lock:
            self._check_open()
            row = self._outbox.get(id)
            if row is None or row.state == _DONE:
                return
            n = row.notification
            fps = [fingerprint(ev) for ev in n.events]
            self._record(row.receiver, n.group_key, n.status, fps, at_us)
            row.state = _DONE
            row.finished_us = at_us

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        self.outbox_done(id, at)

    def outbox_dead(self, id: int, reason: str) -> None:
        now_us = to_us(self._clock.now())
        with self._lock:
            self._check_open()
            row = self._outbox.get(id)
            if row is not None and row.state == _PENDING:
                row.state = _DEAD
                row.last_error = reason
                row.finished_us = now_us
                row.next_attempt_us = None

    async def outbox_dead_async(self, id: int, reason: str) -> None:
        self.outbox_dead(id, reason)

    def outbox_item(self, id: int) -> OutboxItem | None:
        with self._lock:
            self._check_open()
            row = self._outbox.get(id)
            return row.item() if row is not None and row.state != _DONE else None

    def outbox_dead_letters(self) -> list[OutboxItem]:
        with self._lock:
            self._check_open()
            return [r.item() for r in self._items(_DEAD)]

    def outbox_retry(self, id: int) -> bool:
        with self._lock:
            self._check_open()
            row = self._outbox.get(id)
            if row is None or row.state != _DEAD:
                return False
            row.state = _PENDING
            row.attempts = 0
            row.next_attempt_us = None
            row.finished_us = None
            return True

    async def outbox_retry_async(self, id: int) -> bool:
        return self.outbox_retry(id)

    def outbox_drop(self, id: int) -> bool:
        with self._lock:
            self._check_open()
            return self._outbox.pop(id, None) is not None

    async def outbox_drop_async(self, id: int) -> bool:
        return self.outbox_drop(id)

    def outbox_depth(self, receiver: str) -> int:
        with self._lock:
            self._check_open()
            return len(self._items(_PENDING, receiver))

    def outbox_depths(self) -> dict[str, int]:
        with self._lock:
            self._check_open()
            depths: dict[str, int] = {}
            for row in self._items(_PENDING):
                depths[row.receiver] = depths.get(row.receiver, 0) + 1
        return dict(sorted(depths.items()))

    def outbox_oldest_age_s(self, receiver: str, now: datetime) -> float | None:
        now_us = to_us(now)
        with self._lock:
            self._check_open()
            rows = self._items(_PENDING, receiver)
        if not rows:
            return None
        return max(now_us - rows[0].created_us, 0) / 1e6

    # -- silences ---------------------------------------------------------------------------

    def add_silence(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        check_silence(matchers, starts_at, ends_at)
        record = SilenceRecord(
            id=str(uuid.uuid4()),
            matchers=tuple(matchers),
            starts_at=from_us(to_us(starts_at)),
            ends_at=from_us(to_us(ends_at)),
            created_by=created_by,
            comment=comment,
        )
        with self._lock:
            self._check_open()
            self._silences[record.id] = record
        return record.id

    async def add_silence_async(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        return self.add_silence(matchers, starts_at, ends_at, created_by, comment)

    def silences(self, *, include_expired: bool = False) -> list[SilenceRecord]:
        now = self._clock.now()
        with self._lock:
            self._check_open()
            return [s for s in self._silences.values() if include_expired or not s.expired(now)]

    def expire_silence(self, id: str, at: datetime) -> bool:
        at = from_us(to_us(at))
        with self._lock:
            self._check_open()
            s = self._silences.get(id)
            if s is None or s.expired(at):
                return False
            starts_at = min(s.starts_at, at)
            self._silences[id] = SilenceRecord(
                s.id, s.matchers, starts_at, at, s.created_by, s.comment
            )
            return True

    async def expire_silence_async(self, id: str, at: datetime) -> bool:
        return self.expire_silence(id, at)

    # -- sink memory, correlator snapshots, meta --------------------------------------------

    def sink_memory(self, receiver: str) -> SinkMemory:
        return BoundSinkMemory(receiver, self._sink_get, self._sink_put, self.sink_memory_put_async)

    def _sink_get(self, receiver: str, key: str) -> Mapping[str, str] | None:
        with self._lock:
            self._check_open()
            value = self._sink.get((receiver, key))
            return dict(value) if value is not None else None

    def _sink_put(self, receiver: str, key: str, value: Mapping[str, str]) -> None:
        copy = check_sink_value(value)
        with self._lock:
            self._check_open()
            self._sink[(receiver, key)] = copy

    async def sink_memory_put_async(
        self, receiver: str, key: str, value: Mapping[str, str]
    ) -> None:
        self._sink_put(receiver, key, value)

    def save_canary_state(self, key: str, data: Mapping[str, JSONValue]) -> None:
        self.save_canary_states({key: data})

    def save_canary_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        encoded = {key: dumps(dict(data)) for key, data in states.items()}
        with self._lock:
            self._check_open()
            self._canaries.update(encoded)

    async def save_canary_states_async(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        self.save_canary_states(states)

    def load_canary_states(self) -> dict[str, JSONValue]:
        with self._lock:
            self._check_open()
            return {key: json.loads(text) for key, text in sorted(self._canaries.items())}

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            self._check_open()
            return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        check_meta_key(key)
        with self._lock:
            self._check_open()
            self._meta[key] = value

    async def set_meta_async(self, key: str, value: str) -> None:
        self.set_meta(key, value)

    # -- housekeeping -----------------------------------------------------------------------

    def gc(self, now: datetime, *, retention_s: float) -> int:
        cutoff = to_us(now) - round(retention_s * 1e6)
        with self._lock:
            self._check_open()
            kept_log = [r for r in self._log if r.at_us >= cutoff]
            done = [
                r.id
                for r in self._outbox.values()
                if r.state == _DONE and r.finished_us is not None and r.finished_us < cutoff
            ]
            over = [s.id for s in self._silences.values() if to_us(s.ends_at) < cutoff]
            deleted = len(self._log) - len(kept_log) + len(done) + len(over)
            self._log = kept_log
            for id_ in done:
                del self._outbox[id_]
            for sid in over:
                del self._silences[sid]
        return deleted

    async def gc_async(self, now: datetime, *, retention_s: float) -> int:
        return self.gc(now, retention_s=retention_s)

    def size_bytes(self) -> int:
        with self._lock:
            self._check_open()
            parts: list[str] = [
                *(dumps([r.receiver, r.group_key, sorted(r.fingerprints)]) for r in self._log),
                *(dumps(encode_notification(r.notification)) for r in self._outbox.values()),
                *(dumps([*s.matchers, s.created_by, s.comment]) for s in self._silences.values()),
                *(dumps([k, v]) for k, v in self._sink.items()),
                *self._canaries.values(),
                *(k + v for k, v in self._meta.items()),
            ]
        return sum(len(p.encode()) for p in parts)

    def close(self) -> None:
        with self._lock:
            self._closed = True
