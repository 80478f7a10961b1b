"""Durable delivery: the notification log and the outbox around the dispatcher.

Between the pipeline and the sinks, every notification goes through three steps:

1. **dedup** against the notification log: events this receiver was already sent (with this
   status) are dropped, so a restart, a relist or a replayed outbox never repeats a message;
2. **outbox**: the notification is written to the state store *before* it is queued, so a
   ``kill -9`` between "accepted" and "delivered" loses nothing: ``resume()`` reads it back on
   start;
3. **record after success**: when the sink acknowledges, the outbox item is marked done and the
   notification log records it, in one transaction. A delivery that fails for good (not
   retryable, or past the dispatcher's retry budget) goes to the dead-letter table, where
   ``canarywatch outbox list|retry|drop`` finds it. Each failed attempt on the way is recorded
   on the pending item (``retrying``: the count, the error in plain words, when the next attempt
   is due), one small write per failure and none per success, so ``outbox list`` shows a
   retry streak as it happens.

The outbox is the queue of record; the dispatcher's bounded per-receiver queues are a window
onto it. When a queue is full the notification *spills*: it stays pending in the outbox and the
worker reads it back (``refill``), oldest first, as its queue drains. ``resume()`` at start and
``take_over()`` at a leadership change go through the same path, so they never push more into a
queue than it holds, and nothing is dropped for lack of room.

While the state store cannot be written (``HoldingStateStore``: disk full, read-only, I/O
error), a new notification is *held* in memory instead of written (``StateHeld``) and is not
queued: it is delivered only once it has been written to the outbox, in order (``written``).
Items already in the outbox keep being delivered; their "done" record is held and written later.
So nothing is delivered that the outbox does not know of: a restart during the outage may repeat
a delivery whose record was still held (the stored notification again: the same body, the same
webhook idempotency key), but never one the outbox could not recognise.

A leader-election **standby** delivers nothing: what it would have sent stays pending in its
outbox, *held* in case it takes over, and is let go (marked done: the leader has long handled it)
once older than ``held_window_s``. Held items are counted apart (``canarywatch_outbox_held``),
not as a backlog.

Every write here is awaited off the event loop (the store's ``*_async`` methods, committed in
groups): a slow disk delays the delivery that waits for it, never the daemon. Items whose "done"
is being written that way (let go by a standby, or found delivered by the old leader at a
takeover) are *finishing*: still pending in the store until the commit, so ``refill`` and
``take_over`` leave them out meanwhile, and none is queued again while its "done" is on its way.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from canarywatch.clock import Clock
from canarywatch.delivery.dispatch import Dispatcher, Envelope
from canarywatch.delivery.firing import FiringTracker
from canarywatch.identity import fingerprint
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryOutcome, JSONValue, Notification, NotificationStatus
from canarywatch.state import StateHeld, StateStore
from canarywatch.state.configmap import entry_key
from canarywatch.views.explain import DecisionRecorder

RELEASE_BATCH = 100
"""Held items a standby reads per batch when letting go of those past the held window."""

TAKE_OVER_LIMIT = 100_000
"""At most this many pending items are checked against the shared log at a takeover."""


class SharedLog(Protocol):
    """What ``DurableDelivery`` needs of the replicas' shared notification log (the ConfigMap
    ``ConfigMapNotificationLog``)."""

    async def load(self) -> dict[str, datetime]: ...

    async def record(
        self,
        receiver: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None: ...


class DurableDelivery:
    """The outbox around a ``Dispatcher`` (see the module docstring).

    Wiring: build it first, then the dispatcher with ``on_delivered=delivery.on_delivered``,
    ``refill=delivery.refill`` and ``on_retrying=delivery.retrying``, then ``attach(dispatcher)``.
    """

    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        metrics: Metrics,
        log: structlog.typing.FilteringBoundLogger,
        is_leader: Callable[[], bool] = lambda: True,
        shared_log: SharedLog | None = None,
        held_window_s: float = 600.0,
        explain: DecisionRecorder | None = None,
    ) -> None:
        self._store = store
        self._explain = explain
        """Where each outcome is recorded (decision trails); ``None``: nowhere."""
        self._clock = clock
        self._metrics = metrics
        self._log = log.bind(component="delivery")
        self._is_leader = is_leader
        self._narrowed: dict[int, Notification] = {}
        """Outbox id -> what is left to send of it after a takeover (some of its events were
        already delivered by the old leader); ``refill`` sends this instead of the stored one."""
        self.firing = FiringTracker()
        self._refills = 0
        """How many times ``refill`` read the outbox (``accept_batch`` checks it moved)."""
        self._shared_log = shared_log
        self._held_window = timedelta(seconds=held_window_s)
        self._finishing: set[int] = set()
        """Outbox ids whose "done" is being written (see the module docstring): pending in the
        store until it commits, yet never to be read back."""
        self._releasing = False
        """A ``release_held`` is under way (the next one would find the same items)."""
        self._sending = True
        """This replica sends: no election, or ``resume()`` as the leader or ``take_over()``
        read back what the outbox held. A replica that starts as a standby (``resume``) or
        steps down stops; until it has taken over again, a new notification waits in the
        outbox behind the older ones (``_queue_or_hold``)."""
        self.dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def _attached(self) -> Dispatcher:
        assert self.dispatcher is not None, "attach() a dispatcher first"  # noqa: S101
        return self.dispatcher

    async def accept(self, n: Notification) -> None:
        """Take a notification from the pipeline: dedup, persist, queue."""
        await self.accept_batch([n])

    async def accept_batch(
        self,
        notifications: Sequence[Notification],
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> None:
        """Take a batch from the pipeline: dedup each notification, write the survivors to the
        outbox together with ``canary_states`` (the correlator snapshots that say their
        transitions were seen) in one transaction, then queue them.

        One transaction, because a crash between the two writes would leave outbox rows whose
        transitions the next start derives again from the initial lists. ``StateError`` from
        the store propagates (a corrupt or closed store ends the daemon, as it must).
        """
        admitted: list[Notification] = []
        taken: set[tuple[str, str, NotificationStatus]] = set()
        for n in notifications:
            kept = self._admit(n, taken)
            if kept is not None:
                admitted.append(kept)
        if not admitted and not canary_states:
            return
        refills = self._refills
        try:
            items = await self._store.outbox_put_many_async(
                [(n.receiver, n) for n in admitted], self._clock.now(), canary_states=canary_states
            )
        except StateHeld:
            # The state store cannot take writes (disk full...): the notifications are held in
            # memory and delivered once they have been written (``written``), never before: a
            # delivery the outbox does not know of could be repeated after a restart.
            self._log.debug("notifications_held", notifications=len(admitted))
            return
        if refills != self._refills:
            # The outbox was read back while the write was committing (off the event loop), so
            # a worker may hold these items already: let the backlog read them, once, in order.
            self.written(frozenset(n.receiver for n in admitted))
            if not self._is_leader():
                await self.release_held()
            return
        for n, item in zip(admitted, items, strict=True):
            await self._queue_or_hold(n, item)

    def _admit(
        self, n: Notification, taken: set[tuple[str, str, NotificationStatus]]
    ) -> Notification | None:
        """``n`` without the events already accepted for its receiver (sent, or pending or
        dead in the outbox, or earlier in this batch); ``None`` when nothing is left."""
        if n.repeat:  # a repeat_interval re-send: the log has these events, by design
            return n
        fresh = []
        for event in n.events:
            key = (n.receiver, fingerprint(event), n.status)
            if key in taken or self._accepted_before(*key):
                if self._explain is not None:
                    sent_at = self._store.sent(*key)
                    self._explain.already_sent(n, event, self._clock.now(), sent_at)
                continue
            taken.add(key)
            fresh.append(event)
        if not fresh:
            self._metrics.events_suppressed.labels(reason="duplicate").inc(len(n.events))
            self._log.debug("notification_deduplicated", receiver=n.receiver, group_key=n.group_key)
            return None
        if len(fresh) != len(n.events):
            self._metrics.events_suppressed.labels(reason="duplicate").inc(
                len(n.events) - len(fresh)
            )
            n = dataclasses.replace(n, events=tuple(fresh))
        return n

    def _accepted_before(self, receiver: str, key: str, status: NotificationStatus) -> bool:
        return self._store.sent(receiver, key, status) is not None or self._store.outbox_holds(
            receiver, key, status
        )

    def written(self, receivers: frozenset[str]) -> None:
        """Notifications held while the state store could not be written have reached the
        outbox (``HoldingStateStore.on_written``): read them back, in order, on the leader."""
        dispatcher = self._attached()
        if not self._is_leader():
            return
        for receiver in sorted(receivers):
            if receiver in dispatcher.sinks:
                dispatcher.backlog(receiver)

    async def _queue_or_hold(self, n: Notification, item: int) -> None:
        if self._is_leader():
            if self._taken_over():
                await self._queue(n, item)
            # Else elected, and ``take_over`` about to run: it reads this item back after the
            # older ones the outbox holds. Queued now, it went out first (the fault matrix's
            # ``leader_failover``: a ``promoted`` made from the restart's relist was sent before
            # the ``finalising`` the killed leader had left in its outbox).
            return
        # A standby keeps what it would have sent (pending in the outbox), in case the leader
        # dies before sending it.
        await self.release_held()

    def _taken_over(self) -> bool:
        """Elected and caught up (``resume`` or ``take_over`` ran in this term). A standby's
        check forgets it, so the next term waits for its own ``take_over``."""
        if not self._is_leader():
            self._sending = False
        return self._sending

    def _finish(self, ids: Sequence[int], at: datetime) -> Awaitable[None]:
        """Mark ``ids`` done off the event loop, all queued to the writer at once (so they share
        a commit); await the result. They are *finishing* from this call (not from the await)
        until the commit: ``refill`` and ``take_over`` leave them out, since the store still
        says pending. On a failure they are pending again (a repeat later, never a loss) and the
        error propagates."""
        fresh = [id_ for id_ in ids if id_ not in self._finishing]
        self._finishing.update(fresh)
        return self._finished(fresh, at)

    async def _finished(self, fresh: list[int], at: datetime) -> None:
        try:
            await asyncio.gather(*(self._store.outbox_done_async(id_, at) for id_ in fresh))
        finally:
            self._finishing.difference_update(fresh)
        for id_ in fresh:
            self._narrowed.pop(id_, None)

    async def release_held(self) -> int:
        """On a standby, let go of held items older than the held window: the leader has long
        handled them (they are marked done, a batch per commit). Returns how many were let go;
        0 on the leader, or while another release is under way (it finds the same items)."""
        if self._is_leader() or self._releasing:
            return 0
        self._releasing = True
        try:
            released = await self._release_held()
        finally:
            self._releasing = False
        if released:
            self._log.debug("held_released", notifications=released)
        return released

    async def _release_held(self) -> int:
        now = self._clock.now()
        cutoff = now - self._held_window
        window_s = self._held_window.total_seconds()
        released = 0
        for receiver in self._store.outbox_depths():
            age = self._store.outbox_oldest_age_s(receiver, now)
            if age is None or age <= window_s:  # the cheap check first: usually nothing to do
                continue
            while not self._is_leader():  # a takeover meanwhile: what is left is its to send
                limit = RELEASE_BATCH + len(self._finishing)  # those are let go already
                batch = self._store.outbox_pending(receiver, limit=limit)
                old = [
                    item.id
                    for item in batch
                    if item.created_at < cutoff and item.id not in self._finishing
                ]
                await self._finish(old, now)
                released += len(old)
                # Oldest first: a short page, or a page that ends within the window, was the last.
                if not old or len(batch) < limit or batch[-1].created_at >= cutoff:
                    break
        return released

    async def take_over(self) -> int:
        """This replica became the leader: send what it held that the old leader did not.

        The old leader's deliveries are read from the shared log (a ConfigMap); without one,
        everything held within ``held_window_s`` is sent (repeats are possible, losses not).
        What is left is read back through each receiver's queue, oldest first, as it drains.
        """
        dispatcher = self._attached()
        sent: Mapping[str, datetime] = {}
        if self._shared_log is not None:
            try:
                sent = await self._shared_log.load()
            except Exception:  # noqa: BLE001 - take over anyway; repeats beat losses
                self._log.exception("shared_log_unreadable")
        # From this read on, a new notification is queued behind what it finds (no await
        # until ``backlog`` below registered the read-back of each receiver's backlog).
        self._sending = True
        held = [
            item
            for item in self._store.outbox_pending(limit=TAKE_OVER_LIMIT)
            if item.id not in dispatcher.outbox_ids(item.receiver)
            and item.id not in self._finishing
        ]
        queued = 0
        receivers: set[str] = set()
        delivered: list[int] = []
        now = self._clock.now()
        for item in held:
            if item.receiver not in dispatcher.sinks:
                continue  # resume() warned about it; left in the outbox
            n = item.notification
            remaining = tuple(
                e for e in n.events if entry_key(n.receiver, n.status, fingerprint(e)) not in sent
            )
            if not remaining:
                delivered.append(item.id)
                continue
            if len(remaining) != len(n.events):
                self._narrowed[item.id] = dataclasses.replace(n, events=remaining)
            receivers.add(item.receiver)
            queued += 1
        # Marked finishing before anything is read back, so no refill queues one of them while
        # its "done" commits off the loop (the store still says pending until then).
        finishing = self._finish(delivered, now)
        try:
            for receiver in sorted(receivers):
                dispatcher.backlog(receiver)
        finally:
            await finishing
        self._log.info("leadership_taken_over", held=len(held), queued=queued)
        return queued

    async def resume(self) -> int:
        """Pick up what the outbox holds from before a restart; returns how many items.

        On the leader each receiver's pending items are read back in order: as many as its
        queue holds now, the rest as it drains. On a standby they stay in the outbox, held.
        """
        dispatcher = self._attached()
        depths = self._store.outbox_depths()
        for receiver, pending in depths.items():
            if receiver not in dispatcher.sinks:
                self._log.warning(
                    "outbox_receiver_unconfigured",
                    receiver=receiver,
                    pending=pending,
                    detail="no such receiver in the configuration: left in the outbox",
                )
        self._sending = self._is_leader()
        if self._sending:
            for receiver in depths:
                if receiver in dispatcher.sinks:
                    dispatcher.backlog(receiver)
        else:
            await self.release_held()
        count = sum(depths.values())
        if count:
            self._log.info("outbox_resumed", notifications=count, held=not self._is_leader())
        return count

    async def retried(self, item: int) -> None:
        """An operator put dead letter ``item`` back to pending (``canarywatch outbox retry``):
        hand it to its receiver now rather than at the next start (the control API's hook).

        It is read back through the receiver's backlog, so it is queued at once if the queue has
        room, else as the queue drains, in outbox order. On a standby, or for a receiver no
        longer configured, it stays pending in the outbox."""
        dispatcher = self._attached()
        found = self._store.outbox_item(item)
        if found is None or not self._is_leader() or found.receiver not in dispatcher.sinks:
            return
        dispatcher.backlog(found.receiver)

    def receiver_added(self, receiver: str) -> None:
        """A reload configured ``receiver``: on the leader, read back what the outbox holds for
        it (left by an earlier receiver of that name, or by an earlier run)."""
        dispatcher = self._attached()
        if not self._is_leader() or receiver not in dispatcher.sinks:
            return
        if self._store.outbox_depth(receiver):
            dispatcher.backlog(receiver)

    async def _queue(self, n: Notification, item: int) -> None:
        # Spilled (``False``) it stays pending in the outbox, and ``refill`` reads it back in
        # order once the receiver's queue has room.
        await self._attached().submit(n, outbox_id=item)

    def refill(self, receiver: str, room: int) -> list[Envelope]:
        """The dispatcher's ``refill``: at most ``room`` of ``receiver``'s pending outbox items
        that are not queued, in flight or finishing already, oldest first. None on a standby."""
        if room < 1 or not self._is_leader():
            return []
        self._refills += 1
        skip = self._attached().outbox_ids(receiver) | self._finishing
        limit = room + len(skip)
        while True:
            pending = self._store.outbox_pending(receiver, limit=limit)
            fresh = [item for item in pending if item.id not in skip][:room]
            # Fewer than asked but a full page: some ids in memory are no longer pending (an
            # operator dropped them); read further rather than report "no more" too early.
            if len(fresh) == room or len(pending) < limit:
                break
            limit *= 2
        return [Envelope(self._narrowed.pop(item.id, item.notification), item.id) for item in fresh]

    async def on_delivered(self, envelope: Envelope, outcome: DeliveryOutcome) -> None:
        """The dispatcher's ``on_delivered`` hook: record success, or dead-letter a failure, on
        the outbox item the envelope names (none: not from the outbox, nothing to record)."""
        n, item = envelope.notification, envelope.outbox_id
        if item is None:
            return
        if self._explain is not None:
            if outcome.ok:
                self._explain.delivered(n, outcome, self._clock.now())
            else:
                self._explain.dead_lettered(n, outcome, self._clock.now(), outbox_id=item)
        if outcome.ok:
            now = self._clock.now()
            await self._store.outbox_done_async(item, now)
            self.firing.delivered(n)
            if self._shared_log is not None:
                try:
                    await self._shared_log.record(
                        n.receiver, n.status, [fingerprint(e) for e in n.events], now
                    )
                except Exception:  # noqa: BLE001 - the delivery happened; a standby may repeat it
                    self._metrics.state_errors.inc()
                    self._log.exception("shared_log_write_failed", receiver=n.receiver)
            return
        reason = outcome.reason.value if outcome.reason is not None else "error"
        error = outcome.detail or reason  # in plain words, for ``canarywatch outbox list``
        if outcome.attempts:  # the last attempt (a render failure made none)
            await self._store.outbox_attempted_async(item, error)
        await self._store.outbox_dead_async(item, error)
        self._log.error(
            "notification_dead_lettered",
            receiver=n.receiver,
            group_key=n.group_key,
            outbox_id=item,
            reason=reason,
            detail=error,
        )

    async def retrying(
        self, envelope: Envelope, attempt: int, error: str, next_attempt_at: datetime
    ) -> None:
        """The dispatcher's ``on_retrying``: record attempt number ``attempt`` of the outbox item
        the envelope names as failed, with why (``error``, in plain words) and when the next one
        is due, so ``canarywatch outbox list`` shows a retry streak while it goes on. One small
        write per failed attempt (durable off the event loop before the backoff starts), none for
        a success; a notification not from the outbox is skipped."""
        if envelope.outbox_id is not None:
            await self._store.outbox_attempted_async(
                envelope.outbox_id, error, next_attempt_at=next_attempt_at
            )

    async def update_gauges(self, receivers: list[str]) -> None:
        """The outbox gauges, per receiver. On the leader pending items are the backlog
        (``outbox_depth``, ``outbox_oldest_age_seconds``); on a standby they are held
        (``outbox_held``, after letting go of those past the held window) and the backlog
        gauges read 0, so an idle standby does not look like a stuck delivery."""
        now = self._clock.now()
        leader = self._is_leader()
        if not leader:
            await self.release_held()
        for receiver in receivers:
            depth = self._store.outbox_depth(receiver)
            if leader:
                age = self._store.outbox_oldest_age_s(receiver, now)
                self._metrics.outbox_depth.labels(sink=receiver).set(depth)
                self._metrics.outbox_oldest_age.labels(sink=receiver).set(age or 0.0)
                self._metrics.outbox_held.labels(sink=receiver).set(0)
            else:
                self._metrics.outbox_depth.labels(sink=receiver).set(0)
                self._metrics.outbox_oldest_age.labels(sink=receiver).set(0)
                self._metrics.outbox_held.labels(sink=receiver).set(depth)
