"""Every Prometheus collector canarywatch exports, declared once.

The registry is passed in so tests make a fresh one and read their own numbers back. Label values
that form a fixed set are pre-declared, so their series exist at 0 from the first scrape (a rate
over a series that appears only on the first failure is invisible to alerting). Label values are
small fixed vocabularies or configured names (receivers, sinks), never free text.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from canarywatch.model import DeliveryReason, NotificationStatus, Outcome, SourceName

SUPPRESS_REASONS: tuple[str, ...] = (
    "duplicate",
    "inhibited",
    "silenced",
    "muted",
    "grouped",
    "catch_up",
)
"""Why an event was not notified (``canarywatch_events_suppressed_total{reason}``)."""

DROP_STAGES: tuple[str, ...] = ("intake", "dispatch", "outbox")
DROP_REASONS: tuple[str, ...] = ("overflow", "shutdown", "unknown_receiver", "state_unwritable")
"""``canarywatch_events_dropped_total{stage,reason}``: lost, as opposed to suppressed on purpose.

In the daemon a full receiver queue is not a loss: the notification stays in the outbox and is
read back in order (``canarywatch_notifications_spilled_total``), so ``dispatch``/``overflow``
stays 0 there; it counts only for a dispatcher without an outbox behind it (tools, tests).
``outbox``/``state_unwritable``: held in memory while the state store could not be written and
given up (past ``state.max_held_notifications``, or still held at shutdown)."""

STATE_HELD_KINDS: tuple[str, ...] = ("notification", "outbox", "snapshot", "other")
"""``kind`` of ``canarywatch_state_held_writes``: notifications not yet in the outbox, outbox
records (delivered / attempted / dead), correlator snapshots, the rest."""

SOURCE_KINDS: tuple[str, ...] = ("kube_events", "canaries", "flagger_metrics", "flagger_webhook")
"""``source`` of ``canarywatch_source_up``: the Kubernetes Events and Canary watches (one series
per cluster each), the Flagger metrics source (one per target, labelled with the target's
cluster) and the webhook intake (1 while its listener serves the route)."""

DELIVERY_OK = "sent"
DELIVERY_FAILED = "failed"
DELIVERY_RETRIED = "retried"
DELIVERY_OUTCOMES: tuple[str, ...] = (DELIVERY_OK, DELIVERY_FAILED, DELIVERY_RETRIED)
"""``outcome`` of ``canarywatch_deliveries_total``: ``sent``/``failed`` once per notification,
``retried`` once per failed attempt that will be tried again."""

REASON_NONE = ""
REASON_ERROR = "error"
"""The ``reason`` label of a delivery that failed by a sink bug (no ``DeliveryReason``)."""

_DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_PIPELINE_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def package_version() -> str:
    """The installed canarywatch version (``0+unknown`` when running from a bare checkout)."""
    try:
        return importlib.metadata.version("canarywatch")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class Metrics:
    """The collectors, as attributes; the pipeline increments them directly."""

    def __init__(self, registry: CollectorRegistry, *, version: str | None = None) -> None:
        self.registry = registry
        self._counters: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        self.observations = Counter(
            "canarywatch_observations",
            "Raw observations received, by source.",
            ["source"],
            registry=registry,
        )
        self.normalise = Counter(
            "canarywatch_normalise",
            "Normaliser results per observation, by source and outcome.",
            ["source", "outcome"],
            registry=registry,
        )
        self.events = Counter(
            "canarywatch_events",
            "Lifecycle events produced by normalisation, by source.",
            ["source"],
            registry=registry,
        )
        self.events_suppressed = Counter(
            "canarywatch_events_suppressed",
            "Events not notified on purpose, by reason.",
            ["reason"],
            registry=registry,
        )
        self.events_dropped = Counter(
            "canarywatch_events_dropped",
            "Events or notifications not delivered by this process, by stage and reason "
            "(shutdown: still in the outbox; a full receiver queue spills instead of dropping).",
            ["stage", "reason"],
            registry=registry,
        )
        self.notifications = Counter(
            "canarywatch_notifications",
            "Notifications queued for delivery (directly, or read back from the outbox), by "
            "receiver and status.",
            ["receiver", "status"],
            registry=registry,
        )
        self.notifications_spilled = Counter(
            "canarywatch_notifications_spilled",
            "Notifications left in the outbox because the receiver's queue was full (or older "
            "ones were still waiting there); read back in order as the queue drains, not lost.",
            ["receiver"],
            registry=registry,
        )
        self.deliveries = Counter(
            "canarywatch_deliveries",
            "Delivery results: sent/failed per notification, retried per repeated attempt.",
            ["sink", "receiver", "outcome", "reason"],
            registry=registry,
        )
        self.delivery_latency = Histogram(
            "canarywatch_delivery_latency_seconds",
            "Time from the earliest event of a notification being observed to the sink's "
            "acknowledgement (queueing and retries included).",
            ["sink"],
            buckets=_DELIVERY_BUCKETS,
            registry=registry,
        )
        self.pipeline_latency = Histogram(
            "canarywatch_pipeline_latency_seconds",
            "Time from an event being observed to its notification being handed to dispatch.",
            buckets=_PIPELINE_BUCKETS,
            registry=registry,
        )
        self.outbox_depth = Gauge(
            "canarywatch_outbox_depth",
            "Notifications accepted for delivery and not yet delivered, per receiver (0 on a "
            "standby: what it keeps is canarywatch_outbox_held).",
            ["sink"],
            registry=registry,
        )
        self.outbox_oldest_age = Gauge(
            "canarywatch_outbox_oldest_age_seconds",
            "Age of the oldest undelivered notification, per receiver (0 when empty, and on a "
            "standby).",
            ["sink"],
            registry=registry,
        )
        self.outbox_held = Gauge(
            "canarywatch_outbox_held",
            "Notifications a leader-election standby keeps in its outbox in case it takes over "
            "(it does not deliver them; released after the held window), per receiver.",
            ["sink"],
            registry=registry,
        )
        self.state_size = Gauge(
            "canarywatch_state_store_size_bytes",
            "Size of the state store on disk.",
            registry=registry,
        )
        self.state_errors = Counter(
            "canarywatch_state_store_errors",
            "State store operations that failed (disk full, read-only, corrupt).",
            registry=registry,
        )
        self.state_writable = Gauge(
            "canarywatch_state_store_writable",
            "1 while the state store takes writes; 0 while writes are held in memory (disk "
            "full, read-only, I/O error) and retried.",
            registry=registry,
        )
        self.state_held = Gauge(
            "canarywatch_state_held_writes",
            "Writes held in memory because the state store could not take them, by kind "
            "(notification: accepted, not yet in the outbox, not delivered until it is).",
            ["kind"],
            registry=registry,
        )
        self.source_up = Gauge(
            "canarywatch_source_up",
            "1 while a source reaches its input, else 0 (also before it first has): "
            f"source {', '.join(SOURCE_KINDS)}; one per cluster and kind, per Flagger metrics "
            "target (its cluster), and the webhook intake. /readyz says why.",
            ["source", "cluster"],
            registry=registry,
        )
        self.sink_up = Gauge(
            "canarywatch_sink_up",
            "0 from a receiver's permanent delivery failure (webhook deleted, credentials "
            "revoked, file not writable) until a delivery succeeds, else 1. /readyz says why.",
            ["receiver", "sink"],
            registry=registry,
        )
        self.leader = Gauge(
            "canarywatch_leader",
            "1 while this replica holds the lease (or leader election is off), else 0.",
            registry=registry,
        )
        self.build_info = Gauge(
            "canarywatch_build_info",
            "Always 1; the version label says which canarywatch is running.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(version=version or package_version()).set(1)

        for source in SourceName:
            self.observations.labels(source=source.value)
            self.events.labels(source=source.value)
            for outcome in Outcome:
                self.normalise.labels(source=source.value, outcome=outcome.value)
        for reason in SUPPRESS_REASONS:
            self.events_suppressed.labels(reason=reason)
        for stage in ("intake", "dispatch"):
            for reason in ("overflow", "shutdown"):
                self.events_dropped.labels(stage=stage, reason=reason)
        self.events_dropped.labels(stage="outbox", reason="state_unwritable")
        self.state_writable.set(1)
        for kind in STATE_HELD_KINDS:
            self.state_held.labels(kind=kind)

    def count(self, counter: Counter, *values: str) -> None:
        """Increment ``counter``'s child for the label ``values`` (in its label order).

        The children are kept: ``labels()`` validates the names and takes a lock on every
        call, which the pipeline's few counters per observation paid 50,000 times at start-up
        (issue 17). Only for counters whose children are never removed.
        """
        key = (counter, values)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = counter.labels(*values)
        child.inc()

    def declare_receiver(self, receiver: str, sink: str) -> None:
        """Pre-declare the series of one configured receiver so they exist at 0."""
        for status in NotificationStatus:
            self.notifications.labels(receiver=receiver, status=status.value)
        self.notifications_spilled.labels(receiver=receiver)
        self.deliveries.labels(
            sink=sink, receiver=receiver, outcome=DELIVERY_OK, reason=REASON_NONE
        )
        for reason in DeliveryReason:
            for outcome in (DELIVERY_FAILED, DELIVERY_RETRIED):
                self.deliveries.labels(
                    sink=sink, receiver=receiver, outcome=outcome, reason=reason.value
                )
        self.delivery_latency.labels(sink=sink)

    def declare_receivers(self, pairs: Iterable[tuple[str, str]]) -> None:
        """``declare_receiver`` for each ``(receiver, sink)``."""
        for receiver, sink in pairs:
            self.declare_receiver(receiver, sink)
