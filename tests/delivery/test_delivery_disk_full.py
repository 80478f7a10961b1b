"""Durable delivery while the state disk is full (``HoldingStateStore`` under ``DurableDelivery``).

What was already durable keeps being delivered, its "done" record held, and is never repeated
while the process lives; what could not be written is held and not delivered until it has been
written; when there is room, the held ones go out in order, exactly once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry
from tests.support.small_disk import KINDS, SmallDisk, small_disk

from canarywatch.clock import SystemClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.identity import fingerprint
from canarywatch.metrics import Metrics
from canarywatch.model import Notification, NotificationStatus, Transition
from canarywatch.state import HoldingStateStore
from canarywatch.testing import RecordingSink, make_event, make_notification

RECEIVER = "oncall"


@pytest.fixture(params=KINDS)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(request.param, tmp_path) as d:
        yield d


def notifications(count: int) -> list[Notification]:
    """``count`` notifications for different canaries, each bigger than a database page (so
    writing one needs room on either kind of small disk)."""
    start = SystemClock().now()
    return [
        make_notification(
            make_event(
                Transition.ROLLED_BACK,
                canary=f"ns/app-{i}",
                at=start + timedelta(milliseconds=i),
                message="x" * 6000,
            ),
            receiver=RECEIVER,
        )
        for i in range(count)
    ]


async def test_full_disk_holds_new_notifications_and_delivers_each_once_in_order(
    disk: SmallDisk,
) -> None:
    clock = SystemClock()
    log = structlog.get_logger()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    inner = disk.store(clock)
    store = HoldingStateStore(inner, clock=clock, log=log, retry_initial_s=0.05, retry_max_s=0.1)
    sink = RecordingSink(clock=clock)
    delivery = DurableDelivery(store, clock=clock, metrics=metrics, log=log)
    dispatcher = Dispatcher(
        {RECEIVER: sink},
        clock=clock,
        metrics=metrics,
        log=log,
        rng=random.Random(1),
        queue_size=2,
        on_delivered=delivery.on_delivered,
        refill=delivery.refill,
    )
    delivery.attach(dispatcher)
    store.on_written = delivery.written
    ns = notifications(6)

    async with dispatcher:
        retries = asyncio.create_task(store.run(), name="state")
        try:
            sink.pause()
            # Durable: two queued, one spilled to the outbox (one batch, so the dispatcher does
            # not start on the first while the next are committed off the event loop).
            await delivery.accept_batch(ns[:3])
            disk.fill()
            for n in ns[3:]:  # not durable: held, not queued
                await delivery.accept(n)
            assert store.held_notifications == 3
            assert dispatcher.pending() <= 2

            # Delivering what was durable goes on; its records are held.
            sink.resume()
            async with asyncio.timeout(10):
                await sink.wait_for(3)
            await asyncio.sleep(0.3)
            assert sink.payloads == [sink.render(n) for n in ns[:3]]
            assert store.holding
            assert store.held("outbox") == 3
            # The same events again (a relist, another source): the held records answer.
            await delivery.accept(ns[0])
            await asyncio.sleep(0.1)
            assert len(sink.payloads) == 3
            suppressed = registry.get_sample_value(
                "canarywatch_events_suppressed_total", {"reason": "duplicate"}
            )
            assert suppressed == 1

            disk.free()
            async with asyncio.timeout(10):
                await sink.wait_for(6)
                while store.holding:
                    await asyncio.sleep(0.02)
            assert await dispatcher.drain(5) == 0
        finally:
            retries.cancel()
            await asyncio.gather(retries, return_exceptions=True)

    assert sink.payloads == [sink.render(n) for n in ns]
    assert inner.outbox_depth(RECEIVER) == 0
    for n in ns:
        fp = fingerprint(n.events[0])
        assert inner.sent(RECEIVER, fp, NotificationStatus.FIRING) is not None
    store.close()
