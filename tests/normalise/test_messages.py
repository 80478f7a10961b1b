"""The Flagger message catalogue: every documented text maps to its transition and facts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.model import (
    TRANSITIONS,
    CanaryRef,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.messages import (
    CATALOGUE,
    COMBINED_PREFIX,
    classify,
    safe_excerpt,
    strip_aggregation,
    to_event,
)

T = Transition

# (message, entry, transition, detail, reason, target): texts from reference/flagger.md §3.
TRANSITION_CASES: list[tuple[str, str, Transition, str, str, str]] = [
    ("Initialization done! podinfo.test", "initialized", T.INITIALIZED, "", "", ""),
    (
        "Halt frontend.test advancement waiting for approval gate",
        "gate-rollout-waiting",
        T.AWAITING_APPROVAL,
        "rollout",
        "",
        "",
    ),
    (
        "Halt frontend.test advancement waiting for promotion approval promotion-gate",
        "gate-promotion-waiting",
        T.AWAITING_APPROVAL,
        "promotion",
        "",
        "",
    ),
    (
        "Halt frontend.test advancement waiting for traffic increase approval traffic-gate",
        "gate-traffic-waiting",
        T.AWAITING_APPROVAL,
        "traffic",
        "",
        "",
    ),
    ("Confirm-rollout check gate passed", "gate-rollout-passed", T.APPROVED, "rollout", "", ""),
    (
        "Confirm-promotion check promotion-gate passed",
        "gate-promotion-passed",
        T.APPROVED,
        "promotion",
        "",
        "",
    ),
    (
        "Confirm-traffic-increase check tg passed",
        "gate-traffic-passed",
        T.APPROVED,
        "traffic",
        "",
        "",
    ),
    (
        "New revision detected! Scaling up podinfo.test",
        "new-revision",
        T.REVISION_DETECTED,
        "",
        "",
        "podinfo",
    ),
    (
        "New revision detected! Restarting analysis for podinfo.test",
        "new-revision-restart",
        T.REVISION_DETECTED,
        "",
        "analysis-restarted",
        "podinfo",
    ),
    (
        "Starting canary analysis for podinfo.test",
        "analysis-started",
        T.ANALYSIS_STARTED,
        "",
        "",
        "podinfo",
    ),
    ("Advance podinfo.test canary weight 30", "canary-weight", T.WEIGHT_ADVANCED, "30", "", ""),
    (
        "Advance abtest.test canary iteration 3/10",
        "canary-iteration",
        T.ITERATION_ADVANCED,
        "3",
        "",
        "",
    ),
    (
        "Halt podinfo.test advancement success rate 96.12% < 99%",
        "halt-success-rate",
        T.HALTED,
        "",
        "request-success-rate 96.12 < 99",
        "",
    ),
    (
        "Halt podinfo.test advancement request duration 1.283s > 500ms",
        "halt-request-duration",
        T.HALTED,
        "",
        "request-duration 1.283s > 500ms",
        "",
    ),
    (
        "Halt podinfo.test advancement external check load-test failed Post http://x: EOF",
        "halt-external-check",
        T.HALTED,
        "",
        "external-check load-test",
        "",
    ),
    (
        "Halt podinfo.test advancement pre-rollout check acceptance-test failed 500",
        "halt-pre-rollout-check",
        T.HALTED,
        "",
        "pre-rollout-check acceptance-test",
        "",
    ),
    (
        "Halt podinfo.test advancement error-rate 12.50 > 5",
        "halt-custom-metric",
        T.HALTED,
        "",
        "error-rate 12.50 > 5",
        "",
    ),
    (
        "Halt advancement no values found for istio metric request-success-rate probably "
        "checkout.shop is not receiving traffic: running query failed: no values found",
        "no-values-builtin",
        T.NO_TRAFFIC,
        "",
        "request-success-rate no-values",
        "checkout",
    ),
    (
        "Halt advancement no values found for istio metric request-duration probably "
        "checkout.shop is not receiving traffic",
        "no-values-builtin",
        T.NO_TRAFFIC,
        "",
        "request-duration no-values",
        "checkout",
    ),
    (
        "Halt advancement no values found for metric: latency",
        "no-values-query",
        T.NO_TRAFFIC,
        "",
        "latency no-values",
        "",
    ),
    (
        "Halt advancement no values found for custom metric: error-rate: no values found",
        "no-values-custom",
        T.NO_TRAFFIC,
        "",
        "error-rate no-values",
        "",
    ),
    (
        "Post-rollout hook notify failed 503 Service Unavailable",
        "post-rollout-hook-failed",
        T.WEBHOOK_FAILED,
        "",
        "post-rollout-hook notify",
        "",
    ),
    (
        "Error checking metric providers: prometheus not available",
        "metric-providers-error",
        T.WEBHOOK_FAILED,
        "",
        "metric-providers",
        "",
    ),
    (
        "Prometheus query failed: connection refused",
        "prometheus-query-failed",
        T.WEBHOOK_FAILED,
        "",
        "prometheus-query",
        "",
    ),
    (
        "Prometheus query failed for error-rate: bad_data",
        "prometheus-query-failed",
        T.WEBHOOK_FAILED,
        "",
        "prometheus-query error-rate",
        "",
    ),
    (
        "Metric query failed for error-rate: timeout",
        "metric-query-failed",
        T.WEBHOOK_FAILED,
        "",
        "metric-query error-rate",
        "",
    ),
    (
        "Metric template error-rate.test secret prom-auth error: not found",
        "metric-template-error",
        T.WEBHOOK_FAILED,
        "",
        "metric-template error-rate.test",
        "",
    ),
    (
        "Copying podinfo.test template spec to podinfo-primary.test",
        "copying-spec",
        T.PROMOTING,
        "",
        "",
        "podinfo",
    ),
    ("Routing all traffic to primary", "routing-to-primary", T.FINALISING, "", "", ""),
    ("Advance podinfo.test primary weight 50", "primary-weight", T.FINALISING, "", "", ""),
    (
        "Promotion completed! Scaling down podinfo.test",
        "promotion-completed",
        T.PROMOTED,
        "",
        "",
        "podinfo",
    ),
    (
        "Promotion completed! Canary analysis was skipped for podinfo.test",
        "promotion-skipped-analysis",
        T.PROMOTED,
        "",
        "analysis-skipped",
        "podinfo",
    ),
    (
        "Rolling back podinfo.test failed checks threshold reached 5",
        "rollback-failed-checks",
        T.ROLLED_BACK,
        "",
        "failed-checks",
        "",
    ),
    (
        "Rolling back podinfo.test manual webhook invoked",
        "rollback-manual",
        T.ROLLED_BACK,
        "",
        "manual",
        "",
    ),
    (
        "Rolling back podinfo.test progress deadline exceeded canary not ready",
        "rollback-progress-deadline",
        T.ROLLED_BACK,
        "",
        "progress-deadline",
        "",
    ),
    (
        "Canary failed! Scaling down podinfo.test",
        "canary-failed",
        T.ROLLED_BACK,
        "",
        "",
        "podinfo",
    ),
    (
        "Promotion of podinfo.test failed, primary not ready: waiting for rollout to finish: "
        "1 old replicas are pending termination",
        "promotion-failed",
        T.PROMOTION_FAILED,
        "",
        "primary-not-ready",
        "podinfo",
    ),
    (
        'canary deployment podinfo.test not ready: deployment "podinfo" exceeded its progress '
        "deadline",
        "progress-deadline-not-ready",
        T.ROLLED_BACK,
        "",
        "progress-deadline",
        "podinfo",
    ),
    (
        "canary deployment podinfo.test not ready: waiting for rollout to finish: 1 of 2 "
        "(readyThreshold 100%) updated replicas are available",
        "canary-not-ready",
        T.NOT_READY,
        "",
        "canary: waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas "
        "are available",
        "podinfo",
    ),
    (
        "canary damonset ds.test not ready with retryable true: waiting for rollout to finish",
        "canary-not-ready",
        T.NOT_READY,
        "",
        "canary: waiting for rollout to finish",
        "ds",
    ),
    (
        "podinfo-primary.test not ready: waiting for rollout to finish: observed deployment "
        "generation less than desired generation",
        "primary-not-ready",
        T.NOT_READY,
        "",
        "primary: waiting for rollout to finish: observed deployment generation less than "
        "desired generation",
        "podinfo",
    ),
    (
        "halt podinfo.test advancement: primary deployment is scaled to zero",
        "primary-scaled-to-zero",
        T.NOT_READY,
        "",
        "primary: primary deployment is scaled to zero",
        "",
    ),
    (
        "service podinfo.test not ready: endpoints missing",
        "other-not-ready",
        T.NOT_READY,
        "",
        "service podinfo.test: endpoints missing",
        "",
    ),
    ("skipping canary run as object is suspended", "suspended", T.SUSPENDED, "", "", ""),
    ("Terminating canary podinfo.test", "terminating", T.TERMINATED, "", "", ""),
    ("Terminated canary podinfo.test", "terminated", T.TERMINATED, "", "", ""),
    # Old spellings (0.x, early 1.x), from tests/normalise/flagger_messages.json.
    (
        "Starting canary deployment for podinfo.test",
        "analysis-started-0x",
        T.ANALYSIS_STARTED,
        "",
        "",
        "",
    ),
    (
        "New revision detected podinfo.test old 48214612 new 48215181",
        "new-revision-0x",
        T.REVISION_DETECTED,
        "",
        "",
        "podinfo",
    ),
    (
        "Metrics server http://prometheus:9090 query failed for error-rate: no values found",
        "metrics-server-query-failed",
        T.WEBHOOK_FAILED,
        "",
        "prometheus-query error-rate",
        "",
    ),
    (
        "Metric query failed for no usable metrics template and query were configured",
        "metric-query-unconfigured",
        T.WEBHOOK_FAILED,
        "",
        "metric-query no-usable-template",
        "",
    ),
    (
        "Error fetching Knative service test/podinfo not found",
        "knative-service-error",
        T.WEBHOOK_FAILED,
        "",
        "knative-service test/podinfo",
        "",
    ),
    (
        "Error building Prometheus client for http://prometheus:9090 parse error",
        "prometheus-client-error",
        T.WEBHOOK_FAILED,
        "",
        "prometheus-client",
        "",
    ),
    ("Scaling down podinfo.test", "promotion-completed-0x", T.PROMOTED, "", "", "podinfo"),
    (
        "Halt podinfo.test advancement waiting for rollout to finish: 1 old replicas are pending "
        "termination",
        "not-ready-0x-halt",
        T.NOT_READY,
        "",
        "waiting for rollout to finish: 1 old replicas are pending termination",
        "",
    ),
    (
        'Halt advancement podinfo-primary.test deployment "podinfo-primary" exceeded its progress '
        "deadline",
        "not-ready-0x-halt-advancement",
        T.NOT_READY,
        "",
        'primary: deployment "podinfo-primary" exceeded its progress deadline',
        "podinfo",
    ),
    (
        "waiting for rollout to finish: 0 of 1 updated replicas are available",
        "not-ready-0x-bare",
        T.NOT_READY,
        "",
        "waiting for rollout to finish: 0 of 1 updated replicas are available",
        "",
    ),
    (
        "Knative Revision podinfo-00002.test is not ready",
        "knative-revision-not-ready",
        T.NOT_READY,
        "",
        "knative revision podinfo-00002: not ready",
        "",
    ),
    (
        "HTTPRoute podinfo.test parent gw is not ready (status: False, observed generation: 1, "
        "current generation: 2)",
        "httproute-not-ready",
        T.NOT_READY,
        "",
        "httproute parent gw: status: False, observed generation: 1, current generation: 2",
        "",
    ),
]

INFORMATIONAL_CASES: list[tuple[str, str]] = [
    ("Pre-rollout check acceptance-test passed", "pre-rollout-passed"),
    ("Post-rollout check notify passed", "post-rollout-passed"),
    ("Rollback check rb passed", "rollback-check-passed"),
    ("Rollback hook rb not signaling a rollback", "rollback-hook-idle"),
    ("all the metrics providers are available!", "metric-providers-ok"),
    ("Routing all traffic to canary", "routing-to-canary"),
    ("Stop traffic mirroring and route all traffic to canary", "mirroring-stopped"),
    (
        "A/B testing is not supported when using the kubernetes provider",
        "kubernetes-provider-unsupported",
    ),
    (
        "Progressive traffic is not supported when using the kubernetes provider",
        "kubernetes-provider-unsupported",
    ),
    ("Setting canaryAnalysis.iterations: 10", "kubernetes-provider-iterations"),
    ("Scaling up podinfo.test", "scaling-up-0x"),
    ("Service podinfo-canary.test created", "object-created-0x"),
]


@pytest.mark.parametrize(
    ("message", "entry", "transition", "detail", "reason", "target"), TRANSITION_CASES
)
def test_transition_messages(
    message: str, entry: str, transition: Transition, detail: str, reason: str, target: str
) -> None:
    match = classify(message)
    assert match is not None
    assert (match.entry, match.transition, match.detail, match.reason, match.target) == (
        entry,
        transition,
        detail,
        reason,
        target,
    )
    assert not match.informational


@pytest.mark.parametrize(("message", "entry"), INFORMATIONAL_CASES)
def test_informational_messages(message: str, entry: str) -> None:
    match = classify(message)
    assert match is not None
    assert match.entry == entry
    assert match.informational


def test_every_catalogue_entry_is_exercised() -> None:
    names = [entry.name for entry in CATALOGUE]
    assert len(names) == len(set(names)), "catalogue entry names must be unique"
    exercised = {case[1] for case in TRANSITION_CASES} | {case[1] for case in INFORMATIONAL_CASES}
    assert exercised == set(names)


def test_numbers_are_read() -> None:
    weight = classify("Advance podinfo.test canary weight 25")
    rollback = classify("Rolling back podinfo.test failed checks threshold reached 5")
    assert weight is not None
    assert weight.weight == 25
    assert rollback is not None
    assert rollback.failed_checks == 5


def test_implied_phases() -> None:
    cases = {
        "Initialization done! a.b": Phase.INITIALIZED,
        "Halt a.b advancement waiting for approval g": Phase.WAITING,
        "Halt a.b advancement waiting for promotion approval g": Phase.WAITING_PROMOTION,
        "Copying a.b template spec to a-primary.b": Phase.PROMOTING,
        "Routing all traffic to primary": Phase.FINALISING,
        "Promotion completed! Scaling down a.b": Phase.SUCCEEDED,
        "Canary failed! Scaling down a.b": Phase.FAILED,
        "Confirm-rollout check g passed": None,
    }
    assert {text: getattr(classify(text), "phase", "missing") for text in cases} == cases


def test_names_with_dots_split_at_the_last_dot() -> None:
    match = classify("New revision detected! Scaling up my.app.prod")
    assert match is not None
    assert match.target == "my.app"


@pytest.mark.parametrize(
    "message",
    [
        "",
        "Synced",
        "failed to create ingress: forbidden",
        "Advance podinfo.test canary weight ten",
        "Advance podinfo.test canary weight 99999999999999999999999999",
        "Initialization done!",
    ],
)
def test_unknown_messages(message: str) -> None:
    assert classify(message) is None


def test_aggregation_prefix_is_stripped() -> None:
    text = "Promotion completed! Scaling down podinfo.test"
    assert strip_aggregation(COMBINED_PREFIX + text) == text
    assert classify(COMBINED_PREFIX + text) == classify(text)


def test_safe_excerpt_drops_credentials_paths_and_queries() -> None:
    note = safe_excerpt(
        "Prometheus query failed: Get https://admin:hunter2@prom.example:9090/api/v1/query"
        "?query=up&token=s3cr3t: EOF"
    )
    assert "hunter2" not in note
    assert "s3cr3t" not in note
    assert "/api/v1" not in note
    assert "prom.example:9090" in note
    long_note = safe_excerpt("x" * 1000)
    assert len(long_note) == 160
    assert long_note.endswith("…")


def test_to_event_takes_severity_from_the_vocabulary_and_phase_from_the_message() -> None:
    at = datetime(2026, 8, 4, 14, 8, 2, tzinfo=UTC)
    canary = CanaryRef("test", "podinfo", "prod")
    match = classify(COMBINED_PREFIX + "Canary failed! Scaling down podinfo.test")
    assert match is not None
    event = to_event(
        match,
        canary=canary,
        message=COMBINED_PREFIX + "Canary failed! Scaling down podinfo.test",
        source=SourceName.FLAGGER_WEBHOOK,
        observed_at=at,
        phase=Phase.PROGRESSING,
    )
    assert event is not None
    assert event.severity is Severity.CRITICAL
    assert event.severity is TRANSITIONS[T.ROLLED_BACK].severity
    assert event.phase is Phase.FAILED
    assert event.message == "Canary failed! Scaling down podinfo.test"
    assert event.sources == (SourceName.FLAGGER_WEBHOOK,)


def test_to_event_falls_back_to_the_reported_phase_and_skips_informational() -> None:
    at = datetime(2026, 8, 4, tzinfo=UTC)
    canary = CanaryRef("test", "podinfo")
    not_ready = classify("podinfo-primary.test not ready: waiting")
    info = classify("Routing all traffic to canary")
    assert not_ready is not None
    assert info is not None
    event = to_event(
        not_ready,
        canary=canary,
        message="m",
        source=SourceName.KUBERNETES_EVENTS,
        observed_at=at,
        phase=Phase.PROMOTING,
    )
    assert event is not None
    assert event.phase is Phase.PROMOTING
    informational = to_event(
        info, canary=canary, message="m", source=SourceName.KUBERNETES_EVENTS, observed_at=at
    )
    assert informational is None


@given(st.text())
def test_classify_is_total(message: str) -> None:
    match = classify(message)
    assert match is None or match.transition is None or match.transition in TRANSITIONS
    assert classify(COMBINED_PREFIX + message) == match


@given(st.text())
def test_safe_excerpt_is_total_and_short(message: str) -> None:
    assert len(safe_excerpt(message)) <= 160
