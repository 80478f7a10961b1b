"""Durable delivery: the notification log and the outbox around the dispatcher.

Between the pipeline and the sinks, every notification goes through three steps:

1. **dedup** against the notification log: events this receiver was already sent (with this
   status) are dropped, so a restart, a relist or a replayed outbox never repeats a message;
2. **outbox**: the notification is written to the state store *before* it is queued, so a
   ``kill -9`` between "accepted" and "delivered" loses nothing: ``resume()`` re-queues it on
   start;
3. **record after success**: when the sink acknowledges, the outbox item is marked done and the
   notification log records it, in one transaction. A delivery that fails for good (not
   retryable, or past the dispatcher's retry budget) goes to the dead-letter table, where
   ``canarywatch outbox list|retry|drop`` finds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

import structlog

from canarywatch.clock import Clock
from canarywatch.dispatch import Dispatcher
from canarywatch.identity import fingerprint
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryOutcome, Notification, NotificationStatus
from canarywatch.state import StateStore
from canarywatch.state.configmap import ConfigMapNotificationLog, entry_key


class FiringTracker:
    """Per receiver, the delivered notifications whose conditions still fire.

    Sinks that keep state on the far side (Alertmanager: an alert expires at ``endsAt``) need
    the still-firing set re-pushed on a heartbeat; a resolved notification removes its events.
    """

    def __init__(self) -> None:
        self._firing: dict[str, dict[str, Notification]] = {}

    def delivered(self, n: Notification) -> None:
        per = self._firing.setdefault(n.receiver, {})
        for event in n.events:
            key = fingerprint(event)
            if n.status is NotificationStatus.RESOLVED:
                per.pop(key, None)
            elif event.spec.opens is not None:
                per[key] = dataclasses.replace(n, events=(event,))

    def firing(self, receiver: str) -> list[Notification]:
        return list(self._firing.get(receiver, {}).values())


class DurableDelivery:
    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        metrics: Metrics,
        log: structlog.typing.FilteringBoundLogger,
        is_leader: Callable[[], bool] = lambda: True,
        shared_log: ConfigMapNotificationLog | None = None,
        held_window_s: float = 600.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._log = log.bind(component="delivery")
        self._is_leader = is_leader
        self._outbox_ids: dict[int, int] = {}
        self.firing = FiringTracker()
        self._shared_log = shared_log
        self._held: list[tuple[int, Notification]] = []
        self._held_window = timedelta(seconds=held_window_s)
        self.dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def accept(self, n: Notification) -> None:
        """Take a notification from the pipeline: dedup, persist, queue."""
        if n.repeat:  # a repeat_interval re-send: the log has these events, by design
            item = self._store.outbox_put(n.receiver, n, self._clock.now())
            await self._queue_or_hold(n, item)
            return
        fresh = tuple(
            e for e in n.events if self._store.sent(n.receiver, fingerprint(e), n.status) is None
        )
        if not fresh:
            self._metrics.events_suppressed.labels(reason="duplicate").inc(len(n.events))
            self._log.debug("notification_deduplicated", receiver=n.receiver, group_key=n.group_key)
            return
        if len(fresh) != len(n.events):
            self._metrics.events_suppressed.labels(reason="duplicate").inc(
                len(n.events) - len(fresh)
            )
            n = dataclasses.replace(n, events=fresh)
        item = self._store.outbox_put(n.receiver, n, self._clock.now())
        await self._queue_or_hold(n, item)

    async def _queue_or_hold(self, n: Notification, item: int) -> None:
        if self._is_leader():
            await self._queue(n, item)
            return
        # A standby keeps what it would have sent, in case the leader dies before sending it.
        self._held.append((item, n))
        cutoff = self._clock.now() - self._held_window
        while self._held and self._held[0][1].created_at < cutoff:
            old, _ = self._held.pop(0)
            self._store.outbox_done(old, self._clock.now())  # long handled by the leader

    async def take_over(self) -> int:
        """This replica became the leader: send what it held that the old leader did not.

        The old leader's deliveries are read from the shared log (a ConfigMap); without one,
        everything held within ``held_window_s`` is sent (repeats are possible, losses not).
        """
        sent: Mapping[str, datetime] = {}
        if self._shared_log is not None:
            try:
                sent = await self._shared_log.load()
            except Exception:  # noqa: BLE001 - take over anyway; repeats beat losses
                self._log.exception("shared_log_unreadable")
        held, self._held = self._held, []
        queued = 0
        for item, n in held:
            remaining = tuple(
                e for e in n.events if entry_key(n.receiver, n.status, fingerprint(e)) not in sent
            )
            if not remaining:
                self._store.outbox_done(item, self._clock.now())
                continue
            await self._queue(dataclasses.replace(n, events=remaining), item)
            queued += 1
        self._log.info("leadership_taken_over", held=len(held), queued=queued)
        return queued

    async def resume(self) -> int:
        """Re-queue (or, on a standby, hold) what the outbox holds from before a restart."""
        count = 0
        for item in self._store.outbox_pending(limit=100_000):
            await self._queue_or_hold(item.notification, item.id)
            count += 1
        if count:
            self._log.info("outbox_resumed", notifications=count)
        return count

    async def _queue(self, n: Notification, item: int) -> None:
        assert self.dispatcher is not None, "attach() a dispatcher before accepting"  # noqa: S101
        self._outbox_ids[id(n)] = item
        await self.dispatcher.submit(n)

    async def on_delivered(self, n: Notification, outcome: DeliveryOutcome) -> None:
        """The dispatcher's ``on_delivered`` hook: record success, or dead-letter a failure."""
        item = self._outbox_ids.pop(id(n), None)
        if item is None:
            return
        if outcome.ok:
            now = self._clock.now()
            self._store.outbox_done(item, now)
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
        self._store.outbox_attempted(item, reason)
        self._store.outbox_dead(item, reason)
        self._log.error(
            "notification_dead_lettered",
            receiver=n.receiver,
            group_key=n.group_key,
            outbox_id=item,
            reason=reason,
        )

    def update_gauges(self, receivers: list[str]) -> None:
        now = self._clock.now()
        for receiver in receivers:
            self._metrics.outbox_depth.labels(sink=receiver).set(self._store.outbox_depth(receiver))
            age = self._store.outbox_oldest_age_s(receiver, now)
            self._metrics.outbox_oldest_age.labels(sink=receiver).set(age or 0.0)
