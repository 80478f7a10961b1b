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
from collections.abc import Callable

import structlog

from canarywatch.clock import Clock
from canarywatch.dispatch import Dispatcher
from canarywatch.identity import fingerprint
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryOutcome, Notification
from canarywatch.state import StateStore


class DurableDelivery:
    def __init__(
        self,
        store: StateStore,
        *,
        clock: Clock,
        metrics: Metrics,
        log: structlog.typing.FilteringBoundLogger,
        is_leader: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._log = log.bind(component="delivery")
        self._is_leader = is_leader
        self._outbox_ids: dict[int, int] = {}
        self.dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    async def accept(self, n: Notification) -> None:
        """Take a notification from the pipeline: dedup, persist, queue."""
        fresh = tuple(
            e
            for e in n.events
            if self._store.sent(n.receiver, fingerprint(e), n.status) is None
        )
        if not fresh:
            self._metrics.events_suppressed.labels(reason="duplicate").inc(len(n.events))
            self._log.debug(
                "notification_deduplicated", receiver=n.receiver, group_key=n.group_key
            )
            return
        if len(fresh) != len(n.events):
            self._metrics.events_suppressed.labels(reason="duplicate").inc(
                len(n.events) - len(fresh)
            )
            n = dataclasses.replace(n, events=fresh)
        item = self._store.outbox_put(n.receiver, n, self._clock.now())
        await self._queue(n, item)

    async def resume(self) -> int:
        """Re-queue what the outbox holds from before a restart; returns how many."""
        count = 0
        for item in self._store.outbox_pending(limit=100_000):
            await self._queue(item.notification, item.id)
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
            self._store.outbox_done(item, self._clock.now())
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
            self._metrics.outbox_depth.labels(sink=receiver).set(
                self._store.outbox_depth(receiver)
            )
            age = self._store.outbox_oldest_age_s(receiver, now)
            self._metrics.outbox_oldest_age.labels(sink=receiver).set(age or 0.0)
