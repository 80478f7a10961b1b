"""Correlation: the identity rules of ``reference/transitions.md``.

The same transition of the same rollout is one event however many times, and by however many
sources, it is observed: the first observation is emitted, later ones only grow its ``sources``
and refresh its detail. To decide "the same", the correlator tracks per canary:

- the **rollout** (one revision: starts at ``revision-detected``, ends at ``promoted``,
  ``rolled-back`` or ``promotion-failed``); its number is the identity, its label (the id on
  events, in fingerprints) is the ``lastAppliedSpec`` when a source told us, else the sequence
  number. Where the Canary status is watched (``spec_wait_clusters``), a start reported
  without the spec (an Event, the webhook, the metrics: Flagger records "New revision
  detected!" and writes ``lastAppliedSpec`` in the same reconcile) is *held*, with whatever
  else of its canary follows, until the status reveals the spec (``SPEC_WAIT`` at most, or a
  verdict): so the id does not depend on which source was first, in this process, in a
  standby, or after a relist;
- the **name** of an analysis episode: the Canary status says only "a check failed"
  (``halted``), the Event says why ("no values found": ``no-traffic``). Where the Events are
  watched (``name_wait_clusters``), a status-derived ``halted`` that would open the analysis
  condition is held the same way (``NAME_WAIT`` at most, or a verdict) for the Event to name
  the episode. One hold mechanism serves both (``HoldReason``);
- the **conditions** a transition opens (``gate``, ``readiness``, ``analysis``,
  ``rollout-failed``, ``source``) and their **episodes**: reopening a closed condition in the same
  rollout is a new episode (a new notification), repeating an open one is not.

``rollout-failed`` is the one condition that outlives its rollout: every ``rolled-back`` or
``promotion-failed`` fires until the canary's next ``promoted`` or ``terminated``, which resolves
all of them at once, each exactly once, however many rollouts failed in between. A condition whose
opener was never notified (``mark_unannounced``: recorded as start-up state, inhibited, silenced,
routed nowhere) closes without a resolution, as in Alertmanager.

Only a *new* transition moves this state (closes conditions, starts rollouts): a late duplicate
from a slower source must not close a condition that was opened after the original.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from canarywatch.identity import canary_key, fingerprint
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Condition,
    JSONValue,
    SourceName,
    Transition,
)
from canarywatch.state.codec import decode_event, encode_event, exact_time

Identity = tuple[int, Transition, str, int]
"""(rollout sequence, transition, detail, episode) within one canary."""

OCCURRENCE_MEMORY = timedelta(hours=25)
"""How long an Event occurrence is remembered: as long as the API server can still list it.
kube-apiserver deletes an Event ``--event-ttl`` after its last write (1 h by default; some
platforms raise it, rarely beyond a day), so a restart's relist can only re-deliver
occurrences younger than that. Bounded by the Events' lifetime, not by a count: with a count
(64, before), a busy canary's older Events re-listed after a restart counted as new."""

MAX_OCCURRENCES = 4096
"""A safety cap per canary (a canary that writes thousands of distinct Events an hour is
broken); the oldest are dropped first."""

REVISION_MERGE_WINDOW = timedelta(minutes=5)
"""How far apart two sources' ``revision-detected`` may be and still be one rollout start."""

SPEC_WAIT = timedelta(seconds=3)
"""How long a rollout start reported without its spec is held for the Canary status to reveal
it. Flagger writes the status in the reconcile that records the Event, so the watch delivers it
within milliseconds; this bounds the wait when the status watch is down or slow."""

NAME_WAIT = timedelta(seconds=2)
"""How long a ``halted`` first reported by the Canary status (``failedChecks`` rose) is held
for the Kubernetes Event that says why, so that the episode is named by it (``no-traffic`` for
"no values found", a ``halted`` with its metric otherwise) rather than by whichever came first.

Flagger records the warning Event and then writes ``failedChecks`` in the same reconcile
(``pkg/controller/scheduler.go``, ``runAnalysis`` then ``SetStatusFailedChecks``), but
client-go's recorder writes the Event from a background goroutine, so the status can reach the
watch first by the length of one API write: milliseconds, a few hundred under load. When that
write fails, client-go retries only after 10 s (``tools/record``, ``defaultSleepDuration``), and
its spam filter drops Events outright: waiting longer than a second or two buys nothing and
delays a warning. 2 s is well past the ordinary gap and below both that retry and Flagger's
shortest analysis interval (10 s), so a wait never spans two checks. Past it the episode is
announced as ``halted``, as without the wait."""

MAX_HELD = 256
"""Events of one canary held behind such a start (or halt) at most (a backlog replayed at
start-up can hold a whole rollout until the status in it); past this they are released."""

LABEL_MEMORY = 32
"""Rollout ids remembered per canary, to tell a revision deployed again from its first rollout."""

STATUS_OF_VERDICT = timedelta(seconds=5)
"""How close (Flagger's clock) a status write is to the verdict it reports: one reconcile.
Below Flagger's minimum analysis interval (10 s), the time before anything new can happen."""

CONFIRM_ROLLOUT = "rollout"
"""The gate (``detail``) of ``confirm-rollout`` webhooks: passed before the revision starts."""


class HoldReason(enum.Enum):
    """Why a canary's events are held (``Correlator``): each reason has its own wait."""

    SPEC = "spec"
    """A rollout start reported without its spec waits for the Canary status (``SPEC_WAIT``)."""
    NAME = "name"
    """A status-derived ``halted`` waits for the Event that names the episode (``NAME_WAIT``)."""


_CLOSES_ANALYSIS = frozenset(
    {Transition.WEIGHT_ADVANCED, Transition.ITERATION_ADVANCED, Transition.PROMOTING}
)
ONLY_DURING_A_ROLLOUT = frozenset(
    {
        Transition.ANALYSIS_STARTED,
        Transition.WEIGHT_ADVANCED,
        Transition.ITERATION_ADVANCED,
        Transition.HALTED,
        Transition.NO_TRAFFIC,
        Transition.PROMOTING,
        Transition.FINALISING,
    }
)
_CLOSES_SOURCE = {
    Transition.METRICS_SOURCE_RECOVERED: Transition.METRICS_SOURCE_DOWN,
    Transition.CLUSTER_REACHABLE: Transition.CLUSTER_UNREACHABLE,
}


@dataclass(frozen=True, slots=True)
class Correlation:
    """What the correlator made of one candidate event.

    ``new`` is set for a transition not seen before (to be notified); ``duplicate_of`` for a
    repeat (the stored event with merged sources/detail); ``resolved`` lists the opening events
    whose condition this transition closed (for receivers with ``send_resolved``).
    """

    new: CanaryEvent | None = None
    duplicate_of: CanaryEvent | None = None
    resolved: tuple[CanaryEvent, ...] = ()
    held: bool = False
    """The candidate is held (a start waiting for its spec, a status halt waiting for its
    name) or waits behind one: nothing to do yet."""
    released: tuple[tuple[CanaryEvent, Correlation], ...] = ()
    """Held candidates this one released, each with what it made, in order: to be taken
    before this correlation."""
    then: tuple[tuple[CanaryEvent, Correlation], ...] = ()
    """Held candidates to be taken *after* this correlation, in order: this one named a held
    status halt and took its place (``NAME_WAIT``); the halt (now a repeat) and what waited
    behind it follow."""


@dataclass(frozen=True, slots=True)
class RolloutProgress:
    """What the correlator knows of a canary's current rollout (``Correlator.rollout_progress``).

    ``weight``/``iteration`` are the highest ``weight-advanced``/``iteration-advanced`` already
    seen in it (0 when none): a Canary status showing more, after a restart, is a step whose
    Event the daemon never saw (``pipeline.recover``).
    """

    rollout: str
    spec: str
    ended: bool
    weight: int = 0
    iteration: int = 0


@dataclass(slots=True)
class _Rollout:
    seq: int
    started_at: datetime | None = None
    spec: str = ""
    ended: bool = False
    began: datetime | None = None
    """When Flagger detected the revision, from a sighting that carries its own time (an Event, a
    webhook): anything of a rollout happened after it, so an older step or verdict belongs to an
    earlier rollout. ``None`` when only the Canary status reported the start (its
    ``lastTransitionTime`` is that of its latest write, not of the start)."""
    verdict: Transition | None = None
    """The verdict the rollout ended with (the first one reported)."""
    ended_at: datetime | None = None
    """When Flagger reached the verdict (its own time, when the source said): a revision
    sighting older than this is the start of this or an earlier rollout, never a new one."""
    quiet: bool = True
    """No transition other than ``revision-detected`` was new in this rollout yet."""
    revision_sources: set[SourceName] = field(default_factory=set)

    label: str = ""
    """The rollout id on events: the lastAppliedSpec when known at the start, else ``seq``.

    Fixed for the rollout's lifetime so every event of one rollout carries the same id even
    when a slower source reveals the spec later.
    """

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.spec or str(self.seq)


@dataclass(slots=True)
class _CanaryState:
    rollout: _Rollout = field(default_factory=lambda: _Rollout(seq=0))
    previous: _Rollout | None = None
    """The rollout before the current one: a late verdict of it is still its own."""
    episodes: dict[Condition, int] = field(default_factory=dict)
    open: dict[Condition, CanaryEvent] = field(default_factory=dict)
    gate_episodes: dict[str, int] = field(default_factory=dict)
    gate_rollouts: dict[str, int] = field(default_factory=dict)
    """The rollout each gate's latest episode was opened in."""
    seen: dict[Identity, CanaryEvent | tuple[SourceName, ...]] = field(default_factory=dict)
    """Identities already notified. The event itself is kept where a repeat can add to it
    (condition openers, verdicts); one-shot steps keep only the sources that reported them,
    so a fleet of canaries stays small."""
    target: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    occurrences: dict[int, float] = field(default_factory=dict)
    """Digests of recent source occurrence keys (an Event's uid and count), oldest first,
    bounded: 64-bit integers rather than the keys, so a fleet of canaries stays small."""
    failed_before: list[CanaryEvent] = field(default_factory=list)
    """``rollout-failed`` openers of older rollouts, oldest first, still firing: a later
    rollout's failure took their place in ``open``; the next ``promoted``/``terminated``
    resolves them together with it."""
    unannounced: set[str] = field(default_factory=set)
    """Fingerprints of firing openers that were never notified: closing them resolves nothing."""
    closed: dict[Condition, tuple[int, CanaryEvent]] = field(default_factory=dict)
    """The opener each condition's latest episode had when it closed, with its rollout seq:
    a slower source reporting that same occurrence after the close is not a new episode."""
    closed_at: dict[Condition, datetime] = field(default_factory=dict)
    """When (Flagger's clock) each condition's latest episode closed, where the closer said."""
    labels: list[str] = field(default_factory=list)
    """The ids of the canary's latest rollouts (``LABEL_MEMORY``), oldest first: a revision
    deployed again (A, B, A) gets another id than its first rollout had."""
    held: list[CanaryEvent] = field(default_factory=list)
    """A rollout start reported without its spec, or a status halt waiting for its name
    (``held_for``), then what followed it.

    Not persisted: holds last seconds, and the runner releases every one before the shutdown
    snapshot (``release_held(everything=True)`` at ``StopIntake``). After a crash, a held
    start's Event is listed again; a held halt's Canary is first seen again (state, not news),
    but the Event that would have named it is listed again and announces the episode: the same
    as for a halt still waiting in its group (``group_wait``), whose canary's state is not
    written yet either."""
    held_until: datetime | None = None
    held_for: HoldReason | None = None


class Correlator:
    """Assigns rollout and episode, deduplicates, and computes routing labels.

    ``label_hints`` maps hint keys a source may attach (``label:team``) to the label name the
    event should carry (``canary_team``); the canaries source supplies them.
    """

    def __init__(
        self,
        *,
        label_hints: Mapping[str, str] | None = None,
        spec_wait_clusters: Collection[str] = (),
        name_wait_clusters: Collection[str] = (),
    ) -> None:
        self._canaries: dict[CanaryRef, _CanaryState] = {}
        self._label_hints = dict(label_hints or {})
        self._spec_wait_clusters = frozenset(spec_wait_clusters)
        """Clusters whose Canary status is watched: a start without its spec waits for it."""
        self._name_wait_clusters = frozenset(name_wait_clusters)
        """Clusters whose Events are watched: a status halt waits for the Event naming it."""
        self._holding: dict[HoldReason, dict[CanaryRef, None]] = {r: {} for r in HoldReason}
        """Per reason, the canaries holding, in the order they began to: every hold of one
        reason lasts that reason's wait, so each queue is in deadline order and its due
        canaries are at its front. ``release_due`` runs after every observation and must not
        walk the whole fleet (issue 17)."""

    # -- public -----------------------------------------------------------------------------

    def __call__(self, event: CanaryEvent, now: datetime) -> Correlation:
        state = self._canaries.setdefault(event.canary, _CanaryState())
        occurrence_key = event.hints.get("occurrence")
        if occurrence_key is not None and (
            _digest(occurrence_key) in state.occurrences
            or any(h.hints.get("occurrence") == occurrence_key for h in state.held)
        ):
            # The very same Event occurrence again (re-listed after a restart).
            return Correlation()
        if state.held:
            return self._behind_a_hold(state, event, now)
        return self._offer(state, event, now)

    def _offer(self, state: _CanaryState, event: CanaryEvent, now: datetime) -> Correlation:
        """``event`` of a canary holding nothing: held if it must wait (``HoldReason``),
        correlated otherwise."""
        if self._waits_for_its_spec(state, event):
            reason, wait = HoldReason.SPEC, SPEC_WAIT
        elif self._waits_for_its_name(state, event):
            reason, wait = HoldReason.NAME, NAME_WAIT
        else:
            return self._correlate(state, event, now)
        state.held, state.held_for, state.held_until = [event], reason, now + wait
        self._holding[reason][event.canary] = None
        return Correlation(held=True)

    def release_due(self, now: datetime) -> list[tuple[CanaryEvent, Correlation]]:
        """What was held and not released within its wait (a spec or a name that did not
        come), taken now without it, in order: each held candidate with what it made.

        Each reason's queue is in deadline order (``_holding``), so this stops at the first
        canary of each that is not due (it runs after every observation; at start-up
        thousands of canaries may hold at once, issue 17).
        """
        out: list[tuple[CanaryEvent, Correlation]] = []
        for queue in self._holding.values():
            while queue:
                ref = next(iter(queue))
                state = self._canaries[ref]
                if state.held_until is not None and state.held_until > now:
                    break
                out.extend(self._release(ref, state, now))  # takes ``ref`` out of ``queue``
        return out

    def release_all(self, now: datetime) -> list[tuple[CanaryEvent, Correlation]]:
        """Everything held, taken now as it is (at shutdown: nothing stays behind)."""
        out: list[tuple[CanaryEvent, Correlation]] = []
        for queue in self._holding.values():
            for ref in list(queue):
                out.extend(self._release(ref, self._canaries[ref], now))
        return out

    def next_release(self) -> datetime | None:
        """When ``release_due`` has something to release next (``None``: nothing held): the
        earliest deadline at the front of a reason's queue (see ``release_due``)."""
        first: datetime | None = None
        for queue in self._holding.values():
            if queue:
                until = self._canaries[next(iter(queue))].held_until
                if until is not None and (first is None or until < first):
                    first = until
        return first

    def _waits_for_its_spec(self, state: _CanaryState, event: CanaryEvent) -> bool:
        """A sighting that would start a new rollout without saying its spec, where the status
        is watched: its id would depend on which source came first (issue 12, item 5)."""
        if event.transition is not Transition.REVISION_DETECTED or event.hints.get("spec"):
            return False
        if event.canary.cluster not in self._spec_wait_clusters:
            return False
        if self._older_than_the_verdict(state.rollout, event):
            return False
        return not self._same_rollout(state, event)

    def _waits_for_its_name(self, state: _CanaryState, event: CanaryEvent) -> bool:
        """A ``halted`` from the Canary status that would open the analysis condition, where
        the Events are watched: the Event saying why (metric, or no values) is on its way
        (``NAME_WAIT``). A halt joining an open episode, or of an ended rollout, does not."""
        if not _from_status(event) or Condition.ANALYSIS in state.open:
            return False
        if event.canary.cluster not in self._name_wait_clusters:
            return False
        return not state.rollout.ended

    @staticmethod
    def _names(state: _CanaryState, event: CanaryEvent) -> bool:
        """Whether ``event`` names the status halt ``state`` holds: an analysis opener from a
        source that says why (an Event, the webhook), of the current rollout."""
        if state.held_for is not HoldReason.NAME or event.spec.opens is not Condition.ANALYSIS:
            return False
        if not event.sources or event.sources[0] is SourceName.CANARIES:
            return False
        began = state.rollout.began
        return event.occurred_at is None or began is None or event.occurred_at >= began

    def release_before(
        self, event: CanaryEvent, now: datetime
    ) -> list[tuple[CanaryEvent, Correlation]]:
        """What ``event`` releases of its canary's hold (see ``_releases``), taken now,
        in order; empty when it releases nothing. Call it before offering ``event``, and
        inhibit and route what it returns first: correlated in one call with ``event``, a held
        step was checked against the verdict that released it, firing already (the default
        inhibit rule muted it)."""
        state = self._canaries.get(event.canary)
        if state is None or not state.held or self._names(state, event):
            return []  # a name is taken in the halt's place (``_named``), not before it
        releases = self._releases(state, event)
        if releases is None:
            return []
        return self._release(event.canary, state, now, spec=releases)

    @staticmethod
    def _releases(state: _CanaryState, event: CanaryEvent) -> str | None:
        """Whether ``event`` releases what is held: a new spec reveals a held start's
        (returned: the start takes it as its id); a verdict, another start or too long a queue
        release either hold without it (``""``: a page is not held); ``None``: it waits behind
        them. (An Event naming a held halt is ``_names``.)"""
        spec = event.hints.get("spec", "")
        if state.held_for is HoldReason.SPEC and spec and spec != state.rollout.spec:
            return spec
        if (
            event.spec.ends_rollout
            or event.transition is Transition.REVISION_DETECTED
            or len(state.held) >= MAX_HELD
        ):
            return ""
        return None

    def _behind_a_hold(self, state: _CanaryState, event: CanaryEvent, now: datetime) -> Correlation:
        """``event`` arrives while its canary holds: it names a held halt (``_names``),
        releases what is held (``_releases``), or waits behind it."""
        if self._names(state, event):
            return self._named(event.canary, state, event, now)
        releases = self._releases(state, event)
        if releases is None:
            state.held.append(event)
            return Correlation(held=True)
        released = self._release(event.canary, state, now, spec=releases)
        result = self._offer(state, event, now)
        return dataclasses.replace(result, released=tuple(released))

    def _named(
        self, ref: CanaryRef, state: _CanaryState, event: CanaryEvent, now: datetime
    ) -> Correlation:
        """``event`` (an Event, the webhook) names the held status halt: it opens the episode
        in the halt's place, with both sources (``_named_by``); the halt, now a repeat, and
        what waited behind it follow (``Correlation.then``), exactly as when the Event comes
        first."""
        held = self._unhold(ref, state)
        result = self._correlate(state, _named_by(event, held[0]), now)
        then = tuple((e, self._correlate(state, e, now)) for e in held)
        return dataclasses.replace(result, then=then)

    def _unhold(self, ref: CanaryRef, state: _CanaryState) -> list[CanaryEvent]:
        """Take ``state``'s (``ref``'s) hold off its queue; what it held, in order."""
        if state.held_for is not None:
            self._holding[state.held_for].pop(ref, None)
        held, state.held, state.held_until, state.held_for = state.held, [], None, None
        return held

    def _release(
        self, ref: CanaryRef, state: _CanaryState, now: datetime, *, spec: str = ""
    ) -> list[tuple[CanaryEvent, Correlation]]:
        """Take what ``state`` (``ref``'s) holds, in order; a held start gets ``spec`` as its
        id if given, a held halt is announced as what the status said (``halted``)."""
        held = self._unhold(ref, state)
        out = []
        for n, event in enumerate(held):
            out.append((event, self._correlate(state, event, now, revealed=spec if n == 0 else "")))
        return out

    def _correlate(
        self, state: _CanaryState, event: CanaryEvent, now: datetime, *, revealed: str = ""
    ) -> Correlation:
        occurrence_key = event.hints.get("occurrence")
        if occurrence_key is not None:
            occurrence = _digest(occurrence_key)
            if occurrence in state.occurrences:
                return Correlation()
            _forget_old_occurrences(state.occurrences, now)
            state.occurrences[occurrence] = now.timestamp()
            while len(state.occurrences) > MAX_OCCURRENCES:
                del state.occurrences[next(iter(state.occurrences))]
        if event.target:
            state.target = event.target
        for key, value in event.hints.items():
            if key.startswith(("label:", "annotation:")):
                state.facts[key] = value

        if event.transition is Transition.REVISION_DETECTED:
            return self._revision_detected(state, event, now, revealed=revealed)
        earlier = self._of_an_earlier_rollout(state, event) or self._earlier_gate(state, event)
        if earlier is not None:
            return earlier
        if (
            state.rollout.ended
            and event.transition in ONLY_DURING_A_ROLLOUT
            and not _inside_the_rollout(state.rollout, event)
        ):
            # A slower stream reporting a step of the rollout that already ended (a status
            # write queued behind the verdict): not news. A new analysis always begins with a
            # new revision, which reopens these.
            return Correlation()

        seen_late = self._closed_elsewhere(state, event)
        if seen_late is not None:
            return Correlation(duplicate_of=seen_late)

        identity = self._late_verdict(state, event) or self._identity(state, event)
        if identity in state.seen:
            stored = state.seen[identity]
            if isinstance(stored, tuple):
                sources = _union(stored, event.sources)
                state.seen[identity] = sources
                return Correlation(duplicate_of=dataclasses.replace(event, sources=sources))
            merged = _merge(stored, event)
            state.seen[identity] = merged
            self._refresh_open(state, merged)
            return Correlation(duplicate_of=merged)

        resolved = self._close_conditions(state, event)
        finished = self._finish(state, event, identity)
        return Correlation(new=finished, resolved=resolved)

    def open_conditions(self, canary: CanaryRef) -> Mapping[Condition, CanaryEvent]:
        """The latest opener of each firing condition (older rollouts' failures not included:
        ``firing`` lists every firing opener)."""
        state = self._canaries.get(canary)
        return dict(state.open) if state else {}

    def firing(self, canary: CanaryRef) -> tuple[CanaryEvent, ...]:
        """Every firing opener of the canary: older rollouts' failures first, then ``open``.

        This is *what is open in Flagger*, notified or not: the source of truth for episodes,
        resolutions and inhibition (an inhibited or silenced opener still mutes, as in
        Alertmanager). It is not what gets repeated (``Grouper`` keeps, per receiver group,
        the events as they were notified) nor what a sink holds (``delivery.firing``: what
        was delivered, for heartbeats); both follow from decisions made after this one.
        """
        state = self._canaries.get(canary)
        return (*state.failed_before, *state.open.values()) if state else ()

    def mark_unannounced(self, event: CanaryEvent) -> None:
        """``event``, a new condition opener, was not notified (recorded as start-up state,
        inhibited, silenced or routed nowhere): when its condition closes, nothing is resolved.

        Only a still-firing opener is remembered, so the set never outgrows what is open.
        """
        state = self._canaries.get(event.canary)
        if state is None or event.spec.opens is None:
            return
        if any(_same_identity(event, opener) for opener in self.firing(event.canary)):
            state.unannounced.add(fingerprint(event))

    def rollout_progress(self, canary: CanaryRef) -> RolloutProgress | None:
        """What is known of the canary's current rollout (``None`` for a canary never seen)."""
        state = self._canaries.get(canary)
        if state is None:
            return None
        rollout = state.rollout
        weights = [0]
        iterations = [0]
        for seq, transition, detail, _ in state.seen:
            if seq != rollout.seq or not detail.isdigit():
                continue
            if transition is Transition.WEIGHT_ADVANCED:
                weights.append(int(detail))
            elif transition is Transition.ITERATION_ADVANCED:
                iterations.append(int(detail))
        return RolloutProgress(
            rollout=rollout.label,
            spec=rollout.spec,
            ended=rollout.ended,
            weight=max(weights),
            iteration=max(iterations),
        )

    def current_rollout(self, canary: CanaryRef) -> str | None:
        """The id of the canary's current rollout (``None`` for a canary never seen)."""
        state = self._canaries.get(canary)
        return state.rollout.label if state else None

    def canaries(self) -> Iterable[CanaryRef]:
        return self._canaries.keys()

    # -- persistence ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, JSONValue]:
        """Every canary's state as plain JSON, keyed by ``identity.canary_key``.

        Shaped for ``StateStore.save_canary_states``; ``restore`` takes it back (or what
        ``load_canary_states`` returns) and the restored correlator deduplicates exactly as
        this one would have. Events are stored whole (``state.codec``), hints and all.
        """
        return {canary_key(ref): _state_to_json(ref, st) for ref, st in self._canaries.items()}

    def snapshot_canary(self, ref: CanaryRef) -> tuple[str, dict[str, JSONValue]] | None:
        """One canary's state (``(key, state)``), to write through after it changed."""
        state = self._canaries.get(ref)
        if state is None:
            return None
        return canary_key(ref), _state_to_json(ref, state)

    @classmethod
    def restore(
        cls,
        data: Mapping[str, JSONValue],
        *,
        label_hints: Mapping[str, str] | None = None,
        spec_wait_clusters: Collection[str] = (),
        name_wait_clusters: Collection[str] = (),
    ) -> Correlator:
        """A correlator continuing from ``snapshot()`` output; ``ValueError`` names a bad key.

        Nothing held is in a snapshot (``_CanaryState.held``): the restored one holds nothing."""
        correlator = cls(
            label_hints=label_hints,
            spec_wait_clusters=spec_wait_clusters,
            name_wait_clusters=name_wait_clusters,
        )
        for key, value in data.items():
            try:
                ref, state = _state_from_json(value)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"correlator state {key!r} cannot be restored: {exc!r}") from exc
            correlator._canaries[ref] = state
        return correlator

    # -- rollouts ---------------------------------------------------------------------------

    def _revision_detected(
        self, state: _CanaryState, event: CanaryEvent, now: datetime, *, revealed: str = ""
    ) -> Correlation:
        """``revealed``: the spec the status revealed for a start held without it (it was
        held because it starts a new rollout, and nothing of its canary was taken since)."""
        current = state.rollout
        spec = event.hints.get("spec", "") or revealed
        source = event.sources[0] if event.sources else SourceName.SELF
        if not revealed and self._older_than_the_verdict(current, event):
            # A backlog replayed after an outage (or a slow stream) reporting the start of a
            # rollout whose verdict another source has already shown: not news.
            return Correlation()
        if not revealed and self._same_rollout(state, event):
            current.revision_sources.add(source)
            if spec and not current.spec:
                current.spec = spec
            start = _start_time(event)
            if start is not None:
                current.began = min(filter(None, (current.began, start)))
            identity: Identity = (current.seq, event.transition, "", 0)
            stored = state.seen.get(identity)
            if stored is not None:
                known = stored if isinstance(stored, tuple) else stored.sources
                sources = _union(known, event.sources)
                state.seen[identity] = sources
                return Correlation(duplicate_of=dataclasses.replace(event, sources=sources))
            # Started by another transition's implicit evidence; first explicit sighting.
            return Correlation(new=self._finish(state, event, identity))

        resolved = self._announced(state, self._end_rollout_conditions(state, event))
        state.previous = current
        state.rollout = _Rollout(
            seq=current.seq + 1,
            started_at=event.observed_at,
            spec=spec,
            began=_start_time(event),
            revision_sources={source},
            label=_new_label(state, spec, current.seq + 1, occurrence=_start_occurrence(event)),
        )
        # Identities of rollouts before the previous one can never match again.
        keep = {current.seq, state.rollout.seq}
        state.seen = {k: v for k, v in state.seen.items() if k[0] in keep}
        identity = (state.rollout.seq, event.transition, "", 0)
        return Correlation(new=self._finish(state, event, identity), resolved=resolved)

    def _same_rollout(self, state: _CanaryState, event: CanaryEvent) -> bool:
        """Whether a revision sighting is the current rollout's start, not a new rollout."""
        current = state.rollout
        spec = event.hints.get("spec", "")
        source = event.sources[0] if event.sources else SourceName.SELF
        if spec and current.spec:
            return spec == current.spec
        if spec and self._status_of_this_rollout(current, event):
            return True
        if current.seq > 0 and not current.ended and current.quiet:
            # Nothing happened since this rollout started: a repeated sighting (a retried
            # webhook, a second source), not a revision that restarted the analysis.
            return True
        return (
            current.seq > 0
            and not current.ended
            and current.started_at is not None
            and source not in current.revision_sources
            and abs(event.observed_at - current.started_at) <= REVISION_MERGE_WINDOW
        )

    @staticmethod
    def _status_of_this_rollout(current: _Rollout, event: CanaryEvent) -> bool:
        """The first sighting of a spec, written by the same reconcile as the start or the
        verdict of the current rollout, which the Events reported without a spec: that
        rollout, not a new one.

        Flagger writes the status and records the Events of a step in one reconcile; a new
        revision is detected one analysis interval (10 s at least) later, so a sighting within
        ``STATUS_OF_VERDICT`` of the start or the verdict is the same rollout. Without this, a
        Canary backlog replayed after an outage (showing the spec) repeated the rollout the
        Events had already reported as a phantom one.
        """
        if current.spec or current.seq == 0 or event.occurred_at is None:
            return False
        marks = [t for t in (current.began, current.ended_at if current.ended else None) if t]
        return any(abs(event.occurred_at - t) <= STATUS_OF_VERDICT for t in marks)

    @staticmethod
    def _earlier_gate(state: _CanaryState, event: CanaryEvent) -> Correlation | None:
        """A gate transition from before the current rollout began that an earlier rollout
        already reported (the confirm-rollout gate opens before its revision is detected, so a
        slower source delivers it after the start): a duplicate. Anything else is left to the
        ordinary rules (``None``)."""
        current = state.rollout
        if event.transition not in (Transition.AWAITING_APPROVAL, Transition.APPROVED):
            return None
        if event.occurred_at is None or current.began is None or event.occurred_at > current.began:
            return None
        if event.occurred_at == current.began and event.detail != CONFIRM_ROLLOUT:
            # The second the rollout began (Flagger's times have one-second resolution) counts
            # as before it only for the confirm-rollout gate, passed in the reconcile that
            # detects the revision; a later gate of a fast rollout can fall in that second.
            return None
        for (seq, transition, detail, _), stored in state.seen.items():
            if seq < current.seq and transition is event.transition and detail == event.detail:
                known = stored if isinstance(stored, tuple) else stored.sources
                return Correlation(
                    duplicate_of=dataclasses.replace(event, sources=_union(known, event.sources))
                )
        return None

    def _of_an_earlier_rollout(self, state: _CanaryState, event: CanaryEvent) -> Correlation | None:
        """A step or verdict that happened (Flagger's clock) before the current rollout began:
        a backlog replayed after an outage, or a stream that lagged behind the other.

        It is not news about the current rollout. A verdict of the previous rollout that was
        never reported is that rollout's, notified late under its id (Flagger did reach it); a
        repeat of one that was reported is a duplicate; a step of a superseded rollout is not
        news (``None`` when the event is not older than the current rollout).
        """
        current = state.rollout
        occurred = event.occurred_at
        if occurred is None or current.seq == 0:
            return None
        scoped = event.transition in ONLY_DURING_A_ROLLOUT or event.spec.ends_rollout
        before_start = current.began is not None and occurred < current.began
        # Another verdict, from before the one this rollout ended with: a rollout has one
        # verdict, so it is an earlier rollout's (a Canary list can start a rollout at its
        # verdict, with no start time to compare with).
        contradicts = (
            event.spec.ends_rollout
            and current.ended
            and current.ended_at is not None
            and event.transition is not current.verdict
            and occurred < current.ended_at
        )
        if not scoped or not (before_start or contradicts):
            return None
        previous = state.previous
        if previous is None or previous.seq != current.seq - 1:
            return Correlation()
        identity: Identity = (previous.seq, event.transition, event.detail, 0)
        stored = state.seen.get(identity)
        if stored is not None:
            known = stored if isinstance(stored, tuple) else stored.sources
            sources = _union(known, event.sources)
            if isinstance(stored, tuple):
                state.seen[identity] = sources
                return Correlation(duplicate_of=dataclasses.replace(event, sources=sources))
            merged = dataclasses.replace(stored, sources=sources)
            state.seen[identity] = merged
            return Correlation(duplicate_of=merged)
        if not event.spec.ends_rollout or previous.ended or not before_start:
            return Correlation()
        previous.ended = True
        previous.ended_at = occurred
        previous.verdict = event.transition
        late = dataclasses.replace(
            event, rollout=previous.label, episode=0, target=event.target or state.target
        )
        late = dataclasses.replace(late, labels=self._labels(state, late))
        state.seen[identity] = late
        if event.spec.opens is Condition.ROLLOUT_FAILED:
            state.failed_before.append(late)  # fires until the canary's next promotion
        return Correlation(new=late)

    @staticmethod
    def _older_than_the_verdict(current: _Rollout, event: CanaryEvent) -> bool:
        """A revision sighting without a spec (an Event, a webhook) that happened before the
        current rollout's verdict. Only ``occurred_at`` (Flagger's clock) is compared: when
        the daemon saw it says nothing about when it happened."""
        if event.hints.get("spec") or event.occurred_at is None:
            return False
        if not current.ended or current.ended_at is None:
            return False
        if event.occurred_at < current.ended_at:
            return True
        # Flagger's times have one-second resolution: in the verdict's own second, a sighting
        # that is also in the second this rollout began is its start (a rollout that short: a
        # fast test), anything else the next revision.
        return event.occurred_at == current.ended_at and event.occurred_at == current.began

    # -- identity and conditions ------------------------------------------------------------

    @staticmethod
    def _closed_elsewhere(state: _CanaryState, event: CanaryEvent) -> CanaryEvent | None:
        """The closed opener ``event`` repeats when another source reported it and the episode
        ended before this slower source caught up.

        Seen with real Flagger 1.44: "<target>-primary not ready" arrives by webhook, the
        "Promotion … failed" verdict closes readiness, then the Events watch delivers the very
        same "not ready" Event. Same rollout, transition, detail and text from a source that
        had not reported it is that occurrence; the same source saying it again is new. Sources
        word the same occurrence differently (the Canary status has no Event text): one that
        happened, by Flagger's clock, before the episode closed is that occurrence too.
        """
        opens = event.spec.opens
        if opens is None or opens in state.open:
            return None
        closed = state.closed.get(opens)
        if closed is None:
            return None
        seq, opener = closed
        closed_at = state.closed_at.get(opens)
        before_the_close = (
            event.occurred_at is not None
            and closed_at is not None
            and event.occurred_at <= closed_at
        )
        if (
            seq != state.rollout.seq
            or opener.transition is not event.transition
            or opener.detail != event.detail
            or not (opener.message == event.message or before_the_close)
            or set(opener.sources) & set(event.sources)
        ):
            return None
        merged = dataclasses.replace(opener, sources=_union(opener.sources, event.sources))
        state.closed[opens] = (seq, merged)
        return merged

    def _late_verdict(self, state: _CanaryState, event: CanaryEvent) -> Identity | None:
        """A verdict from a scraped source that belongs to the rollout before the current one.

        Metrics are scraped every few seconds and only say "a promotion/rollback happened":
        when one arrives after the next revision started, and the previous rollout already
        ended with that very verdict, it is that verdict seen late, not news.
        """
        if not (event.spec.ends_rollout and event.sources):
            return None
        if event.sources[0] is not SourceName.FLAGGER_METRICS or state.rollout.ended:
            return None
        if SourceName.FLAGGER_METRICS in state.rollout.revision_sources:
            return None  # the metrics reported this rollout's start: its verdict is its own
        previous = state.rollout.seq - 1
        for identity in state.seen:
            if identity[0] == previous and identity[1] is event.transition:
                return identity
        return None

    def _identity(self, state: _CanaryState, event: CanaryEvent) -> Identity:
        if event.transition is Transition.INITIALIZED:
            # Once per Canary, not per rollout: Flagger initialises a Canary once, and its
            # "Initialization done!" Event can reach the watch after the webhook already
            # reported the next revision (real Flagger 1.37; client-go records asynchronously).
            return (0, event.transition, event.detail, 0)
        seq = state.rollout.seq
        spec = event.spec
        if spec.opens is not None:
            cond = spec.opens
            opened = state.open.get(cond)
            if opened is None:
                return (seq, event.transition, event.detail, state.episodes.get(cond, 0) + 1)
            episode = state.episodes.get(cond, 0)
            if cond is Condition.ANALYSIS and (_from_status(event) or _from_status(opened)):
                # The Canary status says only "a check failed": it cannot tell a halt on a
                # metric from no traffic, so it is the same episode as whatever the Events
                # said. Where the Events are watched, a status halt first waits for the Event
                # to name the episode (``NAME_WAIT``); one that did not come in time named it
                # ``halted``, and the late Event joins that episode.
                return (seq, opened.transition, opened.detail, episode)
            return (seq, event.transition, event.detail, episode)
        if event.transition is Transition.APPROVED:
            # An approval belongs to the gate episode it closes, in the rollout that gate was
            # opened in (the confirm-rollout gate opens before the new revision starts).
            gate_seq = state.gate_rollouts.get(event.detail, seq)
            gate_open = state.open.get(Condition.GATE)
            if gate_open is not None and gate_open.detail == event.detail:
                return (gate_seq, event.transition, event.detail, gate_open.episode)
            episode = state.gate_episodes.get(event.detail, 0)
            return (gate_seq, event.transition, event.detail, episode)
        if event.transition in _CLOSES_SOURCE:
            # A recovery belongs to the outage it ends: every outage gets its own recovery.
            return (seq, event.transition, event.detail, state.episodes.get(Condition.SOURCE, 0))
        return (seq, event.transition, event.detail, 0)

    def _close_conditions(self, state: _CanaryState, event: CanaryEvent) -> tuple[CanaryEvent, ...]:
        t = event.transition
        closing: list[Condition] = []
        if event.spec.forward:
            closing.append(Condition.READINESS)
        if t in _CLOSES_ANALYSIS:
            closing.append(Condition.ANALYSIS)
        if t is Transition.APPROVED:
            gate = state.open.get(Condition.GATE)
            if gate is not None and gate.detail == event.detail:
                closing.append(Condition.GATE)
        resolved: list[CanaryEvent] = []
        if t in (Transition.PROMOTED, Transition.TERMINATED):
            # Every failed rollout still firing, not only the latest (transitions.md: a
            # promotion "closes rollout-failed of older rollouts").
            closing.append(Condition.ROLLOUT_FAILED)
            resolved.extend(state.failed_before)
            state.failed_before.clear()
        if t in _CLOSES_SOURCE:
            source_open = state.open.get(Condition.SOURCE)
            if source_open is not None and source_open.transition is _CLOSES_SOURCE[t]:
                closing.append(Condition.SOURCE)
        popped = [state.open.pop(c) for c in closing if c in state.open]
        if event.spec.ends_rollout:
            popped.extend(self._end_rollout_conditions(state, event))
        for opener in popped:
            if opener.spec.opens is not None:
                state.closed[opener.spec.opens] = (state.rollout.seq, opener)
                if event.occurred_at is not None:
                    state.closed_at[opener.spec.opens] = event.occurred_at
                else:
                    state.closed_at.pop(opener.spec.opens, None)
        resolved.extend(popped)
        return self._announced(state, resolved)

    @staticmethod
    def _announced(state: _CanaryState, closed: Iterable[CanaryEvent]) -> tuple[CanaryEvent, ...]:
        """The closed openers that were notified (and so get a resolution)."""
        resolved = []
        for opener in closed:
            key = fingerprint(opener)
            if key in state.unannounced:
                state.unannounced.discard(key)
            else:
                resolved.append(opener)
        return tuple(resolved)

    def _end_rollout_conditions(
        self, state: _CanaryState, event: CanaryEvent
    ) -> tuple[CanaryEvent, ...]:
        """A rollout ending (or a new one starting) closes its gate, analysis and readiness."""
        conditions = (Condition.GATE, Condition.ANALYSIS, Condition.READINESS)
        return tuple(state.open.pop(c) for c in conditions if c in state.open)

    def _finish(self, state: _CanaryState, event: CanaryEvent, identity: Identity) -> CanaryEvent:
        seq, _, _, episode = identity
        rollout = state.rollout
        if event.transition is not Transition.REVISION_DETECTED:
            rollout.quiet = False
        if event.hints.get("spec") and rollout.seq == seq and not rollout.spec:
            rollout.spec = event.hints["spec"]
        if rollout.started_at is None:
            rollout.started_at = event.observed_at
        finished = dataclasses.replace(
            event,
            rollout=rollout.label,
            episode=episode,
            target=event.target or state.target,
        )
        finished = dataclasses.replace(finished, labels=self._labels(state, finished))
        keep = event.spec.opens is not None or event.spec.ends_rollout
        state.seen[identity] = finished if keep else finished.sources
        opens = event.spec.opens
        current = state.open.get(opens) if opens is not None else None
        if opens is not None and current is None:
            state.open[opens] = finished
            state.episodes[opens] = episode
            if opens is Condition.GATE:
                state.gate_episodes[event.detail] = episode
                state.gate_rollouts[event.detail] = seq
        elif opens is Condition.ROLLOUT_FAILED and current is not None:
            # Another failure (a later rollout's: a repeat would not be new) while one still
            # fires: both fire until the next promotion; the latest is the one ``open`` shows.
            state.failed_before.append(current)
            state.open[opens] = finished
        if event.spec.ends_rollout and not rollout.ended:
            rollout.ended = True
            rollout.ended_at = event.occurred_at
            rollout.verdict = event.transition
        return finished

    def _refresh_open(self, state: _CanaryState, merged: CanaryEvent) -> None:
        """A repeat refreshes the firing opener it repeats, never another one (a late sighting
        of an older rollout's failure must not take the place of the current one)."""
        opens = merged.spec.opens
        if opens is None:
            return
        current = state.open.get(opens)
        if current is not None and _same_identity(current, merged):
            state.open[opens] = merged
            return
        for i, older in enumerate(state.failed_before):
            if _same_identity(older, merged):
                state.failed_before[i] = merged

    def _labels(self, state: _CanaryState, event: CanaryEvent) -> dict[str, str]:
        labels = {
            "transition": event.transition.value,
            "severity": event.severity.value,
            "cluster": event.canary.cluster,
            "namespace": event.canary.namespace,
            "canary": event.canary.name,
            "target": event.target or state.target,
            "phase": event.phase.value if event.phase else "",
            "rollout": event.rollout,
        }
        if event.transition in (Transition.AWAITING_APPROVAL, Transition.APPROVED):
            labels["gate"] = event.detail
        for hint_key, label in self._label_hints.items():
            value = state.facts.get(hint_key)
            if value is not None:
                labels[label] = value
        return labels


_SNAPSHOT_VERSION = 1


def _rollout_to_json(r: _Rollout) -> dict[str, JSONValue]:
    return {
        "seq": r.seq,
        "label": r.label,
        "spec": r.spec,
        "ended": r.ended,
        "began": exact_time(r.began) if r.began is not None else None,
        "ended_at": exact_time(r.ended_at) if r.ended_at is not None else None,
        "verdict": r.verdict.value if r.verdict is not None else None,
        "quiet": r.quiet,
        "started_at": exact_time(r.started_at) if r.started_at is not None else None,
        "revision_sources": sorted(src.value for src in r.revision_sources),
    }


def _rollout_from_json(r: JSONValue) -> _Rollout:
    started = r["started_at"]
    return _Rollout(
        seq=int(r["seq"]),
        started_at=datetime.fromisoformat(started) if started is not None else None,
        spec=str(r["spec"]),
        ended=bool(r["ended"]),
        began=_optional_time(r.get("began")),
        ended_at=_optional_time(r.get("ended_at")),
        verdict=Transition(r["verdict"]) if r.get("verdict") else None,
        quiet=bool(r["quiet"]),
        revision_sources={SourceName(src) for src in r["revision_sources"]},
        label=str(r["label"]),
    )


def _state_to_json(ref: CanaryRef, state: _CanaryState) -> dict[str, JSONValue]:
    return {
        "v": _SNAPSHOT_VERSION,
        "canary": {"cluster": ref.cluster, "namespace": ref.namespace, "name": ref.name},
        "rollout": _rollout_to_json(state.rollout),
        "previous": _rollout_to_json(state.previous) if state.previous is not None else None,
        "episodes": [[c.value, n] for c, n in state.episodes.items()],
        "open": [[c.value, encode_event(ev)] for c, ev in state.open.items()],
        "gate_episodes": [[gate, n] for gate, n in state.gate_episodes.items()],
        "gate_rollouts": [[gate, n] for gate, n in state.gate_rollouts.items()],
        "seen": [
            [
                seq,
                transition.value,
                detail,
                episode,
                [src.value for src in ev] if isinstance(ev, tuple) else encode_event(ev),
            ]
            for (seq, transition, detail, episode), ev in state.seen.items()
        ],
        "target": state.target,
        "facts": [[k, v] for k, v in state.facts.items()],
        "occurrences": [[key, at] for key, at in state.occurrences.items()],
        "failed_before": [encode_event(ev) for ev in state.failed_before],
        "unannounced": sorted(state.unannounced),
        "labels": list(state.labels),
        "closed": [[c.value, seq, encode_event(ev)] for c, (seq, ev) in state.closed.items()],
        "closed_at": [[c.value, exact_time(at)] for c, at in state.closed_at.items()],
    }


def _state_from_json(data: JSONValue) -> tuple[CanaryRef, _CanaryState]:
    if data["v"] != _SNAPSHOT_VERSION:
        raise ValueError(f"unknown snapshot version {data['v']!r}")
    c = data["canary"]
    ref = CanaryRef(namespace=str(c["namespace"]), name=str(c["name"]), cluster=str(c["cluster"]))
    rollout = _rollout_from_json(data["rollout"])
    previous_raw = data.get("previous")
    previous = _rollout_from_json(previous_raw) if previous_raw is not None else None
    seen: dict[Identity, CanaryEvent | tuple[SourceName, ...]] = {}
    for seq, transition, detail, episode, ev in data["seen"]:
        key = (int(seq), Transition(transition), str(detail), int(episode))
        seen[key] = tuple(SourceName(v) for v in ev) if isinstance(ev, list) else decode_event(ev)
    state = _CanaryState(
        rollout=rollout,
        previous=previous,
        episodes={Condition(cond): int(n) for cond, n in data["episodes"]},
        open={Condition(cond): decode_event(ev) for cond, ev in data["open"]},
        gate_episodes={str(gate): int(n) for gate, n in data["gate_episodes"]},
        gate_rollouts={str(gate): int(n) for gate, n in data.get("gate_rollouts", [])},
        seen=seen,
        target=str(data["target"]),
        facts={str(k): str(v) for k, v in data["facts"]},
        occurrences=_occurrences_from_json(data.get("occurrences", [])),
        failed_before=[decode_event(ev) for ev in data.get("failed_before", [])],
        unannounced={str(k) for k in data.get("unannounced", [])},
        labels=[str(label) for label in data.get("labels", [])],
        closed={
            Condition(c): (int(seq), decode_event(ev)) for c, seq, ev in data.get("closed", [])
        },
        closed_at={Condition(c): datetime.fromisoformat(at) for c, at in data.get("closed_at", [])},
    )
    return ref, state


def _new_label(state: _CanaryState, spec: str, seq: int, *, occurrence: str = "") -> str:
    """The id of a new rollout: its spec, unless an earlier rollout of the canary has that id
    (the same revision deployed again: its fingerprints would be taken for the earlier
    rollout's, already sent), then ``<spec>-<seq>``.

    Without a spec (the Canary status is not watched, or it did not come within
    ``SPEC_WAIT``): when the start is a Kubernetes Event, ``e-`` and a hash of that Event
    occurrence (its uid, count and message): every process that lists or watches the same
    occurrence derives the same id (a replica, a restart), where a sequence number counted
    what each process happened to see. Else (a start seen first by the webhook or the metrics,
    or only implied by a later step) ``seq``."""
    label = spec or occurrence or str(seq)
    if label in state.labels and spec:
        label = f"{spec}-{seq}"
    state.labels = [*state.labels[-(LABEL_MEMORY - 1) :], label]
    return label


def _start_occurrence(event: CanaryEvent) -> str:
    """``e-<hash>`` of the Kubernetes Event occurrence that reported a rollout start (see
    ``_new_label``); empty when another source reported it."""
    occurrence = event.hints.get("occurrence", "")
    if not occurrence:
        return ""
    return "e-" + hashlib.sha256(occurrence.encode()).hexdigest()[:8]


def _inside_the_rollout(rollout: _Rollout, event: CanaryEvent) -> bool:
    """A step an Event or a webhook (its own time, not a status write) reports, which happened
    between the rollout's start and its verdict: true, only late (a watch that stalled, a
    backlog behind the other source's), so still news if nobody reported it."""
    if event.hints.get("spec") or event.occurred_at is None or event.spec.opens is not None:
        return False  # a late halt would open a condition of a rollout that has ended
    if rollout.began is None or rollout.ended_at is None:
        return False
    return rollout.began <= event.occurred_at <= rollout.ended_at


def _start_time(sighting: CanaryEvent) -> datetime | None:
    """When the revision was detected, if this sighting says so: an Event or a webhook carries
    its own time; a Canary status does only when it shows the start itself (``Progressing``,
    no traffic yet: the write of the reconcile that detected the revision, as a watch delivers
    it). A status listed later shows its latest write, which says nothing of the start."""
    if sighting.occurred_at is None:
        return None
    if not sighting.hints.get("spec"):
        return sighting.occurred_at
    return sighting.occurred_at if sighting.hints.get("start") == "true" else None


def _optional_time(raw: JSONValue) -> datetime | None:
    return datetime.fromisoformat(raw) if isinstance(raw, str) else None


def _forget_old_occurrences(occurrences: dict[int, float], now: datetime) -> None:
    """Drop occurrences the API server can no longer list (oldest first, insertion order)."""
    horizon = (now - OCCURRENCE_MEMORY).timestamp()
    while occurrences:
        oldest = next(iter(occurrences))
        if occurrences[oldest] >= horizon:
            return
        del occurrences[oldest]


def _occurrences_from_json(raw: JSONValue) -> dict[int, float]:
    """``[[digest, epoch seconds], ...]``; an older snapshot's bare digests have no time: they
    are kept (until the count cap) rather than forgotten at once."""
    occurrences: dict[int, float] = {}
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, int):
            occurrences[item] = math.inf
        elif (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], int)
            and isinstance(item[1], int | float)
        ):
            occurrences[item[0]] = float(item[1])
    return occurrences


def _union(known: tuple[SourceName, ...], more: tuple[SourceName, ...]) -> tuple[SourceName, ...]:
    return known + tuple(s for s in more if s not in known)


def _digest(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _same_identity(a: CanaryEvent, b: CanaryEvent) -> bool:
    """The same transition by the identity rules (what ``identity.fingerprint`` hashes)."""
    return (
        a.canary == b.canary
        and a.rollout == b.rollout
        and a.transition is b.transition
        and a.detail == b.detail
        and a.episode == b.episode
    )


def _from_status(event: CanaryEvent) -> bool:
    """A ``halted`` first reported by the Canary status (which cannot name its cause)."""
    return (
        event.transition is Transition.HALTED
        and bool(event.sources)
        and event.sources[0] is SourceName.CANARIES
    )


def _named_by(event: CanaryEvent, halt: CanaryEvent) -> CanaryEvent:
    """The episode opener when ``event`` (Flagger's words) names the status ``halt`` held for
    it: transition, detail, message and reason from ``event``; the sources of both; what only
    the status knows (failed checks, its hints: spec, Canary labels for routing) from ``halt``;
    seen when the halt was."""
    checks = [n for n in (event.failed_checks, halt.failed_checks) if n is not None]
    return dataclasses.replace(
        event,
        observed_at=min(event.observed_at, halt.observed_at),
        sources=_union(event.sources, halt.sources),
        failed_checks=max(checks) if checks else None,
        reason=event.reason or halt.reason,
        phase=event.phase or halt.phase,
        weight=event.weight if event.weight is not None else halt.weight,
        target=event.target or halt.target,
        hints=MappingProxyType({**halt.hints, **event.hints}),
    )


def _merge(stored: CanaryEvent, repeat: CanaryEvent) -> CanaryEvent:
    """The stored event, with the repeat's source added and its missing detail filled in.

    A repeated ``halted``/``no-traffic`` refreshes the reason (latest value) and the failed
    checks count; other transitions keep what was first said and only fill gaps. The message is
    Flagger's own as soon as a source brings it (an Event, the webhook): a text canarywatch wrote
    from the Canary status or the metrics gives way to it (``Grouper.reword`` does the same for
    the event while it waits in its group).
    """
    sources = stored.sources + tuple(s for s in repeat.sources if s not in stored.sources)
    refresh = stored.transition in (Transition.HALTED, Transition.NO_TRAFFIC)
    checks = stored.failed_checks
    if repeat.failed_checks is not None:
        checks = max(checks or 0, repeat.failed_checks)
    elif refresh:
        checks = (checks or 1) + 1
    flagger_text = (SourceName.KUBERNETES_EVENTS, SourceName.FLAGGER_WEBHOOK)
    message = stored.message or repeat.message
    if (
        repeat.message
        and repeat.sources
        and repeat.sources[0] in flagger_text
        and not any(s in flagger_text for s in stored.sources)
    ):
        message = repeat.message
    return dataclasses.replace(
        stored,
        sources=sources,
        message=message,
        reason=(repeat.reason or stored.reason) if refresh else (stored.reason or repeat.reason),
        failed_checks=checks,
        weight=stored.weight if stored.weight is not None else repeat.weight,
        phase=stored.phase or repeat.phase,
        target=stored.target or repeat.target,
    )
