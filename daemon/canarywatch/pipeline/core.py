"""The synchronous pipeline: normalise -> correlate -> inhibit -> route -> group.

Everything here is a plain method call with ``now`` passed in, so ``replay``, the tests and the
async runner drive exactly the same code; only the runner knows about queues and sleeping.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from canarywatch.metrics import Metrics
from canarywatch.model import (
    CanaryEvent,
    Notification,
    NotificationStatus,
    Observation,
    Outcome,
    Routed,
    SourceName,
    Transition,
)
from canarywatch.normalise import Normaliser
from canarywatch.pipeline import recover
from canarywatch.pipeline.correlate import ONLY_DURING_A_ROLLOUT, Correlation, Correlator
from canarywatch.pipeline.firing_index import FiringIndex
from canarywatch.pipeline.group import Grouper, group_key, group_key_for
from canarywatch.pipeline.inhibit import Inhibitor, InhibitRule
from canarywatch.pipeline.route import Router, group_labels
from canarywatch.pipeline.silence import Silencer
from canarywatch.views.explain import DecisionRecorder, InhibitedBy, SilencedBy, Target

_SUPPRESSED_EVENT = {
    "duplicate": "event_deduplicated",
    "inhibited": "event_inhibited",
    "muted": "event_muted",
    "silenced": "event_silenced",
    "catch_up": "event_recorded_as_state",
}


@dataclass(slots=True)
class PipelineStats:
    """Counts kept even without a metrics registry (replay prints them on request)."""

    observations: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    transitions: int = 0
    suppressed: dict[str, int] = field(default_factory=dict)
    notifications: int = 0


class Pipeline:
    def __init__(
        self,
        *,
        router: Router,
        grouper: Grouper | None = None,
        normaliser: Normaliser | None = None,
        correlator: Correlator | None = None,
        inhibitor: Inhibitor | None = None,
        silencer: Silencer | None = None,
        metrics: Metrics | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
        cluster: str = "",
        catch_up_window_s: float | None = None,
        explain: DecisionRecorder | None = None,
    ) -> None:
        self.cluster = cluster
        self.catch_up_window_s = catch_up_window_s
        """Start-up policy: initial-list transitions older than this are state, not news."""
        """The cluster label for observations that do not name their own."""
        self.normaliser = normaliser or Normaliser()
        self.correlator = correlator or Correlator()
        self.inhibitor = inhibitor or Inhibitor()
        self.silencer = silencer
        self.router = router
        self.grouper = grouper or Grouper()
        self._flushed: list[Notification] = []
        """Flushed early (``offer_events``), handed out by the next ``due``/``flush_all``."""
        self.metrics = metrics
        self.stats = PipelineStats()
        self.explain = explain
        """Where each decision is recorded (``canarywatch explain``); ``None``: nowhere."""
        self._warned_versions: set[str] = set()
        self._firing_index: tuple[Inhibitor, FiringIndex] | None = None
        """The firing events indexed for the inhibitor in use (rebuilt when a reload swaps it)."""
        self._log = log or structlog.get_logger().bind(component="pipeline")

    # -- intake -----------------------------------------------------------------------------

    def observe(
        self, obs: Observation, now: datetime, *, recover_missed: bool = True
    ) -> list[CanaryEvent]:
        """Process one observation; returns the new transitions it produced.

        ``recover_missed=False``: a listed Canary's missed steps (``pipeline.recover``) are left
        for ``recover_missed`` to offer later (the runner does, after a start-up backlog).
        """
        self.stats.observations += 1
        obs = self._with_cluster(obs)
        if self.metrics:
            self.metrics.count(self.metrics.observations, obs.source.value)
        try:
            normalised = self.normaliser(obs)
        except Exception:  # noqa: BLE001  per-item boundary: a normaliser bug must not stop the daemon
            self._log.exception("observation_failed", source=obs.source.value)
            normalised_outcome = Outcome.MALFORMED
            self._count_outcome(obs, normalised_outcome)
            return []
        self._count_outcome(obs, normalised.outcome)
        if obs.source is SourceName.FLAGGER_METRICS:
            self._warn_unknown_version()
        if normalised.outcome in (Outcome.UNKNOWN, Outcome.MALFORMED):
            self._log.info(
                "observation_unrecognised",
                source=obs.source.value,
                outcome=normalised.outcome.value,
                note=normalised.note,
            )
        missed = self._missed_steps(obs) if recover_missed else ()
        return self._offer_all((*normalised.events, *missed), obs, now)

    def recover_missed(self, obs: Observation, now: datetime) -> list[CanaryEvent]:
        """Offer the steps a listed Canary shows that nothing reported (``pipeline.recover``).

        After a start-up backlog, not at the Canary's place in it: a relisted Canary sorts at
        its ``lastTransitionTime``, which Flagger does not move when only the weight changes,
        so at its place the backlog's newer weight Events were still to come and the status's
        weight was announced before them (issue 12, the fault matrix's kill -9 case).
        """
        obs = self._with_cluster(obs)
        return self._offer_all(self._missed_steps(obs), obs, now)

    def _with_cluster(self, obs: Observation) -> Observation:
        if not obs.cluster and self.cluster:
            return dataclasses.replace(obs, cluster=self.cluster)
        return obs

    def _offer_all(
        self, candidates: Iterable[CanaryEvent], obs: Observation, now: datetime
    ) -> list[CanaryEvent]:
        new: list[CanaryEvent] = []
        stale_before = self._stale_before(obs, now)
        for candidate in candidates:
            new.extend(self.offer_events(candidate, now, stale_before=stale_before))
        return new

    def _missed_steps(self, obs: Observation) -> tuple[CanaryEvent, ...]:
        """A Canary listed again (start-up, relist) may show a step of the current rollout
        whose Event was folded and overwritten while nobody watched (``pipeline.recover``)."""
        if obs.source is not SourceName.CANARIES:
            return ()
        listed = recover.read_listed(obs.data, cluster=obs.cluster)
        if listed is None:
            return ()
        known = self.correlator.rollout_progress(listed.canary)
        found = recover.missed_steps(listed, known, observed_at=obs.at)
        for event in found:
            self._log.info(
                "step_recovered_from_status",
                canary=str(event.canary),
                transition=event.transition.value,
                detail=event.detail,
            )
        return found

    def _warn_unknown_version(self) -> None:
        """Once per version: Flagger reports a version the decoding tables do not know."""
        version = self.normaliser.metrics.unknown_version
        if version is not None and version not in self._warned_versions:
            self._warned_versions.add(version)
            self._log.warning(
                "flagger_version_unknown",
                version=version,
                detail="decoding with the newest known table; status values outside it are "
                "counted as unknown, never guessed",
            )

    def _stale_before(self, obs: Observation, now: datetime) -> datetime | None:
        """For an item of a source's initial list: the cut-off of the catch-up window."""
        if self.catch_up_window_s is None:
            return None
        if not (isinstance(obs.data, dict) and obs.data.get("initial") is True):
            return None
        return now - timedelta(seconds=self.catch_up_window_s)

    def offer_event(
        self, candidate: CanaryEvent, now: datetime, *, stale_before: datetime | None = None
    ) -> CanaryEvent | None:
        """Correlate, inhibit, route and group one candidate event; the last new transition
        it made (``offer_events``: all of them)."""
        new = self.offer_events(candidate, now, stale_before=stale_before)
        return new[-1] if new else None

    def offer_events(
        self, candidate: CanaryEvent, now: datetime, *, stale_before: datetime | None = None
    ) -> list[CanaryEvent]:
        """Correlate, inhibit, route and group one candidate event, after the candidates it
        released (held behind a rollout start waiting for its spec, ``correlate.SPEC_WAIT``, or
        a status halt waiting for its name, ``correlate.NAME_WAIT``); a candidate that names a
        held halt takes its place, and the halt and what waited behind it follow.

        ``stale_before`` (start-up catch-up policy): a new transition that happened before it
        is recorded (it is state the correlator needs) but not notified.
        """
        released = self.correlator.release_before(candidate, now)  # taken before it
        new = [e for c, r in released if (e := self._take(c, r, now, stale_before)) is not None]
        if released:
            # As they would have been live: flushed before ``candidate`` (a verdict) fires, or
            # the default inhibit rule mutes the held steps at the flush.
            self._flushed.extend(self._emit(self.grouper.due(now)))
        result = self.correlator(candidate, now)
        taken = [*result.released, (candidate, result), *result.then]
        new += [e for c, r in taken if (e := self._take(c, r, now, stale_before)) is not None]
        return new

    def release_held(self, now: datetime, *, everything: bool = False) -> list[CanaryEvent]:
        """Take the holds that were not released in time (a rollout start without its spec, a
        status halt without its name; ``everything``: all held, at shutdown), with what waited
        behind them; the new transitions they made."""
        released = (
            self.correlator.release_all(now) if everything else self.correlator.release_due(now)
        )
        return [e for c, r in released if (e := self._take(c, r, now, None)) is not None]

    def _take(
        self,
        candidate: CanaryEvent,
        result: Correlation,
        now: datetime,
        stale_before: datetime | None,
    ) -> CanaryEvent | None:
        """Inhibit, route and group what the correlator made of ``candidate``."""
        if self._firing_index is not None:  # the correlator changed only this canary's state
            self._firing_index[1].update(candidate.canary, self.correlator.firing(candidate.canary))
        if result.held:
            self._log.debug(
                "event_held", canary=str(candidate.canary), transition=candidate.transition.value
            )
            return None
        # A resolution is sent even when what closed the condition is start-up state: the
        # firing it resolves was notified (the correlator leaves out openers that were not).
        for opener in result.resolved:
            if self.explain is not None:
                self.explain.resolved(opener, result.new or candidate, now)
            self._route(opener, now, NotificationStatus.RESOLVED)
        if result.new is None:
            self._suppress("duplicate", candidate)
            if self.explain is not None:
                self.explain.duplicate(
                    candidate,
                    result.duplicate_of,
                    now,
                    current_rollout=self.correlator.current_rollout(candidate.canary),
                    not_news="" if result.duplicate_of else self._not_news(candidate),
                )
            if result.duplicate_of is not None:  # Flagger's own words for a step still waiting
                self.grouper.reword(
                    result.duplicate_of,
                    candidate,
                    self.correlator.current_rollout(candidate.canary),
                )
            return None
        if self.explain is not None:
            self.explain.seen(result.new, now)
        if stale_before is not None:
            happened = result.new.occurred_at or result.new.observed_at
            if happened < stale_before:
                self._suppress("catch_up", result.new)
                if self.explain is not None:
                    self.explain.catch_up(result.new, now, stale_before)
                self.correlator.mark_unannounced(result.new)
                return result.new
        event = result.new
        self.stats.transitions += 1
        if self.metrics:
            self.metrics.count(self.metrics.events, event.sources[0].value)
        self._log.debug(
            "event_normalised",
            canary=str(event.canary),
            transition=event.transition.value,
            rollout=event.rollout,
        )
        inhibited = self.inhibitor.muted_by(event, self._firing())
        if inhibited is not None:
            self._suppress("inhibited", event)
            if self.explain is not None:
                self.explain.inhibited(event, now, _inhibited_by(*inhibited))
            self.correlator.mark_unannounced(event)
            return event
        silence = self.silencer.mutes(event, now) if self.silencer is not None else None
        if silence is not None:
            self._suppress("silenced", event)
            if self.explain is not None:
                self.explain.silenced(event, now, self._silenced_by(silence))
            self.correlator.mark_unannounced(event)
            return event
        self._route(event, now, NotificationStatus.FIRING)
        return event

    def _not_news(self, candidate: CanaryEvent) -> str:
        """Why the correlator found ``candidate`` not news without naming what it repeats
        (``Correlation()``), as far as can be told from outside (decision trails)."""
        progress = self.correlator.rollout_progress(candidate.canary)
        if candidate.transition is Transition.REVISION_DETECTED:
            return "the start of a rollout whose verdict had already been seen (a late sighting)"
        if (
            progress is not None
            and progress.ended
            and candidate.transition in ONLY_DURING_A_ROLLOUT
        ):
            return f"a step of rollout {progress.rollout}, which had already ended"
        if "occurrence" in candidate.hints:
            return "the very same Event occurrence was seen before (listed again)"
        return "the correlator had seen it before"

    def _silenced_by(self, silence_id: str) -> SilencedBy:
        assert self.silencer is not None  # noqa: S101 - only asked after the silencer muted
        for s in (*self.silencer.config_silences, *self.silencer.runtime_silences):
            if s.id == silence_id:
                return SilencedBy(
                    id=s.id,
                    matchers=tuple(str(m) for m in s.matchers),
                    ends_at=s.ends_at,
                    created_by=s.created_by,
                    comment=s.comment,
                    origin=s.origin.value,
                )
        return SilencedBy(id=silence_id)

    def _targets(
        self, event: CanaryEvent, now: datetime, status: NotificationStatus
    ) -> list[Target]:
        """The routes ``event`` reaches that a time interval mutes now, with why (trails)."""
        muted: dict[str, Target] = {}
        for node in self.router.root.match(event.labels):
            why = self.router.muted_by(node, now)
            if why and node.receiver not in muted:
                key = group_key(node.receiver, status, group_labels(event.labels, node.group_by))
                muted[node.receiver] = Target(node.receiver, key, node.group_wait_s, why)
        return list(muted.values())

    def _firing(self) -> FiringIndex:
        """Every firing opener, of every canary and self-event pseudo-canary: inhibition
        sources, as in Alertmanager, are not limited to the target's canary (``equal`` is).

        Indexed by the inhibitor's ``equal`` labels; built from the correlator by a walk the
        first time it is needed for an inhibitor, then kept current by ``_take`` (every
        correlation result, held and released ones included).
        """
        if self._firing_index is None or self._firing_index[0] is not self.inhibitor:
            index = self.inhibitor.index()
            for canary in self.correlator.canaries():
                index.update(canary, self.correlator.firing(canary))
            self._firing_index = (self.inhibitor, index)
        return self._firing_index[1]

    def _route(self, event: CanaryEvent, now: datetime, status: NotificationStatus) -> None:
        routed = self.router.route(event, now, status)
        if status is NotificationStatus.RESOLVED:
            self.grouper.stop_repeating(event)
            routed = [r for r in routed if r.route.send_resolved]
        elif not routed:
            self._suppress("muted", event)
            self.correlator.mark_unannounced(event)
        if self.explain is not None:
            self._explain_route(self.explain, event, now, status, routed)
        for item in routed:
            self.grouper.offer(item, now)
            if status is NotificationStatus.FIRING and event.spec.opens is not None:
                # Firing until its condition closes: repeat_interval re-sends it meanwhile.
                key = group_key_for(item)
                self.grouper.mark_firing(key, (*self.grouper.firing(key), event))

    def _explain_route(
        self,
        explain: DecisionRecorder,
        event: CanaryEvent,
        now: datetime,
        status: NotificationStatus,
        routed: list[Routed],
    ) -> None:
        """Record where ``event`` was routed, and which routes a time interval muted."""
        firing = status is NotificationStatus.FIRING
        muted = self._targets(event, now, status) if firing else []
        if firing and not routed:
            explain.muted(event, now, muted)
            return
        receivers = {item.receiver for item in routed}
        explain.routed(
            event,
            now,
            [Target(r.receiver, group_key_for(r), r.route.group_wait_s) for r in routed],
            status=status,
            muted=[t for t in muted if t.receiver not in receivers],
        )

    # -- output -----------------------------------------------------------------------------

    def due(self, now: datetime) -> list[Notification]:
        """What is due at ``now``, after the holds due then (``release_held``;
        the runner calls that first, for the new transitions it makes)."""
        self.release_held(now)
        early, self._flushed = self._flushed, []
        return [*early, *self._emit(self.grouper.due(now))]

    def flush_all(self, now: datetime) -> list[Notification]:
        self.release_held(now, everything=True)
        early, self._flushed = self._flushed, []
        return [*early, *self._emit(self.grouper.flush_all(now))]

    def retire_receivers(self, receivers: Collection[str], now: datetime) -> list[Notification]:
        """What ``receivers``' groups still hold, flushed now, and those groups dropped: a
        reload removed the receivers (their sinks deliver this before they are closed)."""
        return self._emit(self.grouper.retire(receivers, now))

    def _still_news(self, n: Notification) -> Notification | None:
        """Re-check a group's pending events at flush, as Alertmanager does.

        While a group waited (``group_wait``/``group_interval`` > 0), its canary may have been
        rolled back (inhibit rules mute the steps) or moved on to a newer rollout (which
        supersedes the older one's steps still pending; its gates and verdict stay news).
        """
        if n.status is not NotificationStatus.FIRING or n.repeat:
            return n
        kept: list[CanaryEvent] = []
        for event in n.events:
            current = self.correlator.current_rollout(event.canary)
            inhibited = self.inhibitor.muted_by(event, self._firing())
            superseded = (
                current is not None
                and bool(event.rollout)
                and event.rollout != current
                and event.transition in ONLY_DURING_A_ROLLOUT
            )
            if inhibited is not None or superseded:
                self._suppress("inhibited", event)
                if self.explain is None:
                    continue
                if inhibited is not None:
                    self.explain.inhibited(
                        event, n.created_at, _inhibited_by(*inhibited), receiver=n.receiver
                    )
                else:
                    self.explain.superseded(event, n.created_at, n.receiver, current or "")
            else:
                kept.append(event)
        if not kept:
            return None
        return n if len(kept) == len(n.events) else dataclasses.replace(n, events=tuple(kept))

    def next_deadline(self) -> datetime | None:
        """The next group timer or hold's release, whichever is first."""
        times = [t for t in (self.grouper.next_deadline(), self.correlator.next_release()) if t]
        return min(times, default=None)

    def _emit(self, notifications: Iterable[Notification]) -> list[Notification]:
        out = [n for n in (self._still_news(n) for n in notifications) if n is not None]
        for n in out:
            if self.explain is not None:
                self.explain.notified(n, n.created_at)
            self.stats.notifications += 1
            if self.metrics:
                for ev in n.events:
                    delay = (n.created_at - ev.observed_at).total_seconds()
                    self.metrics.pipeline_latency.observe(max(delay, 0.0))
            self._log.debug(
                "group_flushed", receiver=n.receiver, group_key=n.group_key, events=len(n.events)
            )
        return out

    # -- accounting -------------------------------------------------------------------------

    def _count_outcome(self, obs: Observation, outcome: Outcome) -> None:
        key = outcome.value
        self.stats.outcomes[key] = self.stats.outcomes.get(key, 0) + 1
        if self.metrics:
            self.metrics.count(self.metrics.normalise, obs.source.value, key)

    def _suppress(self, reason: str, event: CanaryEvent) -> None:
        self.stats.suppressed[reason] = self.stats.suppressed.get(reason, 0) + 1
        if self.metrics:
            self.metrics.count(self.metrics.events_suppressed, reason)
        self._log.debug(
            _SUPPRESSED_EVENT[reason],
            canary=str(event.canary),
            transition=event.transition.value,
        )


def _inhibited_by(index: int, rule: InhibitRule, source: CanaryEvent) -> InhibitedBy:
    return InhibitedBy(
        rule=index,
        source_matchers=tuple(str(m) for m in rule.source_matchers),
        target_matchers=tuple(str(m) for m in rule.target_matchers),
        equal=rule.equal,
        source=source,
    )
