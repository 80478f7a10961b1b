"""Periodic upkeep of delivery's state: the outbox gauges, and retention of what is done.

The outbox gauges (depth, oldest age, held) are read from the store every ``GAUGE_INTERVAL_S``
rather than kept up to date on each write; finished records older than ``state.retention`` are
deleted every ``GC_EVERY`` rounds. Both sleep on the injected clock; the writes (a standby's
release of old held items, retention) are awaited off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Final

import structlog

from canarywatch.clock import Clock
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.metrics import Metrics
from canarywatch.state import StateError, StateStore

GAUGE_INTERVAL_S: Final = 5.0
GC_EVERY: Final = 120
"""Rounds between two retention passes (ten minutes); the first round does one."""


async def housekeeping_loop(
    delivery: DurableDelivery,
    state: StateStore,
    receivers: Mapping[str, object],
    *,
    clock: Clock,
    metrics: Metrics,
    retention_s: Callable[[], float],
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Gauges every ``GAUGE_INTERVAL_S``; state retention every ``GC_EVERY`` rounds. A store
    that cannot be written is counted and logged, and the next round tries again.

    ``receivers`` is read at each round (a reload adds and removes them) and so is
    ``retention_s`` (``state.retention`` is reloadable). Never returns."""
    tick = 0
    while True:
        try:
            await delivery.update_gauges(list(receivers))
            if tick % GC_EVERY == 0:
                removed = await state.gc_async(clock.now(), retention_s=retention_s())
                if removed:
                    log.info("state_compacted", rows=removed)
        except StateError:
            metrics.state_errors.inc()
            log.exception("state_maintenance_failed")
        tick += 1
        await clock.sleep_until(clock.now() + timedelta(seconds=GAUGE_INTERVAL_S))
