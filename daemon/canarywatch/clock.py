"""Time, behind one interface: nothing else in canarywatch reads the wall clock.

``SystemClock`` is the real one. ``VirtualClock`` is driven by ``replay`` and the tests: its time
only moves when told to, and ``sleep_until`` waiters wake as it passes their deadline, so an
hour-long rollout replays in milliseconds and group timers fire deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Iterator
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
        self._off_loop = 0
        """Waits in progress for work in another thread (``waiting_off_loop``)."""

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

    @contextlib.contextmanager
    def waiting_off_loop(self) -> Iterator[None]:
        """Mark an await of work done in another thread (the state store's durable writes).

        Meanwhile ``next_wakeup`` says nothing is due, so a driver advancing to the next deadline
        whenever the loop is idle waits for the work instead: it takes no virtual time, as the
        same write done on the event loop did not.
        """
        self._off_loop += 1
        try:
            yield
        finally:
            self._off_loop -= 1

    def next_wakeup(self) -> datetime | None:
        """The earliest deadline a ``sleep_until`` caller is waiting for; ``None`` also while
        work in another thread is awaited (``waiting_off_loop``)."""
        if self._off_loop:
            return None
        live = [w for w in self._waiters if not w[2].done()]
        return min((w[0] for w in live), default=None)

    async def sleep_until(self, deadline: datetime) -> None:
        if deadline <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (deadline, next(self._seq), fut))
        await fut


def waiting_off_loop(clock: Clock) -> contextlib.AbstractContextManager[None]:
    """Wrap an await of work in another thread: on a ``VirtualClock`` no time passes meanwhile."""
    if isinstance(clock, VirtualClock):
        return clock.waiting_off_loop()
    return contextlib.nullcontext()
