"""Durable delivery: a standby's held notifications, takeover, the outbox gauges.

A leader-election standby delivers nothing; what it would have sent stays in its outbox, held
in case it takes over. That is not a backlog: the backlog gauges behind the
``CanarywatchOutboxBacklog`` alert must not count it, or an idle standby pages someone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.identity import fingerprint
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryReason, Notification, NotificationStatus, Transition
from canarywatch.sinks import DeliveryError
from canarywatch.state import MemoryStateStore
from canarywatch.state.configmap import entry_key
from canarywatch.testing import T0, RecordingSink, make_event, make_notification
from canarywatch.testing import run_in_virtual_time as in_virtual_time

RECEIVER = "oncall"
WINDOW_S = 600.0


class Replica:
    """One replica's delivery side: a memory store, the outbox, a dispatcher with a small queue,
    and a switch for whether it holds the lease."""

    def __init__(
        self,
        clock: VirtualClock,
        *,
        leader: bool,
        shared_log: FakeSharedLog | None = None,
        store: MemoryStateStore | None = None,
    ) -> None:
        self.leader = leader
        self.registry = CollectorRegistry()
        self.store = store if store is not None else MemoryStateStore(clock=clock)
        self.sink = RecordingSink(clock=clock)
        metrics = Metrics(self.registry)
        self.delivery = DurableDelivery(
            self.store,
            clock=clock,
            metrics=metrics,
            log=structlog.get_logger(),
            is_leader=lambda: self.leader,
            shared_log=shared_log,
            held_window_s=WINDOW_S,
        )
        self.dispatcher = Dispatcher(
            {RECEIVER: self.sink},
            clock=clock,
            metrics=metrics,
            log=structlog.get_logger(),
            rng=random.Random(5),
            queue_size=3,
            backoff_initial_s=1.0,
            on_delivered=self.delivery.on_delivered,
            refill=self.delivery.refill,
            on_retrying=self.delivery.retrying,
        )
        self.delivery.attach(self.dispatcher)

    def gauge(self, name: str) -> float | None:
        return self.registry.get_sample_value(name, {"sink": RECEIVER})

    async def gauges(self) -> tuple[float | None, float | None, float | None]:
        """``(outbox_depth, outbox_oldest_age_seconds, outbox_held)`` after an update."""
        await self.delivery.update_gauges([RECEIVER])
        return (
            self.gauge("canarywatch_outbox_depth"),
            self.gauge("canarywatch_outbox_oldest_age_seconds"),
            self.gauge("canarywatch_outbox_held"),
        )


class FakeSharedLog:
    """The ConfigMap notification log the leader writes and a new leader reads at takeover."""

    def __init__(self) -> None:
        self.entries: dict[str, datetime] = {}

    async def load(self) -> dict[str, datetime]:
        return dict(self.entries)

    async def record(
        self,
        receiver: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        for fp in fingerprints:
            self.entries[entry_key(receiver, status, fp)] = at


def notifications(count: int, *, start: datetime = T0) -> list[Notification]:
    """``count`` notifications for different canaries, one every 30 s from ``start``."""
    out = []
    for i in range(count):
        at = start + timedelta(seconds=30 * i)
        event = make_event(Transition.ROLLED_BACK, canary=f"ns/app-{i}", at=at)
        out.append(make_notification(event, receiver=RECEIVER))
    return out


async def accept_over_time(replica: Replica, clock: VirtualClock, ns: list[Notification]) -> None:
    """Accept each notification at its ``created_at`` (virtual time)."""
    for n in ns:
        clock.advance_to(n.created_at)
        await replica.delivery.accept(n)


async def test_an_idle_standby_holds_apart_from_the_backlog_and_lets_go_in_time() -> None:
    clock = VirtualClock(T0)
    standby = Replica(clock, leader=False)
    await accept_over_time(standby, clock, notifications(5))
    assert standby.sink.attempts == 0  # a standby delivers nothing
    assert standby.store.outbox_depth(RECEIVER) == 5  # but keeps all of it, in case
    assert await standby.gauges() == (0, 0, 5)

    # Idle for hours: no new notification arrives to trigger the old clean-up. The backlog
    # gauges stay 0 (no CanarywatchOutboxBacklog on a standby) and what is held is let go
    # once past the held window, so the held gauge is bounded too.
    clock.advance_by(WINDOW_S - 1)  # the newest is 599 s old, the others past the window
    assert await standby.gauges() == (0, 0, 1)
    clock.advance_by(3 * 3600)
    assert await standby.gauges() == (0, 0, 0)
    assert standby.store.outbox_depth(RECEIVER) == 0


async def test_the_leader_reports_its_backlog_and_holds_nothing() -> None:
    clock = VirtualClock(T0)
    leader = Replica(clock, leader=True)
    leader.sink.pause()
    await accept_over_time(leader, clock, notifications(4))
    clock.advance_by(700)
    depth, age, held = await leader.gauges()
    assert (depth, held) == (4, 0)
    assert age == 700 + 3 * 30  # the oldest was accepted 90 s before the newest


async def test_take_over_sends_what_was_held_in_order_through_a_small_queue() -> None:
    """Twelve held notifications, a queue of three: the new leader sends every one the old
    leader did not, exactly once, oldest first, narrowed to the events still unsent."""
    clock = VirtualClock(T0)
    shared = FakeSharedLog()
    standby = Replica(clock, leader=False, shared_log=shared)
    ns = notifications(12)
    pair = (
        make_event(Transition.HALTED, canary="ns/pair", at=ns[2].created_at),
        make_event(Transition.NO_TRAFFIC, canary="ns/pair", at=ns[2].created_at),
    )
    ns[2] = make_notification(*pair, receiver=RECEIVER)
    await accept_over_time(standby, clock, ns)  # all within the held window
    assert standby.store.outbox_depth(RECEIVER) == 12
    # The old leader delivered the first two and half of the third before it died.
    for n in ns[:2]:
        await shared.record(RECEIVER, n.status, [fingerprint(e) for e in n.events], T0)
    await shared.record(RECEIVER, NotificationStatus.FIRING, [fingerprint(pair[0])], T0)

    standby.leader = True
    with capture_logs() as logs:

        async def scenario() -> int:
            async with standby.dispatcher:
                queued = await standby.delivery.take_over()
                assert standby.dispatcher.pending() <= 3
                assert await standby.dispatcher.drain(10) == 0
                return queued

        queued = await asyncio.wait_for(in_virtual_time(clock, scenario()), 30)

    assert queued == 10
    narrowed = dataclasses.replace(ns[2], events=(pair[1],))
    want = [standby.sink.render(n) for n in [narrowed, *ns[3:]]]
    assert standby.sink.payloads == want
    assert standby.store.outbox_depth(RECEIVER) == 0
    assert [e for e in logs if e["event"] == "notification_dropped"] == []
    assert await standby.gauges() == (0, 0, 0)
    overflow = standby.registry.get_sample_value(
        "canarywatch_events_dropped_total", {"stage": "dispatch", "reason": "overflow"}
    )
    assert overflow == 0


async def test_a_leader_resumes_more_than_its_queue_holds_after_a_restart() -> None:
    clock = VirtualClock(T0)
    before = Replica(clock, leader=True)
    before.sink.pause()
    ns = notifications(10)
    await accept_over_time(before, clock, ns)
    assert before.store.outbox_depth(RECEIVER) == 10

    after = Replica(clock, leader=True, store=before.store)  # restarted on the same state
    resumed = await after.delivery.resume()
    assert resumed == 10
    assert after.dispatcher.pending() == 3  # what fits; the rest as the queue drains
    async with after.dispatcher:
        assert await asyncio.wait_for(after.dispatcher.drain(10), 30) == 0
    assert after.sink.payloads == [after.sink.render(n) for n in ns]
    assert after.store.outbox_depth(RECEIVER) == 0


async def test_an_outbox_retry_is_delivered_at_once_not_at_the_next_start() -> None:
    clock = VirtualClock(T0)
    leader = Replica(clock, leader=True)
    leader.sink.fail_next(1, DeliveryError(DeliveryReason.HTTP_4XX, retryable=False))
    (n,) = notifications(1)
    async with leader.dispatcher:
        await leader.delivery.accept(n)
        assert await asyncio.wait_for(leader.dispatcher.drain(10), 30) == 0
        (dead,) = leader.store.outbox_dead_letters()
        assert leader.sink.payloads == []
        # What the control API does for `canarywatch outbox retry <id>`:
        assert leader.store.outbox_retry(dead.id)
        await leader.delivery.retried(dead.id)
        await asyncio.wait_for(leader.sink.wait_for(1), 10)
        assert await asyncio.wait_for(leader.dispatcher.drain(10), 30) == 0
    assert leader.sink.payloads == [leader.sink.render(n)]
    assert leader.store.outbox_depth(RECEIVER) == 0
    assert leader.store.outbox_dead_letters() == []


async def test_an_event_already_pending_in_the_outbox_is_not_accepted_again() -> None:
    """Issue 12: after a crash the next start derives some transitions again while their first
    notification still waits in the outbox (the sink was down). Acceptance checks the pending
    and dead outbox items as well as the notification log: the same event is not queued twice,
    a new event of the same group is."""
    clock = VirtualClock(T0)
    store = MemoryStateStore(clock=clock)
    first = make_event(Transition.ROLLED_BACK, canary="shop/a", at=T0)
    store.outbox_put(RECEIVER, make_notification(first, receiver=RECEIVER), T0)
    replica = Replica(clock, leader=True, store=store)
    again = make_notification(first, receiver=RECEIVER)
    await replica.delivery.accept(again)
    assert store.outbox_depth(RECEIVER) == 1
    other = make_event(Transition.HALTED, canary="shop/a", at=T0)
    await replica.delivery.accept_batch([make_notification(first, other, receiver=RECEIVER), again])
    pending = store.outbox_pending(RECEIVER)
    assert [len(item.notification.events) for item in pending] == [1, 1]
    assert pending[1].notification.events == (other,)
    suppressed = replica.registry.get_sample_value(
        "canarywatch_events_suppressed_total", {"reason": "duplicate"}
    )
    assert suppressed == 3


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_retry_streak_shows_in_the_outbox_while_it_goes_on() -> None:
    """Issue 15: ``outbox list`` showed ``ATTEMPTS 0`` and no error while retries climbed. Each
    failed attempt is recorded on the pending item as it happens: the count, why (in plain
    words) and when the next attempt is due; the dead letter keeps the count and the reason."""
    clock = VirtualClock(T0)
    leader = Replica(clock, leader=True)
    leader.sink.fail_next(2)  # two 503s, then it answers
    (n,) = notifications(1)

    def attempts() -> int:
        return sum(item.attempts for item in leader.store.outbox_pending())

    async with leader.dispatcher:
        await leader.delivery.accept(n)
        await until(lambda: attempts() == 1)
        (item,) = leader.store.outbox_pending()
        assert item.last_error == "the destination failed (HTTP 503, retryable)"
        assert item.last_attempt_at == T0
        assert item.next_attempt_at is not None
        assert item.next_attempt_at == clock.next_wakeup()
        clock.advance_to(item.next_attempt_at)
        await until(lambda: attempts() == 2)
        (item,) = leader.store.outbox_pending()
        assert item.next_attempt_at is not None
        assert item.next_attempt_at == clock.next_wakeup()
        clock.advance_to(item.next_attempt_at)
        assert await asyncio.wait_for(leader.dispatcher.drain(10), 30) == 0
    assert leader.store.outbox_pending() == []
    assert leader.sink.payloads == [leader.sink.render(n)]

    refused = Replica(clock, leader=True)
    refused.sink.fail_next(2)
    refused.sink.fail_next(1, DeliveryError(DeliveryReason.HTTP_4XX, status_code=404))
    async with refused.dispatcher:
        await refused.delivery.accept(n)
        assert await asyncio.wait_for(in_virtual_time(clock, refused.dispatcher.drain(30)), 30) == 0
    (dead,) = refused.store.outbox_dead_letters()
    assert dead.attempts == 3
    assert dead.last_error == "the destination refused it (HTTP 404, not retryable)"
    assert dead.next_attempt_at is None


async def test_delivery_outcomes_are_recorded_in_the_decision_trail() -> None:
    """Issue 15: delivered when, dead-lettered why (and which outbox item), not sent again
    because the notification log has it: each in the transition's trail."""
    from canarywatch.views.explain import DecisionRecorder

    clock = VirtualClock(T0)
    store = MemoryStateStore(clock=clock)
    recorder = DecisionRecorder()
    metrics = Metrics(CollectorRegistry())
    delivery = DurableDelivery(
        store, clock=clock, metrics=metrics, log=structlog.get_logger(), explain=recorder
    )
    sink = RecordingSink(clock=clock)
    sink.fail_next(1, DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404))
    dispatcher = Dispatcher(
        {RECEIVER: sink},
        clock=clock,
        metrics=metrics,
        log=structlog.get_logger(),
        on_delivered=delivery.on_delivered,
        refill=delivery.refill,
    )
    delivery.attach(dispatcher)
    refused = make_event(Transition.ROLLED_BACK, canary="shop/a", rollout="1", episode=1)
    sent = make_event(Transition.PROMOTED, canary="shop/b", rollout="1")
    for event in (refused, sent):
        recorder.seen(event, T0)
    async with dispatcher:
        await delivery.accept_batch(
            [make_notification(e, receiver=RECEIVER) for e in (refused, sent)]
        )
        assert await asyncio.wait_for(dispatcher.drain(10), 30) == 0
        await delivery.accept(make_notification(sent, receiver=RECEIVER))  # a repeat: dropped
    (dead,) = store.outbox_dead_letters()

    [refused_trail] = recorder.trails("shop", "a")
    step = refused_trail.to_json()["steps"][-1]
    assert (step["stage"], step["reason"], step["outbox_id"]) == (
        "dead-lettered",
        "http_4xx",
        dead.id,
    )
    assert "the destination refused it (HTTP 404, not retryable)" in step["text"]
    assert refused_trail.receivers == {RECEIVER: "dead-lettered"}

    [sent_trail] = recorder.trails("shop", "b")
    stages = [s["stage"] for s in sent_trail.to_json()["steps"]]
    assert stages == ["seen", "delivered", "already-sent"]
    again = sent_trail.to_json()["steps"][-1]
    assert again["sent_at"] == "2025-01-02T14:08:02Z"
    assert sent_trail.receivers == {RECEIVER: "delivered"}


async def test_a_notification_accepted_between_election_and_take_over_waits_its_turn() -> None:
    """The fault matrix's ``leader_failover``: the killed leader restarts, its relist makes a
    new notification, and its write commits just after the lease is won but before
    ``take_over`` ran. Queued at once, it went out ahead of the older one the leader had left
    in its outbox; it must wait behind it."""
    clock = VirtualClock(T0)
    replica = Replica(clock, leader=False)
    older, newer = notifications(2)
    async with replica.dispatcher:
        await replica.delivery.resume()  # it starts as a standby
        clock.advance_to(older.created_at)
        await replica.delivery.accept(older)  # left by the run before the kill: held
        replica.leader = True  # elected; on_started_leading has not run take_over yet
        clock.advance_to(newer.created_at)
        await replica.delivery.accept(newer)
        assert replica.sink.payloads == []

        async def scenario() -> None:
            await replica.delivery.take_over()
            assert await replica.dispatcher.drain(10) == 0

        await asyncio.wait_for(in_virtual_time(clock, scenario()), 30)
    assert replica.sink.payloads == [replica.sink.render(n) for n in (older, newer)]
    assert replica.store.outbox_depth(RECEIVER) == 0
