"""``HoldingStateStore`` catching up off the event loop (issue 14: state writes off the loop).

The held writes are written through the inner store's ``*_async`` methods, one at a time and in
order, while the loop runs on. These tests use an inner store whose writes can be made to fail
("disk full") or to wait (a commit that takes its time), so the interleavings are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

import pytest
import structlog

from canarywatch.clock import VirtualClock
from canarywatch.model import JSONValue, Notification
from canarywatch.state import HoldingStateStore, MemoryStateStore, StateHeld, StateUnwritable
from canarywatch.testing import T0, make_event, make_notification

RECEIVER = "oncall"
T = TypeVar("T")


class SlowFullStore(MemoryStateStore):
    """Refuses every write while ``full``; its async writes commit only once ``gate`` is set
    (a commit in progress off the loop) and, like ``SqliteStateStore``'s, are committed all the
    same when their caller is cancelled meanwhile."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock=clock)
        self.full = True
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0

    def _refuse(self) -> None:
        if self.full:
            raise StateUnwritable("state database x: cannot write: the disk is full")

    async def _commit(self, write: Callable[[], T]) -> T:
        self._refuse()

        async def commit() -> T:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
            return write()

        return await asyncio.shield(asyncio.ensure_future(commit()))

    def outbox_put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        self._refuse()
        return super().outbox_put_many(items, at, canary_states=canary_states)

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        return await self._commit(
            lambda: self.outbox_put_many(items, at, canary_states=canary_states)
        )

    def save_canary_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        self._refuse()
        super().save_canary_states(states)

    async def save_canary_states_async(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        await self._commit(lambda: self.save_canary_states(states))


def note(i: int) -> Notification:
    return make_notification(make_event(canary=f"ns/app-{i}"), receiver=RECEIVER)


async def until(predicate: object) -> None:
    assert callable(predicate)
    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def holding(inner: SlowFullStore, clock: VirtualClock) -> tuple[HoldingStateStore, list[str]]:
    written: list[str] = []
    store = HoldingStateStore(
        inner,
        clock=clock,
        log=structlog.get_logger(),
        on_written=lambda receivers: written.extend(sorted(receivers)),
    )
    return store, written


async def test_a_cancelled_catch_up_never_writes_a_held_notification_twice() -> None:
    clock = VirtualClock(T0)
    inner = SlowFullStore(clock)
    store, written = holding(inner, clock)
    for i in range(2):
        with pytest.raises(StateHeld):
            await store.outbox_put_many_async([(RECEIVER, note(i))], T0)
    assert store.held_notifications == 2

    inner.full = False
    inner.gate.clear()  # the first held write's commit takes its time
    flushing = asyncio.create_task(store.flush_async())
    await until(lambda: inner.waiting == 1)
    flushing.cancel()  # e.g. the daemon's state task cancelled at shutdown, mid-commit
    await asyncio.gather(flushing, return_exceptions=True)
    assert store.holding  # still held as far as anyone can tell: not yet durable

    inner.gate.set()
    assert await store.flush_async()  # waits for the write under way, then writes the rest
    pending = inner.outbox_pending(RECEIVER)
    assert [item.notification for item in pending] == [note(0), note(1)]  # once each, in order
    assert not store.holding
    assert store.held_notifications == 0
    assert written == [RECEIVER]  # reported once they reached the outbox


async def test_a_write_replaced_while_its_older_self_commits_is_kept_and_written() -> None:
    clock = VirtualClock(T0)
    inner = SlowFullStore(clock)
    store, _ = holding(inner, clock)
    await store.save_canary_states_async({"c/ns/app": {"v": 1}})  # held: the disk is full
    assert store.held("snapshot") == 1

    inner.full = False
    inner.gate.clear()
    flushing = asyncio.create_task(store.flush_async())
    await until(lambda: inner.waiting == 1)
    # The loop runs on while v1 commits: a newer snapshot of the same canary is held behind it.
    await store.save_canary_states_async({"c/ns/app": {"v": 2}})
    assert store.load_canary_states() == {"c/ns/app": {"v": 2}}
    inner.gate.set()
    assert await flushing
    assert inner.load_canary_states() == {"c/ns/app": {"v": 2}}
    assert not store.holding
