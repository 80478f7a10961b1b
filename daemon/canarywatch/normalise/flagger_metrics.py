"""Flagger ``/metrics`` scrapes -> lifecycle events, emitted only when a decoded value changes.

The metrics are a cross-check, not the lifecycle's source of truth (``reference/flagger.md`` §1):
``flagger_canary_status`` is 1 for every phase but Progressing and Failed, a halt shows only as a
weight that stops moving, and every value resets when Flagger restarts. So this normaliser says
little, and only what the numbers cannot get wrong:

- status 0/1 -> 2: ``rolled-back`` (reason ``flagger_canary_status=2``). From 1 this may really be
  a promotion failure (Promoting/Finalising also read 1); only the Canary status can tell.
- status 1/2 -> 0: ``revision-detected``. Flagger sets Progressing in two places only, both
  for a new revision (``checkCanaryStatus``, and a restart from WaitingPromotion), and writes
  the gauge at once; a revision that restarts an analysis still Progressing leaves it at 0 and
  is not seen. Without this, the metrics alone put every rollout of a canary in one, and a
  promotion or rollback after the first of its kind was a repeat, never notified.
- ``flagger_canary_failures_total`` rises: ``rolled-back`` again, the same identity, so the
  correlator merges it (within one scrape it is folded into the status event).
- ``flagger_canary_successes_total`` rises: ``promoted`` (hint ``skipped`` when
  ``analysis_status="skipped"``). A counter series appears only at its first increment, so a
  counter that appears for a target seen in the previous scrape rose from 0.
- ``flagger_canary_weight{workload="<target>"}`` rises: ``weight-advanced`` (the ``-primary``
  series is ignored).
- ``flagger_canary_metric_analysis``: no event; the latest values are kept for
  :meth:`FlaggerMetricsNormaliser.latest_analysis`, which the correlator uses to enrich ``halted``.
- The proposed ``flagger_canary_phase`` state set, when present, replaces the status gauge: a
  move to Failed is ``rolled-back`` (``promotion-failed`` from Promoting/Finalising) and a move to
  Succeeded is ``promoted``.

State is not news: the first scrape (and a series' first appearance) only sets the baseline.

Limitation: Flagger's ``name``/``workload`` labels are ``spec.targetRef.name``, not the Canary's
name. Without a ``workload_to_canary`` mapping the Canary is assumed to be named after its target.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final, TypeVar

from canarywatch.lru import BoundedLru
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Normalised,
    Observation,
    Outcome,
    Phase,
    SourceName,
    Transition,
)
from canarywatch.normalise.exposition import ExpositionDecoder, ScrapeSample
from canarywatch.normalise.metric_tables import (
    ANALYSIS_METRIC,
    FAILURES_METRIC,
    INFO_METRIC,
    PHASE_METRIC,
    STATUS_METRIC,
    SUCCESSES_METRIC,
    WEIGHT_METRIC,
    DecodingTable,
    StatusMeaning,
    status_for_phase,
    table_for,
)

MAX_LABEL_VALUE_CHARS = 1024
MAX_SERIES_PER_SCRAPE = 50_000
MAX_CLUSTERS = 64
PRIMARY_SUFFIX = "-primary"

_WANTED = frozenset(
    {
        STATUS_METRIC,
        WEIGHT_METRIC,
        ANALYSIS_METRIC,
        SUCCESSES_METRIC,
        FAILURES_METRIC,
        INFO_METRIC,
        PHASE_METRIC,
    }
)

_DECODER: Final = ExpositionDecoder(_WANTED)
"""Only the families canarywatch decodes: a real Flagger ``/metrics`` is mostly
``go_*``/``process_*``/``promhttp_*`` and the duration histograms, skipped without being parsed."""

_K = TypeVar("_K")

Target = tuple[str, str]
"""``(namespace, target workload name)``."""
CounterKey = tuple[str, str, str, str]
"""``(namespace, name, deployment_strategy, analysis_status)``."""

FULL_WEIGHT: Final = 100.0
"""All traffic on the canary: blue/green's final switch, not a weight step."""


def _traffic_on_canary(snapshot: _Snapshot, target: Target) -> bool:
    """Whether a failure left all traffic on the canary: a failed promotion.

    Both a rollback and (Flagger 1.44+) a failed promotion set ``flagger_canary_status`` to 2
    and add one to ``flagger_canary_failures_total``; only the weights tell them apart. A
    rollback routes everything back to the primary (canary weight 0) before it records the
    failure; a failed promotion routes everything to the canary, "the only healthy copy of the
    new revision" (Flagger's handleFailedPromotion), before it records the failure.
    """
    namespace, name = target
    canary = snapshot.weight.get(target)
    primary = snapshot.weight.get((namespace, f"{name}{PRIMARY_SUFFIX}"))
    return canary == FULL_WEIGHT and primary in (None, 0.0)


class RejectReason:
    """Keys of :attr:`FlaggerMetricsNormaliser.rejected` (fixed, usable as metric labels)."""

    NON_FINITE = "non-finite"
    MISSING_LABEL = "missing-label"
    DUPLICATE = "duplicate"
    LABEL_TOO_LONG = "label-too-long"
    TOO_MANY_SERIES = "too-many-series"
    UNKNOWN_PHASE = "unknown-phase"


@dataclass(slots=True)
class _Snapshot:
    """One scrape, decoded: only the series canarywatch reads."""

    version: str | None = None
    status_raw: dict[Target, float] = field(default_factory=dict)
    status: dict[Target, StatusMeaning] = field(default_factory=dict)
    """The last decodable status per target (an undecodable value keeps the previous one)."""
    phase_votes: dict[Target, list[Phase]] = field(default_factory=dict)
    weight: dict[Target, float] = field(default_factory=dict)
    successes: dict[CounterKey, float] = field(default_factory=dict)
    failures: dict[CounterKey, float] = field(default_factory=dict)
    analysis: dict[Target, dict[str, float]] = field(default_factory=dict)
    series: int = 0

    def phase(self, target: Target) -> Phase | None:
        """The phase from ``flagger_canary_phase`` when exactly one state is set."""
        votes = self.phase_votes.get(target, [])
        return votes[0] if len(votes) == 1 else None

    def targets(self) -> set[Target]:
        found: set[Target] = set(self.status_raw) | set(self.phase_votes) | set(self.analysis)
        found.update((ns, name) for ns, name, _, _ in self.successes)
        found.update((ns, name) for ns, name, _, _ in self.failures)
        found.update(key for key in self.weight if not self._is_primary(key))
        return found

    def is_canary_weight(self, key: Target) -> bool:
        return not self._is_primary(key)

    def _is_primary(self, key: Target) -> bool:
        namespace, workload = key
        if not workload.endswith(PRIMARY_SUFFIX):
            return False
        base = (namespace, workload[: -len(PRIMARY_SUFFIX)])
        return base in self.weight or base in self.status_raw


@dataclass(slots=True)
class _Pending:
    """The events one target accumulates during one diff, folded by transition."""

    start: list[CanaryEvent] = field(default_factory=list)
    weight: list[CanaryEvent] = field(default_factory=list)
    ending: dict[Transition, CanaryEvent] = field(default_factory=dict)


class FlaggerMetricsNormaliser:
    """Turn scrapes of Flagger's ``/metrics`` into events, per cluster, on change only.

    Attributes the caller reads and counts:
    ``rejected`` (samples skipped, by :class:`RejectReason`), ``unknown_status_values``
    (status gauge values outside the decoding table, counted when a series takes them) and
    ``unknown_version`` (the ``flagger_info`` version of the latest scrape when no table is known
    for it, ``"(absent)"`` when the scrape has none; ``None`` when known).
    """

    def __init__(
        self, *, workload_to_canary: Callable[[str, str], str | None] | None = None
    ) -> None:
        self._workload_to_canary = workload_to_canary
        # Ordered by scrape: ``latest_analysis`` reads most recently scraped first and must not
        # reorder what it reads.
        self._previous: BoundedLru[str, _Snapshot] = BoundedLru(MAX_CLUSTERS, refresh_on_read=False)
        self.rejected: Counter[str] = Counter()
        self.unknown_status_values: Counter[str] = Counter()
        self.unknown_version: str | None = None

    def latest_analysis(
        self, namespace: str, canary: str, *, cluster: str | None = None
    ) -> Mapping[str, float]:
        """The last ``flagger_canary_metric_analysis`` values of a Canary, by metric name.

        ``cluster=None`` looks in every cluster (most recently scraped first).
        """
        clusters = reversed(self._previous) if cluster is None else (cluster,)
        for name in clusters:
            snapshot = self._previous.get(name)
            if snapshot is None:
                continue
            for (ns, target), values in snapshot.analysis.items():
                if ns == namespace and self._canary_name(ns, target) == canary:
                    return MappingProxyType(dict(values))
        return MappingProxyType({})

    def __call__(self, obs: Observation) -> Normalised:
        text = obs.data
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str):
            return Normalised(Outcome.MALFORMED, note="exposition is not text")
        try:
            samples = _DECODER.decode(text)
        # A line outside the canonical form goes to prometheus-client's parser, which is lax and
        # raises whatever its string handling hits (ValueError, IndexError, ...); one scrape is
        # the per-item boundary where that must not escape.
        except Exception as exc:  # noqa: BLE001
            return Normalised(
                Outcome.MALFORMED, note=f"unparseable exposition: {type(exc).__name__}"
            )
        if not any(sample.name != INFO_METRIC for sample in samples):
            return Normalised(Outcome.IGNORED, note="no flagger canary metrics in scrape")

        previous = self._previous.get(obs.cluster)
        current = self._decode(samples, previous)
        self._previous.put(obs.cluster, current)

        unknown = self._unknown_status(current, previous)
        if previous is None:
            events: list[CanaryEvent] = []
        else:
            events = self._diff(previous, current, obs)
        if events:
            return Normalised(Outcome.TRANSITION, tuple(events), note=unknown)
        if unknown:
            return Normalised(Outcome.UNKNOWN, note=unknown)
        if previous is None:
            return Normalised(Outcome.IGNORED, note="first sight")
        if _same_values(previous, current):
            return Normalised(Outcome.REPEAT)
        return Normalised(Outcome.INFORMATIONAL, note="values changed without a transition")

    # -- decoding -------------------------------------------------------------------------

    def _decode(self, samples: Iterable[ScrapeSample], previous: _Snapshot | None) -> _Snapshot:
        snapshot = _Snapshot()
        for sample in samples:
            if sample.name == INFO_METRIC and snapshot.version is None:
                version = sample.labels.get("version")
                if version is not None and len(version) <= MAX_LABEL_VALUE_CHARS:
                    snapshot.version = version
        table, known = table_for(snapshot.version)
        if known:
            self.unknown_version = None
        else:
            self.unknown_version = snapshot.version if snapshot.version is not None else "(absent)"
        for sample in samples:
            if sample.name != INFO_METRIC:
                self._decode_sample(sample, table, snapshot)
        for target, raw in snapshot.status_raw.items():
            meaning = table.status_meaning(raw)
            if meaning is None and previous is not None:
                meaning = previous.status.get(target)
            if meaning is not None:
                snapshot.status[target] = meaning
        return snapshot

    def _decode_sample(
        self, sample: ScrapeSample, table: DecodingTable, snapshot: _Snapshot
    ) -> None:
        labels = sample.labels
        if any(len(value) > MAX_LABEL_VALUE_CHARS for value in labels.values()):
            self.rejected[RejectReason.LABEL_TOO_LONG] += 1
            return
        try:
            value = float(sample.value)
        except (OverflowError, TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            self.rejected[RejectReason.NON_FINITE] += 1
            return
        namespace = labels.get("namespace")
        name = labels.get("workload" if sample.name == WEIGHT_METRIC else "name")
        if not namespace or not name:
            self.rejected[RejectReason.MISSING_LABEL] += 1
            return
        if snapshot.series >= MAX_SERIES_PER_SCRAPE:
            self.rejected[RejectReason.TOO_MANY_SERIES] += 1
            return
        target = (namespace, name)
        if sample.name == STATUS_METRIC:
            self._keep_first(snapshot.status_raw, target, value)
        elif sample.name == WEIGHT_METRIC:
            self._keep_first(snapshot.weight, target, value)
        elif sample.name in (SUCCESSES_METRIC, FAILURES_METRIC):
            key = (
                namespace,
                name,
                labels.get("deployment_strategy", ""),
                labels.get("analysis_status", ""),
            )
            store = snapshot.successes if sample.name == SUCCESSES_METRIC else snapshot.failures
            self._keep_first(store, key, value)
        elif sample.name == ANALYSIS_METRIC:
            metric = next((labels[k] for k in table.analysis_labels if labels.get(k)), None)
            if metric is None:
                self.rejected[RejectReason.MISSING_LABEL] += 1
                return
            self._keep_first(snapshot.analysis.setdefault(target, {}), metric, value)
        elif sample.name == PHASE_METRIC:
            self._decode_phase(labels.get("phase"), value, target, snapshot)
            return
        snapshot.series += 1

    def _decode_phase(
        self, label: str | None, value: float, target: Target, snapshot: _Snapshot
    ) -> None:
        phase = Phase.parse(label)
        if phase is None:
            key = RejectReason.MISSING_LABEL if not label else RejectReason.UNKNOWN_PHASE
            self.rejected[key] += 1
            return
        snapshot.series += 1
        votes = snapshot.phase_votes.setdefault(target, [])
        if value == 1 and phase not in votes:
            votes.append(phase)

    def _keep_first(self, store: dict[_K, float], key: _K, value: float) -> None:
        if key in store:
            self.rejected[RejectReason.DUPLICATE] += 1
        else:
            store[key] = value

    def _unknown_status(self, current: _Snapshot, previous: _Snapshot | None) -> str:
        table, _ = table_for(current.version)
        notes = []
        for (namespace, name), raw in sorted(current.status_raw.items()):
            if table.status_meaning(raw) is not None:
                continue
            if previous is not None and previous.status_raw.get((namespace, name)) == raw:
                continue
            shown = _format_number(raw)
            self.unknown_status_values[shown] += 1
            notes.append(f"{STATUS_METRIC}={shown} for {namespace}/{name}")
        if not notes:
            return ""
        return "unknown status value: " + ", ".join(notes)

    # -- diffing --------------------------------------------------------------------------

    def _diff(self, previous: _Snapshot, current: _Snapshot, obs: Observation) -> list[CanaryEvent]:
        known_before = previous.targets()
        pending: dict[Target, _Pending] = {}

        for key, weight in current.weight.items():
            before = previous.weight.get(key)
            if before is None or weight <= before or not current.is_canary_weight(key):
                continue
            if before == 0 and weight == FULL_WEIGHT:
                # Blue/green: once its iterations are done Flagger routes all traffic to the
                # canary for the final checks and sets its weight 0 -> 100 in one go. Its Event
                # for that ("Routing all traffic to canary") is not a transition, and with the
                # kubernetes provider Flagger records no Event at all: not a weight step.
                # (A weight-stepped canary never jumps from 0 to 100: its first step is
                # stepWeight, and a stepWeight of 100 is still announced by its Event.)
                continue
            event = self._event(
                obs,
                key,
                Transition.WEIGHT_ADVANCED,
                _meaning_phase(current, key),
                detail=_format_number(weight),
                weight=int(weight) if weight.is_integer() and abs(weight) < 1e15 else None,
            )
            pending.setdefault(key, _Pending()).weight.append(event)

        for target in sorted(current.targets() & known_before):
            self._diff_phase(previous, current, obs, target, pending)

        for store_name, transition in (
            ("successes", Transition.PROMOTED),
            ("failures", Transition.ROLLED_BACK),
        ):
            before_store: dict[CounterKey, float] = getattr(previous, store_name)
            for key, value in getattr(current, store_name).items():
                namespace, name, _, analysis_status = key
                target = (namespace, name)
                if target not in known_before:
                    continue
                if value <= before_store.get(key, 0.0):
                    continue  # unchanged, or a reset after a Flagger restart
                if transition is Transition.ROLLED_BACK and _traffic_on_canary(current, target):
                    transition_here = Transition.PROMOTION_FAILED
                else:
                    transition_here = transition
                self._fold_counter(obs, current, target, transition_here, analysis_status, pending)

        events: list[CanaryEvent] = []
        for target in sorted(pending):
            found = pending[target]
            if found.start:
                # A verdict beside a new revision is the previous rollout's (a counter rose
                # between two scrapes, before the next revision), and weights are the new one's.
                events.extend(found.ending.values())
                events.extend(found.start)
                events.extend(found.weight)
            else:
                events.extend(found.weight)
                events.extend(found.ending.values())
        return events

    def _diff_phase(
        self,
        previous: _Snapshot,
        current: _Snapshot,
        obs: Observation,
        target: Target,
        pending: dict[Target, _Pending],
    ) -> None:
        before_phase, now_phase = previous.phase(target), current.phase(target)
        if before_phase is not None and now_phase is not None:
            if before_phase is now_phase:
                return
            reason = f"{PHASE_METRIC}={now_phase.value}"
            if now_phase is Phase.PROGRESSING:
                event = self._event(
                    obs, target, Transition.REVISION_DETECTED, now_phase, reason=reason
                )
                pending.setdefault(target, _Pending()).start.append(event)
                return
            if now_phase is Phase.SUCCEEDED:
                transition = Transition.PROMOTED
            elif now_phase is not Phase.FAILED:
                return
            elif before_phase in (Phase.PROMOTING, Phase.FINALISING):
                transition = Transition.PROMOTION_FAILED
            else:
                transition = Transition.ROLLED_BACK
            event = self._event(obs, target, transition, now_phase, reason=reason)
            pending.setdefault(target, _Pending()).ending[transition] = event
            return
        before, now = _meaning(previous, target), _meaning(current, target)
        if before not in (None, StatusMeaning.PROGRESSING) and now is StatusMeaning.PROGRESSING:
            event = self._event(
                obs,
                target,
                Transition.REVISION_DETECTED,
                Phase.PROGRESSING,
                reason=f"{STATUS_METRIC}=0",
            )
            pending.setdefault(target, _Pending()).start.append(event)
            return
        if before is None or before is StatusMeaning.FAILED or now is not StatusMeaning.FAILED:
            return
        transition = (
            Transition.PROMOTION_FAILED
            if _traffic_on_canary(current, target)
            else Transition.ROLLED_BACK
        )
        event = self._event(obs, target, transition, Phase.FAILED, reason=f"{STATUS_METRIC}=2")
        pending.setdefault(target, _Pending()).ending[transition] = event

    def _fold_counter(
        self,
        obs: Observation,
        current: _Snapshot,
        target: Target,
        transition: Transition,
        analysis_status: str,
        pending: dict[Target, _Pending],
    ) -> None:
        found = pending.setdefault(target, _Pending())
        if transition is Transition.ROLLED_BACK and Transition.PROMOTION_FAILED in found.ending:
            return  # the phase already named the failure more precisely
        hints = {"skipped": "true"} if analysis_status == "skipped" else {}
        existing = found.ending.get(transition)
        if existing is not None:
            if hints:
                merged = {**existing.hints, **hints}
                found.ending[transition] = _with_hints(existing, merged)
            return
        phase = current.phase(target)
        if phase is None:
            phase = Phase.SUCCEEDED if transition is Transition.PROMOTED else Phase.FAILED
        metric = SUCCESSES_METRIC if transition is Transition.PROMOTED else FAILURES_METRIC
        found.ending[transition] = self._event(
            obs, target, transition, phase, reason=f"{metric} increased", hints=hints
        )

    def _event(
        self,
        obs: Observation,
        target: Target,
        transition: Transition,
        phase: Phase | None,
        *,
        reason: str = "",
        detail: str = "",
        weight: int | None = None,
        hints: Mapping[str, str] | None = None,
    ) -> CanaryEvent:
        namespace, workload = target
        return CanaryEvent(
            canary=CanaryRef(namespace, self._canary_name(namespace, workload), obs.cluster),
            transition=transition,
            observed_at=obs.at,
            sources=(SourceName.FLAGGER_METRICS,),
            severity=TRANSITIONS[transition].severity,
            phase=phase,
            weight=weight,
            reason=reason,
            detail=detail,
            target=workload,
            hints=MappingProxyType(dict(hints or {})),
        )

    def _canary_name(self, namespace: str, workload: str) -> str:
        if self._workload_to_canary is None:
            return workload
        return self._workload_to_canary(namespace, workload) or workload


def _meaning(snapshot: _Snapshot, target: Target) -> StatusMeaning | None:
    phase = snapshot.phase(target)
    if phase is not None:
        return status_for_phase(phase)
    return snapshot.status.get(target)


def _meaning_phase(snapshot: _Snapshot, target: Target) -> Phase | None:
    phase = snapshot.phase(target)
    if phase is not None:
        return phase
    meaning = snapshot.status.get(target)
    if meaning is StatusMeaning.PROGRESSING:
        return Phase.PROGRESSING
    if meaning is StatusMeaning.FAILED:
        return Phase.FAILED
    return None


def _same_values(previous: _Snapshot, current: _Snapshot) -> bool:
    return (
        previous.version == current.version
        and previous.status_raw == current.status_raw
        and previous.phase_votes == current.phase_votes
        and previous.weight == current.weight
        and previous.successes == current.successes
        and previous.failures == current.failures
        and previous.analysis == current.analysis
    )


def _format_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _with_hints(event: CanaryEvent, hints: Mapping[str, str]) -> CanaryEvent:
    return replace(event, hints=MappingProxyType(dict(hints)))
