"""The outbox id travels with the notification through the dispatcher (issue 14).

The outbox used to find a notification's item in a map keyed by ``id(notification)``. A
notification dropped on overflow or at shutdown left its entry behind for good, and once the
dropped object was freed a new notification at the same address was taken for it: delivering
the new one marked the old item delivered, though it never was. Now the item's id rides in the
dispatcher's ``Envelope``, and the dispatcher knows exactly which items it holds in memory.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryReason, Notification, Transition
from canarywatch.sinks import DeliveryError
from canarywatch.state import SqliteStateStore, StateStore
from canarywatch.testing import T0, RecordingSink, make_event, make_notification

RECEIVER = "oncall"
REFUSED = DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    """SQLite, so the outbox keeps no reference to a notification: a dropped one is freed and
    its address can be reused, as in the daemon."""
    s = SqliteStateStore(tmp_path / "canarywatch.sqlite3", clock=VirtualClock(T0))
    yield s
    s.close()


def wire(
    store: StateStore, sink: RecordingSink, *, queue_size: int = 3, refill: bool = True
) -> tuple[DurableDelivery, Dispatcher]:
    """The outbox and a dispatcher as ``app.py`` wires them (``refill=False``: no outbox to
    read back from, so a full queue drops its oldest)."""
    clock = VirtualClock(T0)
    metrics = Metrics(CollectorRegistry())
    delivery = DurableDelivery(store, clock=clock, metrics=metrics, log=structlog.get_logger())
    dispatcher = Dispatcher(
        {RECEIVER: sink},
        clock=clock,
        metrics=metrics,
        log=structlog.get_logger(),
        queue_size=queue_size,
        on_delivered=delivery.on_delivered,
        refill=delivery.refill if refill else None,
        on_retrying=delivery.retrying,
    )
    delivery.attach(dispatcher)
    return delivery, dispatcher


def notification(canary: str) -> Notification:
    return make_notification(make_event(Transition.ROLLED_BACK, canary=canary), receiver=RECEIVER)


def pending_ids(store: StateStore) -> list[int]:
    return [item.id for item in store.outbox_pending(RECEIVER)]


async def test_a_notification_dropped_at_shutdown_stays_pending_whatever_reuses_its_address(
    store: StateStore,
) -> None:
    sink = RecordingSink()
    delivery, dispatcher = wire(store, sink)
    n = notification("shop/dropped")
    await delivery.accept(n)  # queued; the dispatcher never gets to deliver it
    stale_address = id(n)
    (dropped,) = pending_ids(store)
    with capture_logs():
        await dispatcher.aclose()  # counted as dropped (shutdown): it waits for the next start
    del n
    gc.collect()

    # Later notifications delivered through the same outbox hooks (a tool's ``deliver_now``):
    # CPython soon hands one of them the freed address of the dropped one.
    reused = 0
    for i in range(200):
        later = notification(f"shop/later-{i}")
        reused += id(later) == stale_address
        outcome = await dispatcher.deliver_now(later)
        assert outcome.ok
        del later
    assert len(sink.payloads) == 200

    assert pending_ids(store) == [dropped], f"address reused {reused} times"
    assert dispatcher.outbox_ids(RECEIVER) == frozenset()


async def test_overflow_drops_leave_nothing_in_memory_and_each_item_ends_where_it_should(
    store: StateStore,
) -> None:
    """Without a refill source a full queue drops its oldest. The dropped items stay pending in
    the outbox (delivered at the next start); the queued ones are recorded by their own id:
    delivered ones done, the refused one dead. Nothing is left behind in memory."""
    sink = RecordingSink()
    delivery, dispatcher = wire(store, sink, queue_size=2, refill=False)
    ns = [notification(f"shop/app-{i}") for i in range(4)]
    with capture_logs() as logs:
        for n in ns:
            await delivery.accept(n)
    first, second, refused, delivered = pending_ids(store)
    assert [e["reason"] for e in logs if e["event"] == "notification_dropped"] == ["overflow"] * 2
    assert dispatcher.outbox_ids(RECEIVER) == {refused, delivered}

    sink.fail_next(1, REFUSED)
    async with dispatcher:
        assert await asyncio.wait_for(dispatcher.drain(10), 20) == 0

    assert dispatcher.outbox_ids(RECEIVER) == frozenset()
    assert sink.payloads == [sink.render(ns[3])]
    assert [item.id for item in store.outbox_dead_letters()] == [refused]
    assert pending_ids(store) == [first, second]


async def test_shutdown_drops_leave_nothing_in_memory_and_the_next_start_delivers_them(
    store: StateStore,
) -> None:
    sink = RecordingSink()
    sink.pause()
    delivery, dispatcher = wire(store, sink, queue_size=2)
    ns = [notification(f"shop/app-{i}") for i in range(3)]
    with capture_logs() as logs:
        async with dispatcher:
            for n in ns:
                await delivery.accept(n)  # queued or, past the queue's room, spilled
            await asyncio.wait_for(sink.wait_for_attempts(1), 5)
            held = dispatcher.outbox_ids(RECEIVER)  # in flight and queued
            assert 2 <= len(held) <= 3
    dropped = [e["reason"] for e in logs if e["event"] == "notification_dropped"]
    assert dropped == ["shutdown"] * len(held)
    assert dispatcher.outbox_ids(RECEIVER) == frozenset()
    assert len(pending_ids(store)) == 3
    assert held <= set(pending_ids(store))

    after = RecordingSink()
    delivery, dispatcher = wire(store, after, queue_size=2)  # restarted on the same state
    assert await delivery.resume() == 3
    async with dispatcher:
        assert await asyncio.wait_for(dispatcher.drain(10), 20) == 0
    assert after.payloads == [after.render(n) for n in ns]
    assert pending_ids(store) == []
    assert dispatcher.outbox_ids(RECEIVER) == frozenset()


async def test_what_a_removed_receiver_hands_back_is_read_again_when_it_comes_back(
    store: StateStore,
) -> None:
    """A reload removes a receiver that still holds notifications (``Dispatcher.release``):
    they stay pending in the outbox and leave memory, so a receiver of that name configured
    again reads them back, each delivered once."""
    sink = RecordingSink()
    sink.pause()
    delivery, dispatcher = wire(store, sink, queue_size=2)
    ns = [notification(f"shop/app-{i}") for i in range(2)]
    async with dispatcher:
        for n in ns:
            await delivery.accept(n)
        await asyncio.wait_for(sink.wait_for_attempts(1), 5)
        assert dispatcher.outbox_ids(RECEIVER) == set(pending_ids(store))
        dispatcher.reconfigure({})
        with capture_logs():
            assert await dispatcher.release(RECEIVER, sink, timeout_s=0.05) == ns
        assert dispatcher.outbox_ids(RECEIVER) == frozenset()

        back = RecordingSink()
        dispatcher.reconfigure({RECEIVER: back})
        delivery.receiver_added(RECEIVER)
        assert await asyncio.wait_for(dispatcher.drain(10), 20) == 0
    assert back.payloads == [back.render(n) for n in ns]
    assert sink.payloads == []
    assert pending_ids(store) == []
