"""Canary status diffs: every "from Canary status" row of transitions.md, and state-is-not-news."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarywatch.model import (
    CanaryRef,
    Normalised,
    Observation,
    Outcome,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.status import (
    CanaryStatusNormaliser,
    CanaryStatusView,
    StatusTransition,
    diff_status,
    parse_canary,
)

AT = datetime(2026, 8, 4, 10, 31, tzinfo=UTC)
OLD_SPEC = "865dbb8b64"
NEW_SPEC = "8c669c5f"

CONDITION_MESSAGES = {
    "Initializing": "New Deployment detected, starting initialization.",
    "Initialized": "Deployment initialization completed.",
    "Waiting": "Waiting for approval.",
    "WaitingPromotion": "Waiting for approval.",
    "Progressing": "New revision detected, progressing canary analysis.",
    "Promoting": "Canary analysis completed, starting primary rolling update.",
    "Finalising": "Canary analysis completed, routing all traffic to primary.",
    "Succeeded": "Canary analysis completed successfully, promotion finished.",
    "Failed": "Canary analysis failed, Deployment scaled to zero.",
}


def canary(
    phase: str,
    *,
    weight: int = 0,
    iterations: int = 0,
    failed: int = 0,
    spec: str = OLD_SPEC,
    ltt: str = "2026-08-04T10:31:00Z",
    threshold: int | None = 5,
    name: str = "podinfo",
) -> dict[str, Any]:
    """A flagger.app/v1beta1 Canary as the API server returns it (reference/flagger.md §2)."""
    cond_status = {"Initialized": "True", "Succeeded": "True", "Failed": "False"}.get(
        phase, "Unknown"
    )
    analysis: dict[str, Any] = {
        "interval": "1m",
        "maxWeight": 50,
        "stepWeight": 10,
        "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
    }
    if threshold is not None:
        analysis["threshold"] = threshold
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {
            "name": name,
            "namespace": "test",
            "uid": "6f1c3d52-0000-4000-8000-000000000001",
            "resourceVersion": "48213",
            "generation": 3,
            "labels": {"team": "payments", "app": name},
            "annotations": {"canarywatch.io/channel": "#deploys"},
        },
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": analysis,
        },
        "status": {
            "phase": phase,
            "failedChecks": failed,
            "canaryWeight": weight,
            "iterations": iterations,
            "lastAppliedSpec": spec,
            "lastPromotedSpec": OLD_SPEC,
            "trackedConfigs": {},
            "lastTransitionTime": ltt,
            "conditions": [
                {
                    "type": "Promoted",
                    "status": cond_status,
                    "reason": phase,
                    "message": CONDITION_MESSAGES.get(phase, ""),
                    "lastUpdateTime": ltt,
                    "lastTransitionTime": ltt,
                }
            ],
        },
    }


def watch(kind: str, obj: Any) -> Observation:
    return Observation(
        at=AT, source=SourceName.CANARIES, data={"type": kind, "object": obj}, cluster="prod-eu-1"
    )


def feed(*objects: dict[str, Any]) -> tuple[CanaryStatusNormaliser, Normalised]:
    """Feed objects as ADDED then MODIFIED; return the normaliser and the last answer."""
    normaliser = CanaryStatusNormaliser()
    result = normaliser(watch("ADDED", objects[0]))
    for obj in objects[1:]:
        result = normaliser(watch("MODIFIED", obj))
    return normaliser, result


def kinds(result: Normalised) -> list[tuple[Transition, str]]:
    return [(e.transition, e.detail) for e in result.events]


def view(obj: dict[str, Any]) -> CanaryStatusView:
    return parse_canary(obj)


# -- one row of transitions.md per case ---------------------------------------------------

ROWS = [
    pytest.param(
        canary("Initializing", spec=""),
        canary("Initialized"),
        [(Transition.INITIALIZED, "", "")],
        id="initialized",
    ),
    pytest.param(
        canary("Succeeded"),
        canary("Waiting"),
        [(Transition.AWAITING_APPROVAL, "rollout", "")],
        id="awaiting-approval-rollout",
    ),
    pytest.param(
        canary("Progressing", weight=50, spec=NEW_SPEC),
        canary("WaitingPromotion", weight=0, spec=NEW_SPEC),
        [(Transition.AWAITING_APPROVAL, "promotion", "")],
        id="awaiting-approval-promotion",
    ),
    pytest.param(
        canary("Waiting"),
        canary("Progressing", spec=NEW_SPEC),
        [(Transition.APPROVED, "rollout", ""), (Transition.REVISION_DETECTED, "", "")],
        id="approved-rollout-then-revision",
    ),
    pytest.param(
        canary("WaitingPromotion", spec=NEW_SPEC),
        canary("Promoting", weight=50, spec=NEW_SPEC),
        [(Transition.APPROVED, "promotion", ""), (Transition.PROMOTING, "", "")],
        id="approved-promotion-then-promoting",
    ),
    pytest.param(
        canary("Succeeded"),
        canary("Progressing", spec=NEW_SPEC),
        [(Transition.REVISION_DETECTED, "", "")],
        id="revision-detected-from-succeeded",
    ),
    pytest.param(
        canary("Failed", failed=5),
        canary("Progressing", failed=0),
        [(Transition.REVISION_DETECTED, "", "")],
        id="revision-detected-by-phase-alone",
    ),
    pytest.param(
        canary("Progressing", weight=30, spec=OLD_SPEC),
        canary("Progressing", weight=0, spec=NEW_SPEC),
        [(Transition.REVISION_DETECTED, "", "")],
        id="revision-detected-restarting-analysis",
    ),
    pytest.param(
        canary("Progressing", weight=10, spec=NEW_SPEC),
        canary("Progressing", weight=20, spec=NEW_SPEC),
        [(Transition.WEIGHT_ADVANCED, "20", "")],
        id="weight-advanced",
    ),
    pytest.param(
        canary("Progressing", iterations=2, spec=NEW_SPEC),
        canary("Progressing", iterations=3, spec=NEW_SPEC),
        [(Transition.ITERATION_ADVANCED, "3", "")],
        id="iteration-advanced",
    ),
    pytest.param(
        canary("Progressing", weight=20, failed=1, spec=NEW_SPEC),
        canary("Progressing", weight=20, failed=2, spec=NEW_SPEC),
        [(Transition.HALTED, "", "failed-checks 2")],
        id="halted",
    ),
    pytest.param(
        canary("Progressing", weight=50, spec=NEW_SPEC),
        canary("Promoting", weight=50, spec=NEW_SPEC),
        [(Transition.PROMOTING, "", "")],
        id="promoting",
    ),
    pytest.param(
        canary("Promoting", weight=50, spec=NEW_SPEC),
        canary("Finalising", weight=0, spec=NEW_SPEC),
        [(Transition.FINALISING, "", "")],
        id="finalising",
    ),
    pytest.param(
        canary("Finalising", spec=NEW_SPEC),
        canary("Succeeded", spec=NEW_SPEC),
        [(Transition.PROMOTED, "", "")],
        id="promoted",
    ),
    pytest.param(
        canary("Progressing", weight=20, failed=5, spec=NEW_SPEC),
        canary("Failed", weight=0, failed=5, spec=NEW_SPEC),
        [(Transition.ROLLED_BACK, "", "failed-checks")],
        id="rolled-back-threshold",
    ),
    pytest.param(
        canary("Progressing", weight=20, failed=2, spec=NEW_SPEC),
        canary("Failed", weight=0, failed=2, spec=NEW_SPEC),
        [(Transition.ROLLED_BACK, "", "")],
        id="rolled-back-below-threshold",
    ),
    pytest.param(
        canary("Waiting"),
        canary("Failed"),
        [(Transition.ROLLED_BACK, "", "")],
        id="rolled-back-from-waiting-is-not-approved",
    ),
    pytest.param(
        canary("WaitingPromotion", spec=NEW_SPEC),
        canary("Failed", failed=5, spec=NEW_SPEC),
        [(Transition.ROLLED_BACK, "", "failed-checks")],
        id="rolled-back-from-waiting-promotion",
    ),
    # Flagger 1.44+ fails a promotion with all traffic on the canary (canaryWeight 100); before
    # 1.44 it rolled back to the primary (canaryWeight 0, "Canary failed!"): real Flagger, both.
    pytest.param(
        canary("Promoting", weight=50, spec=NEW_SPEC),
        canary("Failed", weight=100, spec=NEW_SPEC),
        [(Transition.PROMOTION_FAILED, "", "")],
        id="promotion-failed-from-promoting",
    ),
    pytest.param(
        canary("Finalising", spec=NEW_SPEC),
        canary("Failed", weight=100, spec=NEW_SPEC),
        [(Transition.PROMOTION_FAILED, "", "")],
        id="promotion-failed-from-finalising",
    ),
    pytest.param(
        canary("Promoting", spec=NEW_SPEC),
        canary("Failed", spec=NEW_SPEC),
        [(Transition.ROLLED_BACK, "", "")],
        id="failed-in-promotion-back-on-the-primary-is-a-rollback",
    ),
    pytest.param(
        canary("Succeeded"),
        canary("Terminating"),
        [(Transition.TERMINATED, "", "")],
        id="terminating",
    ),
    pytest.param(
        canary("Terminating"),
        canary("Terminated"),
        [(Transition.TERMINATED, "", "")],
        id="terminated",
    ),
]


@pytest.mark.parametrize(("before", "after", "expected"), ROWS)
def test_each_status_row_yields_its_transition(
    before: dict[str, Any], after: dict[str, Any], expected: list[tuple[Transition, str, str]]
) -> None:
    found = diff_status(view(before), view(after))
    assert [(t.transition, t.detail, t.reason) for t in found] == expected

    _, result = feed(before, after)
    assert result.outcome is Outcome.TRANSITION
    assert [(e.transition, e.detail, e.reason) for e in result.events] == expected


def test_rolled_back_without_threshold_uses_flaggers_default_of_one() -> None:
    found = diff_status(
        view(canary("Progressing", failed=1, threshold=None)),
        view(canary("Failed", failed=1, threshold=None)),
    )
    assert found == [StatusTransition(Transition.ROLLED_BACK, reason="failed-checks")]
    manual = diff_status(
        view(canary("Progressing", failed=0, threshold=None)),
        view(canary("Failed", failed=0, threshold=None)),
    )
    assert manual == [StatusTransition(Transition.ROLLED_BACK, reason="")]


def test_weight_falling_to_zero_on_a_phase_change_is_not_news() -> None:
    found = diff_status(
        view(canary("Progressing", weight=50, spec=NEW_SPEC)),
        view(canary("WaitingPromotion", weight=0, spec=NEW_SPEC)),
    )
    assert [t.transition for t in found] == [Transition.AWAITING_APPROVAL]


def test_weight_set_during_promotion_is_not_a_canary_step() -> None:
    found = diff_status(
        view(canary("WaitingPromotion", weight=0, spec=NEW_SPEC)),
        view(canary("Promoting", weight=40, spec=NEW_SPEC)),
    )
    assert [t.transition for t in found] == [Transition.APPROVED, Transition.PROMOTING]


def test_one_observation_yields_several_events_in_lifecycle_order() -> None:
    # A watch that missed the intermediate writes: new revision, first step and a failed check.
    _, result = feed(
        canary("Succeeded", spec=OLD_SPEC),
        canary("Progressing", weight=10, iterations=1, failed=1, spec=NEW_SPEC),
    )
    assert kinds(result) == [
        (Transition.REVISION_DETECTED, ""),
        (Transition.WEIGHT_ADVANCED, "10"),
        (Transition.ITERATION_ADVANCED, "1"),
        (Transition.HALTED, ""),
    ]


def test_first_sight_emits_nothing_but_is_remembered() -> None:
    normaliser = CanaryStatusNormaliser()
    first = normaliser(watch("ADDED", canary("Succeeded")))
    assert first == Normalised(Outcome.IGNORED, note="first sight")
    second = normaliser(watch("MODIFIED", canary("Progressing", spec=NEW_SPEC)))
    assert kinds(second) == [(Transition.REVISION_DETECTED, "")]


def test_first_sight_of_a_failed_canary_announces_nothing() -> None:
    assert diff_status(None, view(canary("Failed", failed=5))) == []
    _, result = feed(canary("Failed", failed=5))
    assert result.outcome is Outcome.IGNORED
    assert result.events == ()


def test_unchanged_status_is_a_repeat_even_with_a_new_transition_time() -> None:
    _, result = feed(
        canary("Progressing", weight=20, spec=NEW_SPEC, ltt="2026-08-04T14:02:00Z"),
        canary("Progressing", weight=20, spec=NEW_SPEC, ltt="2026-08-04T14:03:00Z"),
    )
    assert result == Normalised(Outcome.REPEAT)


def test_relist_of_the_same_object_is_a_repeat() -> None:
    obj = canary("Progressing", weight=20, spec=NEW_SPEC)
    normaliser, _ = feed(obj, obj)
    assert normaliser(watch("ADDED", copy.deepcopy(obj))) == Normalised(Outcome.REPEAT)


def test_deleted_forgets_so_the_next_sight_is_a_first_sight() -> None:
    normaliser, _ = feed(canary("Succeeded"))
    assert normaliser(watch("DELETED", canary("Succeeded"))).outcome is Outcome.IGNORED
    again = normaliser(watch("ADDED", canary("Progressing", spec=NEW_SPEC)))
    assert again == Normalised(Outcome.IGNORED, note="first sight")


def test_canaries_are_kept_apart_by_cluster_and_name() -> None:
    normaliser = CanaryStatusNormaliser()
    normaliser(watch("ADDED", canary("Succeeded", name="podinfo")))
    other = normaliser(watch("ADDED", canary("Progressing", name="frontend", spec=NEW_SPEC)))
    assert other.outcome is Outcome.IGNORED
    other_cluster = Observation(
        at=AT,
        source=SourceName.CANARIES,
        data={"type": "MODIFIED", "object": canary("Progressing", spec=NEW_SPEC)},
        cluster="prod-us-1",
    )
    assert normaliser(other_cluster).outcome is Outcome.IGNORED


def test_memory_is_bounded() -> None:
    normaliser = CanaryStatusNormaliser(max_remembered=2)
    for name in ("a", "b", "c"):
        normaliser(watch("ADDED", canary("Succeeded", name=name)))
    evicted = normaliser(watch("MODIFIED", canary("Progressing", name="a", spec=NEW_SPEC)))
    assert evicted.outcome is Outcome.IGNORED
    kept = normaliser(watch("MODIFIED", canary("Progressing", name="c", spec=NEW_SPEC)))
    assert kinds(kept) == [(Transition.REVISION_DETECTED, "")]


def test_event_carries_status_facts_and_metadata_hints() -> None:
    _, result = feed(
        canary("Progressing", weight=10, failed=4, spec=NEW_SPEC),
        canary("Failed", weight=0, failed=5, spec=NEW_SPEC, ltt="2026-08-04T14:08:00Z"),
    )
    (event,) = result.events
    assert event.canary == CanaryRef("test", "podinfo", "prod-eu-1")
    assert event.transition is Transition.ROLLED_BACK
    assert event.severity is Severity.CRITICAL
    assert event.sources == (SourceName.CANARIES,)
    assert event.observed_at == AT
    assert event.occurred_at == datetime(2026, 8, 4, 14, 8, tzinfo=UTC)
    assert event.phase is Phase.FAILED
    assert event.weight is None  # weight is a fact of weight-advanced only
    assert event.failed_checks == 5
    assert event.target == "podinfo"
    assert event.reason == "failed-checks"
    assert event.message == (
        "From the Canary status (no Flagger message yet): phase Failed: Canary analysis failed, "
        "Deployment scaled to zero."
    )
    assert dict(event.hints) == {
        "spec": NEW_SPEC,
        "label:team": "payments",
        "label:app": "podinfo",
        "annotation:canarywatch.io/channel": "#deploys",
    }


def test_target_comes_from_spec_target_ref() -> None:
    before, after = canary("Succeeded"), canary("Progressing", spec=NEW_SPEC)
    for obj in (before, after):
        obj["spec"]["targetRef"]["name"] = "podinfo-v2"
    _, result = feed(before, after)
    assert [e.target for e in result.events] == ["podinfo-v2"]
    assert [e.canary.name for e in result.events] == ["podinfo"]


def test_unknown_phase_is_unknown_and_does_not_replace_memory() -> None:
    normaliser, _ = feed(canary("Progressing", weight=20, spec=NEW_SPEC))
    odd = normaliser(watch("MODIFIED", canary("Paused", spec=NEW_SPEC)))
    assert odd.outcome is Outcome.UNKNOWN
    assert "Paused" in odd.note
    back = normaliser(watch("MODIFIED", canary("Progressing", weight=30, spec=NEW_SPEC)))
    assert kinds(back) == [(Transition.WEIGHT_ADVANCED, "30")]


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        (None, Outcome.MALFORMED),
        ({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}, Outcome.IGNORED),
        ({"type": "ERROR", "object": {"kind": "Status", "code": 410}}, Outcome.IGNORED),
        ({"type": "SOMETHING", "object": {}}, Outcome.MALFORMED),
        ({"type": "ADDED", "object": "nope"}, Outcome.MALFORMED),
        ({"type": "ADDED", "object": {"metadata": {"name": "x"}}}, Outcome.MALFORMED),
        (
            {"type": "ADDED", "object": {"metadata": {"name": "x", "namespace": "y"}, "status": 1}},
            Outcome.MALFORMED,
        ),
    ],
)
def test_odd_watch_events_do_not_raise(data: Any, outcome: Outcome) -> None:
    result = CanaryStatusNormaliser()(Observation(at=AT, source=SourceName.CANARIES, data=data))
    assert result.outcome is outcome
    assert result.events == ()


def test_wrongly_typed_status_field_is_malformed() -> None:
    obj = canary("Progressing")
    obj["status"]["canaryWeight"] = "20"
    result = CanaryStatusNormaliser()(watch("ADDED", obj))
    assert result.outcome is Outcome.MALFORMED
    assert "canaryWeight" in result.note


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    kind=st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "X"]),
    status=st.dictionaries(
        st.sampled_from(
            [
                "phase",
                "canaryWeight",
                "iterations",
                "failedChecks",
                "lastAppliedSpec",
                "lastTransitionTime",
                "conditions",
            ]
        ),
        _json,
    ),
    metadata=_json,
)
def test_normaliser_is_total(kind: str, status: dict[str, Any], metadata: Any) -> None:
    normaliser = CanaryStatusNormaliser()
    normaliser(watch("ADDED", canary("Progressing", weight=10, spec=NEW_SPEC)))
    obj = canary("Progressing", spec=NEW_SPEC)
    obj["status"] = status
    result = normaliser(watch(kind, obj))
    assert isinstance(result, Normalised)
    odd = canary("Progressing")
    odd["metadata"] = metadata
    assert isinstance(normaliser(watch(kind, odd)), Normalised)
