"""Every scenario, played on a VirtualClock: the Events and Canary statuses look like Flagger's,
and canarywatch's normalisers + correlator turn them into exactly the declared transitions."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.model import Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.simulator.event_recorder import COMBINED_PREFIX
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import (
    SCENARIOS,
    Pace,
    Scenario,
    play_all,
    realtime_pace,
    together,
    virtual_pace,
)
from canarywatch.simulator.store import Change, Store

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES
Transitions = dict[str, list[tuple[str, str]]]


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@dataclass
class Played:
    """A played scenario: every store change, stamped with the virtual time it was written."""

    sim: FlaggerSimulator
    changes: list[tuple[datetime, Change]] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        return [c.object for _, c in self.changes if c.resource == "events" and _live(c)]

    def messages(self, canary: str | None = None) -> list[tuple[str, str, str, int]]:
        """``(watch type, Event type, message, count)``, TTL deletions left out."""
        return [
            (c.type.value, c.object["type"], c.object["message"], c.object["count"])
            for _, c in self.changes
            if c.resource == "events"
            and _live(c)
            and (canary is None or _ref(c.object["involvedObject"]) == canary)
        ]

    def statuses(self, canary: str) -> list[dict[str, Any]]:
        return [
            c.object.get("status") or {}
            for _, c in self.changes
            if c.resource == "canaries" and _live(c) and _ref(c.object["metadata"]) == canary
        ]

    def transitions(self, *sources: SourceName) -> Transitions:
        """Feed the chosen sources' observations, in write order, through the real pipeline."""
        pipeline = policy.build_pipeline(None)
        got: Transitions = defaultdict(list)
        for at, change in self.changes:
            source = EVENTS if change.resource == "events" else CANARIES
            if source not in sources:
                continue
            data = {"type": change.type.value, "object": change.object}
            pipeline.observe(Observation(at=at, source=source, data=data), at)
            for notification in pipeline.due(at):
                for event in notification.events:
                    got[str(event.canary)].append((event.transition.value, event.detail))
        return dict(got)


def _live(change: Change) -> bool:
    return change.type.value != "DELETED"


def _ref(meta: dict[str, Any]) -> str:
    return f"{meta['namespace']}/{meta['name']}"


async def play(*names: str) -> Played:
    clock = VirtualClock(START)
    store = Store(clock=clock)
    sim = FlaggerSimulator(store, clock)
    played = Played(sim)
    subscriptions = [store.subscribe("events"), store.subscribe("canaries")]
    inner = virtual_pace(clock)

    def drain() -> None:
        batch: list[Change] = []
        for subscription in subscriptions:
            while not subscription.queue.empty():
                item = subscription.queue.get_nowait()
                assert isinstance(item, Change)
                batch.append(item)
        played.changes += [(clock.now(), c) for c in sorted(batch, key=lambda c: c.rv)]

    async def pace(seconds: float) -> None:
        drain()
        await inner(seconds)

    if len(names) == 1:
        await SCENARIOS[names[0]].run(sim, pace)
    else:
        await play_all(sim, pace, names=names)
    drain()
    for subscription in subscriptions:
        subscription.close()
    return played


def status_only(expected: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What the Canary status alone can tell (transitions.md): no readiness, no analysis start,
    and a failed check of any kind is ``halted``."""
    seen = [t for t in expected if t[0] not in ("not-ready", "analysis-started")]
    return [("halted", "") if t[0] == "no-traffic" else t for t in seen]


# -- end to end: declared transitions ---------------------------------------------------------


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_events_alone_yield_exactly_the_declared_transitions(name: str) -> None:
    played = await play(name)
    assert played.transitions(EVENTS) == SCENARIOS[name].expected


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_canary_status_alone_yields_what_status_can_tell(name: str) -> None:
    played = await play(name)
    expected = {k: status_only(v) for k, v in SCENARIOS[name].expected.items()}
    assert played.transitions(CANARIES) == expected


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_events_and_status_together_yield_each_transition_once(name: str) -> None:
    """Regression: a no-traffic halt also seen as failedChecks rising, and a rollout approval
    also seen as the phase leaving Waiting after the new revision, are each notified once."""
    played = await play(name)
    assert played.transitions(EVENTS, CANARIES) == SCENARIOS[name].expected


async def test_play_all_runs_every_scenario_back_to_back() -> None:
    played = await play(*SCENARIOS)
    expected: Transitions = defaultdict(list)
    for scenario in SCENARIOS.values():
        for canary, transitions in scenario.expected.items():
            expected[canary] += transitions
    assert played.transitions(EVENTS) == dict(expected)
    assert played.sim.canaries == []


# -- what Flagger writes, scenario by scenario ---------------------------------------------


async def test_rollback_records_five_halts_then_rolling_back_and_canary_failed() -> None:
    played = await play("rollback_failed_checks")
    warnings = [m for _, kind, m, _ in played.messages() if kind == "Warning"]
    assert warnings == [
        "Halt podinfo.test advancement success rate 96.12% < 99%",
        "Halt podinfo.test advancement success rate 93.87% < 99%",
        "Halt podinfo.test advancement request duration 1.283s > 500ms",
        "Halt podinfo.test advancement success rate 91.40% < 99%",
        "Halt podinfo.test advancement success rate 89.96% < 99%",
        "Rolling back podinfo.test failed checks threshold reached 5",
        "Canary failed! Scaling down podinfo.test",
    ]
    statuses = played.statuses("test/podinfo")
    assert [s["failedChecks"] for s in statuses if s.get("phase") == "Progressing"] == [
        0, 0, 0, 1, 2, 3, 4, 5,
    ]  # fmt: skip
    assert statuses[-1]["phase"] == "Failed"
    assert statuses[-1]["failedChecks"] == 5
    assert statuses[-1]["canaryWeight"] == 0
    assert statuses[-1]["conditions"][0]["status"] == "False"


async def test_no_traffic_is_one_event_whose_count_reaches_five() -> None:
    played = await play("no_traffic_halt_then_rollback")
    halts = [m for m in played.messages() if m[2].startswith("Halt advancement no values")]
    assert [(watch, count) for watch, _, _, count in halts] == [
        ("ADDED", 1), ("MODIFIED", 2), ("MODIFIED", 3), ("MODIFIED", 4), ("MODIFIED", 5),
    ]  # fmt: skip
    assert halts[0][2] == (
        "Halt advancement no values found for istio metric request-success-rate probably "
        "checkout.shop is not receiving traffic: running query failed: no values found"
    )
    text = played.sim.exposition()
    assert (
        'flagger_canary_metric_analysis{metric="request-success-rate",name="checkout"' not in text
    )
    assert 'flagger_canary_status{name="checkout",namespace="shop"} 2.0' in text


async def test_manual_gate_halts_once_per_gate_and_aggregates_the_tenth_message() -> None:
    played = await play("manual_approval_gate")
    messages = played.messages()
    assert [m[2] for m in messages if m[1] == "Warning" and m[2].startswith("Halt")] == [
        "Halt frontend.test advancement waiting for approval gate",
        "Halt frontend.test advancement waiting for promotion approval promotion-gate",
    ]
    assert messages[-1] == (
        "ADDED",
        "Normal",
        COMBINED_PREFIX + "Promotion completed! Scaling down frontend.test",
        1,
    )
    phases = [s.get("phase") for s in played.statuses("test/frontend")]
    assert [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]] == [
        "Succeeded", "Waiting", "Progressing", "WaitingPromotion", "Promoting", "Finalising",
        "Succeeded",
    ]  # fmt: skip


async def test_successful_rollout_matches_the_fixture_shape() -> None:
    played = await play("successful_rollout")
    texts = [m[2].removeprefix(COMBINED_PREFIX) for m in played.messages()]
    assert texts[:4] == [
        "all the metrics providers are available!",
        "podinfo-primary.test not ready: waiting for rollout to finish: observed deployment "
        "generation less than desired generation",
        "all the metrics providers are available!",
        "Initialization done! podinfo.test",
    ]
    combined = [m for m in played.messages() if m[2].startswith(COMBINED_PREFIX)]
    assert [(m[0], m[2], m[3]) for m in combined] == [
        ("ADDED", COMBINED_PREFIX + "Routing all traffic to primary", 1),
        ("MODIFIED", COMBINED_PREFIX + "Promotion completed! Scaling down podinfo.test", 2),
    ]
    weights = [s.get("canaryWeight", 0) for s in played.statuses("test/podinfo")]
    assert max(weights, default=0) == 50


async def test_progress_deadline_fails_without_rolling_back_on_checks() -> None:
    played = await play("progress_deadline_failure")
    warnings = [m for m in played.messages() if m[1] == "Warning"]
    assert warnings[-2:] == [
        (
            "ADDED",
            "Warning",
            'canary deployment podinfo.test not ready: deployment "podinfo" exceeded its '
            "progress deadline",
            1,
        ),
        ("ADDED", "Warning", "Canary failed! Scaling down podinfo.test", 1),
    ]
    assert warnings[-3][3] == 10  # the stuck-rollout Warning, patched once a tick
    assert not any(m[2].startswith("Rolling back") for m in warnings)


async def test_parallel_canaries_interleave_and_end_apart() -> None:
    played = await play("parallel_canaries")
    owners = [_ref(e["involvedObject"]) for e in played.events()]
    first_checkout = owners.index("shop/checkout")
    assert "test/podinfo" in owners[first_checkout:]  # both rollouts overlap in time
    text = played.sim.exposition()
    assert 'flagger_canary_status{name="podinfo",namespace="test"} 1.0' in text
    assert 'flagger_canary_status{name="checkout",namespace="shop"} 2.0' in text
    assert 'flagger_canary_total{namespace="shop"} 1.0' in text


# -- pacing ---------------------------------------------------------------------------------


async def test_together_interleaves_scripts_on_one_timeline() -> None:
    clock = VirtualClock(START)
    log: list[tuple[float, str]] = []

    def script(tag: str, step: float) -> Any:
        async def run(pace: Pace) -> None:
            for _ in range(3):
                await pace(step)
                log.append(((clock.now() - START).total_seconds(), tag))

        return run

    await together(virtual_pace(clock), script("a", 60), script("b", 45))
    assert log == [
        (45.0, "b"), (60.0, "a"), (90.0, "b"), (120.0, "a"), (135.0, "b"), (180.0, "a"),
    ]  # fmt: skip


async def test_realtime_pace_runs_a_scenario_on_the_system_clock() -> None:
    sim = FlaggerSimulator(Store(clock=SystemClock()), SystemClock())
    scenario: Scenario = SCENARIOS["progress_deadline_failure"]
    await scenario.run(sim, realtime_pace(speed=1e6))
    assert sim.canary("test", "podinfo").phase == "Failed"
    with pytest.raises(ValueError, match="positive"):
        realtime_pace(0)
