"""Outbox items whose "done" is committing off the event loop are never sent meanwhile.

At a takeover (items the old leader already delivered) and on a standby (items past the held
window) ``DurableDelivery`` marks items done with an awaited write. Until it commits, the store
still says pending; ``refill`` and ``take_over`` must not read them back in that window.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from tests.delivery.test_delivery import (
    RECEIVER,
    WINDOW_S,
    FakeSharedLog,
    Replica,
    accept_over_time,
    notifications,
)

from canarywatch.clock import VirtualClock
from canarywatch.identity import fingerprint
from canarywatch.state import MemoryStateStore
from canarywatch.testing import T0, make_event, make_notification
from canarywatch.testing import run_in_virtual_time as in_virtual_time


class SlowDone(MemoryStateStore):
    """Marks the items in ``slow`` done only once ``release`` is set: a commit in progress."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock=clock)
        self.slow: set[int] = set()
        self.release = asyncio.Event()

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        if id in self.slow:
            await self.release.wait()
        await super().outbox_done_async(id, at)


async def test_a_takeover_never_sends_what_it_is_marking_done() -> None:
    clock = VirtualClock(T0)
    shared = FakeSharedLog()
    store = SlowDone(clock)
    standby = Replica(clock, leader=False, shared_log=shared, store=store)
    ns = notifications(6)
    await accept_over_time(standby, clock, ns)
    for n in ns[:3]:  # the old leader delivered these before it died
        await shared.record(RECEIVER, n.status, [fingerprint(e) for e in n.events], T0)
    store.slow = {item.id for item in store.outbox_pending(RECEIVER)[:3]}
    standby.leader = True

    async def scenario() -> int:
        async with standby.dispatcher:
            taking = asyncio.create_task(standby.delivery.take_over())
            for _ in range(5):  # it reads the held items back and awaits the marks
                await asyncio.sleep(0)
            assert await standby.dispatcher.drain(10) == 0
            assert not taking.done()  # the "done" marks are still committing
            assert store.outbox_depth(RECEIVER) == 3  # so the store still says pending
            standby.dispatcher.backlog(RECEIVER)  # a refill in that window...
            assert await standby.dispatcher.drain(10) == 0
            store.release.set()
            return await taking

    queued = await asyncio.wait_for(in_virtual_time(clock, scenario()), 30)
    assert queued == 3
    # ...sent none of them: only what the old leader had not sent, once each.
    assert standby.sink.payloads == [standby.sink.render(n) for n in ns[3:]]
    assert store.outbox_depth(RECEIVER) == 0


async def test_a_takeover_never_sends_what_the_standby_is_letting_go() -> None:
    clock = VirtualClock(T0)
    store = SlowDone(clock)
    standby = Replica(clock, leader=False, store=store)
    await accept_over_time(standby, clock, notifications(4))
    store.slow = {item.id for item in store.outbox_pending(RECEIVER)}
    clock.advance_by(WINDOW_S + 1)  # every one past the held window

    async def scenario() -> tuple[int, int]:
        async with standby.dispatcher:
            releasing = asyncio.create_task(standby.delivery.release_held())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not releasing.done()
            standby.leader = True  # the lease changes hands while the marks commit
            queued = await standby.delivery.take_over()
            assert await standby.dispatcher.drain(10) == 0
            store.release.set()
            return queued, await releasing

    queued, released = await asyncio.wait_for(in_virtual_time(clock, scenario()), 30)
    assert (queued, released) == (0, 4)
    assert standby.sink.attempts == 0
    assert store.outbox_depth(RECEIVER) == 0


async def test_a_standby_lets_go_of_more_than_one_batch_of_old_items() -> None:
    clock = VirtualClock(T0)
    store = MemoryStateStore(clock=clock)
    standby = Replica(clock, leader=False, store=store)
    ns = notifications(250)
    for n in ns:  # accepted at once: nothing is past the window yet
        await standby.delivery.accept(n)
    clock.advance_by(WINDOW_S + 1)
    fresh = make_notification(make_event(canary="ns/fresh", at=clock.now()), receiver=RECEIVER)
    await standby.delivery.accept(fresh)  # kept: within the window
    assert store.outbox_depth(RECEIVER) == 1  # the accept let the 250 old ones go
    assert standby.sink.attempts == 0
