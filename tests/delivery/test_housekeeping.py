"""Delivery's periodic upkeep (outbox gauges, state retention) runs on the injected clock.

Issue 14: the loop slept on ``asyncio.sleep``; on a ``VirtualClock`` it never ran again.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.housekeeping import GAUGE_INTERVAL_S, GC_EVERY, housekeeping_loop
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.metrics import Metrics
from canarywatch.state import MemoryStateStore, StateError
from canarywatch.testing import T0


class CountingStore(MemoryStateStore):
    """Counts retention passes; can be made to fail them."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock=clock)
        self.passes: list[tuple[datetime, float]] = []
        self.failing = False

    def gc(self, now: datetime, *, retention_s: float) -> int:
        if self.failing:
            raise StateError("disk full")
        self.passes.append((now, retention_s))
        return super().gc(now, retention_s=retention_s)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_gauges_every_interval_and_retention_every_gc_rounds_on_the_clock() -> None:
    clock = VirtualClock(T0)
    store = CountingStore(clock)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    delivery = DurableDelivery(store, clock=clock, metrics=metrics, log=structlog.get_logger())
    retention = [3600.0]
    task = asyncio.create_task(
        housekeeping_loop(
            delivery,
            store,
            {"oncall": object()},
            clock=clock,
            metrics=metrics,
            retention_s=lambda: retention[0],
            log=structlog.get_logger(),
        )
    )
    try:
        await settle()
        assert store.passes == [(T0, 3600.0)]  # the first round does one
        assert registry.get_sample_value("canarywatch_outbox_depth", {"sink": "oncall"}) == 0
        retention[0] = 60.0  # a reload changed state.retention
        for _ in range(GC_EVERY - 1):
            clock.advance_by(GAUGE_INTERVAL_S)
            await settle()
        assert len(store.passes) == 1
        store.failing = True
        with capture_logs() as logs:
            clock.advance_by(GAUGE_INTERVAL_S)
            await settle()
        assert [e["event"] for e in logs] == ["state_maintenance_failed"]
        assert registry.get_sample_value("canarywatch_state_store_errors_total") == 1
        store.failing = False
        for _ in range(GC_EVERY):
            clock.advance_by(GAUGE_INTERVAL_S)
            await settle()
        assert store.passes[1:] == [(clock.now(), 60.0)]
        assert not task.done()
    finally:
        task.cancel()
