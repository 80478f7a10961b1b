"""Self-events: what canarywatch says about itself, built here and nowhere else.

A self-event is a ``CanaryEvent`` on a pseudo-canary in ``SELF_NAMESPACE`` (``canarywatch/
cluster-prod``, ``canarywatch/flagger``) with ``sources=(SourceName.SELF,)``: a watched
cluster's API server out of reach and back, a Flagger metrics target down and back. They skip
normalisation (``Runner.emit_event``) but are correlated, routed and grouped like any other
transition, so the same rules (inhibition, silences, resolve) apply to them.

``ClusterReachability`` decides *whether* a cluster's event is due: a cluster has several watch
sources (Events, Canaries), each reporting its own reachability, and the cluster is announced
unreachable once (when the first goes down) and reachable once (when the last is back).
"""

from __future__ import annotations

from datetime import datetime

from canarywatch.model import (
    SELF_NAMESPACE,
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    SourceName,
    Transition,
)


def cluster_unreachable(cluster: str, *, at: datetime, reason: str) -> CanaryEvent:
    """``cluster-unreachable`` on ``canarywatch/cluster-<cluster>``."""
    return _self_event(
        f"cluster-{cluster}",
        cluster,
        Transition.CLUSTER_UNREACHABLE,
        at=at,
        reason=reason,
        message=f"Kubernetes API of cluster {cluster} is unreachable",
    )


def cluster_reachable(cluster: str, *, at: datetime, reason: str) -> CanaryEvent:
    """``cluster-reachable`` on ``canarywatch/cluster-<cluster>`` (closes the one above)."""
    return _self_event(
        f"cluster-{cluster}",
        cluster,
        Transition.CLUSTER_REACHABLE,
        at=at,
        reason=reason,
        message=f"Kubernetes API of cluster {cluster} is reachable again",
    )


def metrics_target_down(
    target: str, cluster: str, *, at: datetime, failures: int, reason: str
) -> CanaryEvent:
    """``metrics-source-down`` on ``canarywatch/<target>`` after ``failures`` failed fetches
    in a row; ``reason`` says what the last one ran into."""
    return _self_event(
        target,
        cluster,
        Transition.METRICS_SOURCE_DOWN,
        at=at,
        reason=reason,
        message=(
            f"Flagger metrics target {target} is down: "
            f"{failures} fetches in a row failed ({reason})"
        ),
    )


def metrics_target_recovered(target: str, cluster: str, *, at: datetime) -> CanaryEvent:
    """``metrics-source-recovered`` on ``canarywatch/<target>`` (closes the one above)."""
    return _self_event(
        target,
        cluster,
        Transition.METRICS_SOURCE_RECOVERED,
        at=at,
        reason="fetch succeeded",
        message=f"Flagger metrics target {target} is back",
    )


class ClusterReachability:
    """Per cluster, which of its watch sources are down (see the module docstring)."""

    def __init__(self) -> None:
        self._down: dict[str, set[object]] = {}

    def changed(
        self, cluster: str, source: object, *, reachable: bool, reason: str, at: datetime
    ) -> CanaryEvent | None:
        """``source`` (any object that stays the same for one watch source) says it is
        ``reachable`` or not: the cluster's self-event when this changes the cluster's state,
        ``None`` when another of its sources is (still) down and it was already said."""
        down = self._down.setdefault(cluster, set())
        was_reachable = not down
        if reachable:
            down.discard(source)
        else:
            down.add(source)
        now_reachable = not down
        if now_reachable == was_reachable:
            return None
        if now_reachable:
            return cluster_reachable(cluster, at=at, reason=reason)
        return cluster_unreachable(cluster, at=at, reason=reason)


def _self_event(
    name: str, cluster: str, transition: Transition, *, at: datetime, reason: str, message: str
) -> CanaryEvent:
    return CanaryEvent(
        canary=CanaryRef(SELF_NAMESPACE, name, cluster),
        transition=transition,
        observed_at=at,
        sources=(SourceName.SELF,),
        severity=TRANSITIONS[transition].severity,
        message=message,
        reason=reason,
    )
