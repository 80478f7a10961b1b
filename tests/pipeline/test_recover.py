"""``pipeline.recover``: a step the Canary status still shows, beyond the highest one the
correlator saw in the same rollout, is offered again after a restart; nothing else is made up.
(The loss it answers is reproduced in ``test_folded_events.py``.)"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest

from canarywatch.model import Phase, SourceName, Transition
from canarywatch.pipeline.correlate import Correlator, RolloutProgress
from canarywatch.pipeline.recover import ListedStatus, missed_steps, read_listed
from canarywatch.testing import make_event

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
CANARIES = SourceName.CANARIES

CANARY = {
    "apiVersion": "flagger.app/v1beta1",
    "kind": "Canary",
    "metadata": {"name": "podinfo", "namespace": "test", "labels": {"team": "web"}},
    "spec": {"targetRef": {"name": "podinfo"}, "analysis": {"stepWeight": 10}},
}


def listed(
    phase: str, *, weight: int = 0, iterations: int = 0, spec: str = "s1", step_promotion: int = 0
) -> ListedStatus:
    obj = {
        **CANARY,
        "spec": {
            "targetRef": {"name": "podinfo"},
            "analysis": {"stepWeight": 10, "stepWeightPromotion": step_promotion},
        },
        "status": {
            "phase": phase,
            "canaryWeight": weight,
            "iterations": iterations,
            "lastAppliedSpec": spec,
            "lastTransitionTime": "2026-08-04T09:30:00Z",
        },
    }
    found = read_listed({"type": "ADDED", "object": obj, "initial": True}, cluster="prod")
    assert found is not None
    return found


def known(*, weight: int = 0, iteration: int = 0, spec: str = "s1", ended: bool = False) -> Any:
    return RolloutProgress(rollout=spec, spec=spec, ended=ended, weight=weight, iteration=iteration)


def steps(found: Iterable[Any]) -> list[tuple[str, str]]:
    return [(e.transition.value, e.detail) for e in found]


def test_a_higher_weight_of_the_same_rollout_is_a_missed_step() -> None:
    (event,) = missed_steps(listed("Progressing", weight=40), known(weight=20), observed_at=START)
    assert (event.transition, event.detail, event.weight) == (Transition.WEIGHT_ADVANCED, "40", 40)
    assert event.sources == (CANARIES,)
    assert event.phase is Phase.PROGRESSING
    assert event.message == "From the Canary status (no Flagger message yet): canaryWeight 40"
    assert event.occurred_at == datetime(2026, 8, 4, 9, 30, tzinfo=UTC)
    assert event.hints["spec"] == "s1"
    assert event.hints["label:team"] == "web"
    assert str(event.canary) == "test/podinfo"
    assert event.canary.cluster == "prod"


@pytest.mark.parametrize(
    ("status", "progress"),
    [
        (listed("Progressing", weight=20), known(weight=20)),  # already seen
        (listed("Progressing", weight=10), known(weight=20)),  # never lower
        (listed("Progressing", weight=40, spec="s2"), known(weight=20)),  # another rollout
        (listed("Progressing", weight=40), known(weight=20, spec="")),  # which rollout? unsure
        (listed("Progressing", weight=40), known(weight=20, ended=True)),  # it ended
        (listed("Promoting", weight=30, step_promotion=20), known(weight=10)),  # primary steps
        (listed("Finalising", weight=0), known(weight=10)),  # zeroed outside the analysis
        (listed("WaitingPromotion", weight=0, iterations=4), known(iteration=1)),
        (listed("Succeeded"), None),  # a canary never seen
    ],
)
def test_no_step_is_made_up(status: ListedStatus, progress: RolloutProgress | None) -> None:
    assert missed_steps(status, progress, observed_at=START) == ()


def test_promoting_still_shows_the_last_step_without_stepped_promotion() -> None:
    found = missed_steps(listed("Promoting", weight=50), known(weight=30), observed_at=START)
    assert steps(found) == [("weight-advanced", "50")]


def test_iterations_are_recovered_like_weights() -> None:
    found = missed_steps(listed("Progressing", iterations=3), known(iteration=1), observed_at=START)
    assert steps(found) == [("iteration-advanced", "3")]


def test_only_a_canary_listed_again_is_read() -> None:
    obj = {**CANARY, "status": {"phase": "Progressing", "canaryWeight": 10}}
    assert read_listed({"type": "MODIFIED", "object": obj}, cluster="") is None
    assert read_listed({"type": "ADDED", "object": {"metadata": []}}, cluster="") is None
    assert read_listed("not a watch event", cluster="") is None
    assert read_listed({"type": "ADDED", "object": obj}, cluster="") is not None


def test_the_correlator_reports_the_highest_step_of_the_current_rollout() -> None:
    correlator = Correlator()
    canary = listed("Progressing").canary
    assert correlator.rollout_progress(canary) is None
    seen = [
        (Transition.REVISION_DETECTED, "", {"spec": "s0"}),
        (Transition.WEIGHT_ADVANCED, "50", {}),
        (Transition.PROMOTED, "", {}),
        (Transition.REVISION_DETECTED, "", {"spec": "s1"}),
        (Transition.WEIGHT_ADVANCED, "10", {}),
        (Transition.WEIGHT_ADVANCED, "20", {}),
        (Transition.ITERATION_ADVANCED, "2", {}),
    ]
    for i, (transition, detail, hints) in enumerate(seen):
        event = make_event(
            transition,
            canary="test/podinfo",
            cluster="prod",
            at=START.replace(minute=i),
            detail=detail,
            hints=hints,
        )
        correlator(event, event.observed_at)
    assert correlator.rollout_progress(canary) == RolloutProgress(
        rollout="s1", spec="s1", ended=False, weight=20, iteration=2
    )
