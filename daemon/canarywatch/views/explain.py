"""Decision trails: why a transition was (not) notified, for recent transitions.

An operator's first question is "why didn't we get paged?" (or "why twice?"). The counters
(``canarywatch_events_suppressed_total{reason}``) say how often each stage held something back;
a trail says, for one transition, which stage decided what and because of what:

- which sources saw it and when (the first sighting, then each source's first and last sighting
  and how often), and what a later sighting was deduplicated against;
- recorded as start-up state (older than the catch-up window), inhibited (by which rule, with
  its index and matchers, through which firing source event), silenced (by which silence id),
  muted (every route it reached is in a mute time interval, or outside its active ones);
- routed to which receivers, into which group; flushed (or re-sent on ``repeat_interval``, or
  dropped at flush because its rollout's verdict now inhibits it or a newer rollout superseded
  it); not sent again because the notification log already had it;
- delivered when (attempts, duration), or dead-lettered why (the reason and, in plain words,
  what the destination did).

``DecisionRecorder`` keeps them. The pipeline (``pipeline.core``) calls it at each decision
point, delivery (``delivery.DurableDelivery``) with each outcome, with small typed records
(``InhibitedBy``, ``SilencedBy``, ``Target``). Calls are synchronous, cheap, and never raise on
odd input: a trail is evidence, not control flow. The daemon serves the trails at the control
API (``control_api.explain_routes``; ``canarywatch explain``), the live view marks suppressed
transitions with ``suppression`` (``canarywatch tail``), and ``canarywatch replay --explain``
fills the same recorder from a recording.

Bounded: per canary the last ``per_canary`` transitions, each with at most ``max_steps`` steps
(the first sighting is always kept; repeated sightings by a source only count), none whose last
step is older than ``max_age_s``, and ``max_trails`` in all (a large fleet drops its oldest).
Sightings that were not news and match no kept trail (a re-listed Event after a restart, a step
of a rollout that already ended) are kept as one ``not-news`` trail per transition and detail,
so they cannot crowd out the real ones.

Nothing secret is recorded: receivers by name, sinks by plugin name, silences by id with their
matchers, destinations never (a failure is described by ``dispatch.describe_failure``, which holds
no URL or token).

``explanation`` builds the public JSON answer; ``render_explanation`` turns it into the text
``canarywatch explain`` and ``replay --explain`` print, so both print exactly the same thing.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from canarywatch.formats.jsonout import canary_to_json, format_time
from canarywatch.identity import fingerprint
from canarywatch.labels.durations import format_duration
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    DeliveryOutcome,
    JSONValue,
    Notification,
    NotificationStatus,
    SourceName,
    Transition,
)

__all__ = [
    "DEFAULT_MAX_AGE_S",
    "DEFAULT_PER_CANARY",
    "DecisionRecorder",
    "InhibitedBy",
    "SilencedBy",
    "Stage",
    "Target",
    "Trail",
    "explanation",
    "render_explanation",
    "transition_filter",
]

DEFAULT_PER_CANARY: Final = 50
"""Transitions kept per canary (the oldest go first)."""
DEFAULT_MAX_AGE_S: Final = 24 * 3600.0
"""A trail whose last step is older than this is forgotten."""
DEFAULT_MAX_TRAILS: Final = 5000
"""Trails kept in all, whatever the number of canaries (a few MB): the oldest go first."""
DEFAULT_MAX_STEPS: Final = 40
"""Steps kept per trail (repeats on ``repeat_interval`` are what could grow without end)."""
_PRUNE_INTERVAL: Final = timedelta(minutes=1)
"""Every canary is pruned by age (not only the one recorded) at most this often, by the
recorder's clock: a walk of every canary per thousand records was a tenth of the start-up on
50,000 Events (issue 17), and trails live for hours; the size bounds hold at every record."""


class Stage(enum.StrEnum):
    """Which decision a step records (the ``stage`` of a step in the JSON)."""

    SEEN = "seen"
    DUPLICATE = "duplicate"
    NOT_NEWS = "not-news"
    CATCH_UP = "catch-up"
    INHIBITED = "inhibited"
    SILENCED = "silenced"
    MUTED = "muted"
    ROUTED = "routed"
    SUPERSEDED = "superseded"
    NOTIFIED = "notified"
    REPEATED = "repeated"
    ALREADY_SENT = "already-sent"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead-lettered"
    RESOLVED = "resolved"


# -- what the pipeline and delivery hand in ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class InhibitedBy:
    """The inhibit rule (index in ``inhibit_rules``, its matchers) and the firing source event
    through which it muted a transition."""

    rule: int
    source_matchers: tuple[str, ...]
    target_matchers: tuple[str, ...]
    equal: tuple[str, ...]
    source: CanaryEvent


@dataclass(frozen=True, slots=True)
class SilencedBy:
    """The silence that muted a transition; only ``id`` is certain to be known."""

    id: str
    matchers: tuple[str, ...] = ()
    ends_at: datetime | None = None
    created_by: str = ""
    comment: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class Target:
    """A receiver a transition was routed to (``muted_by`` empty) or that a time interval
    muted (``muted_by`` says which)."""

    receiver: str
    group_key: str = ""
    group_wait_s: float = 0.0
    muted_by: tuple[str, ...] = ()


# -- the trail ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    stage: Stage
    text: str
    """One line in plain words (what ``canarywatch explain`` prints)."""
    facts: Mapping[str, JSONValue] = field(default_factory=dict)
    """The same, machine-readable (added to the step's JSON)."""


@dataclass(slots=True)
class _Sighting:
    first_at: datetime
    last_at: datetime
    count: int = 1


class _Kind(enum.StrEnum):
    TRANSITION = "transition"
    NOT_NEWS = "not-news"


_RECEIVER_WORDS: Final[Mapping[str, str]] = {
    "waiting": "waiting in its group for {r}",
    "notified": "handed to delivery for {r}",
    "delivered": "delivered to {r}",
    "dead-lettered": "dead-lettered for {r}",
    "already-sent": "not sent again to {r} (sent before)",
    "inhibited": "dropped at flush for {r} (inhibited)",
    "superseded": "dropped at flush for {r} (superseded)",
}
_DROPPED_AT_FLUSH: Final = frozenset({"inhibited", "superseded"})


@dataclass(slots=True)
class Trail:
    """Everything decided about one transition (or one kind of sighting that was not news)."""

    id: str
    kind: _Kind
    event: CanaryEvent
    first_seen: datetime
    last_at: datetime
    sightings: dict[SourceName, _Sighting] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    steps_dropped: int = 0
    suppressed: str = ""
    """The reason code (``inhibited``, ``silenced``, ``muted``, ``catch_up``, ``superseded``)
    when nothing of it was (or will be) sent; else empty."""
    suppressed_text: str = ""
    receivers: dict[str, str] = field(default_factory=dict)
    """Receiver -> where the transition is with it (``waiting``, ``notified``, ``delivered``,
    ``dead-lettered``, ``already-sent``, ``inhibited``, ``superseded``)."""

    def outcome(self) -> str:
        """One line: where the transition ended (or stands)."""
        if self.kind is _Kind.NOT_NEWS:
            return "not news: nothing sent for it"
        if self.suppressed:
            return f"suppressed ({self.suppressed.replace('_', '-')}): nothing sent"
        if not self.receivers:
            return "no decision recorded after it was seen"
        return "; ".join(
            _RECEIVER_WORDS.get(status, status + " ({r})").format(r=receiver)
            for receiver, status in self.receivers.items()
        )

    def to_json(self) -> dict[str, JSONValue]:
        ev = self.event
        return {
            "id": self.id,
            "kind": self.kind.value,
            **canary_to_json(ev.canary),
            "transition": ev.transition.value,
            "detail": ev.detail,
            "severity": ev.severity.value,
            "rollout": ev.rollout,
            "episode": ev.episode,
            "message": ev.message,
            "first_seen_at": format_time(self.first_seen),
            "occurred_at": format_time(ev.occurred_at) if ev.occurred_at is not None else None,
            "last_at": format_time(self.last_at),
            "sightings": [
                {
                    "source": source.value,
                    "first_at": format_time(s.first_at),
                    "last_at": format_time(s.last_at),
                    "count": s.count,
                }
                for source, s in self.sightings.items()
            ],
            "suppressed": (
                {"reason": self.suppressed, "detail": self.suppressed_text}
                if self.suppressed
                else None
            ),
            "receivers": dict(self.receivers),
            "outcome": self.outcome(),
            "steps": [
                {"at": format_time(s.at), "stage": s.stage.value, "text": s.text, **s.facts}
                for s in self.steps
            ],
            "steps_dropped": self.steps_dropped,
        }


# -- the recorder ------------------------------------------------------------------------------


class DecisionRecorder:
    """Keeps the decision trails of recent transitions; see the module docstring."""

    def __init__(
        self,
        *,
        per_canary: int = DEFAULT_PER_CANARY,
        max_age_s: float | None = DEFAULT_MAX_AGE_S,
        max_steps: int = DEFAULT_MAX_STEPS,
        max_trails: int | None = DEFAULT_MAX_TRAILS,
    ) -> None:
        if per_canary < 1 or max_steps < 2 or (max_age_s is not None and max_age_s <= 0):
            raise ValueError("per_canary >= 1, max_steps >= 2 and max_age_s > 0 (or None)")
        if max_trails is not None and max_trails < 1:
            raise ValueError("max_trails >= 1 (or None)")
        self.per_canary = per_canary
        self.max_age_s = max_age_s
        self.max_steps = max_steps
        self.max_trails = max_trails
        self._canaries: dict[CanaryRef, dict[str, Trail]] = {}
        self._order: dict[tuple[CanaryRef, str], None] = {}
        """Every kept trail, oldest first: the fleet-wide bound drops from the front."""
        self._pruned_at: datetime | None = None

    # -- the pipeline's decisions -------------------------------------------------------------

    def seen(self, event: CanaryEvent, now: datetime) -> None:
        """``event`` is a new transition (the correlator's first sighting of it)."""
        trail = self._trail(event, now)
        source = _first_source(event)
        when = f" (it happened at {format_time(event.occurred_at)})" if event.occurred_at else ""
        identity = f"rollout {event.rollout or '-'}"
        if event.spec.opens is not None:
            identity += f", episode {event.episode} of condition {event.spec.opens.value}"
        self._step(
            trail,
            now,
            Stage.SEEN,
            f"new transition, first seen by {source}{when}; {identity}",
            source=source,
            observed_at=format_time(event.observed_at),
        )

    def duplicate(
        self,
        candidate: CanaryEvent,
        duplicate_of: CanaryEvent | None,
        now: datetime,
        *,
        current_rollout: str | None = None,
        not_news: str = "",
    ) -> None:
        """A sighting the correlator did not count as new: ``duplicate_of`` is what it repeats
        (when the correlator says), ``not_news`` why it is not news otherwise."""
        trail = self._find(candidate, duplicate_of, current_rollout)
        source = candidate.sources[0] if candidate.sources else SourceName.SELF
        at = candidate.observed_at
        if trail is not None:
            known = trail.sightings.get(source)
            if known is not None:
                known.last_at = max(known.last_at, at)
                known.count += 1
                trail.last_at = max(trail.last_at, now)
                return
            trail.sightings[source] = _Sighting(at, at)
            first = next(iter(trail.sightings))
            first_at = trail.sightings[first].first_at
            self._step(
                trail,
                now,
                Stage.DUPLICATE,
                f"seen again by {source.value}: deduplicated against the first sighting "
                f"(by {first.value} at {format_time(first_at)}); nothing new sent",
                source=source.value,
                duplicate_of={"id": trail.id, "source": first.value, "at": format_time(first_at)},
            )
            return
        self._not_news(candidate, duplicate_of, now, source, not_news)

    def catch_up(self, event: CanaryEvent, now: datetime, cutoff: datetime) -> None:
        """Recorded as state, not notified: it happened before the start-up catch-up window."""
        happened = event.occurred_at or event.observed_at
        text = (
            f"recorded as start-up state, not notified: it happened at {format_time(happened)}, "
            f"before the catch-up window (from {format_time(cutoff)})"
        )
        self._suppress(event, now, Stage.CATCH_UP, "catch_up", text, cutoff=format_time(cutoff))

    def inhibited(
        self, event: CanaryEvent, now: datetime, by: InhibitedBy, *, receiver: str = ""
    ) -> None:
        """Inhibited on arrival, or (``receiver``) at its group's flush for that receiver."""
        source = by.source
        text = (
            f"inhibited by inhibit rule #{by.rule} "
            f"(source_matchers {_set(by.source_matchers)}, target_matchers "
            f"{_set(by.target_matchers)}, equal [{', '.join(by.equal)}]) through the firing "
            f"{source.transition.value} of {source.canary} (rollout {source.rollout or '-'}, "
            f"seen {format_time(source.observed_at)}, id {fingerprint(source)})"
        )
        facts: dict[str, JSONValue] = {
            "rule": by.rule,
            "source_matchers": list(by.source_matchers),
            "target_matchers": list(by.target_matchers),
            "equal": list(by.equal),
            "source_event": {
                "id": fingerprint(source),
                "canary": str(source.canary),
                "cluster": source.canary.cluster,
                "transition": source.transition.value,
                "rollout": source.rollout,
                "observed_at": format_time(source.observed_at),
            },
        }
        if receiver:
            self._at_flush(event, now, receiver, "inhibited", "at the flush: " + text, facts)
        else:
            self._suppress(event, now, Stage.INHIBITED, "inhibited", text, **facts)

    def silenced(self, event: CanaryEvent, now: datetime, by: SilencedBy) -> None:
        text = f"silenced by silence {by.id}"
        extra = []
        if by.matchers:
            extra.append(f"matchers {_set(by.matchers)}")
        if by.ends_at is not None:
            extra.append(f"until {format_time(by.ends_at)}")
        if by.created_by:
            extra.append(f"by {by.created_by}")
        if by.comment:
            extra.append(f"{by.comment!r}")
        if extra:
            text += f" ({', '.join(extra)})"
        facts: dict[str, JSONValue] = {"silence_id": by.id, "matchers": list(by.matchers)}
        if by.ends_at is not None:
            facts["ends_at"] = format_time(by.ends_at)
        if by.origin:
            facts["origin"] = by.origin
        self._suppress(event, now, Stage.SILENCED, "silenced", text, **facts)

    def muted(self, event: CanaryEvent, now: datetime, targets: Sequence[Target]) -> None:
        """Routed nowhere: every route it matched is muted now (``targets`` say by what)."""
        parts = [f"{t.receiver} ({'; '.join(t.muted_by) or 'muted'})" for t in targets]
        text = "muted: every route it reached is muted now: " + (", ".join(parts) or "none")
        facts: dict[str, JSONValue] = {
            "muted": [{"receiver": t.receiver, "by": list(t.muted_by)} for t in targets]
        }
        self._suppress(event, now, Stage.MUTED, "muted", text, **facts)

    def routed(
        self,
        event: CanaryEvent,
        now: datetime,
        targets: Sequence[Target],
        *,
        status: NotificationStatus = NotificationStatus.FIRING,
        muted: Sequence[Target] = (),
    ) -> None:
        """Routed to ``targets`` (``muted``: other routes it reached, muted now)."""
        trail = self._existing(event, now, create=status is NotificationStatus.FIRING)
        if trail is None:
            return  # a resolution of an opener whose trail is no longer kept
        what = "resolution " if status is NotificationStatus.RESOLVED else ""
        if not targets:
            text = f"{what}routed to no receiver"
            if status is NotificationStatus.RESOLVED:
                text += " (none of the receivers it reached has send_resolved)"
        else:
            text = f"{what}routed to " + ", ".join(
                f"{t.receiver} (group {t.group_key}, group_wait {format_duration(t.group_wait_s)})"
                for t in targets
            )
        if muted:
            text += "; muted for " + ", ".join(
                f"{t.receiver} ({'; '.join(t.muted_by)})" for t in muted
            )
        if status is NotificationStatus.FIRING:
            for t in targets:
                trail.receivers[t.receiver] = "waiting"
        self._step(
            trail,
            now,
            Stage.ROUTED,
            text,
            status=status.value,
            targets=[{"receiver": t.receiver, "group_key": t.group_key} for t in targets],
            muted=[{"receiver": t.receiver, "by": list(t.muted_by)} for t in muted],
        )

    def resolved(self, opener: CanaryEvent, by: CanaryEvent, now: datetime) -> None:
        """``opener``'s condition was closed by ``by`` (a resolution is routed next)."""
        trail = self._existing(opener, now)
        if trail is None:
            return
        self._step(
            trail,
            now,
            Stage.RESOLVED,
            f"its condition closed: resolved by {by.transition.value} "
            f"(seen {format_time(by.observed_at)} by {_first_source(by)})",
            resolved_by=by.transition.value,
        )

    def superseded(
        self, event: CanaryEvent, now: datetime, receiver: str, current_rollout: str
    ) -> None:
        """Dropped at flush: a newer rollout started while it waited in its group."""
        text = (
            f"at the flush: dropped for {receiver}: rollout {current_rollout} started while it "
            f"waited in its group, and a step of an older rollout is no longer news"
        )
        facts: dict[str, JSONValue] = {"current_rollout": current_rollout}
        self._at_flush(event, now, receiver, "superseded", text, facts)

    def notified(self, n: Notification, now: datetime) -> None:
        """``n``'s group flushed: handed to delivery for its receiver."""
        for event in n.events:
            trail = self._existing(event, now, create=n.status is NotificationStatus.FIRING)
            if trail is None:
                continue
            if n.repeat:
                stage, text = (
                    Stage.REPEATED,
                    f"sent again to {n.receiver}: still firing after repeat_interval "
                    f"(group {n.group_key})",
                )
            elif n.status is NotificationStatus.RESOLVED:
                stage, text = (
                    Stage.NOTIFIED,
                    f"resolution handed to delivery for {n.receiver} (group {n.group_key})",
                )
            else:
                stage = Stage.NOTIFIED
                text = (
                    f"group {n.group_key} flushed: handed to delivery for {n.receiver} "
                    f"with {len(n.events)} event(s)"
                )
                if trail.receivers.get(n.receiver) in (None, "waiting"):
                    trail.receivers[n.receiver] = "notified"
            self._step(
                trail,
                now,
                stage,
                text,
                receiver=n.receiver,
                group_key=n.group_key,
                status=n.status.value,
                repeat=n.repeat,
            )

    # -- delivery's outcomes ------------------------------------------------------------------

    def already_sent(
        self, n: Notification, event: CanaryEvent, now: datetime, sent_at: datetime | None
    ) -> None:
        """Delivery left ``event`` out of ``n``: its receiver already has it."""
        trail = self._existing(event, now)
        if trail is None:
            return
        when = f"at {format_time(sent_at)}" if sent_at is not None else "(queued or dead already)"
        what = "resolution" if n.status is NotificationStatus.RESOLVED else "it"
        self._step(
            trail,
            now,
            Stage.ALREADY_SENT,
            f"{what} not sent again to {n.receiver}: the notification log has it {when}",
            receiver=n.receiver,
            sent_at=format_time(sent_at) if sent_at is not None else None,
        )
        if n.status is NotificationStatus.FIRING and trail.receivers.get(n.receiver) in (
            None,
            "waiting",
            "notified",
        ):
            trail.receivers[n.receiver] = "already-sent"

    def delivered(self, n: Notification, outcome: DeliveryOutcome, now: datetime) -> None:
        for event in n.events:
            trail = self._existing(event, now)
            if trail is None:
                continue
            what = (
                "resolution delivered"
                if n.status is NotificationStatus.RESOLVED
                else ("repeat delivered" if n.repeat else "delivered")
            )
            self._step(
                trail,
                now,
                Stage.DELIVERED,
                f"{what} to {n.receiver} (sink {outcome.sink}) after {_attempts(outcome)}, "
                f"{outcome.duration_s:.2f}s",
                receiver=n.receiver,
                sink=outcome.sink,
                attempts=outcome.attempts,
                duration_s=round(outcome.duration_s, 3),
            )
            if n.status is NotificationStatus.FIRING:
                trail.receivers[n.receiver] = "delivered"

    def dead_lettered(
        self,
        n: Notification,
        outcome: DeliveryOutcome,
        now: datetime,
        *,
        outbox_id: int | None = None,
    ) -> None:
        reason = outcome.reason.value if outcome.reason is not None else "error"
        why = outcome.detail or reason
        for event in n.events:
            trail = self._existing(event, now)
            if trail is None:
                continue
            item = f" as outbox item {outbox_id}" if outbox_id is not None else ""
            self._step(
                trail,
                now,
                Stage.DEAD_LETTERED,
                f"dead-lettered for {n.receiver} (sink {outcome.sink}){item} after "
                f"{_attempts(outcome)}: {why} [{reason}]; `canarywatch outbox retry` sends "
                "it again",
                receiver=n.receiver,
                sink=outcome.sink,
                attempts=outcome.attempts,
                reason=reason,
                outbox_id=outbox_id,
            )
            if n.status is NotificationStatus.FIRING:
                trail.receivers[n.receiver] = "dead-lettered"

    # -- reading ------------------------------------------------------------------------------

    def canaries(self) -> list[CanaryRef]:
        return sorted(self._canaries)

    def count(self, ref: CanaryRef) -> int:
        """How many trails are kept of ``ref``."""
        return len(self._canaries.get(ref, {}))

    def trails(
        self,
        namespace: str,
        name: str,
        *,
        transition: str | None = None,
        now: datetime | None = None,
    ) -> list[Trail]:
        """The kept trails of every canary ``namespace/name`` (whatever its cluster), oldest
        first; ``transition`` keeps those of that transition name or whose id starts with it."""
        if now is not None:
            self.prune(now)
        found = [
            trail
            for ref, trails in self._canaries.items()
            if ref.namespace == namespace and ref.name == name
            for trail in trails.values()
            if transition is None
            or trail.event.transition.value == transition
            or trail.id.startswith(transition)
        ]
        return sorted(found, key=lambda t: (t.first_seen, t.event.canary.cluster))

    def trail_of(self, event: CanaryEvent) -> Trail | None:
        return self._canaries.get(event.canary, {}).get(fingerprint(event))

    def suppression(self, event: CanaryEvent) -> tuple[str, str] | None:
        """``(reason, detail)`` when nothing of ``event`` is sent (the live view marks it)."""
        trail = self.trail_of(event)
        if trail is None or not trail.suppressed:
            return None
        return trail.suppressed, trail.suppressed_text

    def prune(self, now: datetime) -> None:
        """Forget trails older than ``max_age_s`` (by their last step), in every canary."""
        for ref in list(self._canaries):
            self._prune_canary(ref, now)

    # -- internals ----------------------------------------------------------------------------

    def _trail(self, event: CanaryEvent, now: datetime) -> Trail:
        """``event``'s trail, made when there is none."""
        trail = self._existing(event, now, create=True)
        assert trail is not None  # noqa: S101  created when missing
        return trail

    def _existing(self, event: CanaryEvent, now: datetime, *, create: bool = False) -> Trail | None:
        """``event``'s trail when one is kept (``create``: made when there is none)."""
        if (
            self._pruned_at is None
            or now - self._pruned_at >= _PRUNE_INTERVAL
            or now < self._pruned_at
        ):
            self._pruned_at = now
            self.prune(now)
        key = fingerprint(event)
        trail = self._canaries.get(event.canary, {}).get(key)
        if trail is None and create:
            trail = self._new_trail(key, _Kind.TRANSITION, event, now)
        return trail

    def _new_trail(self, key: str, kind: _Kind, event: CanaryEvent, now: datetime) -> Trail:
        self._prune_canary(event.canary, now)
        self._forget(event.canary, key)
        trails = self._canaries.setdefault(event.canary, {})
        source = event.sources[0] if event.sources else SourceName.SELF
        trail = Trail(
            id=key,
            kind=kind,
            event=event,
            first_seen=event.observed_at,
            last_at=now,
            sightings={source: _Sighting(event.observed_at, event.observed_at)},
        )
        trails[key] = trail
        self._order[(event.canary, key)] = None
        while len(trails) > self.per_canary:
            self._forget(event.canary, next(iter(trails)))
        while self.max_trails is not None and len(self._order) > self.max_trails:
            self._forget(*next(iter(self._order)))
        return trail

    def _forget(self, ref: CanaryRef, key: str) -> None:
        """Drop one trail; a canary left with none is dropped too."""
        self._order.pop((ref, key), None)
        trails = self._canaries.get(ref)
        if trails is not None and trails.pop(key, None) is not None and not trails:
            del self._canaries[ref]

    def _prune_canary(self, ref: CanaryRef, now: datetime) -> None:
        trails = self._canaries.get(ref)
        if trails is None:
            return
        if self.max_age_s is not None:
            horizon = now - timedelta(seconds=self.max_age_s)
            for key in [k for k, t in trails.items() if t.last_at < horizon]:
                self._forget(ref, key)

    def _step(
        self, trail: Trail, now: datetime, stage: Stage, text: str, **facts: JSONValue
    ) -> None:
        trail.steps.append(Step(now, stage, text, facts))
        trail.last_at = max(trail.last_at, now)
        if len(trail.steps) > self.max_steps:
            del trail.steps[1]  # the first sighting stays: it names the transition's start
            trail.steps_dropped += 1

    def _suppress(
        self,
        event: CanaryEvent,
        now: datetime,
        stage: Stage,
        reason: str,
        text: str,
        **facts: JSONValue,
    ) -> None:
        trail = self._trail(event, now)
        trail.suppressed = reason
        trail.suppressed_text = text
        self._step(trail, now, stage, text, reason=reason, **facts)

    def _at_flush(
        self,
        event: CanaryEvent,
        now: datetime,
        receiver: str,
        status: str,
        text: str,
        facts: Mapping[str, JSONValue],
    ) -> None:
        trail = self._trail(event, now)
        trail.receivers[receiver] = status
        stage = Stage.SUPERSEDED if status == "superseded" else Stage.INHIBITED
        self._step(trail, now, stage, text, receiver=receiver, **facts)
        if all(s in _DROPPED_AT_FLUSH for s in trail.receivers.values()):
            trail.suppressed = status  # no receiver gets it
            trail.suppressed_text = text

    def _find(
        self, candidate: CanaryEvent, duplicate_of: CanaryEvent | None, current: str | None
    ) -> Trail | None:
        trails = self._canaries.get(candidate.canary)
        if not trails:
            return None
        if duplicate_of is not None:
            exact = trails.get(fingerprint(duplicate_of))
            if exact is not None:
                return exact
        same = [
            t
            for t in trails.values()
            if t.kind is _Kind.TRANSITION
            and t.event.transition is candidate.transition
            and t.event.detail == candidate.detail
        ]
        if duplicate_of is None or not same:
            # Not a repeat the correlator recognised (no ``duplicate_of``): not any trail's.
            return None
        in_current = [t for t in same if current is not None and t.event.rollout == current]
        return (in_current or same)[-1]

    def _not_news(
        self,
        candidate: CanaryEvent,
        duplicate_of: CanaryEvent | None,
        now: datetime,
        source: SourceName,
        why: str,
    ) -> None:
        key = "n" + fingerprint(candidate)[1:]
        trails = self._canaries.get(candidate.canary, {})
        trail = trails.get(key)
        if trail is not None:
            known = trail.sightings.setdefault(
                source, _Sighting(candidate.observed_at, candidate.observed_at, 0)
            )
            known.last_at = max(known.last_at, candidate.observed_at)
            known.count += 1
            trail.last_at = max(trail.last_at, now)
            return
        trail = self._new_trail(key, _Kind.NOT_NEWS, candidate, now)
        if not why and duplicate_of is not None:
            sources = ", ".join(s.value for s in duplicate_of.sources)
            why = f"a repeat of a transition seen before (reported by {sources})"
            if duplicate_of.rollout:
                why += (
                    f", first seen {format_time(duplicate_of.observed_at)} in rollout "
                    f"{duplicate_of.rollout}"
                )
            why += "; its own trail is no longer kept"
        self._step(
            trail,
            now,
            Stage.NOT_NEWS,
            f"seen by {source.value}: not news, nothing sent: {why or 'seen before'} "
            "(later sightings like it are only counted)",
            source=source.value,
        )


def _first_source(event: CanaryEvent) -> str:
    return event.sources[0].value if event.sources else SourceName.SELF.value


def _attempts(outcome: DeliveryOutcome) -> str:
    return f"{outcome.attempts} attempt{'s' if outcome.attempts != 1 else ''}"


def _set(matchers: Iterable[str]) -> str:
    return "{" + ", ".join(matchers) + "}"


# -- the public answer and its text ------------------------------------------------------------


_TRAIL_ID: Final = re.compile(r"[0-9a-fn][0-9a-f]{3,15}")
"""A trail id or a prefix of one (4 characters at least): hex, or ``n...`` for not-news."""


def transition_filter(text: str | None) -> str | None:
    """``--transition T``: a transition name or a trail id (prefix); ``ValueError`` naming
    what is accepted otherwise. ``None`` or empty: no filter."""
    if not text:
        return None
    if text in {t.value for t in Transition} or _TRAIL_ID.fullmatch(text):
        return text
    names = ", ".join(t.value for t in Transition)
    raise ValueError(
        f"--transition {text!r} is neither a transition ({names}) nor a trail id "
        "(the id printed after each transition, 4 to 16 characters)"
    )


def explanation(
    recorder: DecisionRecorder,
    namespace: str,
    name: str,
    *,
    transition: str | None = None,
    now: datetime | None = None,
) -> dict[str, JSONValue]:
    """The JSON answer for ``namespace/name`` (the control API's and ``replay --explain``'s)."""
    trails = recorder.trails(namespace, name, transition=transition, now=now)
    return {
        "canary": f"{namespace}/{name}",
        "transition": transition,
        "kept": {
            "per_canary": recorder.per_canary,
            "max_age_s": recorder.max_age_s,
            "max_trails": recorder.max_trails,
        },
        "trails": [t.to_json() for t in trails],
    }


def _text(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def render_explanation(answer: Mapping[str, Any]) -> str:
    """The text ``canarywatch explain`` and ``replay --explain`` print for one answer."""
    canary = _text(answer.get("canary"), "?")
    wanted = _text(answer.get("transition"))
    kept = answer.get("kept")
    per_canary = kept.get("per_canary") if isinstance(kept, Mapping) else None
    max_age = kept.get("max_age_s") if isinstance(kept, Mapping) else None
    window = ""
    if isinstance(max_age, int | float):  # a daemon's recorder (replay's keeps everything)
        window = f"the last {per_canary} per canary, for {format_duration(float(max_age))}"
    trails = [t for t in answer.get("trails") or [] if isinstance(t, Mapping)]
    what = f"transition {wanted!r}" if wanted else "transition"
    if not trails:
        kept_text = f" (canarywatch keeps {window})" if window else ""
        return f"{canary}: no {what} recorded{kept_text}\n"
    count = len(trails)
    kept_text = f" (kept: {window})" if window else ""
    lines = [f"{canary}: {count} {what}{'s' if count != 1 and not wanted else ''}{kept_text}"]
    for trail in trails:
        lines.append("")
        lines.extend(_render_trail(trail))
    return "\n".join(lines) + "\n"


def _render_trail(trail: Mapping[str, Any]) -> list[str]:
    name = _text(trail.get("transition"), "?")
    detail = _text(trail.get("detail"))
    title = f"{name} {detail}".strip()
    facts = []
    if _text(trail.get("kind")) == "not-news":
        facts.append("not news")
    if trail.get("rollout"):
        facts.append(f"rollout {trail['rollout']}")
    if isinstance(trail.get("episode"), int) and trail["episode"]:
        facts.append(f"episode {trail['episode']}")
    if trail.get("cluster"):
        facts.append(f"cluster {trail['cluster']}")
    facts.append(f"id {_text(trail.get('id'), '?')}")
    lines = [f"{title}  ({', '.join(facts)})", f"  => {_text(trail.get('outcome'), '?')}"]
    sightings = [s for s in trail.get("sightings") or [] if isinstance(s, Mapping)]
    if sightings:
        seen = []
        for s in sightings:
            count = s.get("count")
            times = f" ({count} times, last {_text(s.get('last_at'))})" if count != 1 else ""
            seen.append(f"{_text(s.get('source'), '?')} at {_text(s.get('first_at'))}{times}")
        lines.append("  seen by: " + "; ".join(seen))
    dropped = trail.get("steps_dropped")
    for index, step in enumerate(s for s in trail.get("steps") or [] if isinstance(s, Mapping)):
        if index == 1 and isinstance(dropped, int) and dropped:
            lines.append(f"  … {dropped} older step(s) not kept")
        stage = _text(step.get("stage"), "?")
        lines.append(f"  {_text(step.get('at'))}  {stage:<13}  {_text(step.get('text'))}")
    return lines
