"""The still-firing set and the heartbeat that re-pushes it, on virtual time.

Issue 14: the heartbeat slept on ``asyncio.sleep``, not on the injected clock, so a test (or a
replay) on a ``VirtualClock`` never saw it fire, and a real one had to wait the interval out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.firing import FiringTracker, has_heartbeat, heartbeat_loop
from canarywatch.model import DeliveryReason, Notification, NotificationStatus, Transition
from canarywatch.sinks import DeliveryError
from canarywatch.testing import T0, RecordingSink, make_event, make_notification

RECEIVER = "alerts"


class HeartbeatSink(RecordingSink):
    """A sink whose far side expires what it was sent (as Alertmanager's does)."""

    resend_interval_s = 30.0

    def __init__(self) -> None:
        super().__init__("heartbeat")
        self.pushes: list[tuple[datetime, list[Notification]]] = []
        self.failing = False

    async def heartbeat(self, firing: Sequence[Notification], now: datetime) -> None:
        if self.failing:
            raise DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=503)
        self.pushes.append((now, list(firing)))


def firing_rollback() -> FiringTracker:
    firing = FiringTracker()
    firing.delivered(make_notification(make_event(Transition.ROLLED_BACK), receiver=RECEIVER))
    return firing


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def start(
    sink: HeartbeatSink,
    firing: FiringTracker,
    clock: VirtualClock,
    *,
    is_leader: Callable[[], bool] = lambda: True,
) -> asyncio.Task[None]:
    return asyncio.create_task(
        heartbeat_loop(
            RECEIVER,
            sink,
            firing,
            clock=clock,
            is_leader=is_leader,
            attempt_timeout_s=lambda: 5.0,
            log=structlog.get_logger(),
        )
    )


def test_the_firing_set_keeps_what_opens_a_condition_until_it_is_resolved() -> None:
    firing = FiringTracker()
    rollback = make_event(Transition.ROLLED_BACK)
    firing.delivered(make_notification(rollback, receiver=RECEIVER))
    firing.delivered(make_notification(make_event(Transition.PROMOTED), receiver=RECEIVER))
    assert [n.events for n in firing.firing(RECEIVER)] == [(rollback,)]
    assert firing.firing("elsewhere") == []
    firing.delivered(
        make_notification(rollback, receiver=RECEIVER, status=NotificationStatus.RESOLVED)
    )
    assert firing.firing(RECEIVER) == []


def test_only_a_sink_with_a_heartbeat_gets_one() -> None:
    assert has_heartbeat(HeartbeatSink())
    assert not has_heartbeat(RecordingSink())


async def test_the_heartbeat_fires_at_its_interval_on_the_clock() -> None:
    clock = VirtualClock(T0)
    sink = HeartbeatSink()
    task = start(sink, firing_rollback(), clock)
    try:
        await settle()
        clock.advance_by(29)
        await settle()
        assert sink.pushes == []  # not before the interval
        clock.advance_by(1)
        await settle()
        assert [at for at, _ in sink.pushes] == [clock.now()]
        assert [n.events[0].transition for n in sink.pushes[0][1]] == [Transition.ROLLED_BACK]
        clock.advance_by(30)
        await settle()
        assert len(sink.pushes) == 2
    finally:
        task.cancel()


async def test_a_standby_and_a_receiver_with_nothing_firing_push_nothing() -> None:
    clock = VirtualClock(T0)
    standby, idle = HeartbeatSink(), HeartbeatSink()
    tasks = [
        start(standby, firing_rollback(), clock, is_leader=lambda: False),
        start(idle, FiringTracker(), clock),
    ]
    try:
        for _ in range(3):
            await settle()
            clock.advance_by(30)
        await settle()
        assert standby.pushes == idle.pushes == []
    finally:
        for task in tasks:
            task.cancel()


async def test_a_failed_push_is_logged_and_the_next_interval_tries_again() -> None:
    clock = VirtualClock(T0)
    sink = HeartbeatSink()
    sink.failing = True
    task = start(sink, firing_rollback(), clock)
    try:
        with capture_logs() as logs:
            await settle()
            clock.advance_by(30)
            await settle()
        assert [e["event"] for e in logs] == ["heartbeat_failed"]
        assert logs[0]["receiver"] == RECEIVER
        sink.failing = False
        clock.advance_by(30)
        await settle()
        assert len(sink.pushes) == 1
        assert not task.done()
    finally:
        task.cancel()
