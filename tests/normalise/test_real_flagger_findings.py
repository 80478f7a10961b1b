"""What real Flagger (1.37.0 and 1.44.0 against the real API server, tests/realcluster) showed
that our own description of it had wrong, pinned here where no Go toolchain is needed."""

from __future__ import annotations

from datetime import UTC, datetime

from canarywatch.model import Observation, SourceName, Transition
from canarywatch.normalise.flagger_metrics import FlaggerMetricsNormaliser
from canarywatch.normalise.messages import classify
from canarywatch.normalise.status import diff_status, parse_canary

AT = datetime(2026, 12, 5, 21, 0, tzinfo=UTC)


def blue_green(iterations: int, phase: str = "Progressing", weight: int = 0) -> object:
    return {
        "metadata": {"namespace": "test", "name": "ok"},
        "spec": {"targetRef": {"name": "ok"}, "analysis": {"iterations": 3, "threshold": 2}},
        "status": {"phase": phase, "iterations": iterations, "canaryWeight": weight},
    }


def test_iterations_past_the_configured_number_are_bookkeeping_not_an_iteration() -> None:
    # Flagger: "Advance ok.test canary iteration 3/3", then status.iterations 4 with no Event.
    third = diff_status(parse_canary(blue_green(2)), parse_canary(blue_green(3)))
    past = diff_status(parse_canary(blue_green(3)), parse_canary(blue_green(4)))
    assert [(t.transition, t.detail) for t in third] == [(Transition.ITERATION_ADVANCED, "3")]
    assert past == []


def test_a_failed_promotion_keeps_traffic_on_the_canary_a_rollback_does_not() -> None:
    promoting = parse_canary(blue_green(4, "Promoting"))
    v144 = diff_status(promoting, parse_canary(blue_green(4, "Failed", weight=100)))
    v137 = diff_status(promoting, parse_canary(blue_green(4, "Failed", weight=0)))
    assert [t.transition for t in v144] == [Transition.PROMOTION_FAILED]
    assert [t.transition for t in v137] == [Transition.ROLLED_BACK]


def test_the_primary_past_its_deadline_is_readiness_not_a_rollback() -> None:
    primary = classify(
        'primary-primary.test not ready: deployment "primary-primary" exceeded its progress '
        "deadline"
    )
    canary = classify(
        'canary deployment deadline.test not ready: deployment "deadline" exceeded its progress '
        "deadline"
    )
    assert primary is not None
    assert canary is not None
    assert primary.transition is Transition.NOT_READY
    assert canary.transition is Transition.ROLLED_BACK


def scrape(*lines: str) -> Observation:
    text = "\n".join(
        [
            "# TYPE flagger_canary_status gauge",
            "# TYPE flagger_canary_weight gauge",
            "# TYPE flagger_canary_failures_total counter",
            *lines,
        ]
    )
    return Observation(at=AT, source=SourceName.FLAGGER_METRICS, data=text + "\n", cluster="c")


def weights(canary: int, primary: int) -> tuple[str, str]:
    return (
        f'flagger_canary_weight{{namespace="test",workload="ok"}} {canary}',
        f'flagger_canary_weight{{namespace="test",workload="ok-primary"}} {primary}',
    )


STATUS = 'flagger_canary_status{{name="ok",namespace="test"}} {}'
FAILED = (
    'flagger_canary_failures_total{{analysis_status="completed",deployment_strategy="blue-green",'
    'name="ok",namespace="test"}} {}'
)


def test_blue_green_routing_all_traffic_to_the_canary_is_not_a_weight_step() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(STATUS.format(0), *weights(0, 100)))
    switched = normaliser(scrape(STATUS.format(0), *weights(100, 0)))
    assert [e.transition for e in switched.events] == []


def test_metrics_tell_a_failed_promotion_from_a_rollback_by_the_weights() -> None:
    promotion = FlaggerMetricsNormaliser()
    promotion(scrape(STATUS.format(0), *weights(0, 100), FAILED.format(0)))
    failed = promotion(scrape(STATUS.format(2), *weights(100, 0), FAILED.format(1)))
    rollback = FlaggerMetricsNormaliser()
    rollback(scrape(STATUS.format(0), *weights(0, 100), FAILED.format(0)))
    rolled = rollback(scrape(STATUS.format(2), *weights(0, 100), FAILED.format(1)))
    assert [e.transition for e in failed.events] == [Transition.PROMOTION_FAILED]
    assert [e.transition for e in rolled.events] == [Transition.ROLLED_BACK]
