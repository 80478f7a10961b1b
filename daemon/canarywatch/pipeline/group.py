"""Aggregation groups: Alertmanager's group_wait / group_interval / repeat_interval for events.

A group is one receiver, one status and one set of group labels (``group_key``). Timing:

- The first event of a new group is due at ``now + group_wait``; events arriving while the group
  waits join it.
- Once a group has flushed, further events are due at ``last_flush + group_interval``, or at
  once if that moment has already passed.
- A notification carries the events that reached the group since its previous flush, in arrival
  order: every offered event is in exactly one notification, none twice.
- With ``group_wait`` and ``group_interval`` both 0 nothing is batched: each event is its own
  notification, due when offered.
- A group may be marked with still-firing events (``mark_firing``). With no new events, such a
  group re-sends them on a group_interval tick once ``repeat_interval`` has passed since its last
  send (Alertmanager checks repeats on its group_interval ticks), i.e. at ``last_flush +
  group_interval * ceil(repeat_interval / group_interval)``. Unlike Alertmanager, whose
  notifications always carry every firing alert, a flush of new events carries only those
  events; it still counts as the group's last send. ``stop_repeating`` ends the repeats of one
  event in every group that holds it.

What a group's firing events record, and why it is not the other two still-firing records:
they are *what this receiver's group re-sends on repeat_interval*, the event exactly as it was
notified (``reword`` included), in the group routing chose when it fired. The correlator's open
conditions (``pipeline.correlate``) are *what is open in Flagger*, per canary, notified or not
(inhibited, silenced and catch-up openers are open too, and are inhibition sources); deriving a
group's set from them would need the routing of the past and would change what a repeat carries
(the correlator merges later sightings into its opener). ``delivery.firing`` (FiringTracker)
records *what a sink acknowledged* and still fires, per receiver, for heartbeats to sinks whose
far side expires alerts; it follows deliveries, which may fail or happen on another replica.
- ``last_flush`` is the moment ``due``/``flush_all`` actually flushed (a late call shifts the next
  tick, as Alertmanager's ticker reset does).
- A group with no pending and no firing events is dropped once ``group_interval`` has passed
  since its last flush: from then on, an event for its key starts a new group (``group_wait``).
  This is decided by time, not by when the garbage collection ran, so results do not depend on
  how often ``due`` is called.

Everything is deterministic: ``due`` orders notifications by deadline, then by when the
group's oldest pending event arrived, then group key. Options (timings) are those of the latest
event offered to the group.

An event waiting in its group can still change its words: when a later source brings Flagger's
own message for it (``reword``), the notification carries that text instead of the one
canarywatch wrote from the Canary status ("From the Canary status (no Flagger message yet):
canaryWeight 20"). Its identity, and so its place and deduplication, does not change.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from canarywatch.identity import fingerprint
from canarywatch.labels.matchers import format_label_set
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    Routed,
    RouteOptions,
    SourceName,
)
from canarywatch.pipeline.route import group_labels

__all__ = ["Grouper", "group_key", "group_key_for"]

FLAGGER_TEXT_SOURCES = frozenset({SourceName.KUBERNETES_EVENTS, SourceName.FLAGGER_WEBHOOK})
"""Sources whose message is Flagger's own (an Event's, the webhook's). The Canary status and the
metrics only show a change, which canarywatch describes in its own words."""


def group_key(receiver: str, status: NotificationStatus, labels: Mapping[str, str]) -> str:
    """``firing/{canary="podinfo",namespace="test"}:slack``: stable and unambiguous.

    The status is one of a fixed set, the label set is self-delimiting (escaped, sorted), and the
    receiver is everything after it, so distinct inputs never share a key.
    """
    return f"{status}/{format_label_set(labels)}:{receiver}"


def group_key_for(routed: Routed) -> str:
    """The key of the group ``routed`` joins (what ``mark_firing`` takes)."""
    labels = group_labels(routed.event.labels, routed.route.group_by)
    return group_key(routed.receiver, routed.status, labels)


@dataclass(slots=True)
class _Group:
    key: str
    receiver: str
    status: NotificationStatus
    labels: Mapping[str, str]
    options: RouteOptions
    pending: list[CanaryEvent] = field(default_factory=list)
    arrival: int = 0
    """When its oldest pending event arrived (a counter): groups due at the same instant
    flush in the order their events happened, not in the order of their keys."""
    deadline: datetime | None = None
    """When ``pending`` is due; ``None`` while it is empty."""
    last_flush: datetime | None = None
    firing: tuple[CanaryEvent, ...] = ()

    def _interval(self) -> timedelta:
        return timedelta(seconds=self.options.group_interval_s)

    def idle(self, now: datetime) -> bool:
        """Nothing to send now or later, and past the window in which it would tick again."""
        return (
            not self.pending
            and not self.firing
            and self.last_flush is not None
            and now >= self.last_flush + self._interval()
        )

    def repeat_deadline(self) -> datetime | None:
        repeat = self.options.repeat_interval_s
        if self.pending or not self.firing or self.last_flush is None or repeat <= 0:
            return None
        interval = self.options.group_interval_s
        # The first group_interval tick at or after repeat_interval; the epsilon keeps
        # 14400 / 300 from rounding up to 49 ticks through float error.
        step = repeat if interval <= 0 else interval * max(1, math.ceil(repeat / interval - 1e-9))
        return self.last_flush + timedelta(seconds=step)

    def next_deadline(self) -> datetime | None:
        return self.deadline if self.pending else self.repeat_deadline()

    def batches(self) -> list[tuple[CanaryEvent, ...]]:
        if self.options.group_wait_s == 0 and self.options.group_interval_s == 0:
            return [(event,) for event in self.pending]
        return [tuple(self.pending)]


class Grouper:
    """Holds aggregation groups; pure: time only enters through the ``now`` arguments."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._heap: list[tuple[datetime, str]] = []
        """``(deadline, group key)`` entries; stale ones (the group's deadline moved, or the
        group is gone) are skipped when they surface. Keeps ``due``/``next_deadline`` cheap
        with thousands of firing groups."""
        self._pending = 0
        self._arrivals = itertools.count()
        self._idle_candidates: set[str] = set()
        """Groups that flushed with nothing firing: the only ones that can become idle."""
        self._repeating: dict[str, set[str]] = {}
        """Fingerprint of a firing event -> keys of the groups it was marked firing in, so a
        resolution finds them without routing the event again (routing may have changed since:
        a mute interval began, a reload)."""

    def __len__(self) -> int:
        """Events offered and not yet flushed."""
        return self._pending

    def _schedule(self, group: _Group) -> None:
        deadline = group.next_deadline()
        if deadline is not None:
            heapq.heappush(self._heap, (deadline, group.key))

    def _live(self, deadline: datetime, key: str) -> _Group | None:
        group = self._groups.get(key)
        if group is None or group.next_deadline() != deadline:
            return None
        return group

    @property
    def group_count(self) -> int:
        """Groups held (pending, firing, or within their group_interval window)."""
        return len(self._groups)

    def offer(self, routed: Routed, now: datetime) -> None:
        """Add one routed event to its group, creating the group if needed."""
        key = group_key_for(routed)
        group = self._groups.get(key)
        if group is not None and group.idle(now):
            del self._groups[key]
            group = None
        if group is None:
            group = _Group(
                key=key,
                receiver=routed.receiver,
                status=routed.status,
                labels=MappingProxyType(group_labels(routed.event.labels, routed.route.group_by)),
                options=routed.route,
            )
            self._groups[key] = group
            group.deadline = now + timedelta(seconds=routed.route.group_wait_s)
        elif not group.pending:
            # A live group without pending events has flushed before.
            last = group.last_flush if group.last_flush is not None else now
            group.deadline = max(now, last + timedelta(seconds=routed.route.group_interval_s))
        group.options = routed.route
        if not group.pending:
            group.arrival = next(self._arrivals)
        group.pending.append(routed.event)
        self._pending += 1
        self._schedule(group)

    def mark_firing(self, key: str, events: Sequence[CanaryEvent]) -> None:
        """Set the events of group ``key`` that are still firing (replacing earlier marks).

        Call it right after offering the event that opened the condition: the group exists then.
        Raises ``KeyError`` for a group that does not exist.
        """
        group = self._groups[key]
        group.firing = tuple(events)
        for event in group.firing:
            self._repeating.setdefault(fingerprint(event), set()).add(key)
        self._schedule(group)
        if not group.firing and group.last_flush is not None:
            self._idle_candidates.add(key)

    def stop_repeating(self, event: CanaryEvent) -> None:
        """``event``'s condition closed: no group re-sends it any more.

        Matched by fingerprint (its identity), so a reworded copy counts too; every group it
        was marked firing in, whatever routing would say now.
        """
        gone = fingerprint(event)
        for key in sorted(self._repeating.pop(gone, ())):
            group = self._groups.get(key)
            if group is not None:
                self.mark_firing(key, tuple(e for e in group.firing if fingerprint(e) != gone))

    def mark_resolved(self, key: str, events: Iterable[CanaryEvent] | None = None) -> None:
        """Stop repeating ``events`` (all of them when ``None``); unknown keys are ignored."""
        group = self._groups.get(key)
        if group is None:
            return
        if events is None:
            group.firing = ()
        else:
            gone = list(events)
            group.firing = tuple(e for e in group.firing if e not in gone)
        if not group.firing and group.last_flush is not None:
            self._idle_candidates.add(key)

    def firing(self, key: str) -> tuple[CanaryEvent, ...]:
        group = self._groups.get(key)
        return group.firing if group is not None else ()

    def reword(self, same: CanaryEvent, repeat: CanaryEvent, rollout: str | None) -> int:
        """Give a step still waiting in its group Flagger's own message; how many events changed.

        ``repeat`` is a later sighting of a step the correlator already had (``same``, the event
        it repeats: its ``rollout`` is empty for a one-shot step, whose sightings it does not
        keep, and then ``rollout`` is the canary's current one). When ``repeat`` comes from a
        source with Flagger's own text (``FLAGGER_TEXT_SOURCES``), every pending event of that
        step that no such source reported yet takes its message and its sources, in pending
        and among the group's firing events alike. Sent notifications cannot change.
        """
        if not self._pending or not repeat.message or not repeat.sources:
            return 0
        if repeat.sources[0] not in FLAGGER_TEXT_SOURCES:
            return 0
        step = dataclasses.replace(same, rollout=same.rollout or rollout or "")
        changed = 0
        for group in self._groups.values():
            for i, event in enumerate(group.pending):
                if not _same_step(event, step) or FLAGGER_TEXT_SOURCES.intersection(event.sources):
                    continue
                new = dataclasses.replace(
                    event,
                    message=repeat.message,
                    sources=event.sources
                    + tuple(s for s in repeat.sources if s not in event.sources),
                )
                group.pending[i] = new
                group.firing = tuple(new if f == event else f for f in group.firing)
                changed += 1
        return changed

    def pending_canaries(self) -> set[CanaryRef]:
        """Canaries with events still waiting in a group (not yet handed to dispatch)."""
        return {e.canary for g in self._groups.values() for e in g.pending}

    def next_deadline(self) -> datetime | None:
        """The earliest moment ``due`` has something to return."""
        while self._heap:
            deadline, key = self._heap[0]
            if self._live(deadline, key) is not None:
                return deadline
            heapq.heappop(self._heap)
        return None

    def _notification(
        self, group: _Group, events: tuple[CanaryEvent, ...], now: datetime, *, repeat: bool = False
    ) -> Notification:
        return Notification(
            receiver=group.receiver,
            status=group.status,
            group_key=group.key,
            group_labels=group.labels,
            events=events,
            created_at=now,
            repeat=repeat,
        )

    def _flush(
        self, groups: Iterable[_Group], now: datetime, *, repeats: bool
    ) -> list[Notification]:
        ready: list[tuple[datetime, str, _Group]] = []
        for group in groups:
            deadline = group.next_deadline()
            if deadline is None or (repeats and deadline > now):
                continue
            if not repeats and not group.pending:
                continue
            ready.append((deadline, group.key, group))
        # Same deadline (a backlog processed at once): in the order the events arrived, which
        # is the order they happened (the runner replays backlogs in Flagger's time order).
        ready.sort(key=lambda item: (item[0], item[2].arrival, item[1]))
        out: list[Notification] = []
        for _, _, group in ready:
            if group.pending:
                out.extend(self._notification(group, batch, now) for batch in group.batches())
                self._pending -= len(group.pending)
                group.pending = []
                group.deadline = None
            else:
                out.append(self._notification(group, group.firing, now, repeat=True))
            group.last_flush = now
            self._schedule(group)
            if not group.firing:
                self._idle_candidates.add(group.key)
        self._collect(now)
        return out

    def _collect(self, now: datetime) -> None:
        for key in list(self._idle_candidates):
            group = self._groups.get(key)
            if group is None or group.pending or group.firing:
                self._idle_candidates.discard(key)  # re-added at its next flush
            elif group.idle(now):
                del self._groups[key]
                self._idle_candidates.discard(key)

    def due(self, now: datetime) -> list[Notification]:
        """Flush every group whose deadline is at or before ``now`` (new events or a repeat)."""
        ready: dict[str, _Group] = {}
        while self._heap and self._heap[0][0] <= now:
            deadline, key = heapq.heappop(self._heap)
            group = self._live(deadline, key)
            if group is not None:
                ready[key] = group
        if not ready:
            self._collect(now)
            return []
        return self._flush(list(ready.values()), now, repeats=True)

    def flush_all(self, now: datetime) -> list[Notification]:
        """Flush every pending event regardless of deadlines (shutdown, end of a replay)."""
        return self._flush(list(self._groups.values()), now, repeats=False)

    def retire(self, receivers: Collection[str], now: datetime) -> list[Notification]:
        """Flush the pending events of ``receivers``' groups now and drop those groups (a
        reload removed the receivers): nothing of theirs waits for a timer, nothing repeats."""
        groups = [g for g in self._groups.values() if g.receiver in receivers]
        out = self._flush(groups, now, repeats=False)
        for group in groups:
            self._groups.pop(group.key, None)  # its heap entries are skipped as stale
            self._idle_candidates.discard(group.key)
        return out


def _same_step(event: CanaryEvent, step: CanaryEvent) -> bool:
    """``event`` is ``step``: the same canary, rollout, transition and detail (and, for a
    condition opener, episode; a one-shot step has one identity per rollout)."""
    return (
        event.canary == step.canary
        and event.rollout == step.rollout
        and event.transition is step.transition
        and event.detail == step.detail
        and (event.spec.opens is None or event.episode == step.episode)
    )
