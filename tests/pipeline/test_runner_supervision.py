"""The runner's start-up hold (``hold_until_listed``) is supervised by ``run``.

Issue 14: the waits that release a held cluster were started with ``ensure_future`` outside any
task group, so an error in one was never seen (``run`` went on holding the cluster's news) and
cancelling ``run`` at shutdown left them pending.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from canarywatch.clock import VirtualClock
from canarywatch.config import parse_config
from canarywatch.model import CanaryEvent, Notification
from canarywatch.pipeline.policy import build_pipeline
from canarywatch.pipeline.runner import Runner
from canarywatch.testing import T0

POLICY = parse_config("receivers: [{name: all, sink: console}]\nroute: {receiver: all}\n")


async def _no_commit(due: list[Notification], new: list[CanaryEvent]) -> None:
    return None


class BrokenClock(VirtualClock):
    """A clock whose sleeps fail: what a release wait runs into first."""

    async def sleep_until(self, deadline: datetime) -> None:
        raise RuntimeError("the clock broke")


def _release_waits() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__name__", "") == "_release_when_listed"
    ]


async def test_a_failing_release_wait_ends_run_with_its_error() -> None:
    runner = Runner(build_pipeline(POLICY), clock=BrokenClock(T0), commit=_no_commit)
    runner.hold_until_listed({"prod": [asyncio.Event()]})
    async with asyncio.timeout(5):
        with pytest.raises(ExceptionGroup) as caught:
            await runner.run()
    assert caught.group_contains(RuntimeError, match="the clock broke")


async def test_cancelling_run_cancels_the_release_waits() -> None:
    runner = Runner(build_pipeline(POLICY), clock=VirtualClock(T0), commit=_no_commit)
    runner.hold_until_listed({"prod": [asyncio.Event()], "staging": [asyncio.Event()]})
    task = asyncio.create_task(runner.run())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(_release_waits()) == 2  # waiting for the lists
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert _release_waits() == []


async def test_stopping_run_ends_the_release_waits() -> None:
    runner = Runner(build_pipeline(POLICY), clock=VirtualClock(T0), commit=_no_commit)
    runner.hold_until_listed({"prod": [asyncio.Event()]})
    task = asyncio.create_task(runner.run())
    await runner.stop()
    async with asyncio.timeout(5):
        await task
    assert _release_waits() == []
