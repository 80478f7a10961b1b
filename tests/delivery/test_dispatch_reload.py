"""Dispatch across a reload: receivers added, given a new sink, or removed while they hold work.

``Dispatcher.reconfigure`` swaps the receivers in one step; ``release`` says when an old sink is
out of use (and what a removed receiver could not deliver). Nothing queued, in flight or being
retried is lost: it is delivered by the old sink (a removed receiver), by the new one (a
replaced sink), or handed back to stay in the outbox.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.metrics import Metrics
from canarywatch.sinks import Sink
from canarywatch.testing import T0, RecordingSink, make_event, make_notification


def build(sinks: Mapping[str, Sink], clock: VirtualClock) -> Dispatcher:
    return Dispatcher(
        sinks,
        clock=clock,
        metrics=Metrics(CollectorRegistry()),
        log=structlog.get_logger(),
        rng=random.Random(7),
        backoff_initial_s=1,
        backoff_max_s=1,
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


async def test_a_receiver_added_by_a_reload_gets_a_queue_and_a_worker(clock: VirtualClock) -> None:
    a, b = RecordingSink("a", clock=clock), RecordingSink("b", clock=clock)
    async with build({"a": a}, clock) as dispatcher:
        assert dispatcher.reconfigure({"a": a, "b": b}) == []
        assert await dispatcher.submit(make_notification(receiver="b"))
        async with asyncio.timeout(5):
            await b.wait_for(1)
        assert dispatcher.sinks == {"a": a, "b": b}
    assert a.payloads == []


async def test_a_replaced_sink_takes_the_next_attempt_and_is_released_between_attempts(
    clock: VirtualClock,
) -> None:
    old, new = RecordingSink("webhook", clock=clock), RecordingSink("slack", clock=clock)
    old.fail_next(1)  # the first attempt fails: the retry waits for its backoff
    n = make_notification(receiver="team")
    async with build({"team": old}, clock) as dispatcher:
        assert await dispatcher.submit(n)
        async with asyncio.timeout(5):
            await old.wait_for_attempts(1)
            while clock.next_wakeup() is None:  # the worker sleeps until its retry
                await asyncio.sleep(0)
        assert dispatcher.reconfigure({"team": new}) == [("team", old)]
        async with asyncio.timeout(5):
            assert await dispatcher.release("team", old, timeout_s=5) == []
            wake = clock.next_wakeup()
            assert wake is not None
            clock.advance_to(wake)
            await new.wait_for(1)
    assert old.payloads == []
    assert old.attempts == 1
    assert new.payloads == [new.render(n)]


async def test_a_replaced_sink_is_released_only_when_its_attempt_ends(clock: VirtualClock) -> None:
    old, new = RecordingSink("webhook", clock=clock), RecordingSink("webhook", clock=clock)
    old.pause()
    async with build({"team": old}, clock) as dispatcher:
        assert await dispatcher.submit(make_notification(receiver="team"))
        assert await dispatcher.submit(make_notification(make_event(detail="2"), receiver="team"))
        async with asyncio.timeout(5):
            await old.wait_for_attempts(1)
        dispatcher.reconfigure({"team": new})
        release = asyncio.ensure_future(dispatcher.release("team", old, timeout_s=5))
        await asyncio.sleep(0.01)
        assert not release.done()  # the old sink is still delivering
        old.resume()
        async with asyncio.timeout(5):
            assert await release == []
            await new.wait_for(1)
    assert len(old.payloads) == 1  # the attempt under way finished where it started
    assert len(new.payloads) == 1  # the queued one went to the new sink


async def test_a_removed_receiver_delivers_what_it_holds_then_stops(clock: VirtualClock) -> None:
    a = RecordingSink("a", clock=clock)
    a.pause()
    async with build({"a": a}, clock) as dispatcher:
        for detail in "123":
            assert await dispatcher.submit(
                make_notification(make_event(detail=detail), receiver="a")
            )
        assert dispatcher.reconfigure({}) == [("a", a)]
        assert dispatcher.sinks == {}
        release = asyncio.ensure_future(dispatcher.release("a", a, timeout_s=5))
        await asyncio.sleep(0.01)
        assert not release.done()
        a.resume()
        async with asyncio.timeout(5):
            assert await release == []
        assert dispatcher.pending() == 0
    assert len(a.payloads) == 3


async def test_a_removed_receiver_that_cannot_deliver_hands_back_what_it_held(
    clock: VirtualClock,
) -> None:
    a = RecordingSink("a", clock=clock)
    a.pause()
    held = [make_notification(make_event(detail=d), receiver="a") for d in "12"]
    async with build({"a": a}, clock) as dispatcher:
        for n in held:
            assert await dispatcher.submit(n)
        async with asyncio.timeout(5):
            await a.wait_for_attempts(1)
        dispatcher.reconfigure({})
        with capture_logs() as logs:
            left = await dispatcher.release("a", a, timeout_s=0.05)
        assert left == held  # the one in flight first, then the queued one
        assert dispatcher.pending() == 0
        assert not await dispatcher.submit(held[0])  # no such receiver any more
    assert a.payloads == []
    (warning,) = [e for e in logs if e["event"] == "receiver_retired_with_backlog"]
    assert warning["notifications"] == 2


async def test_a_receiver_removed_and_added_back_before_its_release_keeps_its_queue(
    clock: VirtualClock,
) -> None:
    old, back = RecordingSink("a", clock=clock), RecordingSink("a", clock=clock)
    old.pause()
    async with build({"a": old}, clock) as dispatcher:
        assert await dispatcher.submit(make_notification(receiver="a"))
        assert await dispatcher.submit(make_notification(make_event(detail="2"), receiver="a"))
        async with asyncio.timeout(5):
            await old.wait_for_attempts(1)
        dispatcher.reconfigure({})
        release = asyncio.ensure_future(dispatcher.release("a", old, timeout_s=5))
        dispatcher.reconfigure({"a": back})
        old.resume()
        async with asyncio.timeout(5):
            assert await release == []
            await back.wait_for(1)
        assert dispatcher.sinks == {"a": back}
    assert len(old.payloads) == len(back.payloads) == 1
