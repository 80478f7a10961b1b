"""Time, behind one interface: nothing else in canarywatch reads the wall clock.

``SystemClock`` is the real one. ``VirtualClock`` is driven by ``replay`` and the tests: its time
only moves when told to, and ``sleep_until`` waiters wake as it passes their deadline, so an
hour-long rollout replays in milliseconds and group timers fire deterministically.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once ``now() >= deadline``."""
        ...


class SystemClock:
    """Wall-clock time; sleeps on the event loop."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime) -> None:
        delay = (deadline - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class VirtualClock:
    """Time that advances only through ``advance_to``/``advance_by``."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._now = start
        self._seq = itertools.count()
        self._waiters: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    def advance_to(self, when: datetime) -> None:
        """Move time forward (never backward) and wake every waiter now due."""
        if when > self._now:
            self._now = when
        while self._waiters and self._waiters[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)

    def advance_by(self, seconds: float) -> None:
        from datetime import timedelta

        self.advance_to(self._now + timedelta(seconds=seconds))

    def next_wakeup(self) -> datetime | None:
        """The earliest deadline a ``sleep_until`` caller is waiting for."""
        live = [w for w in self._waiters if not w[2].done()]
        return min((w[0] for w in live), default=None)

    async def sleep_until(self, deadline: datetime) -> None:
        if deadline <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (deadline, next(self._seq), fut))
        await fut
