"""Canonical canary state as Prometheus series, for dashboards and alert rules.

Flagger's own ``flagger_canary_status`` folds eleven phases into 0/1/2 (0 Progressing, 2 Failed,
1 everything else), so a rule on it rarely means what it says. These series are derived from
the deduplicated transitions canarywatch already produces (the Runner's ``on_transitions``):

- ``canarywatch_canary_phase{cluster,namespace,canary,phase}``: a state set, 1 for the current
  phase and 0 for the ten other Flagger phases, all eleven present once the canary's phase is
  known (a canary first seen through a transition that implies no phase has none yet).
- ``canarywatch_canary_weight{cluster,namespace,canary}``: the canary's traffic weight, from
  ``weight-advanced``; 0 at ``revision-detected``, ``promoted`` and ``rolled-back``. Left as
  it was at ``promotion-failed`` (Flagger leaves the traffic on the canary). Absent until known.
- ``canarywatch_canary_failed_checks{cluster,namespace,canary}``: the last failed-check count an
  event carried; 0 at ``revision-detected``. Absent until known.
- ``canarywatch_canary_transitions_total{cluster,namespace,canary,transition}``: new
  transitions. The outcome transitions (``promoted``, ``rolled-back``, ``promotion-failed``,
  ``low-traffic-promotion``) are pre-declared at 0 when a canary is first seen, so
  ``increase()`` sees the first rollback of a canary too (:meth:`CanaryStateMetrics.declare`
  does the same for canaries known from the state store after a restart).
- ``canarywatch_canary_last_transition_timestamp_seconds{cluster,namespace,canary}``: when the
  latest transition happened (the source's time when it says, else when it was observed);
  never moves backwards.

``cluster`` is canarywatch's name for the cluster the canary lives in (``clusters[].name``):
the same ``namespace/canary`` can exist in every cluster of a fleet. It is ``""`` for replay and
single-cluster setups that do not name one. Aggregate it away (``max by (namespace, canary)``)
when one Prometheus scrapes several replicas of the same canarywatch.

Self-events (``metrics-source-*``, ``cluster-*``) describe canarywatch's inputs, not a canary:
they are skipped. Series of a deleted canary are removed by :meth:`CanaryStateMetrics.forget`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canarywatch.model import CanaryEvent, CanaryRef, Gate, Phase, SourceName, Transition

CANARY_LABELS: Final = ("cluster", "namespace", "canary")

SELF_TRANSITIONS: Final = frozenset(
    {
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
    }
)
"""Transitions about canarywatch's own inputs; their ``CanaryRef`` is not a canary."""

OUTCOME_TRANSITIONS: Final = (
    Transition.PROMOTED,
    Transition.ROLLED_BACK,
    Transition.PROMOTION_FAILED,
    Transition.LOW_TRAFFIC_PROMOTION,
)
"""Pre-declared per canary at 0 (alert rules take ``increase()`` of them)."""

PHASE_OF: Final[Mapping[Transition, Phase]] = MappingProxyType(
    {
        Transition.PROMOTED: Phase.SUCCEEDED,
        Transition.ROLLED_BACK: Phase.FAILED,
        Transition.PROMOTION_FAILED: Phase.FAILED,
        Transition.REVISION_DETECTED: Phase.PROGRESSING,
        Transition.ANALYSIS_STARTED: Phase.PROGRESSING,
        Transition.WEIGHT_ADVANCED: Phase.PROGRESSING,
        Transition.PROMOTING: Phase.PROMOTING,
        Transition.FINALISING: Phase.FINALISING,
        Transition.INITIALIZED: Phase.INITIALIZED,
        Transition.TERMINATED: Phase.TERMINATED,
    }
)
"""The phase a transition implies when its event does not carry one (``awaiting-approval``
depends on the gate: see :func:`inferred_phase`)."""

_WEIGHT_RESETS: Final = frozenset(
    {Transition.REVISION_DETECTED, Transition.PROMOTED, Transition.ROLLED_BACK}
)


def is_self_event(event: CanaryEvent) -> bool:
    """True for canarywatch's events about its own inputs (not a canary)."""
    return event.transition in SELF_TRANSITIONS or SourceName.SELF in event.sources


def inferred_phase(event: CanaryEvent) -> Phase | None:
    """The phase after ``event``: its own when it carries one, else what its transition implies.

    ``None`` when neither says (``halted``, ``not-ready``, ... on a source without a phase):
    the phase stays what it was.
    """
    if event.phase is not None:
        return event.phase
    if event.transition is Transition.AWAITING_APPROVAL:
        if event.detail == Gate.PROMOTION.value:
            return Phase.WAITING_PROMOTION
        if event.detail == Gate.ROLLOUT.value:
            return Phase.WAITING
        return None  # the traffic gate halts inside Progressing; do not guess
    return PHASE_OF.get(event.transition)


class CanaryStateMetrics(Collector):
    """The canary-state series on ``registry``; feed it every new transition.

    A collector of its own rather than prometheus-client ``Gauge``/``Counter`` children: a
    canary has about 25 series, each child object costs a lock, a value object and label
    validation (a tenth of the daemon's start-up on 50,000 Events and ~1 KB apiece, issue 17).
    Here a canary is a few fields, and the series are built when ``/metrics`` is scraped.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._seen: dict[CanaryRef, _Known] = {}
        registry.register(self)

    def describe(self) -> Iterable[Metric]:
        return _families()

    def collect(self) -> Iterable[Metric]:
        phase, weight, failed_checks, transitions, last_transition = families = _families()
        for known in self._seen.values():
            values = list(known.values)
            if known.phase is not None:
                for candidate in Phase:
                    phase.add_metric([*values, candidate.value], float(candidate is known.phase))
            if known.weight is not None:
                weight.add_metric(values, known.weight)
            if known.failed_checks is not None:
                failed_checks.add_metric(values, known.failed_checks)
            for transition, count in known.transitions.items():
                transitions.add_metric(
                    [*values, transition.value], count.value, created=count.created
                )
            if known.last_transition_s != float("-inf"):
                last_transition.add_metric(values, known.last_transition_s)
        return families

    def observe(self, event: CanaryEvent) -> None:
        """Update the series of ``event``'s canary from one new transition."""
        if is_self_event(event):
            return
        known = self._declare(event.canary)
        count = known.transitions.get(event.transition)
        if count is None:
            count = known.transitions[event.transition] = _Count()
        count.value += 1

        phase = inferred_phase(event)
        if phase is not None:
            known.phase = phase

        if event.transition is Transition.WEIGHT_ADVANCED and event.weight is not None:
            known.weight = float(event.weight)
        elif event.transition in _WEIGHT_RESETS:
            known.weight = 0.0

        failed = event.failed_checks
        if failed is None and event.transition is Transition.REVISION_DETECTED:
            failed = 0
        if failed is not None:
            known.failed_checks = float(failed)

        happened = (event.occurred_at or event.observed_at).timestamp()
        known.last_transition_s = max(known.last_transition_s, happened)

    def observe_all(self, events: list[CanaryEvent]) -> None:
        """``observe`` each event (the shape of the Runner's ``on_transitions``)."""
        for event in events:
            self.observe(event)

    def declare(self, canary: CanaryRef) -> None:
        """Pre-declare a known canary's outcome counters at 0 without changing anything else.

        Call it for the canaries restored from the state store at start-up: a counter series
        that first appears *with* its first increment shows no ``increase()``.
        """
        self._declare(canary)

    def forget(self, canary: CanaryRef) -> None:
        """Remove every series of a deleted canary (no-op for an unknown one)."""
        self._seen.pop(canary, None)

    def canaries(self) -> frozenset[CanaryRef]:
        """The canaries that currently have series."""
        return frozenset(self._seen)

    def _declare(self, ref: CanaryRef) -> _Known:
        known = self._seen.get(ref)
        if known is None:
            known = self._seen[ref] = _Known((ref.cluster, ref.namespace, ref.name))
            for transition in OUTCOME_TRANSITIONS:
                known.transitions[transition] = _Count()
        return known


def _families() -> tuple[
    GaugeMetricFamily,
    GaugeMetricFamily,
    GaugeMetricFamily,
    CounterMetricFamily,
    GaugeMetricFamily,
]:
    """Empty families of the five series (``describe``; ``collect`` fills fresh ones)."""
    return (
        GaugeMetricFamily(
            "canarywatch_canary_phase",
            "Flagger phase of each canary as a state set: 1 for the current phase, 0 for the "
            "others.",
            labels=[*CANARY_LABELS, "phase"],
        ),
        GaugeMetricFamily(
            "canarywatch_canary_weight",
            "Traffic weight (percent) routed to the canary, from its transitions.",
            labels=list(CANARY_LABELS),
        ),
        GaugeMetricFamily(
            "canarywatch_canary_failed_checks",
            "Failed checks of the canary's current analysis (0 from each new revision).",
            labels=list(CANARY_LABELS),
        ),
        CounterMetricFamily(
            "canarywatch_canary_transitions",
            "New (deduplicated) lifecycle transitions per canary.",
            labels=[*CANARY_LABELS, "transition"],
        ),
        GaugeMetricFamily(
            "canarywatch_canary_last_transition_timestamp_seconds",
            "Unix time of the canary's latest transition.",
            labels=list(CANARY_LABELS),
        ),
    )


@dataclass(slots=True)
class _Count:
    """One transition counter: its value and when it was created (its ``_created`` sample)."""

    value: float = 0.0
    created: float = field(default_factory=time.time)


@dataclass(slots=True)
class _Known:
    """One canary's state; ``None`` (or ``-inf``) where it has no series yet."""

    values: tuple[str, str, str]
    transitions: dict[Transition, _Count] = field(default_factory=dict)
    phase: Phase | None = None
    weight: float | None = None
    failed_checks: float | None = None
    last_transition_s: float = float("-inf")
