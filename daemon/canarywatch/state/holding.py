"""``HoldingStateStore``: keep running, not crash-looping, when the state store cannot be written.

A full disk or quota (ENOSPC, EDQUOT, SQLite's "database or disk is full"), a filesystem gone
read-only (EROFS) or an I/O error (EIO) used to end the daemon: the failed write raised, the
task group stopped, systemd restarted it into the same full disk until it gave up. This wrapper
turns such a failure (``StateUnwritable``) into a *degraded* state instead:

- the write that failed, and every write after it, is **held in memory, in order** (one
  journal); nothing is written ahead of an older held write, so on disk the store always looks
  like it did at some moment of the run (a correlator snapshot never lands before the
  notifications it claims were seen);
- ``run()`` retries the oldest held write with backoff (``retry_initial_s`` doubling up to
  ``retry_max_s``) and, once the store takes it, writes the rest in order and reports the
  notifications that reached the outbox (``on_written``), so they are delivered then;
- ``holding`` / ``problem()`` say so (``/readyz`` turns 503 naming the database, the operating
  system's reason and what is held); reads see the held writes (the notification log answers
  ``sent`` for a delivery whose record is held, the outbox leaves out items whose "done" is
  held), so nothing is repeated while the process lives.

**Notifications.** ``outbox_put`` cannot hand out an id for a notification it only holds, so it
raises ``StateHeld`` instead: the caller (``DurableDelivery``) does not queue it, and it is
delivered only after it has been written (a notification is never delivered before it is
durable). At most ``max_held_notifications`` are held; past that the oldest held one is dropped,
logged and counted (``on_dropped``), never silently. Other held writes need no bound: there is
one per outbox item that already exists ("done", "dead", its failed attempts coalesced into one),
per canary (snapshots, coalesced: a newer one replaces the held one and moves behind everything
held before it), per sink-memory key and per meta key. ``held_outbox()`` lists the held
notifications (``canarywatch outbox list`` shows them as held).

**Writes that are not held.** An operator's writes (silences, ``outbox retry|drop``) go to the
store directly and fail with the ``StateError`` (the control API answers 503); ``gc`` is skipped
while anything is held. ``close()`` gives up what is still held (logged and counted); the daemon
calls ``flush_async()`` while it drains and ``flush()`` once more at the very end.

The ``*_async`` writes await the inner store's (off the event loop); a failure that can pass is
held exactly as for the blocking ones. The catch-up (``run()``, ``flush_async()``) writes the
held ones through them too, one at a time and in order: while one is committing the loop runs
on, every new write is held behind it, and a held write replaced meanwhile (a newer snapshot,
one more failed attempt) is kept for the next step rather than forgotten. Each step runs as a
task of its own, so cancelling the catch-up never leaves a write committed but still held (it
would be written twice); the next catch-up waits for it first. Two async writes already on
their way to the store when a failure starts the holding may still land after the one held
(they were issued before it was held, each is independent); what is issued after never does.

Not thread-safe: the daemon uses it from its event loop only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Never, TypeAlias

import structlog

from canarywatch.clock import Clock
from canarywatch.formats.jsonout import dumps
from canarywatch.identity import fingerprint
from canarywatch.model import JSONValue, Notification, NotificationStatus
from canarywatch.state.base import (
    BoundSinkMemory,
    LastNotification,
    OutboxItem,
    SilenceRecord,
    StateError,
    StateHeld,
    StateStore,
    StateUnwritable,
    check_meta_key,
    check_sink_value,
    to_us,
)
from canarywatch.state.codec import encode_notification

if TYPE_CHECKING:
    from canarywatch.sinks import SinkMemory

DEFAULT_MAX_HELD_NOTIFICATIONS = 1000
"""Notifications held in memory at most while the store cannot be written (a few MB)."""

FLUSH_CHUNK = 50
"""Held writes written between two yields to the event loop while catching up."""

_fingerprint = fingerprint  # ``outbox_holds`` takes a parameter of that name

KINDS = ("notification", "outbox", "snapshot", "other")
"""What held writes are, for the ``canarywatch_state_held_writes{kind}`` gauge: notifications not
yet in the outbox, outbox records (delivered / attempted / dead), correlator snapshots, the rest
(sink memory, meta, notification log)."""


@dataclass(frozen=True, slots=True)
class _Put:
    receiver: str
    notification: Notification
    at: datetime


@dataclass(frozen=True, slots=True)
class _Done:
    item: OutboxItem
    at: datetime


@dataclass(frozen=True, slots=True)
class _Attempted:
    """The failed attempts of one outbox item, coalesced: one held write per item however
    many attempts fail while the store cannot be written (the latest error, their count)."""

    id: int
    reason: str
    next_attempt_at: datetime | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class HeldNotification:
    """A notification accepted while the store could not be written: not yet in the outbox (so
    it has no id) and not delivered until it is (``HoldingStateStore.held_notifications``)."""

    receiver: str
    notification: Notification
    accepted_at: datetime


@dataclass(frozen=True, slots=True)
class _Dead:
    item: OutboxItem
    reason: str


@dataclass(frozen=True, slots=True)
class _Record:
    receiver: str
    group_key: str
    status: NotificationStatus
    fingerprints: tuple[str, ...]
    at: datetime


@dataclass(frozen=True, slots=True)
class _Snapshot:
    key: str
    data: Mapping[str, JSONValue]


@dataclass(frozen=True, slots=True)
class _SinkPut:
    receiver: str
    key: str
    value: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Meta:
    key: str
    value: str


_Op: TypeAlias = _Put | _Done | _Attempted | _Dead | _Record | _Snapshot | _SinkPut | _Meta


def _kind(op: _Op) -> str:
    if isinstance(op, _Put):
        return "notification"
    if isinstance(op, _Done | _Attempted | _Dead):
        return "outbox"
    if isinstance(op, _Snapshot):
        return "snapshot"
    return "other"


def _nothing(*_: object) -> None:
    return None


class HoldingStateStore:
    """A ``StateStore`` over ``inner`` that holds writes in memory while ``inner`` cannot take
    them (see the module docstring). Run ``run()`` as a task for the retries."""

    def __init__(
        self,
        inner: StateStore,
        *,
        clock: Clock,
        log: structlog.typing.FilteringBoundLogger,
        max_held_notifications: int = DEFAULT_MAX_HELD_NOTIFICATIONS,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        on_failed: Callable[[StateUnwritable], None] = _nothing,
        on_dropped: Callable[[Notification], None] = _nothing,
        on_written: Callable[[frozenset[str]], None] = _nothing,
        on_recovered: Callable[[], None] = _nothing,
    ) -> None:
        if max_held_notifications < 1:
            raise ValueError("max_held_notifications must be at least 1")
        if retry_initial_s <= 0 or retry_max_s < retry_initial_s:
            raise ValueError("need 0 < retry_initial_s <= retry_max_s")
        self.inner = inner
        self._clock = clock
        self._log = log.bind(component="state.holding")
        self._max_held = max_held_notifications
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self.on_failed = on_failed
        """Every failed write attempt (the first, and each retry that fails)."""
        self.on_dropped = on_dropped
        """A held notification given up: past the bound, or still held at ``close()``."""
        self.on_written = on_written
        """Receivers whose held notifications have just reached the outbox."""
        self.on_recovered = on_recovered
        """Everything held has been written."""
        self._journal: dict[Hashable, _Op] = {}
        """Held writes, oldest first (dicts keep insertion order; a coalesced one moves last)."""
        self._seq = itertools.count()
        self._held_puts = 0
        self._failure: StateUnwritable | None = None
        self._since: datetime | None = None
        self._next_attempt: datetime | None = None
        self._attempts = 0
        self._dropped_in_streak = 0
        self.dropped_total = 0
        """Notifications given up since start (each counted once, however many events)."""
        self._wake = asyncio.Event()
        self._nudge = asyncio.Event()
        self._draining = asyncio.Lock()
        """One catch-up at a time (``run()`` and ``flush_async()``)."""
        self._step: asyncio.Task[None] | None = None
        """The held write being written off the loop, while it is (``_drain_async``)."""
        self._step_key: Hashable | None = None
        self._unreported: set[str] = set()
        """Receivers whose held notifications a step wrote, not yet reported (``on_written``)."""

    def __repr__(self) -> str:
        return f"HoldingStateStore({self.inner!r})"

    # -- status -----------------------------------------------------------------------------

    @property
    def holding(self) -> bool:
        """Writes are held in memory: the store could not take them (not ready)."""
        return bool(self._journal)

    @property
    def held_notifications(self) -> int:
        """Notifications accepted but not yet in the outbox (not delivered until they are)."""
        return self._held_puts

    def held_outbox(self, receiver: str | None = None) -> list[HeldNotification]:
        """The notifications accepted but not yet in the outbox, oldest first (all receivers'
        when ``receiver`` is ``None``): what ``canarywatch outbox list`` shows as held."""
        if not self._held_puts:
            return []
        return [
            HeldNotification(op.receiver, op.notification, op.at)
            for op in self._journal.values()
            if isinstance(op, _Put) and (receiver is None or op.receiver == receiver)
        ]

    def held(self, kind: str) -> int:
        """How many held writes are of ``kind`` (one of ``KINDS``)."""
        if kind == "notification":
            return self._held_puts
        return sum(1 for op in self._journal.values() if _kind(op) == kind)

    @property
    def failure(self) -> StateUnwritable | None:
        """The latest failure while holding; ``None`` when nothing is held."""
        return self._failure if self._journal else None

    def problem(self) -> str | None:
        """What ``/readyz`` says while holding (``None`` when not): the database, the reason
        (``ENOSPC: No space left on device``), what is held, when the next attempt is."""
        if not self._journal or self._failure is None:
            return None
        others = len(self._journal) - self._held_puts
        text = (
            f"{self._failure}; holding {self._held_puts} notification(s) and {others} other "
            f"write(s) in memory"
        )
        if self._dropped_in_streak:
            text += f", {self._dropped_in_streak} notification(s) dropped past the limit"
        if self._next_attempt is not None:
            wait = max((self._next_attempt - self._clock.now()).total_seconds(), 0.0)
            text += f"; next attempt in {wait:.0f}s"
        return text

    # -- the journal ------------------------------------------------------------------------

    def _failed(self, exc: StateUnwritable) -> None:
        self._failure = exc
        self.on_failed(exc)

    def _hold(self, key: Hashable, op: _Op) -> None:
        first = not self._journal
        previous = self._journal.pop(key, None)
        if isinstance(previous, _Put):  # pragma: no cover - put keys are unique
            self._held_puts -= 1
        self._journal[key] = op
        if isinstance(op, _Put):
            self._held_puts += 1
            while self._held_puts > self._max_held:
                self._drop_oldest_put()
        if first:
            self._since = self._clock.now()
            self._attempts = 0
            self._dropped_in_streak = 0
            failure = self._failure
            self._log.error(
                "state_write_failed",
                error=str(failure) if failure is not None else "",
                errno=failure.errno_name if failure is not None else "",
                code=failure.code if failure is not None else "",
                detail="holding writes in memory, in order; retrying with backoff; "
                "notifications not yet written are not delivered until they are",
            )
            self._wake.set()

    def _drop_oldest_put(self) -> None:
        key = next(k for k, op in self._journal.items() if isinstance(op, _Put))
        op = self._journal.pop(key)
        assert isinstance(op, _Put)  # noqa: S101 - found by that test
        self._held_puts -= 1
        self._give_up(op, "past state.max_held_notifications")

    def _give_up(self, op: _Put, why: str) -> None:
        n = op.notification
        self.dropped_total += 1
        self._dropped_in_streak += 1
        (self._log.error if self._dropped_in_streak == 1 else self._log.debug)(
            "notification_dropped",
            receiver=n.receiver,
            group_key=n.group_key,
            events=len(n.events),
            reason="state_unwritable",
            detail=why,
        )
        self.on_dropped(n)

    def _apply(self, op: _Op) -> str | None:
        """Write one held op to the inner store; the receiver when it put a notification."""
        inner = self.inner
        if isinstance(op, _Put):
            inner.outbox_put(op.receiver, op.notification, op.at)
            return op.receiver
        if isinstance(op, _Done):
            inner.outbox_done(op.item.id, op.at)
        elif isinstance(op, _Attempted):
            for written in range(op.count):
                try:
                    inner.outbox_attempted(op.id, op.reason, next_attempt_at=op.next_attempt_at)
                except StateUnwritable:
                    if written:  # keep only what is still to write, in its place
                        self._journal[("attempted", op.id)] = dataclasses.replace(
                            op, count=op.count - written
                        )
                    raise
        elif isinstance(op, _Dead):
            inner.outbox_dead(op.item.id, op.reason)
        elif isinstance(op, _Record):
            inner.record_notification(op.receiver, op.group_key, op.status, op.fingerprints, op.at)
        elif isinstance(op, _Snapshot):
            inner.save_canary_states({op.key: op.data})
        elif isinstance(op, _SinkPut):
            inner.sink_memory(op.receiver).put(op.key, op.value)
        else:
            inner.set_meta(op.key, op.value)
        return None

    async def _apply_async(self, key: Hashable, op: _Op) -> str | None:
        """``_apply`` off the event loop (the inner store's ``*_async`` writes)."""
        inner = self.inner
        if isinstance(op, _Put):
            await inner.outbox_put_many_async([(op.receiver, op.notification)], op.at)
            return op.receiver
        if isinstance(op, _Done):
            await inner.outbox_done_async(op.item.id, op.at)
        elif isinstance(op, _Attempted):
            for written in range(op.count):
                try:
                    await inner.outbox_attempted_async(
                        op.id, op.reason, next_attempt_at=op.next_attempt_at
                    )
                except StateUnwritable:
                    self._attempts_written(key, written)
                    raise
            self._attempts_written(key, op.count)
        elif isinstance(op, _Dead):
            await inner.outbox_dead_async(op.item.id, op.reason)
        elif isinstance(op, _Record):
            await inner.record_notification_async(
                op.receiver, op.group_key, op.status, op.fingerprints, op.at
            )
        elif isinstance(op, _Snapshot):
            await inner.save_canary_states_async({op.key: op.data})
        elif isinstance(op, _SinkPut):
            await inner.sink_memory_put_async(op.receiver, op.key, op.value)
        else:
            await inner.set_meta_async(op.key, op.value)
        return None

    def _attempts_written(self, key: Hashable, written: int) -> None:
        """``written`` failed attempts held under ``key`` are in the store now: keep only the
        rest (more may have been coalesced into the held one while they were written)."""
        if not written:
            return
        held = self._journal.get(key)
        if not isinstance(held, _Attempted):
            return
        if held.count <= written:
            del self._journal[key]
        else:
            self._journal[key] = dataclasses.replace(held, count=held.count - written)

    def _settle(self, key: Hashable, op: _Op) -> None:
        """``op``, held under ``key``, is written (or discarded): forget it, unless a newer
        write replaced it meanwhile (that one is still to write)."""
        if isinstance(op, _Attempted):
            return  # ``_attempts_written`` did it, counting what was coalesced meanwhile
        if self._journal.get(key) is op:
            del self._journal[key]
            if isinstance(op, _Put):
                self._held_puts -= 1

    async def _write_held(self, key: Hashable, op: _Op) -> None:
        """One catch-up step: write the oldest held op and settle the journal (a receiver whose
        notification reached the outbox is remembered for ``on_written``); ``StateUnwritable``
        when the store still refuses it."""
        try:
            receiver = await self._apply_async(key, op)
        except StateUnwritable:
            raise
        except StateError as exc:
            # Refused for good (an outbox item that became unreadable): holding it would hold
            # everything behind it forever.
            self._log.error("held_write_discarded", kind=_kind(op), error=str(exc))
            if isinstance(op, _Attempted):
                self._attempts_written(key, op.count)
            receiver = None
        self._settle(key, op)
        if receiver is not None:
            self._unreported.add(receiver)

    async def _wait_for_step(self) -> None:
        """Let a step already under way (its caller was cancelled) finish and settle."""
        step = self._step
        if step is not None and not step.done():
            await asyncio.wait([step])

    async def _drain_async(self, budget: int | None) -> bool | None:
        """``_drain`` off the event loop: each held op written by a task of its own (see the
        module docstring), the loop running meanwhile."""
        count = 0
        try:
            while True:
                await self._wait_for_step()
                if not self._journal:
                    return True
                if budget is not None and count >= budget:
                    return None
                key, op = next(iter(self._journal.items()))
                step = asyncio.ensure_future(self._write_held(key, op))
                self._step, self._step_key = step, key
                step.add_done_callback(self._step_ended)
                # Cancelling this await leaves the step to finish (asyncio.wait never cancels).
                await asyncio.wait([step])
                try:
                    step.result()
                except StateUnwritable as exc:
                    self._failed(exc)
                    return False
                count += 1
        finally:
            # A step that outlived a cancelled drain is reported by the next one.
            written, self._unreported = self._unreported, set()
            if written:
                self.on_written(frozenset(written))

    def _step_ended(self, step: asyncio.Task[None]) -> None:
        if self._step is step:
            self._step, self._step_key = None, None
        if not step.cancelled():
            step.exception()  # retrieved here: a cancelled drain's caller may never look

    async def _write_async(self, key: Hashable, op: _Op) -> None:
        """``_write`` off the event loop."""
        if not self._journal:
            try:
                await self._apply_async(None, op)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold(key, op)

    def _write(self, key: Hashable, op: _Op) -> None:
        """Write now when nothing is held; otherwise, or when the store refuses it for a
        reason that can pass, hold it behind what is held."""
        if not self._journal:
            try:
                self._apply(op)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold(key, op)

    def _drain(self, budget: int | None) -> bool | None:
        """Write held ops, oldest first, at most ``budget`` of them: ``True`` when nothing is
        left, ``None`` when the budget ran out first, ``False`` when the store refused one."""
        written: set[str] = set()
        count = 0
        try:
            while self._journal:
                if budget is not None and count >= budget:
                    return None
                key, op = next(iter(self._journal.items()))
                try:
                    receiver = self._apply(op)
                except StateUnwritable as exc:
                    self._failed(exc)
                    return False
                except StateError as exc:
                    # Refused for good (an outbox item that became unreadable): holding it would
                    # hold everything behind it forever.
                    receiver = None
                    self._log.error("held_write_discarded", kind=_kind(op), error=str(exc))
                del self._journal[key]
                count += 1
                if isinstance(op, _Put):
                    self._held_puts -= 1
                if receiver is not None:
                    written.add(receiver)
            return True
        finally:
            if written:
                self.on_written(frozenset(written))

    def _recovered(self) -> None:
        since = self._since
        outage_s = (self._clock.now() - since).total_seconds() if since is not None else 0.0
        self._log.info(
            "state_writes_flushed",
            outage_s=round(outage_s, 3),
            attempts=self._attempts,
            dropped=self._dropped_in_streak,
        )
        self._failure = None
        self._since = None
        self._next_attempt = None
        self.on_recovered()

    def flush(self) -> bool:
        """Try to write everything held now, blocking; ``True`` when nothing is left.

        Only for the very end, after the event loop stopped serving (the daemon's last attempt
        before ``close()``): nothing else waits for the loop then. While it serves, use
        ``flush_async()``."""
        if not self._journal:
            return True
        if self._step is not None and not self._step.done():
            return False  # a step is still writing off the loop: never write it twice
        if not self._drain(None):
            return False
        self._recovered()
        return True

    async def flush_async(self) -> bool:
        """Try to write everything held now, off the event loop (the daemon's drain); ``True``
        when nothing is left."""
        async with self._draining:
            if not self._journal:
                await self._wait_for_step()
                return not self._journal
            done = await self._drain_async(None)
            if done:
                self._recovered()
            return bool(done)

    async def _catch_up(self) -> bool:
        """Write what is held in chunks, off the event loop, yielding between them."""
        async with self._draining:
            while True:
                if not self._journal:
                    return True  # written meanwhile (``flush_async``)
                done = await self._drain_async(FLUSH_CHUNK)
                if done is None:
                    await asyncio.sleep(0)
                    continue
                if done:
                    self._recovered()
                return done

    def retry_now(self) -> None:
        """Cut the current backoff short (something suggests the store takes writes again)."""
        if self._journal:
            self._nudge.set()

    def _backoff_s(self) -> float:
        step = self._retry_initial_s * 2.0 ** min(self._attempts, 32)
        return min(step, self._retry_max_s)

    async def _pause(self, seconds: float) -> None:
        deadline = self._clock.now() + timedelta(seconds=seconds)
        self._next_attempt = deadline
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        nudged = asyncio.ensure_future(self._nudge.wait())
        try:
            await asyncio.wait({sleeper, nudged}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            nudged.cancel()
            await asyncio.gather(sleeper, nudged, return_exceptions=True)
        self._nudge.clear()

    async def run(self) -> Never:
        """Retry held writes with backoff until cancelled (the daemon's ``state`` task)."""
        while True:
            if not self._journal:
                self._wake.clear()
                await self._wake.wait()
            await self._pause(self._backoff_s())
            if not await self._catch_up():
                self._attempts += 1
                self._log.debug(
                    "state_write_retry_failed",
                    attempt=self._attempts,
                    error=str(self._failure),
                    delay_s=round(self._backoff_s(), 3),
                )

    # -- notification log -------------------------------------------------------------------

    def record_notification(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        to_us(at)
        op = _Record(receiver, group_key, NotificationStatus(status), tuple(fingerprints), at)
        self._write(("record", next(self._seq)), op)

    async def record_notification_async(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        """``record_notification`` without blocking the event loop while the store commits."""
        to_us(at)
        op = _Record(receiver, group_key, NotificationStatus(status), tuple(fingerprints), at)
        await self._write_async(("record", next(self._seq)), op)

    def _held_records(self) -> list[_Record]:
        out = []
        for op in self._journal.values():
            if isinstance(op, _Record):
                out.append(op)
            elif isinstance(op, _Done):
                n = op.item.notification
                fps = tuple(fingerprint(e) for e in n.events)
                out.append(_Record(op.item.receiver, n.group_key, n.status, fps, op.at))
        return out

    def sent(self, receiver: str, fingerprint: str, status: NotificationStatus) -> datetime | None:
        found = self.inner.sent(receiver, fingerprint, status)
        for record in self._held_records() if self._journal else ():
            mine = record.receiver == receiver and record.status == status
            if mine and fingerprint in record.fingerprints:
                found = record.at if found is None else max(found, record.at)
        return found

    def last_notification(self, receiver: str, group_key: str) -> LastNotification | None:
        found = self.inner.last_notification(receiver, group_key)
        for record in self._held_records() if self._journal else ():
            if record.receiver != receiver or record.group_key != group_key:
                continue
            if found is None or record.at >= found.at:  # held ones were recorded later
                fps = frozenset(record.fingerprints)
                firing = record.status is NotificationStatus.FIRING
                found = LastNotification(
                    at=record.at,
                    firing=fps if firing else frozenset(),
                    resolved=frozenset() if firing else fps,
                )
        return found

    # -- outbox -----------------------------------------------------------------------------

    def outbox_put(self, receiver: str, notification: Notification, at: datetime) -> int:
        """The item's id once it is durable; ``StateHeld`` when it is only held in memory."""
        to_us(at)
        encode_notification(notification)  # refuse what the store would refuse, now
        if not self._journal:
            try:
                return self.inner.outbox_put(receiver, notification, at)
            except StateUnwritable as exc:
                self._failed(exc)
        self._hold(("put", next(self._seq)), _Put(receiver, notification, at))
        raise StateHeld(
            f"notification for receiver {receiver!r} held in memory, not yet durable: "
            f"{self._failure}"
        )

    def outbox_put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        """The ids once everything is durable together; ``StateHeld`` when the notifications
        are only held in memory (the states are then held behind them, in the same order)."""
        states = self._checked_puts(items, at, canary_states)
        if not self._journal:
            try:
                return self.inner.outbox_put_many(items, at, canary_states=states)
            except StateUnwritable as exc:
                self._failed(exc)
        return self._hold_puts(items, at, states)

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        """``outbox_put_many`` without blocking the event loop while the store commits."""
        states = self._checked_puts(items, at, canary_states)
        if not self._journal:
            try:
                return await self.inner.outbox_put_many_async(items, at, canary_states=states)
            except StateUnwritable as exc:
                self._failed(exc)
        return self._hold_puts(items, at, states)

    @staticmethod
    def _checked_puts(
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None,
    ) -> dict[str, Mapping[str, JSONValue]]:
        """Refuse now what the store would refuse; the states as a plain dict."""
        to_us(at)
        for _, notification in items:
            encode_notification(notification)
        return dict(canary_states or {})

    def _hold_puts(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        states: Mapping[str, Mapping[str, JSONValue]],
    ) -> list[int]:
        for receiver, notification in items:
            self._hold(("put", next(self._seq)), _Put(receiver, notification, at))
        for key, data in states.items():  # a copy: the caller may change its mapping later
            self._hold(("snapshot", key), _Snapshot(key, json.loads(dumps(dict(data)))))
        if not items:
            return []
        raise StateHeld(
            f"{len(items)} notification(s) held in memory, not yet durable: {self._failure}"
        )

    def outbox_holds(self, receiver: str, fingerprint: str, status: NotificationStatus) -> bool:
        if self.inner.outbox_holds(receiver, fingerprint, status):
            return True
        return any(
            isinstance(op, _Put)
            and op.receiver == receiver
            and op.notification.status == status
            and any(_fingerprint(ev) == fingerprint for ev in op.notification.events)
            for op in self._journal.values()
        )

    def _finished(self) -> dict[int, str]:
        """Outbox ids whose "done" or "dead" is held -> their receiver: no longer pending."""
        return {
            op.item.id: op.item.receiver
            for op in self._journal.values()
            if isinstance(op, _Done | _Dead)
        }

    def outbox_pending(self, receiver: str | None = None, *, limit: int = 100) -> list[OutboxItem]:
        finished = self._finished() if self._journal else {}
        if not finished:
            items = self.inner.outbox_pending(receiver, limit=limit)
        else:
            items = self.inner.outbox_pending(receiver, limit=limit + len(finished))
            items = [item for item in items if item.id not in finished][:limit]
        return self._with_held_attempts(items) if self._journal else items

    def _with_held_attempts(self, items: list[OutboxItem]) -> list[OutboxItem]:
        """``items`` as they will be once their held failed attempts are written."""
        held = {op.id: op for op in self._journal.values() if isinstance(op, _Attempted)}
        return [
            item
            if (op := held.get(item.id)) is None
            else dataclasses.replace(
                item,
                attempts=item.attempts + op.count,
                last_error=op.reason,
                next_attempt_at=op.next_attempt_at,
            )
            for item in items
        ]

    def outbox_attempted(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        if next_attempt_at is not None:
            to_us(next_attempt_at, "next_attempt_at")
        key = ("attempted", id)
        held = self._journal.get(key)
        count = held.count + 1 if isinstance(held, _Attempted) else 1
        self._write(key, _Attempted(id, error_reason, next_attempt_at, count))

    async def outbox_attempted_async(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        """``outbox_attempted`` without blocking the event loop while the store commits."""
        if next_attempt_at is not None:
            to_us(next_attempt_at, "next_attempt_at")
        if not self._journal:
            try:
                await self.inner.outbox_attempted_async(
                    id, error_reason, next_attempt_at=next_attempt_at
                )
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        key = ("attempted", id)
        held = self._journal.get(key)
        count = held.count + 1 if isinstance(held, _Attempted) else 1
        self._hold(key, _Attempted(id, error_reason, next_attempt_at, count))

    def outbox_done(self, id: int, at: datetime) -> None:
        to_us(at)
        if not self._journal:
            try:
                self.inner.outbox_done(id, at)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_done(id, at)

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        """``outbox_done`` without blocking the event loop while the store commits."""
        to_us(at)
        if not self._journal:
            try:
                await self.inner.outbox_done_async(id, at)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_done(id, at)

    def _hold_done(self, id: int, at: datetime) -> None:
        item = self.inner.outbox_item(id)
        if item is not None:  # else already done, or dropped: nothing to record
            self._hold(("done", id), _Done(item, at))

    def outbox_dead(self, id: int, reason: str) -> None:
        if not self._journal:
            try:
                self.inner.outbox_dead(id, reason)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_dead(id, reason)

    async def outbox_dead_async(self, id: int, reason: str) -> None:
        """``outbox_dead`` without blocking the event loop while the store commits."""
        if not self._journal:
            try:
                await self.inner.outbox_dead_async(id, reason)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_dead(id, reason)

    def _hold_dead(self, id: int, reason: str) -> None:
        item = self.inner.outbox_item(id)
        if item is not None and ("done", id) not in self._journal:
            self._hold(("dead", id), _Dead(item, reason))

    def outbox_item(self, id: int) -> OutboxItem | None:
        if ("done", id) in self._journal:
            return None
        return self.inner.outbox_item(id)

    def outbox_dead_letters(self) -> list[OutboxItem]:
        items = self.inner.outbox_dead_letters()
        held = [op.item for op in self._journal.values() if isinstance(op, _Dead)]
        if not held:
            return items
        done = {op.item.id for op in self._journal.values() if isinstance(op, _Done)}
        merged = {item.id: item for item in [*items, *held] if item.id not in done}
        return sorted(merged.values(), key=lambda i: (i.created_at, i.id))

    def outbox_retry(self, id: int) -> bool:
        if self._journal.pop(("dead", id), None) is not None:
            return True  # never written as dead: it simply stays pending
        changed = self.inner.outbox_retry(id)
        self.retry_now()  # a write went through: the store may take the held ones too
        return changed

    async def outbox_retry_async(self, id: int) -> bool:
        """``outbox_retry`` without blocking the event loop while the store commits."""
        if self._step_key == ("dead", id):
            await self._wait_for_step()  # its "dead" is being written: retry what it wrote
        if self._journal.pop(("dead", id), None) is not None:
            return True  # never written as dead: it simply stays pending
        changed = await self.inner.outbox_retry_async(id)
        self.retry_now()
        return changed

    def outbox_drop(self, id: int) -> bool:
        dropped = self.inner.outbox_drop(id)
        self.retry_now()
        return dropped

    async def outbox_drop_async(self, id: int) -> bool:
        """``outbox_drop`` without blocking the event loop while the store commits."""
        dropped = await self.inner.outbox_drop_async(id)
        self.retry_now()
        return dropped

    def outbox_depth(self, receiver: str) -> int:
        depth = self.inner.outbox_depth(receiver)
        if not self._journal:
            return depth
        gone = sum(1 for r in self._finished().values() if r == receiver)
        return max(depth - gone, 0)

    def outbox_depths(self) -> dict[str, int]:
        depths = self.inner.outbox_depths()
        if not self._journal:
            return depths
        for receiver in self._finished().values():
            if receiver in depths:
                depths[receiver] -= 1
        return {r: d for r, d in depths.items() if d > 0}

    def outbox_oldest_age_s(self, receiver: str, now: datetime) -> float | None:
        if not self._journal or receiver not in self._finished().values():
            return self.inner.outbox_oldest_age_s(receiver, now)
        oldest = self.outbox_pending(receiver, limit=1)
        if not oldest:
            return None
        return max((now - oldest[0].created_at).total_seconds(), 0.0)

    # -- silences: an operator's writes, not held ------------------------------------------

    def add_silence(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        sid = self.inner.add_silence(matchers, starts_at, ends_at, created_by, comment)
        self.retry_now()
        return sid

    async def add_silence_async(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """``add_silence`` without blocking the event loop while the store commits."""
        sid = await self.inner.add_silence_async(matchers, starts_at, ends_at, created_by, comment)
        self.retry_now()
        return sid

    def silences(self, *, include_expired: bool = False) -> list[SilenceRecord]:
        return self.inner.silences(include_expired=include_expired)

    def expire_silence(self, id: str, at: datetime) -> bool:
        expired = self.inner.expire_silence(id, at)
        self.retry_now()
        return expired

    async def expire_silence_async(self, id: str, at: datetime) -> bool:
        """``expire_silence`` without blocking the event loop while the store commits."""
        expired = await self.inner.expire_silence_async(id, at)
        self.retry_now()
        return expired

    # -- sink memory, correlator snapshots, meta --------------------------------------------

    def sink_memory(self, receiver: str) -> SinkMemory:
        return BoundSinkMemory(receiver, self._sink_get, self._sink_put, self.sink_memory_put_async)

    def _sink_get(self, receiver: str, key: str) -> Mapping[str, str] | None:
        held = self._journal.get(("sink", receiver, key))
        if isinstance(held, _SinkPut):
            return dict(held.value)
        return self.inner.sink_memory(receiver).get(key)

    def _sink_put(self, receiver: str, key: str, value: Mapping[str, str]) -> None:
        op = _SinkPut(receiver, key, check_sink_value(value))
        self._write(("sink", receiver, key), op)

    async def sink_memory_put_async(
        self, receiver: str, key: str, value: Mapping[str, str]
    ) -> None:
        """A sink memory write without blocking the event loop while the store commits."""
        op = _SinkPut(receiver, key, check_sink_value(value))
        await self._write_async(("sink", receiver, key), op)

    def save_canary_state(self, key: str, data: Mapping[str, JSONValue]) -> None:
        self.save_canary_states({key: data})

    def save_canary_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        if not self._journal:
            try:
                self.inner.save_canary_states(states)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_states(states)

    async def save_canary_states_async(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        """``save_canary_states`` without blocking the event loop while the store commits."""
        if not self._journal:
            try:
                await self.inner.save_canary_states_async(states)
            except StateUnwritable as exc:
                self._failed(exc)
            else:
                return
        self._hold_states(states)

    def _hold_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        for key, data in states.items():  # a copy: the caller may change its mapping later
            self._hold(("snapshot", key), _Snapshot(key, json.loads(dumps(dict(data)))))

    def load_canary_states(self) -> dict[str, JSONValue]:
        states = self.inner.load_canary_states()
        for op in self._journal.values():
            if isinstance(op, _Snapshot):
                states[op.key] = json.loads(dumps(dict(op.data)))
        return dict(sorted(states.items()))

    def get_meta(self, key: str) -> str | None:
        held = self._journal.get(("meta", key))
        if isinstance(held, _Meta):
            return held.value
        return self.inner.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        check_meta_key(key)
        self._write(("meta", key), _Meta(key, value))

    async def set_meta_async(self, key: str, value: str) -> None:
        """``set_meta`` without blocking the event loop while the store commits."""
        check_meta_key(key)
        await self._write_async(("meta", key), _Meta(key, value))

    # -- housekeeping -----------------------------------------------------------------------

    def gc(self, now: datetime, *, retention_s: float) -> int:
        """Compaction, skipped (0) while writes are held: it can wait for the disk."""
        if self._journal:
            return 0
        return self.inner.gc(now, retention_s=retention_s)

    async def gc_async(self, now: datetime, *, retention_s: float) -> int:
        """``gc`` off the event loop; skipped (0) while writes are held."""
        if self._journal:
            return 0
        return await self.inner.gc_async(now, retention_s=retention_s)

    def size_bytes(self) -> int:
        return self.inner.size_bytes()

    def close(self) -> None:
        """Close the inner store; what is still held is given up, logged and counted."""
        if self._journal:
            others = len(self._journal) - self._held_puts
            self._log.error(
                "state_writes_lost",
                notifications=self._held_puts,
                other_writes=others,
                error=str(self._failure),
                detail="the state store never took them; notifications already delivered "
                "whose record is lost may be sent again after the restart (same idempotency "
                "key)",
            )
            for op in list(self._journal.values()):
                if isinstance(op, _Put):
                    self._give_up(op, "still held at shutdown")
            self._journal.clear()
            self._held_puts = 0
        self.inner.close()
