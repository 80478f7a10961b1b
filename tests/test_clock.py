"""The virtual clock: no virtual time passes while the loop awaits work in another thread."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

from canarywatch.clock import SystemClock, VirtualClock, waiting_off_loop
from canarywatch.testing import T0, run_in_virtual_time


def test_nothing_is_due_while_off_loop_work_is_awaited() -> None:
    clock = VirtualClock(T0)

    async def scenario() -> None:
        sleeper = asyncio.ensure_future(clock.sleep_until(T0 + timedelta(seconds=5)))
        await asyncio.sleep(0)
        with waiting_off_loop(clock):
            assert clock.next_wakeup() is None
        assert clock.next_wakeup() == T0 + timedelta(seconds=5)
        sleeper.cancel()

    asyncio.run(scenario())


def test_a_thread_write_takes_no_virtual_time() -> None:
    """A driver that advances to the next deadline whenever the loop is idle must not take the
    wait for a writer thread for idleness (that made retries and timers fire minutes early)."""
    clock = VirtualClock(T0)
    release = threading.Event()

    async def durable_write() -> None:
        loop = asyncio.get_running_loop()
        with waiting_off_loop(clock):
            await loop.run_in_executor(None, release.wait)

    async def scenario() -> tuple[object, object]:
        timer = asyncio.ensure_future(clock.sleep_until(T0 + timedelta(minutes=10)))
        write = asyncio.ensure_future(durable_write())
        threading.Timer(0.05, release.set).start()
        await write
        at_write_end = clock.now()
        timer.cancel()
        return at_write_end, T0

    async def main() -> tuple[object, object]:
        return await run_in_virtual_time(clock, scenario())

    at_write_end, start = asyncio.run(main())
    assert at_write_end == start


def test_the_system_clock_ignores_the_mark() -> None:
    with waiting_off_loop(SystemClock()):
        pass
