"""Self-events: canarywatch's own transitions, on pseudo-canaries in its own namespace."""

from __future__ import annotations

from datetime import timedelta

from canarywatch.model import SELF_NAMESPACE, CanaryRef, Severity, SourceName, Transition
from canarywatch.normalise.self_events import (
    ClusterReachability,
    cluster_unreachable,
    metrics_target_down,
    metrics_target_recovered,
)
from canarywatch.testing import T0


def test_a_cluster_goes_down_with_its_first_watch_and_comes_back_with_its_last() -> None:
    reach = ClusterReachability()
    events, canaries = object(), object()
    said = [
        reach.changed("prod", events, reachable=False, reason="connect refused", at=T0),
        reach.changed("prod", canaries, reachable=False, reason="connect refused", at=T0),
        reach.changed("prod", events, reachable=True, reason="", at=T0 + timedelta(seconds=5)),
        reach.changed("prod", canaries, reachable=True, reason="", at=T0 + timedelta(seconds=9)),
    ]
    assert [e.transition if e else None for e in said] == [
        Transition.CLUSTER_UNREACHABLE,
        None,  # already said
        None,  # the Canaries watch is still down
        Transition.CLUSTER_REACHABLE,
    ]
    down, up = said[0], said[3]
    assert down is not None
    assert up is not None
    assert down.canary == up.canary == CanaryRef(SELF_NAMESPACE, "cluster-prod", "prod")
    assert (down.reason, down.observed_at) == ("connect refused", T0)
    assert up.observed_at == T0 + timedelta(seconds=9)
    assert down.message == "Kubernetes API of cluster prod is unreachable"
    assert up.message == "Kubernetes API of cluster prod is reachable again"


def test_clusters_are_told_apart() -> None:
    reach = ClusterReachability()
    source = object()
    prod = reach.changed("prod", source, reachable=False, reason="timeout", at=T0)
    staging = reach.changed("staging", source, reachable=False, reason="timeout", at=T0)
    assert prod is not None
    assert staging is not None
    assert (prod.canary.name, staging.canary.name) == ("cluster-prod", "cluster-staging")
    assert reach.changed("prod", source, reachable=False, reason="timeout", at=T0) is None


def test_self_events_come_from_canarywatch_with_their_transitions_severity() -> None:
    events = [
        cluster_unreachable("prod", at=T0, reason="timeout"),
        metrics_target_down("flagger", "prod", at=T0, failures=3, reason="connection refused"),
        metrics_target_recovered("flagger", "prod", at=T0),
    ]
    for event in events:
        assert event.sources == (SourceName.SELF,)
        assert event.canary.namespace == SELF_NAMESPACE
        assert event.severity is event.spec.severity
    down, back = events[1], events[2]
    assert down.canary == back.canary == CanaryRef(SELF_NAMESPACE, "flagger", "prod")
    assert (down.transition, down.severity) == (Transition.METRICS_SOURCE_DOWN, Severity.WARNING)
    assert down.message == (
        "Flagger metrics target flagger is down: 3 fetches in a row failed (connection refused)"
    )
    assert (back.transition, back.reason) == (
        Transition.METRICS_SOURCE_RECOVERED,
        "fetch succeeded",
    )
    assert back.message == "Flagger metrics target flagger is back"
