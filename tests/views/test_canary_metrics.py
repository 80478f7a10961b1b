"""Canonical canary-state series, read back from the test's own registry."""

from __future__ import annotations

import random
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.binaries import require_binary

from canarywatch.formats.recording import in_time_order, read
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Gate,
    Phase,
    SourceName,
    Transition,
)
from canarywatch.pipeline import policy
from canarywatch.views.canary_metrics import CanaryStateMetrics, inferred_phase

RECORDINGS = Path(__file__).parents[1] / "recordings"
T0 = datetime(2026, 8, 4, 12, 0, tzinfo=UTC)
PODINFO = CanaryRef("test", "podinfo", "default")


def new_transitions(name: str) -> list[CanaryEvent]:
    """Every new transition the default pipeline makes of a recording (what on_transitions gets).

    The observations are fed in recording order, as ``replay`` does; group timers do not change
    which transitions are new, so they are not driven here.
    """
    pipeline = policy.build_pipeline(None)
    events: list[CanaryEvent] = []
    for obs in in_time_order(read(RECORDINGS / name)):
        events.extend(pipeline.observe(obs, obs.at))
    return events


def fed(events: list[CanaryEvent]) -> tuple[CanaryStateMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    metrics.observe_all(events)
    return metrics, registry


def value(registry: CollectorRegistry, name: str, ref: CanaryRef, **extra: str) -> float | None:
    labels = {"cluster": ref.cluster, "namespace": ref.namespace, "canary": ref.name, **extra}
    return registry.get_sample_value(name, labels)


def phases(registry: CollectorRegistry, ref: CanaryRef) -> dict[str, float | None]:
    return {p.value: value(registry, "canarywatch_canary_phase", ref, phase=p.value) for p in Phase}


def transitions(registry: CollectorRegistry, ref: CanaryRef) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name != "canarywatch_canary_transitions_total":
                continue
            if (sample.labels["namespace"], sample.labels["canary"]) == (ref.namespace, ref.name):
                out[sample.labels["transition"]] = sample.value
    return out


def event(
    transition: Transition,
    at: datetime = T0,
    *,
    ref: CanaryRef = PODINFO,
    phase: Phase | None = None,
    weight: int | None = None,
    failed_checks: int | None = None,
    detail: str = "",
    sources: tuple[SourceName, ...] = (SourceName.KUBERNETES_EVENTS,),
) -> CanaryEvent:
    return CanaryEvent(
        canary=ref,
        transition=transition,
        observed_at=at,
        sources=sources,
        phase=phase,
        weight=weight,
        failed_checks=failed_checks,
        detail=detail,
    )


# -- recordings through the real pipeline ------------------------------------------------------


def test_rollback_recording() -> None:
    events = new_transitions("rollback.jsonl")
    assert {e.canary for e in events} == {PODINFO}
    metrics, registry = fed(events)

    state = phases(registry, PODINFO)
    assert state["Failed"] == 1
    values = list(state.values())
    assert (values.count(1.0), values.count(0.0)) == (1, 10)  # a state set: exactly one 1
    assert value(registry, "canarywatch_canary_weight", PODINFO) == 0  # reset by the rollback
    assert value(registry, "canarywatch_canary_failed_checks", PODINFO) == 5
    assert transitions(registry, PODINFO) == {
        "revision-detected": 1,
        "analysis-started": 1,
        "weight-advanced": 2,
        "halted": 1,  # five failed checks are one halted episode: deduplicated upstream
        "rolled-back": 1,
        "promoted": 0,  # outcome transitions are pre-declared so increase() sees the first one
        "promotion-failed": 0,
        "low-traffic-promotion": 0,
    }
    rolled_back = datetime(2026, 8, 4, 14, 8, 2, tzinfo=UTC)
    assert value(
        registry, "canarywatch_canary_last_transition_timestamp_seconds", PODINFO
    ) == pytest.approx(rolled_back.timestamp())
    assert metrics.canaries() == frozenset({PODINFO})


def test_rollback_recording_step_by_step() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    seen: list[tuple[str, str, float | None]] = []
    for e in new_transitions("rollback.jsonl"):
        metrics.observe(e)
        current = [p for p, v in phases(registry, PODINFO).items() if v == 1]
        assert len(current) == 1
        seen.append(
            (e.transition.value, current[0], value(registry, "canarywatch_canary_weight", PODINFO))
        )
    assert seen == [
        ("revision-detected", "Progressing", 0),
        ("analysis-started", "Progressing", 0),
        ("weight-advanced", "Progressing", 10),
        ("weight-advanced", "Progressing", 20),
        ("halted", "Progressing", 20),
        ("rolled-back", "Failed", 0),
    ]


def test_successful_rollout_recording() -> None:
    _, registry = fed(new_transitions("rollout-success.jsonl"))
    state = phases(registry, PODINFO)
    assert state["Succeeded"] == 1
    assert sum(v or 0 for v in state.values()) == 1
    assert value(registry, "canarywatch_canary_weight", PODINFO) == 0
    assert value(registry, "canarywatch_canary_failed_checks", PODINFO) == 0
    counts = transitions(registry, PODINFO)
    assert counts["weight-advanced"] == 5
    assert counts["promoted"] == 1
    assert counts["rolled-back"] == 0


def test_exposition_names_and_labels() -> None:
    _, registry = fed(new_transitions("rollback.jsonl"))
    families = {
        f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    assert families["canarywatch_canary_phase"].type == "gauge"
    assert families["canarywatch_canary_transitions"].type == "counter"
    for name in (
        "canarywatch_canary_phase",
        "canarywatch_canary_weight",
        "canarywatch_canary_failed_checks",
        "canarywatch_canary_last_transition_timestamp_seconds",
    ):
        for sample in families[name].samples:
            assert {"cluster", "namespace", "canary"} <= set(sample.labels)
    names = {s.name for s in families["canarywatch_canary_transitions"].samples}
    assert "canarywatch_canary_transitions_total" in names


# -- hand-fed events -------------------------------------------------------------------------


def test_phase_inferred_when_the_event_carries_none() -> None:
    cases = [
        (event(Transition.PROMOTED), Phase.SUCCEEDED),
        (event(Transition.ROLLED_BACK), Phase.FAILED),
        (event(Transition.PROMOTION_FAILED), Phase.FAILED),
        (event(Transition.REVISION_DETECTED), Phase.PROGRESSING),
        (event(Transition.ANALYSIS_STARTED), Phase.PROGRESSING),
        (event(Transition.WEIGHT_ADVANCED, weight=10), Phase.PROGRESSING),
        (event(Transition.AWAITING_APPROVAL, detail=Gate.PROMOTION.value), Phase.WAITING_PROMOTION),
        (event(Transition.AWAITING_APPROVAL, detail=Gate.ROLLOUT.value), Phase.WAITING),
        (event(Transition.PROMOTING), Phase.PROMOTING),
        (event(Transition.FINALISING), Phase.FINALISING),
        (event(Transition.INITIALIZED), Phase.INITIALIZED),
        (event(Transition.TERMINATED), Phase.TERMINATED),
        (event(Transition.HALTED), None),
        (event(Transition.AWAITING_APPROVAL, detail=Gate.TRAFFIC.value), None),
        (event(Transition.PROMOTED, phase=Phase.FAILED), Phase.FAILED),  # the event's own wins
    ]
    for e, expected in cases:
        assert inferred_phase(e) is expected, e.transition


def test_phase_stays_when_a_transition_implies_none() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    metrics.observe(event(Transition.HALTED))
    assert phases(registry, PODINFO) == dict.fromkeys(phases(registry, PODINFO))  # all absent
    metrics.observe(event(Transition.AWAITING_APPROVAL, detail=Gate.PROMOTION.value))
    assert phases(registry, PODINFO)["WaitingPromotion"] == 1
    metrics.observe(event(Transition.NOT_READY))
    assert phases(registry, PODINFO)["WaitingPromotion"] == 1


def test_weight_and_failed_checks() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    metrics.observe(event(Transition.HALTED, failed_checks=3))
    assert value(registry, "canarywatch_canary_weight", PODINFO) is None  # not known yet
    assert value(registry, "canarywatch_canary_failed_checks", PODINFO) == 3
    metrics.observe(event(Transition.REVISION_DETECTED))
    assert value(registry, "canarywatch_canary_failed_checks", PODINFO) == 0
    metrics.observe(event(Transition.WEIGHT_ADVANCED, weight=30))
    metrics.observe(event(Transition.PROMOTION_FAILED))
    # Flagger leaves the traffic on the canary when the primary does not become ready.
    assert value(registry, "canarywatch_canary_weight", PODINFO) == 30
    metrics.observe(event(Transition.PROMOTED))
    assert value(registry, "canarywatch_canary_weight", PODINFO) == 0


def test_self_events_are_not_canaries() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    source = CanaryRef("canarywatch", "flagger-prod", "prod")
    for transition in (
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
    ):
        metrics.observe(event(transition, ref=source, sources=(SourceName.SELF,)))
    assert metrics.canaries() == frozenset()
    assert [s for family in registry.collect() for s in family.samples] == []


def test_clusters_are_apart_and_forget_removes_only_one_canary() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    prod = CanaryRef("test", "podinfo", "prod")
    staging = CanaryRef("test", "podinfo", "staging")
    metrics.observe(event(Transition.REVISION_DETECTED, ref=prod))
    metrics.observe(event(Transition.WEIGHT_ADVANCED, ref=prod, weight=10))
    metrics.observe(event(Transition.PROMOTED, ref=staging))
    assert phases(registry, prod)["Progressing"] == 1
    assert phases(registry, staging)["Succeeded"] == 1

    metrics.forget(prod)
    metrics.forget(CanaryRef("test", "never-seen", "prod"))  # no-op
    text = generate_latest(registry).decode()
    assert 'cluster="prod"' not in text
    assert 'cluster="staging"' in text
    assert metrics.canaries() == frozenset({staging})
    # A canary of the same name created again starts from scratch.
    metrics.observe(event(Transition.INITIALIZED, ref=prod))
    assert transitions(registry, prod)["initialized"] == 1
    assert value(registry, "canarywatch_canary_weight", prod) is None


def test_last_transition_timestamp_never_moves_backwards() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    metrics.observe(event(Transition.REVISION_DETECTED, T0 + timedelta(minutes=5)))
    late = CanaryEvent(
        canary=PODINFO,
        transition=Transition.ANALYSIS_STARTED,
        observed_at=T0 + timedelta(minutes=6),
        occurred_at=T0 + timedelta(minutes=1),  # the source's time wins, and it is older
        sources=(SourceName.KUBERNETES_EVENTS,),
    )
    metrics.observe(late)
    stamp = value(registry, "canarywatch_canary_last_transition_timestamp_seconds", PODINFO)
    assert stamp == pytest.approx((T0 + timedelta(minutes=5)).timestamp())


def test_declare_pre_creates_outcome_counters_only() -> None:
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    metrics.declare(PODINFO)
    metrics.declare(PODINFO)
    assert transitions(registry, PODINFO) == {
        "promoted": 0,
        "rolled-back": 0,
        "promotion-failed": 0,
        "low-traffic-promotion": 0,
    }
    assert phases(registry, PODINFO)["Succeeded"] is None
    metrics.observe(event(Transition.ROLLED_BACK))
    assert transitions(registry, PODINFO)["rolled-back"] == 1


# -- the documented alert rules, run by promtool -----------------------------------------------

DOC = Path(__file__).parents[2] / "docs" / "alert-rules.md"

PROMTOOL_TESTS = """\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # prod/test/podinfo rolls back at 3m; dev's podinfo never does.
      - series: '{t}{{cluster="prod",namespace="test",canary="podinfo",transition="rolled-back"}}'
        values: '0 0 0 1x30'
      - series: '{t}{{cluster="dev",namespace="test",canary="podinfo",transition="rolled-back"}}'
        values: '0x33'
      # "slow" is Progressing with its last transition at 60 s; "busy" advances every minute.
      - series: '{p}{{cluster="prod",namespace="test",canary="slow",phase="Progressing"}}'
        values: '1x45'
      - series: '{ts}{{cluster="prod",namespace="test",canary="slow"}}'
        values: '60x45'
      - series: '{p}{{cluster="prod",namespace="test",canary="busy",phase="Progressing"}}'
        values: '1x45'
      - series: '{ts}{{cluster="prod",namespace="test",canary="busy"}}'
        values: '60+60x45'
      # Succeeded long ago: not stuck.
      - series: '{p}{{cluster="prod",namespace="test",canary="done",phase="Progressing"}}'
        values: '0x45'
      - series: '{ts}{{cluster="prod",namespace="test",canary="done"}}'
        values: '60x45'
    alert_rule_test:
      - eval_time: 5m
        alertname: CanaryRolledBack
        exp_alerts:
          - exp_labels: {{severity: critical, cluster: prod, namespace: test, canary: podinfo}}
            exp_annotations:
              summary: "Canary test/podinfo (prod) was rolled back"
      - eval_time: 15m
        alertname: CanaryRolledBack
        exp_alerts: []
      - eval_time: 30m
        alertname: CanaryRolloutStuck
        exp_alerts: []
      - eval_time: 40m
        alertname: CanaryRolloutStuck
        exp_alerts:
          - exp_labels: {{severity: warning, cluster: prod, namespace: test, canary: slow}}
            exp_annotations:
              summary: "Canary test/slow (prod) has not advanced for 30m"
""".format(
    t="canarywatch_canary_transitions_total",
    p="canarywatch_canary_phase",
    ts="canarywatch_canary_last_transition_timestamp_seconds",
)


def documented_rules() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    [rules] = [b for b in blocks if b.startswith("groups:")]
    return str(rules)


@pytest.mark.needs_binaries
def test_documented_rules_fire_on_these_series(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    (tmp_path / "rules.yaml").write_text(documented_rules(), encoding="utf-8")
    (tmp_path / "tests.yaml").write_text(PROMTOOL_TESTS, encoding="utf-8")
    check = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    result = subprocess.run(
        [promtool, "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The rules use exactly the names and labels CanaryStateMetrics exports.
    _, registry = fed(new_transitions("rollback.jsonl"))
    exported = {s.name for family in registry.collect() for s in family.samples}
    for name in re.findall(r"canarywatch_canary_[a-z_]+", documented_rules()):
        assert name in exported, name


def test_the_phase_state_set_has_one_1_through_any_sequence_of_phases() -> None:
    """Only the two series that change are written per transition (issue 17); every step must
    still leave all eleven present, exactly one of them 1: the phase the event implies."""
    rng = random.Random(17)
    registry = CollectorRegistry()
    metrics = CanaryStateMetrics(registry)
    expected: Phase | None = None
    for step in range(300):
        phase = rng.choice((*Phase, None))
        transition = rng.choice((Transition.HALTED, Transition.WEIGHT_ADVANCED))
        happened = event(transition, T0 + timedelta(seconds=step), phase=phase, weight=10)
        metrics.observe(happened)
        expected = inferred_phase(happened) or expected
        if expected is None:
            assert set(phases(registry, PODINFO).values()) == {None}
        else:
            assert phases(registry, PODINFO) == {p.value: float(p is expected) for p in Phase}
