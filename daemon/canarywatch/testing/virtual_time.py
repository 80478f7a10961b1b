"""``run_in_virtual_time``: await something while moving a ``VirtualClock`` to each deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from canarywatch.clock import VirtualClock

__all__ = ["run_in_virtual_time"]

T = TypeVar("T")


async def run_in_virtual_time(
    clock: VirtualClock, aw: Awaitable[T], *, max_steps: int = 100_000
) -> T:
    """Await ``aw``, advancing ``clock`` to the next ``sleep_until`` deadline whenever the loop
    has nothing else to do. Real waits (I/O, ``asyncio.timeout``) still take real time."""
    task = asyncio.ensure_future(aw)
    for _ in range(max_steps):
        if task.done():
            return task.result()
        await asyncio.sleep(0)
        if task.done():
            return task.result()
        wakeup = clock.next_wakeup()
        if wakeup is not None:
            clock.advance_to(wakeup)
        else:
            await asyncio.sleep(0.001)
    task.cancel()
    raise TimeoutError(f"not done after {max_steps} steps")
