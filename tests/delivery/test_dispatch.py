"""Dispatch: retries in virtual time, timeouts, overflow, isolation between receivers."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Mapping
from datetime import datetime

import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher, Envelope
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryOutcome, DeliveryReason, Notification
from canarywatch.sinks import DeliveryError, Payload, Sink
from canarywatch.testing import T0, RecordingSink, make_notification, run_in_virtual_time


def build(
    sinks: Mapping[str, Sink], clock: VirtualClock, **kw: object
) -> tuple[Dispatcher, CollectorRegistry]:
    reg = CollectorRegistry()
    d = Dispatcher(
        sinks,
        clock=clock,
        metrics=Metrics(reg),
        log=structlog.get_logger(),
        rng=random.Random(7),
        **kw,  # type: ignore[arg-type]
    )
    return d, reg


def deliveries(reg: CollectorRegistry, outcome: str, reason: str = "", **labels: str) -> float:
    labels = {"sink": "recording", "receiver": "team-payments", **labels}
    value = reg.get_sample_value(
        "canarywatch_deliveries_total", {"outcome": outcome, "reason": reason, **labels}
    )
    return value if value is not None else -1


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


async def test_retry_then_success(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(2)  # two retryable 503s
    d, reg = build({"team-payments": sink}, clock, backoff_initial_s=1, backoff_max_s=60)
    n = make_notification()
    with capture_logs() as logs:
        outcome = await run_in_virtual_time(clock, d.deliver_now(n))
    assert outcome.ok
    assert outcome.attempts == 3
    assert outcome.reason is None
    assert sink.payloads == [sink.render(n)]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(sink.attempted_at)]
    assert 0.5 <= gaps[0] <= 1.0  # equal jitter of the 1 s step
    assert 1.0 <= gaps[1] <= 2.0  # of the doubled 2 s step
    assert outcome.duration_s == pytest.approx(sum(gaps))
    assert deliveries(reg, "sent") == 1
    assert deliveries(reg, "retried", "http_5xx") == 2
    assert deliveries(reg, "failed", "http_5xx") == 0
    final = [e for e in logs if e["event"] in ("notification_sent", "delivery_failed")]
    assert len(final) == 1
    assert final[0]["event"] == "notification_sent"
    assert final[0]["receiver"] == "team-payments"
    assert final[0]["sink"] == "recording"
    assert final[0]["attempts"] == 3
    assert final[0]["duration_s"] == pytest.approx(outcome.duration_s, abs=0.001)
    retry_lines = [e for e in logs if e["event"] == "delivery_retrying"]
    assert [e["log_level"] for e in retry_lines] == ["warning", "debug"]  # once per streak


async def test_non_retryable_stops_at_once(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(1, DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404))
    d, reg = build({"team-payments": sink}, clock)
    with capture_logs() as logs:
        outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert outcome == DeliveryOutcome(
        "team-payments", "recording", False, 1, 0.0, DeliveryReason.HTTP_4XX
    )
    assert sink.payloads == []
    assert deliveries(reg, "failed", "http_4xx") == 1
    (line,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert line["reason"] == "http_4xx"
    assert line["status_code"] == 404
    assert line["gave_up"] == "not_retryable"
    assert line["log_level"] == "error"


async def test_retry_after_is_honoured(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(1, DeliveryError(DeliveryReason.RATE_LIMITED, status_code=429, retry_after_s=7))
    d, _ = build({"team-payments": sink}, clock, backoff_initial_s=0.5)
    outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert outcome.ok
    assert (sink.attempted_at[1] - sink.attempted_at[0]).total_seconds() == 7


async def test_retry_budget_bounds_the_whole_delivery(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(1000)
    d, reg = build({"team-payments": sink}, clock, retry_budget_s=30, backoff_initial_s=1)
    with capture_logs() as logs:
        outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert not outcome.ok
    assert outcome.reason is DeliveryReason.HTTP_5XX
    assert 3 <= outcome.attempts <= 6
    assert outcome.duration_s <= 30
    assert deliveries(reg, "retried", "http_5xx") == outcome.attempts - 1
    (line,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert line["gave_up"] == "retry_budget"

    # a Retry-After beyond the budget gives up without sleeping
    sink2 = RecordingSink(clock=clock)
    sink2.fail_next(1, DeliveryError(DeliveryReason.RATE_LIMITED, retry_after_s=3600))
    d2, _ = build({"team-payments": sink2}, clock, retry_budget_s=300)
    outcome2 = await run_in_virtual_time(clock, d2.deliver_now(make_notification()))
    assert (outcome2.ok, outcome2.attempts, outcome2.duration_s) == (False, 1, 0.0)


async def test_each_attempt_has_a_timeout(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.hang_next(1)
    d, reg = build({"team-payments": sink}, clock, attempt_timeout_s=0.05)
    outcome = await asyncio.wait_for(
        run_in_virtual_time(clock, d.deliver_now(make_notification())), 5
    )
    assert outcome.ok
    assert outcome.attempts == 2
    assert deliveries(reg, "retried", "timeout") == 1


class ExplodingSink(RecordingSink):
    async def deliver(self, payload: Payload) -> None:
        raise ZeroDivisionError("sink bug")


async def test_a_sink_bug_fails_one_delivery_without_retry(clock: VirtualClock) -> None:
    d, reg = build({"team-payments": ExplodingSink()}, clock)
    with capture_logs() as logs:
        outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert (outcome.ok, outcome.attempts, outcome.reason) == (False, 1, None)
    assert deliveries(reg, "failed", "error") == 1
    (line,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert isinstance(line["exc_info"], ZeroDivisionError)


class Backlog:
    """A refill source standing in for the outbox: what the dispatcher spilled, oldest first."""

    def __init__(self) -> None:
        self.waiting: deque[Notification] = deque()
        self.rooms: list[int] = []

    def refill(self, receiver: str, room: int) -> list[Envelope]:
        self.rooms.append(room)
        out: list[Envelope] = []
        while self.waiting and len(out) < room:
            out.append(Envelope(self.waiting.popleft()))
        return out

    async def submit(self, d: Dispatcher, n: Notification) -> bool:
        """What the outbox does: a spilled notification stays with it, to be read back."""
        queued = await d.submit(n)
        if not queued:
            self.waiting.append(n)
        return queued


def sample(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def group_keys(sink: RecordingSink) -> list[str]:
    return [p["group_key"] for p in sink.payloads if isinstance(p, dict)]


async def test_a_full_queue_spills_to_the_refill_source_and_reads_it_back_in_order(
    clock: VirtualClock,
) -> None:
    sink = RecordingSink()
    backlog = Backlog()
    d, reg = build({"team-payments": sink}, clock, queue_size=2, refill=backlog.refill)
    ns = [make_notification(group_key=f"g{i}") for i in range(8)]
    with capture_logs() as logs:
        queued = [await backlog.submit(d, n) for n in ns[:6]]
    assert queued == [True, True, False, False, False, False]
    assert [n.group_key for n in backlog.waiting] == ["g2", "g3", "g4", "g5"]
    spilled = sample(reg, "canarywatch_notifications_spilled_total", receiver="team-payments")
    assert spilled == 4
    overflow = {"stage": "dispatch", "reason": "overflow"}
    assert sample(reg, "canarywatch_events_dropped_total", **overflow) == 0
    assert [e for e in logs if e["event"] == "notification_dropped"] == []
    spills = [e for e in logs if e["event"] == "queue_spilled"]
    assert [e["log_level"] for e in spills] == ["warning", "debug", "debug", "debug"]
    assert spills[0]["receiver"] == "team-payments"  # a warning once per streak, then debug

    sink.pause()
    async with d:
        await asyncio.wait_for(sink.wait_for_attempts(1), 5)  # g0 in flight, g1 queued
        # Room again, but older notifications wait in the backlog: a new one must not
        # overtake them, so it spills too.
        assert await backlog.submit(d, ns[6]) is False
        sink.resume()
        await asyncio.wait_for(sink.wait_for(7), 5)
        assert await backlog.submit(d, ns[7]) is True  # backlog read back: queued directly
        await asyncio.wait_for(sink.wait_for(8), 5)
        assert await d.drain(5) == 0
    assert group_keys(sink) == [f"g{i}" for i in range(8)]
    assert max(backlog.rooms) <= 2  # never asked for more than the queue holds
    notified = sample(
        reg, "canarywatch_notifications_total", receiver="team-payments", status="firing"
    )
    assert notified == 8  # each counted once, when it entered the queue


async def test_backlog_announced_at_start_fills_the_queue_and_the_rest_as_it_drains(
    clock: VirtualClock,
) -> None:
    """What ``resume()`` does after a restart: more waiting than the queue holds."""
    sink = RecordingSink()
    backlog = Backlog()
    backlog.waiting.extend(make_notification(group_key=f"g{i}") for i in range(9))
    d, reg = build({"team-payments": sink}, clock, queue_size=3, refill=backlog.refill)
    d.backlog("team-payments")
    assert d.pending() == 3
    assert len(backlog.waiting) == 6
    async with d:
        assert await d.drain(5) == 0  # drain waits for the backlog too, not just the queue
    assert group_keys(sink) == [f"g{i}" for i in range(9)]
    dropped = sample(reg, "canarywatch_events_dropped_total", stage="dispatch", reason="overflow")
    assert dropped == 0


async def test_without_a_refill_source_a_full_queue_drops_the_oldest(
    clock: VirtualClock,
) -> None:
    """Outside the daemon (no outbox to read back from) a full queue still drops its oldest."""
    sink = RecordingSink()
    d, reg = build({"team-payments": sink}, clock, queue_size=2)
    ns = [make_notification(group_key=f"g{i}") for i in range(3)]
    with capture_logs() as logs:
        for n in ns:
            await d.submit(n)
    dropped = reg.get_sample_value(
        "canarywatch_events_dropped_total", {"stage": "dispatch", "reason": "overflow"}
    )
    assert dropped == 1
    assert [e["group_key"] for e in logs if e["event"] == "notification_dropped"] == ["g0"]
    notified = reg.get_sample_value(
        "canarywatch_notifications_total", {"receiver": "team-payments", "status": "firing"}
    )
    assert notified == 3
    async with d:
        await asyncio.wait_for(sink.wait_for(2), 5)
        assert await d.drain(5) == 0
    assert [p["group_key"] for p in sink.payloads if isinstance(p, dict)] == ["g1", "g2"]


async def test_unknown_receiver_is_dropped_and_counted(clock: VirtualClock) -> None:
    d, reg = build({"team-payments": RecordingSink()}, clock)
    with capture_logs():
        await d.submit(make_notification(receiver="nobody"))
    value = reg.get_sample_value(
        "canarywatch_events_dropped_total", {"stage": "dispatch", "reason": "unknown_receiver"}
    )
    assert value == 1


async def test_a_blocked_sink_does_not_delay_another(clock: VirtualClock) -> None:
    slow, fast = RecordingSink("slow"), RecordingSink("fast")
    slow.pause()
    d, _ = build({"a": slow, "b": fast}, clock)
    async with d:
        await d.submit(make_notification(receiver="a"))
        await d.submit(make_notification(receiver="a", group_key="second"))
        await d.submit(make_notification(receiver="b"))
        await asyncio.wait_for(fast.wait_for(1), 5)
        assert slow.payloads == []
        assert slow.attempts == 1
        assert d.pending() == 2
        assert await d.drain(0.05) == 2  # still blocked: drain gives up and reports
        slow.resume()
        await asyncio.wait_for(slow.wait_for(2), 5)
        assert await d.drain(5) == 0


async def test_aclose_counts_what_is_left_as_shutdown_drops(clock: VirtualClock) -> None:
    sink = RecordingSink()
    sink.pause()
    delivered: list[tuple[Notification, DeliveryOutcome]] = []

    async def record(envelope: Envelope, outcome: DeliveryOutcome) -> None:
        delivered.append((envelope.notification, outcome))

    d, reg = build({"team-payments": sink}, clock, on_delivered=record)
    with capture_logs():
        async with d:
            for i in range(3):
                await d.submit(make_notification(group_key=f"g{i}"))
            await asyncio.wait_for(sink.wait_for_attempts(1), 5)
    value = reg.get_sample_value(
        "canarywatch_events_dropped_total", {"stage": "dispatch", "reason": "shutdown"}
    )
    assert value == 3  # one in flight, two queued
    assert delivered == []
    assert d.pending() == 0

    # and the seam: on_delivered sees each outcome
    sink.resume()
    n = make_notification()
    outcome = await d.deliver_now(n)
    assert delivered == [(n, outcome)]


# -- sink health: permanent failures until a delivery succeeds, the same for every sink -----


async def test_a_permanent_failure_marks_the_sink_unhealthy_until_a_delivery_succeeds(
    clock: VirtualClock,
) -> None:
    sink = RecordingSink(clock=clock)
    gone = DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404)
    sink.fail_next(3, gone)
    d, _ = build({"team-payments": sink}, clock)
    assert d.health("team-payments").healthy
    assert d.health("team-payments").detail() == "ok, nothing delivered yet"
    with capture_logs() as logs:
        for _ in range(3):
            await run_in_virtual_time(clock, d.deliver_now(make_notification()))
        health = d.health("team-payments")
        assert not health.healthy
        assert health.failed == 3
        assert health.detail() == (
            "failing since 2025-01-02T14:08:02Z: 3 notification(s) failed for good, the last "
            "because the destination refused it (HTTP 404, not retryable); healthy again "
            "after a successful delivery"
        )
        outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert outcome.ok
    assert d.health("team-payments").healthy
    assert d.health("team-payments").detail() == "ok"
    marks = [e["event"] for e in logs if e["event"].startswith("sink_marked")]
    assert marks == ["sink_marked_unhealthy", "sink_marked_healthy"]  # once per streak


@pytest.mark.parametrize(
    "error",
    [
        DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False, status_code=400),
        DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=503),
    ],
    ids=["one-bad-notification", "retry-budget-spent"],
)
async def test_failures_that_say_nothing_about_the_destination_keep_it_healthy(
    clock: VirtualClock, error: DeliveryError
) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(1000, error)
    d, _ = build({"team-payments": sink}, clock, retry_budget_s=5)
    outcome = await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert not outcome.ok
    assert d.health("team-payments").healthy


async def test_a_sink_bug_marks_the_sink_unhealthy_and_says_what_it_raised(
    clock: VirtualClock,
) -> None:
    d, _ = build({"team-payments": ExplodingSink()}, clock)
    await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    health = d.health("team-payments")
    assert not health.healthy
    assert "the sink raised ZeroDivisionError" in health.detail()
    assert "sink bug" not in health.detail()  # the exception's text may hold a secret


async def test_a_new_sink_for_the_receiver_starts_healthy(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    sink.fail_next(1, DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=401))
    d, _ = build({"team-payments": sink}, clock)
    await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    assert not d.health("team-payments").healthy
    d._sinks["team-payments"] = RecordingSink(clock=clock)  # what a reload does
    assert d.health("team-payments").healthy


class PrintingSink(RecordingSink):
    prints_notifications = True


async def test_a_sink_that_prints_its_notifications_is_not_echoed_by_an_info_line(
    clock: VirtualClock,
) -> None:
    d, _ = build({"team-payments": PrintingSink(), "other": RecordingSink()}, clock)
    with capture_logs() as logs:
        await run_in_virtual_time(clock, d.deliver_now(make_notification()))
        await run_in_virtual_time(clock, d.deliver_now(make_notification(receiver="other")))
    sent = {e["receiver"]: e["log_level"] for e in logs if e["event"] == "notification_sent"}
    assert sent == {"team-payments": "debug", "other": "info"}


async def test_delivery_failed_carries_the_sinks_plain_words(clock: VirtualClock) -> None:
    sink = RecordingSink(clock=clock)
    detail = "cannot open /var/lib/out.jsonl for appending: permission denied"
    sink.fail_next(1, DeliveryError(DeliveryReason.CONNECTION, retryable=False, detail=detail))
    d, _ = build({"team-payments": sink}, clock)
    with capture_logs() as logs:
        await run_in_virtual_time(clock, d.deliver_now(make_notification()))
    (line,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert line["detail"] == detail
    assert d.health("team-payments").problem == f"{detail} (not retryable)"


async def test_each_failed_attempt_that_will_be_retried_is_reported_with_its_next_attempt(
    clock: VirtualClock,
) -> None:
    """``on_retrying`` is what lets the outbox show a retry streak: once per failed attempt
    that will be retried, with the error in plain words and when the next one is due; never
    for the success, nor for the last attempt (``on_delivered`` has that one)."""
    sink = RecordingSink(clock=clock)
    refused = "cannot connect to hooks.example.com:443: connection refused"
    sink.fail_next(1, DeliveryError(DeliveryReason.CONNECTION, detail=refused))
    sink.fail_next(1)  # a 503
    sink.hang_next(1)  # no answer within the attempt timeout
    seen: list[tuple[int, str, datetime]] = []

    async def retrying(envelope: Envelope, attempt: int, error: str, next_at: datetime) -> None:
        seen.append((attempt, error, next_at))

    d, _ = build(
        {"team-payments": sink},
        clock,
        attempt_timeout_s=0.05,
        backoff_initial_s=1,
        on_retrying=retrying,
    )
    outcome = await asyncio.wait_for(
        run_in_virtual_time(clock, d.deliver_now(make_notification())), 5
    )
    assert (outcome.ok, outcome.attempts) == (True, 4)
    assert [(attempt, error) for attempt, error, _ in seen] == [
        (1, f"{refused} (retryable)"),
        (2, "the destination failed (HTTP 503, retryable)"),
        (3, "no answer within the attempt timeout (0.05s) (retryable)"),
    ]
    # The next attempt happened when it was said to be due.
    assert [next_at for _, _, next_at in seen] == sink.attempted_at[1:]

    failing = RecordingSink(clock=clock)
    failing.fail_next(1000)
    seen.clear()
    d2, _ = build(
        {"team-payments": failing},
        clock,
        retry_budget_s=30,
        backoff_initial_s=1,
        on_retrying=retrying,
    )
    gave_up = await run_in_virtual_time(clock, d2.deliver_now(make_notification()))
    assert not gave_up.ok
    assert len(seen) == gave_up.attempts - 1  # the last failure is the outcome's
