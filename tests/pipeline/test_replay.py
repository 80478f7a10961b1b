"""The fixture scenarios end to end through ``replay`` (expected sequences: fixtures README)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canarywatch.formats import recording
from canarywatch.model import Notification, NotificationStatus, Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.pipeline.replay import replay

RECORDINGS = Path(__file__).parents[1] / "recordings"

EXPECTED: dict[str, list[tuple[str, str]]] = {
    "rollout-success": [
        ("not-ready", ""),
        ("initialized", ""),
        ("revision-detected", ""),
        ("not-ready", ""),
        ("analysis-started", ""),
        ("weight-advanced", "10"),
        ("weight-advanced", "20"),
        ("weight-advanced", "30"),
        ("weight-advanced", "40"),
        ("weight-advanced", "50"),
        ("promoting", ""),
        ("not-ready", ""),
        ("finalising", ""),
        ("promoted", ""),
    ],
    "manual-gate": [
        ("awaiting-approval", "rollout"),
        ("approved", "rollout"),
        ("revision-detected", ""),
        ("not-ready", ""),
        ("analysis-started", ""),
        ("weight-advanced", "5"),
        ("weight-advanced", "25"),
        ("weight-advanced", "50"),
        ("awaiting-approval", "promotion"),
        ("approved", "promotion"),
        ("promoting", ""),
        ("not-ready", ""),
        ("finalising", ""),
        ("promoted", ""),
    ],
    "rollback": [
        ("revision-detected", ""),
        ("analysis-started", ""),
        ("weight-advanced", "10"),
        ("weight-advanced", "20"),
        ("halted", ""),
        ("rolled-back", ""),
    ],
    "no-traffic-halt": [
        ("revision-detected", ""),
        ("analysis-started", ""),
        ("weight-advanced", "10"),
        ("no-traffic", ""),
        ("rolled-back", ""),
    ],
}


def run(observations: list[Observation]) -> list[Notification]:
    return list(replay(observations, policy.build_pipeline(None)))


def transitions(notifications: list[Notification]) -> list[tuple[str, str]]:
    return [(e.transition.value, e.detail) for n in notifications for e in n.events]


def per_canary(notifications: list[Notification]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for n in notifications:
        for e in n.events:
            out[str(e.canary)].append((e.transition.value, e.detail))
    return dict(out)


def test_each_fixture_scenario_yields_exactly_its_expected_transitions() -> None:
    for scenario, expected in EXPECTED.items():
        notifications = run(recording.read(RECORDINGS / f"{scenario}.jsonl"))
        assert transitions(notifications) == expected, scenario
        # The built-in default policy: one firing notification per transition, to "default".
        assert all(len(n.events) == 1 for n in notifications)
        assert {n.receiver for n in notifications} == {"default"}
        assert {n.status for n in notifications} == {NotificationStatus.FIRING}


def test_rollback_reason_and_failed_checks_survive_correlation() -> None:
    notifications = run(recording.read(RECORDINGS / "rollback.jsonl"))
    rolled_back = notifications[-1].events[0]
    assert rolled_back.reason == "failed-checks"
    assert rolled_back.failed_checks == 5
    assert rolled_back.labels["severity"] == "critical"
    halted = notifications[-2].events[0]
    assert halted.reason == "request-success-rate 96.12 < 99"


def test_notifications_are_sent_when_observed_on_virtual_time() -> None:
    notifications = run(recording.read(RECORDINGS / "rollback.jsonl"))
    for n in notifications:
        (event,) = n.events
        assert n.created_at == event.observed_at


def test_the_same_rollback_through_four_sources_is_notified_once_per_transition() -> None:
    multi = recording.read(RECORDINGS / "rollback-multisource.jsonl")
    assert {o.source for o in multi} == {
        SourceName.KUBERNETES_EVENTS,
        SourceName.CANARIES,
        SourceName.FLAGGER_WEBHOOK,
        SourceName.FLAGGER_METRICS,
    }
    notifications = run(multi)
    assert transitions(notifications) == EXPECTED["rollback"]
    # One rollout id for every event of the rollout, whichever source spoke first.
    assert len({e.rollout for n in notifications for e in n.events}) == 1


def test_a_rollback_seen_only_through_canary_status_is_still_notified() -> None:
    notifications = run(recording.read(RECORDINGS / "rollback-status-only.jsonl"))
    assert transitions(notifications) == [
        ("revision-detected", ""),
        ("weight-advanced", "10"),
        ("weight-advanced", "20"),
        ("halted", ""),
        ("rolled-back", ""),
    ]
    assert notifications[-1].events[0].sources == (SourceName.CANARIES,)


def test_the_whole_day_keeps_per_canary_order() -> None:
    day = per_canary(run(recording.read(RECORDINGS / "day.jsonl")))
    podinfo = EXPECTED["rollout-success"] + EXPECTED["rollback"]
    assert day == {
        "test/podinfo": podinfo,
        "test/frontend": EXPECTED["manual-gate"],
        "shop/checkout": EXPECTED["no-traffic-halt"],
    }


def interleave(
    observations: list[Observation], rng: random.Random, dup_rate: float
) -> list[Observation]:
    """Another file order: each source's lines keep their order, sources mix at random."""
    streams: dict[SourceName, list[Observation]] = defaultdict(list)
    for obs in observations:
        copies = 2 if rng.random() < dup_rate else 1  # a relist / retried webhook re-delivers
        streams[obs.source].extend([obs] * copies)
    merged: list[Observation] = []
    queues = [list(reversed(stream)) for stream in streams.values()]
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop())
        queues = [q for q in queues if q]
    return merged


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), dup_rate=st.floats(0, 1))
def test_duplicated_lines_and_other_interleavings_yield_the_same_transitions(
    seed: int, dup_rate: float
) -> None:
    """Lines duplicated, or the sources interleaved differently in the file, change nothing."""
    rng = random.Random(seed)
    for name in ("rollback-multisource", "day"):
        observations = recording.read(RECORDINGS / f"{name}.jsonl")
        baseline = per_canary(run(observations))
        assert per_canary(run(interleave(observations, rng, dup_rate))) == baseline, name
