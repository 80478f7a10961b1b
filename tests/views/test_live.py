"""The daemon-side live state for ``tail``: fed by the real pipeline from a simulated Flagger,
served by the daemon's real HTTP app (token middleware included) on a local port."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry

from canarywatch.clock import VirtualClock
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Observation,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.secrets import Secret
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import SCENARIOS, Pace, virtual_pace
from canarywatch.simulator.store import Change, Store
from canarywatch.views.live import LiveState
from canarywatch.web.live import CANARIES_PATH, STREAM_PATH, TRANSITIONS_PATH, live_routes
from canarywatch.web.server import Readiness, WebServer, build_app

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
TOKEN = "live-api-token"


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -- shared with tests/cli/test_tail.py ---------------------------------------------------


async def play_into(
    live: LiveState,
    name: str,
    clock: VirtualClock,
    *,
    between_ticks: Callable[[], Awaitable[None]] | None = None,
) -> Pipeline:
    """Play one scenario on ``clock``: every change the simulated Flagger writes (Events and
    Canary status) goes through the real pipeline, and each new transition into ``live``, as
    the daemon's runner does with ``on_transitions``."""
    store = Store(clock=clock)
    sim = FlaggerSimulator(store, clock)
    pipeline = policy.build_pipeline(None)
    subscriptions = [store.subscribe("events"), store.subscribe("canaries")]

    def drain() -> None:
        batch: list[Change] = []
        for subscription in subscriptions:
            while not subscription.queue.empty():
                item = subscription.queue.get_nowait()
                assert isinstance(item, Change)
                batch.append(item)
        for change in sorted(batch, key=lambda c: c.rv):
            source = (
                SourceName.KUBERNETES_EVENTS if change.resource == "events" else SourceName.CANARIES
            )
            data = {"type": change.type.value, "object": change.object}
            now = clock.now()
            live.on_transitions(
                pipeline.observe(Observation(at=now, source=source, data=data), now)
            )
            pipeline.due(now)

    inner: Pace = virtual_pace(clock)

    async def pace(seconds: float) -> None:
        drain()
        if between_ticks is not None:
            await between_ticks()
        await inner(seconds)

    await SCENARIOS[name].run(sim, pace)
    drain()
    for subscription in subscriptions:
        subscription.close()
    return pipeline


@dataclass
class LiveServer:
    base: str
    state: LiveState
    clock: VirtualClock
    server: WebServer


@asynccontextmanager
async def serve_live(
    state: LiveState,
    clock: VirtualClock,
    *,
    token: str | None = None,
    heartbeat_s: float = 5.0,
) -> AsyncIterator[LiveServer]:
    """The daemon's real ``build_app`` with the live routes, on 127.0.0.1:<free port>."""
    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        token=Secret(token) if token else None,
        extra_routes=live_routes(state, clock=clock, heartbeat_s=heartbeat_s),
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield LiveServer(f"http://127.0.0.1:{server.port}", state, clock, server)
    finally:
        state.close()  # what the daemon does before stopping its web server
        await server.close()


def event(
    name: str,
    transition: Transition,
    at: datetime,
    *,
    detail: str = "",
    weight: int | None = None,
    failed_checks: int | None = None,
    phase: Phase | None = None,
    source: SourceName = SourceName.KUBERNETES_EVENTS,
    namespace: str = "test",
) -> CanaryEvent:
    return CanaryEvent(
        canary=CanaryRef(namespace, name, "prod"),
        transition=transition,
        observed_at=at,
        sources=(source,),
        severity=TRANSITIONS[transition].severity,
        phase=phase,
        weight=weight,
        failed_checks=failed_checks,
        detail=detail,
        message=f"{transition.value} {detail}".strip(),
        rollout="1",
    )


# -- the state ----------------------------------------------------------------------------------


async def test_a_played_scenario_leaves_each_canary_in_its_final_state() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    pipeline = await play_into(live, "parallel_canaries", clock)
    rows = {str(r.canary): r for r in live.canaries()}
    assert list(rows) == ["shop/checkout", "test/podinfo"]  # sorted
    podinfo, checkout = rows["test/podinfo"], rows["shop/checkout"]
    assert (podinfo.phase, podinfo.weight, podinfo.failed_checks) == (Phase.SUCCEEDED, 0, 0)
    assert podinfo.last_transition is Transition.PROMOTED
    assert (checkout.phase, checkout.weight, checkout.failed_checks) == (Phase.FAILED, 0, 5)
    assert checkout.last_transition is Transition.ROLLED_BACK
    assert checkout.severity is Severity.CRITICAL
    assert checkout.rollout.startswith("e-")  # its start Event's occurrence (no status watched)
    assert checkout.target == "checkout"
    # The log holds exactly the pipeline's new transitions, in order.
    records = live.transitions()
    assert [r.seq for r in records] == list(range(1, pipeline.stats.transitions + 1))
    expected = SCENARIOS["parallel_canaries"].expected
    for canary, declared in expected.items():
        got = [
            (r.event.transition.value, r.event.detail)
            for r in records
            if str(r.event.canary) == canary
        ]
        assert [t for t, _ in got] == [t for t, _ in declared]
    assert podinfo.transitions == len(expected["test/podinfo"])


async def test_weight_and_phase_follow_the_rollout_while_it_runs() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    seen: list[tuple[str | None, int | None]] = []

    async def snapshot() -> None:
        row = live.row(CanaryRef("test", "podinfo", "default"))
        if row is not None:
            pair = (row.phase.value if row.phase else None, row.weight)
            if not seen or seen[-1] != pair:
                seen.append(pair)

    await play_into(live, "rollback_failed_checks", clock, between_ticks=snapshot)
    await snapshot()
    assert ("Progressing", 10) in seen
    assert ("Progressing", 20) in seen
    assert seen[-1] == ("Failed", 0)
    row = live.row(CanaryRef("test", "podinfo", "default"))
    assert row is not None
    assert row.failed_checks == 5


def test_gaps_are_filled_from_what_the_transition_means() -> None:
    live = LiveState()
    t0 = START
    live.observe(event("podinfo", Transition.REVISION_DETECTED, t0))
    live.observe(event("podinfo", Transition.WEIGHT_ADVANCED, t0, detail="30", weight=30))
    live.observe(event("podinfo", Transition.HALTED, t0))
    live.observe(event("podinfo", Transition.HALTED, t0))
    row = live.canaries()[0]
    assert (row.phase, row.weight, row.failed_checks) == (Phase.PROGRESSING, 30, 2)
    live.observe(event("podinfo", Transition.AWAITING_APPROVAL, t0, detail="promotion"))
    assert live.canaries()[0].phase is Phase.WAITING_PROMOTION
    live.observe(event("podinfo", Transition.PROMOTED, t0 + timedelta(minutes=1)))
    row = live.canaries()[0]
    assert (row.phase, row.weight, row.failed_checks) == (Phase.SUCCEEDED, 0, 0)
    assert row.last_at == t0 + timedelta(minutes=1)
    # A phase the source stated wins over the implied one.
    live.observe(event("podinfo", Transition.NOT_READY, t0, phase=Phase.INITIALIZING))
    assert live.canaries()[0].phase is Phase.INITIALIZING
    assert live.canaries()[0].weight == 0


def test_self_events_are_logged_but_are_not_canaries() -> None:
    live = LiveState()
    unreachable = event(
        "cluster-prod",
        Transition.CLUSTER_UNREACHABLE,
        START,
        namespace="canarywatch",
        source=SourceName.SELF,
    )
    live.observe(unreachable)
    assert live.canaries() == []
    assert [r.event for r in live.transitions()] == [unreachable]


def test_the_ring_is_bounded_and_pages() -> None:
    live = LiveState(history=3)
    assert (live.last_seq, live.oldest_seq) == (0, 1)
    for n in range(5):
        live.observe(event("podinfo", Transition.WEIGHT_ADVANCED, START, detail=str(n)))
    assert [r.seq for r in live.transitions()] == [3, 4, 5]
    assert (live.last_seq, live.oldest_seq) == (5, 3)
    assert [r.seq for r in live.transitions(after=3)] == [4, 5]
    assert [r.seq for r in live.transitions(limit=2)] == [3, 4]
    assert [r.seq for r in live.transitions(last=1)] == [5]
    assert live.transitions(last=0) == []
    with pytest.raises(ValueError, match="positive"):
        LiveState(history=0)


def test_a_subscriber_that_does_not_read_is_cut_off_not_waited_for() -> None:
    live = LiveState(subscriber_queue=2)
    sub = live.subscribe()
    for n in range(5):
        live.observe(event("podinfo", Transition.WEIGHT_ADVANCED, START, detail=str(n)))
    assert sub.overflowed
    lines: list[bytes | None] = []
    while not sub.queue.empty():
        lines.append(sub.queue.get_nowait())
    assert lines[-1] is None
    assert len(lines) == 3  # two transitions, then the end
    assert live.last_seq == 5  # the pipeline side never blocked


# -- HTTP -----------------------------------------------------------------------------------------


async def test_canaries_and_transitions_over_http() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    await play_into(live, "rollback_failed_checks", clock)
    clock.advance_by(90)
    async with (
        serve_live(live, clock) as srv,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(srv.base + CANARIES_PATH) as response:
            assert response.status == 200
            canaries = await response.json()
        async with http.get(srv.base + TRANSITIONS_PATH, params={"after": "3"}) as response:
            after = await response.json()
        async with http.get(srv.base + TRANSITIONS_PATH, params={"last": "2"}) as response:
            last = await response.json()
        async with http.get(srv.base + TRANSITIONS_PATH, params={"after": "x"}) as response:
            bad = (response.status, await response.json())
    assert [c["canary"] for c in canaries] == ["test/podinfo"]
    row = canaries[0]
    assert row["phase"] == "Failed"
    assert row["weight"] == 0
    assert row["failed_checks"] == 5
    assert row["last_transition"] == "rolled-back"
    assert row["severity"] == "critical"
    last_at = datetime.fromisoformat(row["last_transition_at"])
    assert row["age_s"] == (clock.now() - last_at).total_seconds() >= 90  # the daemon's clock
    assert [r["seq"] for r in after] == list(range(4, live.last_seq + 1))
    assert [r["transition"] for r in last] == ["halted", "rolled-back"]
    record = last[-1]
    assert set(record) >= {
        "seq",
        "at",
        "canary",
        "transition",
        "severity",
        "phase",
        "weight",
        "reason",
        "message",
    }
    assert (record["canary"], record["severity"], record["phase"]) == (
        "test/podinfo",
        "critical",
        "Failed",
    )
    assert record["reason"] == "failed-checks"
    assert bad == (400, {"error": "after must be an integer"})


async def test_the_bearer_token_guards_the_live_api() -> None:
    clock = VirtualClock(START)
    async with (
        serve_live(LiveState(), clock, token=TOKEN) as srv,
        aiohttp.ClientSession() as http,
    ):
        for path in (CANARIES_PATH, TRANSITIONS_PATH, STREAM_PATH):
            async with http.get(srv.base + path) as response:
                assert response.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(srv.base + CANARIES_PATH, headers=headers) as response:
            assert response.status == 200
            assert await response.json() == []


async def read_lines(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(5):
        while len(lines) < count:
            raw = await response.content.readline()
            assert raw, "stream ended early"
            lines.append(json.loads(raw))
    return lines


async def test_the_stream_sends_table_backlog_live_transitions_heartbeats_and_bye() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    live.observe(event("podinfo", Transition.REVISION_DETECTED, START))
    live.observe(event("podinfo", Transition.WEIGHT_ADVANCED, START, detail="10", weight=10))
    async with (
        serve_live(live, clock, heartbeat_s=0.1) as srv,
        aiohttp.ClientSession() as http,
        http.get(srv.base + STREAM_PATH) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        hello, table, *backlog = await read_lines(response, 4)
        assert hello["type"] == "hello"
        assert (hello["instance"], hello["seq"], hello["oldest_seq"]) == (live.instance, 2, 1)
        assert hello["at"] == "2026-08-04T09:00:00Z"
        assert table["type"] == "canaries"
        assert [(c["canary"], c["weight"]) for c in table["canaries"]] == [("test/podinfo", 10)]
        assert [(b["type"], b["transition"]["seq"]) for b in backlog] == [
            ("transition", 1),
            ("transition", 2),
        ]
        assert live.subscribers == 1
        clock.advance_by(60)
        live.observe(
            event("podinfo", Transition.WEIGHT_ADVANCED, clock.now(), detail="20", weight=20)
        )
        (news,) = await read_lines(response, 1)
        assert news["type"] == "transition"
        assert news["transition"]["seq"] == 3
        assert news["transition"]["weight"] == 20
        assert news["canary"]["weight"] == 20
        assert news["canary"]["last_transition_at"] == "2026-08-04T09:01:00Z"
        (beat,) = await read_lines(response, 1)
        assert beat == {"type": "heartbeat", "at": "2026-08-04T09:01:00Z"}
        live.close()
        rest = [json.loads(line) async for line in response.content]
        assert rest[-1] == {"type": "bye"}
    assert live.subscribers == 0


async def test_a_reconnecting_client_gets_only_what_it_missed() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    for n in (10, 20, 30):
        live.observe(event("podinfo", Transition.WEIGHT_ADVANCED, START, detail=str(n), weight=n))
    async with serve_live(live, clock) as srv, aiohttp.ClientSession() as http:
        same = {"after": "2", "instance": live.instance}
        async with http.get(srv.base + STREAM_PATH, params=same) as response:
            _, _, missed = await read_lines(response, 3)
        other = {"after": "2", "instance": "another-process", "backlog": "2"}
        async with http.get(srv.base + STREAM_PATH, params=other) as response:
            _, _, *restarted = await read_lines(response, 4)
    assert missed["transition"]["seq"] == 3
    assert [r["transition"]["seq"] for r in restarted] == [2, 3]


async def test_a_stream_opened_after_close_ends_at_once() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    async with serve_live(live, clock) as srv, aiohttp.ClientSession() as http:
        live.close()
        async with http.get(srv.base + STREAM_PATH) as response:
            lines = [json.loads(line) async for line in response.content]
    assert [line["type"] for line in lines] == ["hello", "canaries", "bye"]
