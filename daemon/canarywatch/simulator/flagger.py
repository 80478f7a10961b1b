"""A scenario driver that plays Flagger v1.44.0 against the simulated cluster.

``FlaggerSimulator`` keeps what Flagger's scheduler keeps per canary (``reference/flagger.md``
§2): the Canary ``status`` written through the store the way the ``/status`` subresource
would be, the router's weights, and the Prometheus series of ``pkg/metrics/recorder.go`` (§1).
Events go through ``FlaggerEventRecorder``, so client-go's dedup, aggregation and spam filter
shape what reaches the API exactly as they would for the real controller (§3, §6).

Each step method on a canary is **one tick** of ``advanceCanary`` (or of the controller's
informer/finalizer), doing in Flagger's order what that tick does: gauge writes, Events,
status writes. Scripts decide *which* tick happens next; the driver decides what the tick
looks like, and refuses ticks Flagger could not take from the current phase (``ValueError``).

    sim = FlaggerSimulator(store, clock)
    podinfo = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
    podinfo.new_revision("8c669c5f")        # New revision detected! Scaling up podinfo.test
    podinfo.start_analysis()                # Starting canary analysis ... + Advance ... 10
    podinfo.halt_metric("request-success-rate", 96.12)
    sim.exposition()                        # Prometheus text, Flagger's series only

Deliberately not modelled: the event webhook and Flagger's own notifiers, session affinity,
``skipAnalysis``, mirroring, DaemonSet/Service targets (messages are the Deployment ones).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest

from canarywatch.clock import Clock
from canarywatch.simulator.event_recorder import FlaggerEventRecorder, Recorded
from canarywatch.simulator.flagger_metrics import FlaggerMetrics
from canarywatch.simulator.gofmt import go_duration, go_float
from canarywatch.simulator.store import Obj, Store, format_time

# Phases (``CanaryPhase``), as plain strings: they are written into Canary objects.
INITIALIZING: Final = "Initializing"
INITIALIZED: Final = "Initialized"
WAITING: Final = "Waiting"
PROGRESSING: Final = "Progressing"
WAITING_PROMOTION: Final = "WaitingPromotion"
PROMOTING: Final = "Promoting"
FINALISING: Final = "Finalising"
SUCCEEDED: Final = "Succeeded"
FAILED: Final = "Failed"
TERMINATING: Final = "Terminating"
TERMINATED: Final = "Terminated"

IDLE_PHASES: Final = frozenset({INITIALIZED, SUCCEEDED, FAILED})
"""Phases in which ``shouldAdvance`` is false until the target changes."""
ROLLBACK_REASONS: Final = ("failed-checks", "manual", "progress-deadline")

DEF_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""client_golang's ``prometheus.DefBuckets``, which Flagger's duration histogram uses."""
TOTAL_WEIGHT: Final = 100
DEFAULT_TICK_SECONDS: Final = 0.2
"""What one analysis tick "takes" in the duration histogram (deterministic)."""
DEFAULT_METRIC_VALUES: Final[Mapping[str, float]] = {
    "request-success-rate": 100.0,
    "request-duration": 0.191,
}
"""Passing values reported for the built-in metrics when a step does not give its own."""

DEFAULT_NOT_READY: Final[Mapping[str, str]] = {
    "canary": "waiting for rollout to finish: 1 of 2 (readyThreshold 100%) updated replicas "
    "are available",
    "primary": "waiting for rollout to finish: 1 old replicas are pending termination",
    "initializing": "waiting for rollout to finish: observed deployment generation less than "
    "desired generation",
}
NO_VALUES_ERROR: Final = "running query failed: no values found"
"""The istio provider's error text when a query returns nothing."""

PODINFO_ANALYSIS: Final[Mapping[str, Any]] = {
    "interval": "1m",
    "threshold": 5,
    "stepWeight": 10,
    "maxWeight": 50,
    "metrics": [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "30s"},
    ],
    "webhooks": [
        {"name": "acceptance-test", "type": "pre-rollout", "url": "http://tester/check"},
        {"name": "load-test", "type": "rollout", "url": "http://tester/load"},
    ],
}
"""The fixture day's ``test/podinfo`` analysis (``fixtures/flagger/README.md``)."""


def spec_hash(*parts: object) -> str:
    """A stable stand-in for Flagger's ``computeHash`` (short, alphanumeric)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()
    return digest[:10]


def _promoted_condition(phase: str, kind: str) -> tuple[str, str]:
    """``(status, message)`` of the ``Promoted`` condition for ``phase`` (flagger.md §2)."""
    table = {
        INITIALIZING: ("Unknown", f"New {kind} detected, starting initialization."),
        INITIALIZED: ("True", f"{kind} initialization completed."),
        WAITING: ("Unknown", "Waiting for approval."),
        WAITING_PROMOTION: ("Unknown", "Waiting for approval."),
        PROGRESSING: ("Unknown", "New revision detected, progressing canary analysis."),
        PROMOTING: ("Unknown", "Canary analysis completed, starting primary rolling update."),
        FINALISING: ("Unknown", "Canary analysis completed, routing all traffic to primary."),
        SUCCEEDED: ("True", "Canary analysis completed successfully, promotion finished."),
        FAILED: ("False", f"Canary analysis failed, {kind} scaled to zero."),
    }
    return table.get(phase, ("Unknown", f"New {kind} detected, starting initialization."))


def status_value(phase: str) -> int:
    """``Recorder.SetStatus``: 0 Progressing, 2 Failed, 1 for every other phase."""
    if phase == PROGRESSING:
        return 0
    if phase == FAILED:
        return 2
    return 1


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("-")[0].split(".") if p.isdigit())


# -- the simulator --------------------------------------------------------------------------


class FlaggerSimulator:
    """One Flagger process: its Event recorder, its metrics, and the canaries it schedules.

    ``store`` is the simulated cluster (Canaries and Events are written there), ``clock``
    stamps everything. ``cluster_name`` is Flagger's ``-cluster-name`` (kept for callers),
    ``version`` selects version-dependent behaviour (``reportingComponent`` from 1.38.0, the
    progress-deadline message from 1.36.1), ``mesh`` is ``-mesh-provider``.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        cluster_name: str = "sim",
        version: str = "1.44.0",
        mesh: str = "istio",
    ) -> None:
        self.store = store
        self.clock = clock
        self.cluster_name = cluster_name
        self.version = version
        self.mesh = mesh
        self._version = _version_tuple(version)
        self.recorder = FlaggerEventRecorder(
            store,
            clock,
            reporting_component="flagger" if self._version >= (1, 38, 0) else "",
        )
        self.metrics = FlaggerMetrics(version, mesh, clock.now().timestamp())
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.metrics)
        self._canaries: dict[tuple[str, str], SimulatedCanary] = {}

    # -- canaries -------------------------------------------------------------------------

    def create_canary(
        self,
        namespace: str,
        name: str,
        *,
        target: str | None = None,
        analysis: Mapping[str, Any] | None = None,
        phase_initialized: bool = True,
        phase: str = SUCCEEDED,
        revision: str | None = None,
        kind: str = "Deployment",
        labels: Mapping[str, str] | None = None,
        revert_on_deletion: bool = False,
    ) -> SimulatedCanary:
        """Create a Canary object and start scheduling it.

        ``phase_initialized=True`` seeds a canary that already existed when Flagger started
        (``phase`` is Initialized, Succeeded or Failed; the object is stored with that status,
        the way a list would show it) and runs its first, idle tick (``flagger_canary_status``
        appears). ``phase_initialized=False`` is a brand-new Canary: created without status,
        then the controller marks it Initializing; call ``initialize()`` next.
        """
        if (namespace, name) in self._canaries:
            raise ValueError(f"canary {namespace}/{name} already exists")
        if phase_initialized and phase not in IDLE_PHASES:
            raise ValueError(f"a pre-existing canary is {sorted(IDLE_PHASES)}, not {phase!r}")
        target = target or name
        spec: Obj = {
            "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "service": {"port": 9898},
            "analysis": copy.deepcopy(dict(analysis if analysis is not None else PODINFO_ANALYSIS)),
        }
        if revert_on_deletion:
            spec["revertOnDeletion"] = True
        obj: Obj = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": spec,
        }
        revision = revision or spec_hash(namespace, name, 0)
        if phase_initialized:
            now = format_time(self.clock.now())
            cond_status, message = _promoted_condition(phase, kind)
            obj["status"] = {
                "phase": phase,
                "canaryWeight": 0,
                "failedChecks": 0,
                "iterations": 0,
                "lastAppliedSpec": revision,
                "lastPromotedSpec": revision,
                "lastTransitionTime": now,
                "conditions": [
                    {
                        "type": "Promoted",
                        "status": cond_status,
                        "reason": phase,
                        "message": message,
                        "lastUpdateTime": now,
                        "lastTransitionTime": now,
                    }
                ],
            }
        stored = self.store.create("canaries", obj)
        canary = SimulatedCanary(self, stored, revision)
        self._canaries[(namespace, name)] = canary
        self._refresh_total()
        if phase_initialized:
            canary.tick()
        else:
            canary._write_status({"phase": INITIALIZING}, INITIALIZING)  # setPhaseInitializing
        return canary

    def canary(self, namespace: str, name: str) -> SimulatedCanary:
        return self._canaries[(namespace, name)]

    @property
    def canaries(self) -> Sequence[SimulatedCanary]:
        return list(self._canaries.values())

    def _forget(self, canary: SimulatedCanary) -> None:
        self._canaries.pop((canary.namespace, canary.name), None)
        self._refresh_total()

    def _refresh_total(self) -> None:
        """``scheduleCanaries``: set the count of every namespace that still has canaries
        (a namespace left with none keeps its last value: Flagger never sets 0)."""
        counts: dict[str, int] = {}
        for ns, _ in self._canaries:
            counts[ns] = counts.get(ns, 0) + 1
        self.metrics.total.update(counts)

    # -- metrics --------------------------------------------------------------------------

    def exposition(self) -> str:
        """The ``/metrics`` body (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry).decode()

    def record_scrape(self, code: int) -> None:
        """Count one ``/metrics`` answer (``promhttp_metric_handler_requests_total``)."""
        key = str(code)
        self.metrics.scrapes[key] = self.metrics.scrapes.get(key, 0) + 1


class SimulatedCanary:
    """One Canary as Flagger's scheduler sees it; every public step is one tick."""

    def __init__(self, sim: FlaggerSimulator, obj: Obj, revision: str) -> None:
        self.sim = sim
        self.obj = obj
        self.namespace: str = obj["metadata"]["namespace"]
        self.name: str = obj["metadata"]["name"]
        self.target: str = obj["spec"]["targetRef"]["name"]
        self.kind: str = obj["spec"]["targetRef"]["kind"]
        self.revision = revision
        """The target's current pod-template hash (becomes ``lastAppliedSpec``)."""
        self.routes = (TOTAL_WEIGHT, 0)
        """``(primary, canary)`` weights the mesh router holds."""
        self.tick_seconds = DEFAULT_TICK_SECONDS
        self.deleted = False

    # -- reading ----------------------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def analysis(self) -> Mapping[str, Any]:
        value = self.obj["spec"].get("analysis") or {}
        return value if isinstance(value, Mapping) else {}

    @property
    def status(self) -> Mapping[str, Any]:
        return dict(self.obj.get("status") or {})

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "")

    @property
    def failed_checks(self) -> int:
        return int(self.status.get("failedChecks") or 0)

    @property
    def threshold(self) -> int:
        return int(self.analysis.get("threshold") or 1)

    @property
    def max_weight(self) -> int:
        steps = self.analysis.get("stepWeights") or []
        if steps:
            return min(TOTAL_WEIGHT, int(steps[-1]))
        return int(self.analysis.get("maxWeight") or TOTAL_WEIGHT)

    @property
    def iterations_total(self) -> int:
        return int(self.analysis.get("iterations") or 0)

    @property
    def strategy(self) -> str:
        """``deployment_strategy`` label of the success/failure counters."""
        if self.iterations_total > 0:
            return "ab-testing" if self.analysis.get("match") else "blue-green"
        return "canary"

    def webhooks(self, hook_type: str) -> list[str]:
        return [
            str(w.get("name"))
            for w in self.analysis.get("webhooks") or []
            if isinstance(w, Mapping) and (w.get("type") or "rollout") == hook_type
        ]

    def _next_weight(self, current: int) -> int:
        steps = [int(s) for s in self.analysis.get("stepWeights") or []]
        step = int(self.analysis.get("stepWeight") or 0)
        if step > 0 or not steps:
            return min(TOTAL_WEIGHT, current + step)
        if current == 0:
            return min(TOTAL_WEIGHT, steps[0])
        for i, weight in enumerate(steps[:-1]):
            if weight == current:
                return min(TOTAL_WEIGHT, steps[i + 1])
        return TOTAL_WEIGHT

    # -- writes, the way Flagger makes them --------------------------------------------------

    def _event(self, event_type: str, message: str) -> Recorded:
        return self.sim.recorder.record(self.obj, event_type, message)

    def _normal(self, message: str) -> Recorded:
        return self._event("Normal", message)

    def _warning(self, message: str) -> Recorded:
        return self._event("Warning", message)

    def _write_status(self, changes: Mapping[str, Any], phase: str | None = None) -> None:
        """An ``UpdateStatus``: only ``.status`` changes; ``lastTransitionTime`` always does;
        the ``Promoted`` condition is replaced only when its status or reason changes."""
        current = self.sim.store.get("canaries", self.namespace, self.name)
        status: Obj = dict(current.get("status") or {})
        status.update(changes)
        now = format_time(self.sim.clock.now())
        status["lastTransitionTime"] = now
        if phase is not None:
            cond_status, message = _promoted_condition(phase, self.kind)
            old = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Promoted"), None
            )
            if old is None or (old.get("status"), old.get("reason")) != (cond_status, phase):
                since = now
                if old is not None and old.get("status") == cond_status:
                    since = str(old.get("lastTransitionTime") or now)
                status["conditions"] = [
                    {
                        "type": "Promoted",
                        "status": cond_status,
                        "reason": phase,
                        "message": message,
                        "lastUpdateTime": now,
                        "lastTransitionTime": since,
                    }
                ]
        current["status"] = status
        self.obj = self.sim.store.update("canaries", current)

    def _sync_status(
        self, phase: str, *, weight: int = 0, failed_checks: int = 0, iterations: int = 0
    ) -> None:
        """``SyncStatus``: phase, counters and ``lastAppliedSpec`` = the target's hash."""
        changes: dict[str, Any] = {
            "phase": phase,
            "canaryWeight": weight,
            "failedChecks": failed_checks,
            "iterations": iterations,
            "lastAppliedSpec": self.revision,
        }
        if phase == INITIALIZED:
            changes["lastPromotedSpec"] = self.revision
        self._write_status(changes, phase)

    def _set_phase(self, phase: str) -> None:
        """``SetStatusPhase``: canaryWeight is zeroed outside Progressing/Waiting/Promoting."""
        changes: dict[str, Any] = {"phase": phase}
        if phase not in (PROGRESSING, WAITING, PROMOTING):
            changes["canaryWeight"] = 0
            changes["iterations"] = 0
            if phase == WAITING_PROMOTION:
                changes["iterations"] = max(self.iterations_total - 1, 0)
        if phase in (INITIALIZED, SUCCEEDED):
            changes["lastPromotedSpec"] = self.status.get("lastAppliedSpec", self.revision)
        self._write_status(changes, phase)

    def _set_field(self, field: str, value: int) -> None:
        self._write_status({field: value})

    # -- metric writes --------------------------------------------------------------------

    def _gauge_status(self, phase: str) -> None:
        self.sim.metrics.status[(self.target, self.namespace)] = status_value(phase)

    def _gauge_weight(self) -> None:
        primary, canary = self.routes
        self.sim.metrics.weight[(self.namespace, f"{self.target}-primary")] = primary
        self.sim.metrics.weight[(self.namespace, self.target)] = canary

    def _observe_duration(self) -> None:
        key = (self.target, self.namespace)
        self.sim.metrics.durations.setdefault(key, []).append(self.tick_seconds)

    def _count(self, table: dict[tuple[str, str, str, str], int]) -> None:
        key = (self.target, self.namespace, self.strategy, "completed")
        table[key] = table.get(key, 0) + 1

    def _set_routes(self, primary: int, canary: int) -> None:
        self.routes = (primary, canary)

    # -- tick scaffolding -------------------------------------------------------------------

    def _require(self, *phases: str, step: str) -> None:
        if self.deleted:
            raise ValueError(f"{self.key}: the canary was deleted")
        if self.phase not in phases:
            raise ValueError(
                f"{self.key}: {step}() needs phase {' or '.join(phases)}, not {self.phase!r}"
            )

    def _routed_tick(self) -> None:
        """What every tick past ``shouldAdvance`` and the primary check does first:
        ``GetRoutes`` -> ``SetWeight``, then ``checkCanaryStatus`` -> ``SetStatus``."""
        self._gauge_weight()
        self._gauge_status(self.phase)

    def _before_analysis(self) -> None:
        """Routed tick, canary ready, then the rollback hooks (each says "not yet")."""
        self._routed_tick()
        if self.phase in (PROGRESSING, WAITING_PROMOTION):
            for hook in self.webhooks("rollback"):
                self._normal(f"Rollback hook {hook} not signaling a rollback")

    def _analysis(self, values: Mapping[str, float] | None = None) -> None:
        """A passing ``runAnalysis``: rollout hooks pass silently; each metric's value is set."""
        self._observe_duration()
        given = dict(values or {})
        for metric in self.analysis.get("metrics") or []:
            name = str(metric.get("name"))
            value = given.pop(name, DEFAULT_METRIC_VALUES.get(name))
            if value is not None:
                self.sim.metrics.analysis[(self.target, self.namespace, name)] = value
        for name, value in given.items():
            self.sim.metrics.analysis[(self.target, self.namespace, name)] = value

    def _scale_up(self) -> None:
        """``checkCanaryStatus`` with the confirm-rollout gate open: every confirm-rollout
        hook that passes says so, then the new revision scales up and the status is synced
        (``lastAppliedSpec`` changes only after both Events)."""
        for hook in self.webhooks("confirm-rollout"):
            self._normal(f"Confirm-rollout check {hook} passed")
        self._normal(f"New revision detected! Scaling up {self.target}.{self.namespace}")
        self._sync_status(PROGRESSING)

    def _step(self) -> None:
        """``runCanary`` below the max weight: traffic hooks, route, status, gauge, Event."""
        for hook in self.webhooks("confirm-traffic-increase"):
            self._normal(f"Confirm-traffic-increase check {hook} passed")
        weight = self._next_weight(self.routes[1])
        self._set_routes(TOTAL_WEIGHT - weight, weight)
        self._set_field("canaryWeight", weight)
        self._gauge_weight()
        self._normal(f"Advance {self.name}.{self.namespace} canary weight {weight}")

    def _iterate(self) -> None:
        n, m = int(self.status.get("iterations") or 0) + 1, self.iterations_total
        if self.strategy == "ab-testing":
            self._set_routes(0, TOTAL_WEIGHT)
            self._gauge_weight()
        self._set_field("iterations", n)
        self._normal(f"Advance {self.name}.{self.namespace} canary iteration {n}/{m}")

    def _copy_spec(self) -> None:
        for hook in self.webhooks("confirm-promotion"):
            self._normal(f"Confirm-promotion check {hook} passed")
        t, ns = self.target, self.namespace
        self._normal(f"Copying {t}.{ns} template spec to {t}-primary.{ns}")
        self._set_phase(PROMOTING)

    def _post_rollout(self) -> None:
        for hook in self.webhooks("post-rollout"):
            self._normal(f"Post-rollout check {hook} passed")

    def _rollback(self) -> None:
        """``Controller.rollback``: reason Event if the threshold was reached, routes back to
        the primary, ``Canary failed!``, status Failed (failedChecks kept), gauges, counter."""
        checks = self.failed_checks
        if checks >= self.threshold:
            self._warning(
                f"Rolling back {self.name}.{self.namespace} failed checks threshold reached "
                f"{checks}"
            )
        self._set_routes(TOTAL_WEIGHT, 0)
        self._warning(f"Canary failed! Scaling down {self.name}.{self.namespace}")
        self._gauge_weight()
        self._sync_status(FAILED, failed_checks=checks)
        self._gauge_status(FAILED)
        self._count(self.sim.metrics.failures)
        self._post_rollout()

    # -- ticks: initialisation and idling ----------------------------------------------------

    def initialize(self, *, primary_ready: bool = True, reason: str | None = None) -> None:
        """One tick of a new canary: metric providers checked; then either the primary is
        not ready yet (Warning, nothing else) or ``Initialization done!`` (phase Initialized)."""
        self._require("", INITIALIZING, step="initialize")
        self._normal("all the metrics providers are available!")
        if not primary_ready:
            why = reason or DEFAULT_NOT_READY["initializing"]
            self._warning(f"{self.target}-primary.{self.namespace} not ready: {why}")
            return
        self._sync_status(INITIALIZED)
        self._gauge_status(INITIALIZED)
        self._normal(f"Initialization done! {self.name}.{self.namespace}")
        self._gauge_status(INITIALIZED)  # shouldAdvance is false: SetStatus(phase) again

    def tick(self) -> None:
        """A tick that changes nothing: idle canaries re-write their status gauge; a closed
        gate is silent (rollout, promotion) or repeats its Halt (traffic increase); while
        WaitingPromotion the metrics are still analysed."""
        phase = self.phase
        if self.deleted:
            raise ValueError(f"{self.key}: the canary was deleted")
        if phase in IDLE_PHASES:
            self._gauge_status(phase)
        elif phase == WAITING:
            self._routed_tick()
        elif phase == WAITING_PROMOTION:
            self._before_analysis()
            self._analysis()
        else:
            raise ValueError(f"{self.key}: a {phase or 'new'} canary has no idle tick")

    def deploy(self, revision: str | None = None) -> str:
        """The user changes the target (not a tick): its template hash becomes ``revision``."""
        self.revision = revision or spec_hash(self.namespace, self.name, self.revision)
        return self.revision

    # -- ticks: a rollout -----------------------------------------------------------------

    def new_revision(self, revision: str | None = None) -> None:
        """The tick that finds a changed target with the confirm-rollout gate open:
        ``New revision detected! Scaling up <target>.<ns>``, phase Progressing, counters 0."""
        self._require(*IDLE_PHASES, step="new_revision")
        if revision is not None or self.revision == self.status.get("lastAppliedSpec"):
            self.deploy(revision)
        self._routed_tick()
        self._scale_up()

    def wait_for_approval(self, gate: str = "rollout", hook: str | None = None) -> None:
        """A closed gate. ``rollout``: the new revision's tick, phase -> Waiting, Halt once.
        ``promotion``: the tick at max weight, analysis runs, phase -> WaitingPromotion, Halt
        once. ``traffic``: an analysis tick whose step is held (Halt every tick)."""
        ref = f"{self.name}.{self.namespace}"
        if gate == "rollout":
            self._require(*IDLE_PHASES, step="wait_for_approval")
            if self.revision == self.status.get("lastAppliedSpec"):
                self.deploy()
            name = hook or next(iter(self.webhooks("confirm-rollout")), "gate")
            self._routed_tick()
            self._set_phase(WAITING)
            self._warning(f"Halt {ref} advancement waiting for approval {name}")
        elif gate == "promotion":
            self._require(PROGRESSING, step="wait_for_approval")
            if self.routes[1] < self.max_weight:
                raise ValueError(f"{self.key}: the promotion gate is reached at max weight")
            name = hook or next(iter(self.webhooks("confirm-promotion")), "promotion-gate")
            self._before_analysis()
            self._analysis()
            self._set_phase(WAITING_PROMOTION)
            self._warning(f"Halt {ref} advancement waiting for promotion approval {name}")
        elif gate == "traffic":
            self._require(PROGRESSING, step="wait_for_approval")
            name = hook or next(iter(self.webhooks("confirm-traffic-increase")), "traffic-gate")
            self._before_analysis()
            self._analysis()
            self._warning(f"Halt {ref} advancement waiting for traffic increase approval {name}")
        else:
            raise ValueError(f"unknown gate {gate!r}: rollout, promotion or traffic")

    def approve(self, gate: str = "rollout", hook: str | None = None) -> None:
        """The tick on which a gate opens. ``rollout``: ``Confirm-rollout check … passed`` then
        the new revision scales up. ``promotion``: ``Confirm-promotion check … passed`` then
        ``Copying …`` (Promoting). ``traffic``: the held step is taken."""
        if gate == "rollout":
            self._require(WAITING, step="approve")
            self._routed_tick()
            if not self.webhooks("confirm-rollout"):
                self._normal(f"Confirm-rollout check {hook or 'gate'} passed")
            self._scale_up()
        elif gate == "promotion":
            self._require(WAITING_PROMOTION, step="approve")
            self._before_analysis()
            self._analysis()
            if not self.webhooks("confirm-promotion"):
                self._normal(f"Confirm-promotion check {hook or 'promotion-gate'} passed")
            self._copy_spec()
        elif gate == "traffic":
            self.advance()
        else:
            raise ValueError(f"unknown gate {gate!r}: rollout, promotion or traffic")

    def not_ready(self, which: str = "canary", reason: str | None = None) -> None:
        """A readiness Warning (repeats each tick while it holds). The primary is checked
        before the routes are read; the canary after the status gauge is written."""
        why = reason or DEFAULT_NOT_READY.get(which)
        if which == "primary":
            self._require(PROGRESSING, WAITING_PROMOTION, PROMOTING, FINALISING, step="not_ready")
            self._warning(f"{self.target}-primary.{self.namespace} not ready: {why}")
        elif which == "canary":
            self._require(PROGRESSING, WAITING_PROMOTION, step="not_ready")
            self._routed_tick()
            self._warning(f"canary deployment {self.target}.{self.namespace} not ready: {why}")
        else:
            raise ValueError(f"not_ready(which={which!r}): canary or primary")

    def start_analysis(
        self, *, pre_rollout_error: str | None = None, values: Mapping[str, float] | None = None
    ) -> None:
        """The first analysis tick: ``Starting canary analysis for <target>.<ns>``, the
        pre-rollout hooks, then (in the same tick) the first step or iteration. A failing
        pre-rollout hook halts instead (+1 failedChecks) and the next tick starts again."""
        self._require(PROGRESSING, step="start_analysis")
        if self.routes[1] != 0 or int(self.status.get("iterations") or 0) != 0:
            raise ValueError(f"{self.key}: the analysis already started")
        self._before_analysis()
        self._observe_duration()
        self._normal(f"Starting canary analysis for {self.target}.{self.namespace}")
        for hook in self.webhooks("pre-rollout"):
            if pre_rollout_error is not None:
                self._warning(
                    f"Halt {self.name}.{self.namespace} advancement pre-rollout check {hook} "
                    f"failed {pre_rollout_error}"
                )
                self._set_field("failedChecks", self.failed_checks + 1)
                return
            self._normal(f"Pre-rollout check {hook} passed")
        del values  # no metric is queried while no traffic reaches the canary
        if self.iterations_total > 0:
            self._iterate()
        else:
            self._step()

    def advance(
        self, weight: int | None = None, *, values: Mapping[str, float] | None = None
    ) -> None:
        """An analysis tick that passes and takes the next step (``Advance … canary weight``)."""
        self._require(PROGRESSING, step="advance")
        if self.routes[1] >= self.max_weight:
            raise ValueError(f"{self.key}: at max weight {self.max_weight}; promote() next")
        expected = self._next_weight(self.routes[1])
        if weight is not None and weight != expected:
            raise ValueError(f"{self.key}: the next step is weight {expected}, not {weight}")
        self._before_analysis()
        self._analysis(values)
        self._step()

    def iteration(self, n: int | None = None, m: int | None = None) -> None:
        """An analysis tick of an A/B or blue/green analysis: ``Advance … canary iteration n/m``."""
        self._require(PROGRESSING, step="iteration")
        current = int(self.status.get("iterations") or 0)
        if self.iterations_total == 0 or current >= self.iterations_total:
            raise ValueError(f"{self.key}: no iteration left; promote() next")
        if (n, m) != (None, None) and (n, m) != (current + 1, self.iterations_total):
            raise ValueError(
                f"{self.key}: the next iteration is {current + 1}/{self.iterations_total}"
            )
        self._before_analysis()
        self._analysis()
        self._iterate()

    def halt_metric(
        self,
        metric: str,
        value: float,
        threshold: float | None = None,
        *,
        values: Mapping[str, float] | None = None,
    ) -> None:
        """A failed check: ``metric`` is out of its ``thresholdRange`` (+1 failedChecks).

        ``value`` is what Flagger reports: request-success-rate in %, request-duration in
        **seconds** (printed as a Go duration against the range in ms), custom metrics raw.
        ``values`` are metrics checked before it that passed."""
        self._require_analysing("halt_metric")
        spec: Mapping[str, Any] = next(
            (m for m in self.analysis.get("metrics") or [] if m.get("name") == metric), {}
        )
        bounds = spec.get("thresholdRange") or {}
        low, high = bounds.get("min"), bounds.get("max")
        duration = metric == "request-duration"
        shown = value * 1000 if duration else value
        if threshold is not None:
            op = "<" if metric == "request-success-rate" else ">"
            limit = threshold
        elif low is not None and shown < float(low):
            op, limit = "<", float(low)
        elif high is not None and shown > float(high):
            op, limit = ">", float(high)
        else:
            raise ValueError(f"{self.key}: {metric}={value} is within {bounds or 'no range'}")
        self._before_analysis()
        self._analysis(values)
        self.sim.metrics.analysis[(self.target, self.namespace, metric)] = value
        ref = f"{self.name}.{self.namespace}"
        if metric == "request-success-rate":
            text = f"success rate {value:.2f}% {op} {go_float(limit)}%"
        elif duration:
            text = f"request duration {go_duration(value)} {op} {go_duration(limit / 1000)}"
        else:
            text = f"{metric} {value:.2f} {op} {go_float(limit)}"
        self._warning(f"Halt {ref} advancement {text}")
        self._set_field("failedChecks", self.failed_checks + 1)

    def halt_no_traffic(self, metric: str = "request-success-rate") -> None:
        """A query returned no values (+1 failedChecks); the metric's gauge is not written."""
        self._require_analysing("halt_no_traffic")
        self._before_analysis()
        self._observe_duration()
        ref = f"{self.target}.{self.namespace}"
        if metric == "request-success-rate":
            message = (
                f"Halt advancement no values found for {self.sim.mesh} metric {metric} "
                f"probably {ref} is not receiving traffic: {NO_VALUES_ERROR}"
            )
        elif metric == "request-duration":
            message = (
                f"Halt advancement no values found for {self.sim.mesh} metric {metric} "
                f"probably {ref} is not receiving traffic"
            )
        else:
            message = f"Halt advancement no values found for custom metric: {metric}: no values"
        self._warning(message)
        self._set_field("failedChecks", self.failed_checks + 1)

    def halt_webhook(self, hook: str, error: str = "502 Bad Gateway") -> None:
        """A rollout webhook answered non-2xx (+1 failedChecks)."""
        self._require_analysing("halt_webhook")
        self._before_analysis()
        self._observe_duration()
        self._warning(
            f"Halt {self.name}.{self.namespace} advancement external check {hook} failed {error}"
        )
        self._set_field("failedChecks", self.failed_checks + 1)

    def _require_analysing(self, step: str) -> None:
        self._require(PROGRESSING, WAITING_PROMOTION, step=step)
        if self.failed_checks >= self.threshold:
            raise ValueError(f"{self.key}: threshold reached; the next tick is rollback()")

    def promote(self, *, values: Mapping[str, float] | None = None) -> None:
        """The analysis tick at max weight (or after the last iteration): ``Copying <target>.<ns>
        template spec to <target>-primary.<ns>``, phase Promoting. Blue/green first routes
        all traffic to the canary on a tick of its own."""
        self._require(PROGRESSING, step="promote")
        if self.iterations_total > 0:
            done = int(self.status.get("iterations") or 0)
            if done < self.iterations_total:
                raise ValueError(f"{self.key}: iterations left; iteration() first")
            self._before_analysis()
            self._analysis(values)
            if self.strategy == "blue-green" and done == self.iterations_total:
                self._normal("Routing all traffic to canary")
                self._set_routes(0, TOTAL_WEIGHT)
                self._gauge_weight()
                self._set_field("iterations", done + 1)
                return
            self._copy_spec()
            return
        if self.routes[1] < self.max_weight:
            raise ValueError(f"{self.key}: below max weight {self.max_weight}; advance() first")
        self._before_analysis()
        self._analysis(values)
        self._copy_spec()

    def finalise(self) -> None:
        """The Promoting tick once the primary is ready: ``Routing all traffic to primary``
        (or one ``Advance … primary weight`` step with ``stepWeightPromotion``), Finalising."""
        self._require(PROMOTING, step="finalise")
        self._routed_tick()
        step = int(self.analysis.get("stepWeightPromotion") or 0)
        if step == 0:
            self._normal("Routing all traffic to primary")
            self._set_routes(TOTAL_WEIGHT, 0)
            self._gauge_weight()
            self._set_phase(FINALISING)
            return
        primary = min(TOTAL_WEIGHT, self.routes[0] + step)
        self._set_routes(primary, TOTAL_WEIGHT - primary)
        self._gauge_weight()
        self._normal(f"Advance {self.name}.{self.namespace} primary weight {primary}")
        if primary == TOTAL_WEIGHT:
            self._set_phase(FINALISING)
        else:
            self._set_field("canaryWeight", TOTAL_WEIGHT - primary)

    def succeed(self) -> None:
        """The Finalising tick: canary scaled to zero, phase Succeeded, ``Promotion completed!
        Scaling down <target>.<ns>``, ``flagger_canary_successes_total`` +1."""
        self._require(FINALISING, step="succeed")
        self._routed_tick()
        self._set_phase(SUCCEEDED)
        self._gauge_status(SUCCEEDED)
        self._post_rollout()
        self._normal(f"Promotion completed! Scaling down {self.target}.{self.namespace}")
        self._count(self.sim.metrics.successes)

    def rollback(self, reason: str = "failed-checks", *, hook: str | None = None) -> None:
        """The tick that fails the rollout. ``failed-checks``: failedChecks reached the
        threshold (``Rolling back … failed checks threshold reached N``); ``manual``: a
        rollback hook answered 2xx; ``progress-deadline``: the canary Deployment exceeded
        its progress deadline. All end in ``Canary failed! Scaling down <name>.<ns>``."""
        ref = f"{self.name}.{self.namespace}"
        if reason == "failed-checks":
            self._require(PROGRESSING, WAITING_PROMOTION, step="rollback")
            if self.failed_checks < self.threshold:
                raise ValueError(
                    f"{self.key}: {self.failed_checks} failed checks < threshold {self.threshold}"
                )
            self._before_analysis()
        elif reason == "manual":
            self._require(PROGRESSING, WAITING_PROMOTION, WAITING, step="rollback")
            self._routed_tick()
            name = hook or next(iter(self.webhooks("rollback")), "rollback")
            self._warning(f"Rollback check {name} passed")
            self._warning(f"Rolling back {ref} manual webhook invoked")
        elif reason == "progress-deadline":
            self._require(PROGRESSING, step="rollback")
            self._routed_tick()
            error = (
                f"canary deployment {self.target}.{self.namespace} not ready: "
                f'deployment "{self.target}" exceeded its progress deadline'
            )
            if self.sim._version >= (1, 36, 1):
                self._warning(error)
            else:
                self._warning(f"Rolling back {ref} progress deadline exceeded {error}")
        else:
            raise ValueError(f"unknown rollback reason {reason!r}: {', '.join(ROLLBACK_REASONS)}")
        self._rollback()

    def promotion_failed(self, reason: str = DEFAULT_NOT_READY["primary"]) -> None:
        """v1.44.0 ``handleFailedPromotion``: the primary is stuck while Promoting/Finalising;
        ``Promotion of <target>.<ns> failed, primary not ready: …``, Failed, traffic stays."""
        self._require(PROMOTING, FINALISING, step="promotion_failed")
        self._warning(
            f"Promotion of {self.target}.{self.namespace} failed, primary not ready: {reason}"
        )
        self._sync_status(FAILED, failed_checks=self.failed_checks)
        self._gauge_status(FAILED)
        self._count(self.sim.metrics.failures)
        self._post_rollout()

    def terminate(self) -> None:
        """Deleting a canary with ``revertOnDeletion``: Terminating, Terminated, then the
        finalizer lets the object go (the metric series stay, as in Flagger)."""
        if self.deleted:
            raise ValueError(f"{self.key}: the canary was deleted")
        self._set_phase(TERMINATING)
        self._normal(f"Terminating canary {self.name}.{self.namespace}")
        self._set_phase(TERMINATED)
        self._normal(f"Terminated canary {self.name}.{self.namespace}")
        self.delete()

    def delete(self) -> None:
        """Delete the Canary object (no Events without ``revertOnDeletion``); its job stops
        and its metric series stay, as in Flagger."""
        if not self.deleted:
            self.sim.store.delete("canaries", self.namespace, self.name)
            self.deleted = True
            self.sim._forget(self)

    def suspended(self) -> None:
        """A tick while ``spec.suspend`` is true: the only effect is the Event."""
        self._normal("skipping canary run as object is suspended")


def messages(events: Iterable[Obj]) -> list[tuple[str, str, int]]:
    """``(type, message, count)`` of stored Events, a convenient view for assertions."""
    return [(e["type"], e["message"], int(e["count"])) for e in events]
