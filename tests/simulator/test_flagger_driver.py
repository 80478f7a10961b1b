"""The Flagger driver tick by tick: Events as the fixtures show them, realistic Canary status,
and a /metrics consistent with both (reference/flagger.md §1-§3, §6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from canarywatch.clock import VirtualClock
from canarywatch.simulator.event_recorder import COMBINED_PREFIX
from canarywatch.simulator.flagger import FlaggerSimulator, SimulatedCanary, status_value
from canarywatch.simulator.metrics_server import CONTENT_TYPE, FlaggerMetricsServer
from canarywatch.simulator.store import Change, Store

FIXTURES = Path("/work/shared/fixtures/flagger")
START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def at(hms: str) -> datetime:
    h, m, s = (int(x) for x in hms.split(":"))
    return START.replace(hour=h, minute=m, second=s)


def fixture(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def series(text: str) -> Series:
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, family: str, /, **labels: str) -> float | None:
    return series(text).get((family, frozenset(labels.items())))


def names(text: str) -> set[str]:
    return {name for name, _ in series(text)}


def make() -> tuple[VirtualClock, Store, FlaggerSimulator]:
    clock = VirtualClock(START)
    store = Store(clock=clock)
    return clock, store, FlaggerSimulator(store, clock)


def timed(clock: VirtualClock, steps: list[tuple[str, Callable[[], None]]]) -> None:
    for when, step in steps:
        clock.advance_to(at(when))
        step()


def comparable(change_type: str, obj: dict[str, Any]) -> tuple[Any, ...]:
    return change_type, obj["type"], obj["message"], obj["count"]


def drain(queue: Any) -> list[Change]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


# -- the fixture day, re-enacted ------------------------------------------------------------


def test_podinfo_day_reproduces_the_rollout_and_rollback_fixture_streams() -> None:
    clock, store, sim = make()
    events = store.subscribe("events")
    podinfo = sim.create_canary("test", "podinfo", phase_initialized=False)
    timed(
        clock,
        [
            ("09:00:02", lambda: podinfo.initialize(primary_ready=False)),
            ("09:01:02", podinfo.initialize),
            ("10:31:02", lambda: podinfo.new_revision("8c669c5f")),
            ("10:32:02", podinfo.not_ready),
            ("10:33:02", podinfo.start_analysis),
            *[(f"10:3{m}:02", podinfo.advance) for m in range(4, 8)],
            ("10:38:02", podinfo.promote),
            ("10:39:02", lambda: podinfo.not_ready("primary")),
            ("10:40:02", podinfo.finalise),
            ("10:41:03", podinfo.succeed),
        ],
    )
    rollout = drain(events.queue)
    assert [comparable(c.type.value, c.object) for c in rollout] == [
        comparable(line["type"], line["object"]) for line in fixture("events-rollout-success.jsonl")
    ]
    halts = [
        ("request-success-rate", 96.12),
        ("request-success-rate", 93.87),
        ("request-duration", 1.283),
        ("request-success-rate", 91.40),
        ("request-success-rate", 89.96),
    ]
    timed(
        clock,
        [
            ("14:00:02", lambda: podinfo.new_revision("b7d2e914")),
            ("14:01:02", podinfo.start_analysis),
            ("14:02:02", lambda: podinfo.advance(20)),
            *[
                (f"14:0{3 + i}:02", lambda m=metric, v=val: podinfo.halt_metric(m, v))
                for i, (metric, val) in enumerate(halts)
            ],
            ("14:08:02", podinfo.rollback),
        ],
    )
    rollback = [c for c in drain(events.queue) if c.type.value != "DELETED"]
    lines = fixture("events-rollback.jsonl")
    assert [comparable(c.type.value, c.object) for c in rollback] == [
        comparable(line["type"], line["object"]) for line in lines
    ]
    # Re-created after the TTL under the old name, with the 10:31 firstTimestamp kept.
    assert rollback[0].object["firstTimestamp"] == "2026-08-04T10:31:02Z"
    assert rollback[0].object["metadata"]["name"] == rollout[7].object["metadata"]["name"]


def test_checkout_no_traffic_reproduces_its_fixture_stream() -> None:
    clock, store, sim = make()
    checkout = sim.create_canary("shop", "checkout", analysis={"threshold": 5, "stepWeight": 10})
    events = store.subscribe("events")
    timed(
        clock,
        [
            ("15:20:22", lambda: checkout.new_revision("3f0a9c21")),
            ("15:21:22", checkout.start_analysis),
            *[(f"15:2{m}:22", checkout.halt_no_traffic) for m in range(2, 7)],
            ("15:27:22", checkout.rollback),
        ],
    )
    assert [comparable(c.type.value, c.object) for c in drain(events.queue)] == [
        comparable(line["type"], line["object"]) for line in fixture("events-no-traffic-halt.jsonl")
    ]


# -- status ---------------------------------------------------------------------------------


def test_status_fields_follow_flaggers_writes() -> None:
    clock, store, sim = make()
    podinfo = sim.create_canary("test", "podinfo", revision="old")
    canaries = store.subscribe("canaries")
    assert podinfo.status["lastPromotedSpec"] == "old"
    podinfo.new_revision("new")
    status = podinfo.status
    assert (status["phase"], status["lastAppliedSpec"], status["lastPromotedSpec"]) == (
        "Progressing",
        "new",
        "old",
    )
    assert status["conditions"][0]["reason"] == "Progressing"
    assert status["conditions"][0]["status"] == "Unknown"
    clock.advance_by(60)
    podinfo.start_analysis()
    clock.advance_by(60)
    podinfo.halt_metric("request-success-rate", 90.0)
    clock.advance_by(60)
    podinfo.advance()
    assert (podinfo.status["canaryWeight"], podinfo.status["failedChecks"]) == (20, 1)
    assert podinfo.status["lastTransitionTime"] == "2026-08-04T09:03:00Z"
    for _ in range(3):
        clock.advance_by(60)
        podinfo.advance()
    clock.advance_by(60)
    podinfo.promote()
    assert (podinfo.phase, podinfo.status["canaryWeight"]) == ("Promoting", 50)
    clock.advance_by(60)
    podinfo.finalise()
    assert (podinfo.phase, podinfo.status["canaryWeight"]) == ("Finalising", 0)
    clock.advance_by(60)
    podinfo.succeed()
    final = podinfo.status
    assert (final["phase"], final["lastPromotedSpec"], final["failedChecks"]) == (
        "Succeeded",
        "new",
        1,
    )
    assert final["conditions"][0]["status"] == "True"
    changes = drain(canaries.queue)
    assert all(c.object["metadata"]["generation"] == 1 for c in changes)  # status only
    assert {c.type.value for c in changes} == {"MODIFIED"}


def test_steps_flagger_could_not_take_are_refused() -> None:
    _, _, sim = make()
    podinfo = sim.create_canary("test", "podinfo")
    with pytest.raises(ValueError, match="needs phase Progressing"):
        podinfo.advance()
    podinfo.new_revision()
    podinfo.start_analysis()
    with pytest.raises(ValueError, match="threshold"):
        podinfo.rollback("failed-checks")
    with pytest.raises(ValueError, match="next step is weight 20"):
        podinfo.advance(30)
    with pytest.raises(ValueError, match="within"):
        podinfo.halt_metric("request-success-rate", 99.5)
    with pytest.raises(ValueError, match="unknown rollback reason"):
        podinfo.rollback("gremlins")
    with pytest.raises(ValueError, match="already exists"):
        sim.create_canary("test", "podinfo")


def test_manual_rollback_and_promotion_failure_messages() -> None:
    _, store, sim = make()
    hooks = {"threshold": 2, "stepWeight": 25, "maxWeight": 50, "webhooks": [
        {"name": "rollback-hook", "type": "rollback"}]}  # fmt: skip
    podinfo = sim.create_canary("test", "podinfo", target="podinfo-app", analysis=hooks)
    podinfo.new_revision()
    podinfo.start_analysis()
    podinfo.rollback("manual")
    frontend = sim.create_canary("test", "frontend", analysis={"stepWeight": 50, "maxWeight": 50})
    frontend.new_revision()
    frontend.start_analysis()
    frontend.promote()
    frontend.promotion_failed('deployment "frontend-primary" exceeded its progress deadline')
    msgs = [(e["type"], e["message"]) for e in store.items("events")]
    assert ("Normal", "Rollback hook rollback-hook not signaling a rollback") in msgs
    assert ("Warning", "Rollback check rollback-hook passed") in msgs
    assert ("Warning", "Rolling back podinfo.test manual webhook invoked") in msgs
    # %s.%s rules: the Canary's name for Rolling back/Canary failed!, the target for (T).
    assert ("Normal", "New revision detected! Scaling up podinfo-app.test") in msgs
    assert ("Warning", "Canary failed! Scaling down podinfo.test") in msgs
    assert (
        "Warning",
        'Promotion of frontend.test failed, primary not ready: deployment "frontend-primary" '
        "exceeded its progress deadline",
    ) in msgs
    assert not any(m.startswith("Rolling back podinfo.test failed checks") for _, m in msgs)
    assert (podinfo.phase, frontend.phase) == ("Failed", "Failed")
    text = sim.exposition()
    assert value(text, "flagger_canary_status", name="podinfo-app", namespace="test") == 2
    assert value(text, "flagger_canary_weight", namespace="test", workload="frontend") == 50


def test_terminate_records_both_events_and_deletes_the_canary() -> None:
    _, store, sim = make()
    podinfo = sim.create_canary("test", "podinfo", revert_on_deletion=True)
    podinfo.terminate()
    assert [e["message"] for e in store.items("events")] == [
        "Terminating canary podinfo.test",
        "Terminated canary podinfo.test",
    ]
    assert store.items("canaries") == []
    assert value(sim.exposition(), "flagger_canary_total", namespace="test") == 1  # never 0


def test_blue_green_iterations_then_promotion() -> None:
    _, store, sim = make()
    bg = sim.create_canary("test", "bg", analysis={"iterations": 2, "threshold": 1})
    bg.new_revision()
    bg.start_analysis()
    bg.iteration(2, 2)
    bg.promote()
    bg.promote()
    assert [e["message"] for e in store.items("events")][-4:] == [
        "Advance bg.test canary iteration 1/2",
        "Advance bg.test canary iteration 2/2",
        "Routing all traffic to canary",
        "Copying bg.test template spec to bg-primary.test",
    ]
    assert bg.phase == "Promoting"


# -- metrics --------------------------------------------------------------------------------


def test_metrics_follow_a_rollout_like_the_fixture_snapshots() -> None:
    clock, _, sim = make()
    podinfo = sim.create_canary("test", "podinfo", phase_initialized=False)
    sim.create_canary("test", "frontend")
    text = sim.exposition()
    assert value(text, "flagger_info", mesh_provider="istio", version="1.44.0") == 1
    assert value(text, "flagger_canary_total", namespace="test") == 2
    assert value(text, "flagger_canary_status", name="frontend", namespace="test") == 1
    assert value(text, "flagger_canary_status", name="podinfo", namespace="test") is None
    podinfo.initialize(primary_ready=False)
    clock.advance_by(60)
    podinfo.initialize()
    podinfo.tick()
    text = sim.exposition()
    assert value(text, "flagger_canary_status", name="podinfo", namespace="test") == 1
    assert "flagger_canary_weight" not in names(text)  # idle canaries never read the routes
    podinfo.new_revision()
    text = sim.exposition()
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 0
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo-primary") == 100
    # Written from the phase at the start of the tick: still 1 on the new-revision tick.
    assert value(text, "flagger_canary_status", name="podinfo", namespace="test") == 1
    for step in (podinfo.start_analysis, podinfo.advance, podinfo.advance):
        clock.advance_by(60)
        step()
    text = sim.exposition()
    assert value(text, "flagger_canary_status", name="podinfo", namespace="test") == 0
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 30
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo-primary") == 70
    assert (
        value(text, "flagger_canary_duration_seconds_count", name="podinfo", namespace="test") == 3
    )
    metric = {"name": "podinfo", "namespace": "test"}
    rate = value(text, "flagger_canary_metric_analysis", metric="request-success-rate", **metric)
    assert rate == 100
    assert (
        value(text, "flagger_canary_metric_analysis", metric="request-duration", **metric) == 0.191
    )
    assert "flagger_canary_weight" in names(text)
    assert "flagger_canary_weight" not in {
        n for n, labels in series(text) if ("workload", "frontend") in labels
    }
    for later in (podinfo.advance, podinfo.advance, podinfo.promote, podinfo.finalise):
        clock.advance_by(60)
        later()
    clock.advance_by(60)
    podinfo.succeed()
    text = sim.exposition()
    done = {"analysis_status": "completed", "deployment_strategy": "canary", **metric}
    assert value(text, "flagger_canary_successes_total", **done) == 1
    assert value(text, "flagger_canary_status", **metric) == 1
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 0
    assert value(text, "flagger_canary_duration_seconds_count", **metric) == 6
    assert "flagger_canary_failures_total" not in names(text)


def test_metrics_after_a_rollback_show_status_two_until_the_next_revision() -> None:
    clock, _, sim = make()
    podinfo = sim.create_canary("test", "podinfo", analysis={"threshold": 2, "stepWeight": 10,
        "metrics": [{"name": "request-duration", "thresholdRange": {"max": 500}}]})  # fmt: skip
    podinfo.new_revision()
    podinfo.start_analysis()
    podinfo.halt_metric("request-duration", 1.283)
    podinfo.halt_metric("request-duration", 0.75)
    text = sim.exposition()
    metric = {"name": "podinfo", "namespace": "test"}
    assert value(text, "flagger_canary_status", **metric) == 0
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 10
    podinfo.rollback()
    podinfo.tick()
    text = sim.exposition()
    assert value(text, "flagger_canary_status", **metric) == 2
    failed = {"analysis_status": "completed", "deployment_strategy": "canary", **metric}
    assert value(text, "flagger_canary_failures_total", **failed) == 1
    assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 0
    assert (
        value(text, "flagger_canary_metric_analysis", metric="request-duration", **metric) == 0.75
    )
    podinfo.new_revision()
    clock.advance_by(60)
    podinfo.not_ready()
    assert value(sim.exposition(), "flagger_canary_status", **metric) == 0


def test_status_mapping() -> None:
    assert [status_value(p) for p in ("Progressing", "Failed", "WaitingPromotion", "")] == [
        0, 2, 1, 1,
    ]  # fmt: skip


def test_exposition_families_are_ordered_like_client_golang() -> None:
    _, _, sim = make()
    sim.create_canary("test", "podinfo")
    families = [f.name for f in text_string_to_metric_families(sim.exposition())]
    flagger = [n for n in families if n.startswith("flagger_")]
    assert flagger == sorted(flagger)
    assert {
        "go_goroutines",
        "process_start_time_seconds",
        "promhttp_metric_handler_requests",
    } <= set(families)


# -- the /metrics endpoint ------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_metrics_server_serves_scrapes_and_injects_faults() -> None:
    _, _, sim = make()
    podinfo: SimulatedCanary = sim.create_canary("test", "podinfo")
    podinfo.new_revision()
    async with FlaggerMetricsServer(sim) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.metrics_url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE
            text = await response.text()
        assert value(text, "flagger_canary_weight", namespace="test", workload="podinfo") == 0
        srv.fail_next(2)
        codes = []
        for _ in range(3):
            async with http.get(srv.metrics_url) as response:
                codes.append(response.status)
        assert codes == [500, 500, 200]
        srv.stop_answering()
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(srv.metrics_url, timeout=aiohttp.ClientTimeout(total=0.2)):
                pass
        srv.resume()
        async with http.get(srv.metrics_url) as response:
            text = await response.text()
        assert value(text, "promhttp_metric_handler_requests_total", code="500") == 2
        assert srv.requests == 6
    with pytest.raises(RuntimeError, match="not started"):
        _ = srv.url


def test_combined_prefix_constant_is_the_recorders() -> None:
    assert COMBINED_PREFIX == "(combined from similar events): "
