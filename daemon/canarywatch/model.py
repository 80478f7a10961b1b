"""The types that cross the pipeline's stage boundaries.

Frozen, slotted dataclasses and enums only: no I/O, no logging. The vocabulary (transition names,
severities, conditions) is the public interface described in ``reference/transitions.md`` and the
README: labels, config matchers and JSON output use exactly these strings.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final, TypeAlias

JSONValue: TypeAlias = Any
"""A value decoded from JSON at an I/O edge; narrowed into model types immediately."""

EMPTY_MAPPING: Mapping[str, str] = MappingProxyType({})


def _empty_mapping() -> Mapping[str, str]:
    return EMPTY_MAPPING


class SourceName(enum.StrEnum):
    """Which source saw an observation (the recording format's ``source`` field)."""

    KUBERNETES_EVENTS = "kubernetes-events"
    CANARIES = "canaries"
    FLAGGER_METRICS = "flagger-metrics"
    FLAGGER_WEBHOOK = "flagger-webhook"
    SELF = "canarywatch"
    """Self-events canarywatch produces about its own inputs (metrics-source-down, ...)."""


SEEN_BY: Final[Mapping[SourceName, tuple[SourceName, ...]]] = MappingProxyType(
    {source: (source,) for source in SourceName}
)
"""``(source,)``, one tuple per source for every event to share: an event's ``sources`` is kept
for as long as its transition is remembered, ~50 bytes apiece per sighting (issue 17)."""


SELF_NAMESPACE: Final = "canarywatch"
"""The namespace of a self-event's ``CanaryRef`` (``canarywatch/cluster-prod``): one place, so the
self-events app.py and the Flagger-metrics source build cannot name different namespaces."""


RECORDABLE_SOURCES: frozenset[SourceName] = frozenset(
    {
        SourceName.KUBERNETES_EVENTS,
        SourceName.CANARIES,
        SourceName.FLAGGER_METRICS,
        SourceName.FLAGGER_WEBHOOK,
    }
)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class Phase(enum.StrEnum):
    """Flagger's ``CanaryPhase`` values (``pkg/apis/flagger/v1beta1/status.go``)."""

    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"

    @classmethod
    def parse(cls, value: object) -> Phase | None:
        """The phase named by ``value``, or ``None`` for empty/unknown text."""
        if not isinstance(value, str):
            return None
        try:
            return cls(value)
        except ValueError:
            return None


class Transition(enum.StrEnum):
    """The lifecycle vocabulary (``reference/transitions.md``)."""

    INITIALIZED = "initialized"
    AWAITING_APPROVAL = "awaiting-approval"
    APPROVED = "approved"
    REVISION_DETECTED = "revision-detected"
    ANALYSIS_STARTED = "analysis-started"
    WEIGHT_ADVANCED = "weight-advanced"
    ITERATION_ADVANCED = "iteration-advanced"
    NOT_READY = "not-ready"
    HALTED = "halted"
    NO_TRAFFIC = "no-traffic"
    WEBHOOK_FAILED = "webhook-failed"
    PROMOTING = "promoting"
    FINALISING = "finalising"
    PROMOTED = "promoted"
    LOW_TRAFFIC_PROMOTION = "low-traffic-promotion"
    ROLLED_BACK = "rolled-back"
    PROMOTION_FAILED = "promotion-failed"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    # Self-events about canarywatch's own inputs.
    METRICS_SOURCE_DOWN = "metrics-source-down"
    METRICS_SOURCE_RECOVERED = "metrics-source-recovered"
    CLUSTER_UNREACHABLE = "cluster-unreachable"
    CLUSTER_REACHABLE = "cluster-reachable"


class Condition(enum.StrEnum):
    """Conditions a transition can open; an open condition is *firing* until closed."""

    GATE = "gate"
    READINESS = "readiness"
    ANALYSIS = "analysis"
    ROLLOUT_FAILED = "rollout-failed"
    SOURCE = "source"


class Gate(enum.StrEnum):
    """The three confirm gates of Flagger (detail of awaiting-approval / approved)."""

    ROLLOUT = "rollout"
    PROMOTION = "promotion"
    TRAFFIC = "traffic"


@dataclass(frozen=True, slots=True)
class TransitionSpec:
    severity: Severity
    opens: Condition | None = None
    starts_rollout: bool = False
    ends_rollout: bool = False
    forward: bool = False
    """A forward step of the lifecycle: closes an open ``readiness`` condition."""


TRANSITIONS: Mapping[Transition, TransitionSpec] = MappingProxyType(
    {
        Transition.INITIALIZED: TransitionSpec(Severity.INFO, forward=True),
        Transition.AWAITING_APPROVAL: TransitionSpec(Severity.WARNING, opens=Condition.GATE),
        Transition.APPROVED: TransitionSpec(Severity.INFO, forward=True),
        Transition.REVISION_DETECTED: TransitionSpec(
            Severity.INFO, starts_rollout=True, forward=True
        ),
        Transition.ANALYSIS_STARTED: TransitionSpec(Severity.INFO, forward=True),
        Transition.WEIGHT_ADVANCED: TransitionSpec(Severity.INFO, forward=True),
        Transition.ITERATION_ADVANCED: TransitionSpec(Severity.INFO, forward=True),
        Transition.NOT_READY: TransitionSpec(Severity.INFO, opens=Condition.READINESS),
        Transition.HALTED: TransitionSpec(Severity.WARNING, opens=Condition.ANALYSIS),
        Transition.NO_TRAFFIC: TransitionSpec(Severity.WARNING, opens=Condition.ANALYSIS),
        Transition.WEBHOOK_FAILED: TransitionSpec(Severity.WARNING),
        Transition.PROMOTING: TransitionSpec(Severity.INFO, forward=True),
        Transition.FINALISING: TransitionSpec(Severity.INFO, forward=True),
        Transition.PROMOTED: TransitionSpec(Severity.INFO, ends_rollout=True, forward=True),
        Transition.LOW_TRAFFIC_PROMOTION: TransitionSpec(Severity.WARNING),
        Transition.ROLLED_BACK: TransitionSpec(
            Severity.CRITICAL, opens=Condition.ROLLOUT_FAILED, ends_rollout=True
        ),
        Transition.PROMOTION_FAILED: TransitionSpec(
            Severity.CRITICAL, opens=Condition.ROLLOUT_FAILED, ends_rollout=True
        ),
        Transition.SUSPENDED: TransitionSpec(Severity.INFO),
        Transition.TERMINATED: TransitionSpec(Severity.INFO),
        Transition.METRICS_SOURCE_DOWN: TransitionSpec(Severity.WARNING, opens=Condition.SOURCE),
        Transition.METRICS_SOURCE_RECOVERED: TransitionSpec(Severity.INFO),
        Transition.CLUSTER_UNREACHABLE: TransitionSpec(Severity.WARNING, opens=Condition.SOURCE),
        Transition.CLUSTER_REACHABLE: TransitionSpec(Severity.INFO),
    }
)


@dataclass(frozen=True, slots=True, order=True)
class CanaryRef:
    """A Flagger Canary: ``cluster`` is canarywatch's name for the cluster it was seen in."""

    namespace: str
    name: str
    cluster: str = ""

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Observation:
    """One raw thing a source saw, stamped with when and by which source.

    ``data`` is the watch event (``{"type", "object"}``) for the two Kubernetes sources, the
    exposition text for ``flagger-metrics`` and the decoded webhook JSON for
    ``flagger-webhook``: exactly the recording format's ``data`` field.
    """

    at: datetime
    source: SourceName
    data: JSONValue
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class CanaryEvent:
    """A normalised lifecycle event.

    Normalisers fill what they know; ``pipeline.correlate`` assigns ``rollout`` and
    ``episode``, merges ``sources`` and computes ``labels``.
    """

    canary: CanaryRef
    transition: Transition
    observed_at: datetime
    sources: tuple[SourceName, ...]
    severity: Severity = Severity.INFO
    phase: Phase | None = None
    weight: int | None = None
    failed_checks: int | None = None
    message: str = ""
    reason: str = ""
    """Machine detail: failing metric and value vs threshold, rollback cause, ..."""
    detail: str = ""
    """Identity detail: the weight, the iteration or the gate; empty otherwise."""
    target: str = ""
    """The Canary's target workload (``spec.targetRef.name``) when known."""
    rollout: str = ""
    episode: int = 0
    occurred_at: datetime | None = None
    """When the source says it happened (an Event's ``lastTimestamp``), if it says."""
    hints: Mapping[str, str] = field(default_factory=_empty_mapping)
    """Source facts used for correlation: ``spec`` (lastAppliedSpec), ``checksum`` (webhook)."""
    labels: Mapping[str, str] = field(default_factory=_empty_mapping)

    @property
    def spec(self) -> TransitionSpec:
        return TRANSITIONS[self.transition]


class Outcome(enum.StrEnum):
    """What a normaliser made of one observation (a metric label: keep the set small)."""

    TRANSITION = "transition"
    INFORMATIONAL = "informational"
    UNKNOWN = "unknown"
    REPEAT = "repeat"
    IGNORED = "ignored"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Normalised:
    """A normaliser's answer: the events (possibly none) and why."""

    outcome: Outcome
    events: tuple[CanaryEvent, ...] = ()
    note: str = ""
    """For ``unknown``/``malformed``: what was wrong, safe to log."""


class NotificationStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """The per-route grouping settings an event was routed with."""

    group_by: tuple[str, ...] | None
    """Label names to group by; ``None`` means ``...`` (all labels: one group per label set)."""
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    send_resolved: bool = False


@dataclass(frozen=True, slots=True)
class Routed:
    event: CanaryEvent
    receiver: str
    route: RouteOptions
    status: NotificationStatus = NotificationStatus.FIRING


@dataclass(frozen=True, slots=True)
class Notification:
    """What one receiver is sent: a group of events with one status."""

    receiver: str
    status: NotificationStatus
    group_key: str
    group_labels: Mapping[str, str]
    events: tuple[CanaryEvent, ...]
    created_at: datetime
    repeat: bool = False
    """A ``repeat_interval`` re-send of still-firing events (delivered even though the
    notification log has them: that is the point of a repeat)."""


class DeliveryReason(enum.StrEnum):
    """Why a delivery attempt failed: a metric label, so a fixed set and no free text."""

    TIMEOUT = "timeout"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    INVALID_PAYLOAD = "invalid_payload"
    CONNECTION = "connection"


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    receiver: str
    sink: str
    ok: bool
    attempts: int
    duration_s: float
    reason: DeliveryReason | None = None
    detail: str = field(default="", compare=False)
    """A failure in plain words, no secret (``dispatch.describe_failure``): decision trails
    say why a notification was dead-lettered. Not part of equality."""
