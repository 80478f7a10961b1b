"""Aggregation groups: timing with explicit datetimes, conservation, and a model-checked machine."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from canarywatch.clock import VirtualClock
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    Routed,
    RouteOptions,
    SourceName,
    Transition,
)
from canarywatch.pipeline.group import Grouper, group_key, group_key_for

T0 = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
FIRING = NotificationStatus.FIRING
RESOLVED = NotificationStatus.RESOLVED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


_serial = iter(range(10**9))


def make_event(canary: str = "podinfo", namespace: str = "test") -> CanaryEvent:
    """A distinct event each call (the message carries a serial number)."""
    return CanaryEvent(
        canary=CanaryRef(namespace, canary),
        transition=Transition.WEIGHT_ADVANCED,
        observed_at=T0,
        sources=(SourceName.KUBERNETES_EVENTS,),
        message=f"event {next(_serial)}",
        labels={"canary": canary, "namespace": namespace, "severity": "info"},
    )


def options(
    gw: float = 30.0,
    gi: float = 300.0,
    ri: float = 3600.0,
    group_by: tuple[str, ...] | None = ("namespace", "canary"),
) -> RouteOptions:
    return RouteOptions(
        group_by=group_by, group_wait_s=gw, group_interval_s=gi, repeat_interval_s=ri
    )


def routed(
    canary: str = "podinfo",
    receiver: str = "slack",
    status: NotificationStatus = FIRING,
    opts: RouteOptions | None = None,
) -> Routed:
    return Routed(make_event(canary), receiver, opts or options(), status)


def test_group_key_format() -> None:
    labels = {"namespace": "test", "canary": "podinfo"}
    assert group_key("slack", FIRING, labels) == 'firing/{canary="podinfo",namespace="test"}:slack'
    assert group_key("slack", RESOLVED, {}) == "resolved/{}:slack"
    r = routed()
    assert group_key_for(r) == 'firing/{canary="podinfo",namespace="test"}:slack'
    everything = Routed(r.event, "slack", options(group_by=None))
    assert group_key_for(everything) == (
        'firing/{canary="podinfo",namespace="test",severity="info"}:slack'
    )


def test_first_event_waits_group_wait_and_followers_join() -> None:
    g = Grouper()
    first, second = routed(), routed()
    g.offer(first, at(0))
    assert g.next_deadline() == at(30)
    g.offer(second, at(10))
    assert len(g) == 2
    assert g.next_deadline() == at(30)  # joining does not push the deadline
    assert g.due(at(29)) == []
    [n] = g.due(at(30))
    assert n == Notification(
        receiver="slack",
        status=FIRING,
        group_key=group_key_for(first),
        group_labels={"canary": "podinfo", "namespace": "test"},
        events=(first.event, second.event),
        created_at=at(30),
    )
    assert len(g) == 0
    assert g.due(at(31)) == []


def test_after_a_flush_events_wait_for_group_interval() -> None:
    g = Grouper()
    g.offer(routed(), at(0))
    g.due(at(30))  # flushed at 30: the next batch is due at 330
    late = routed()
    g.offer(late, at(100))
    assert g.next_deadline() == at(330)
    assert g.due(at(329)) == []
    [n] = g.due(at(330))
    assert n.events == (late.event,)


def test_interval_already_past_means_at_once() -> None:
    g = Grouper()
    r = routed(opts=options(gw=0, gi=60))
    g.offer(r, at(0))
    g.due(at(0))
    g.mark_firing(group_key_for(r), [r.event])  # keeps the group alive past its interval
    other = routed(opts=options(gw=0, gi=60))
    g.offer(other, at(59))
    assert g.next_deadline() == at(60)
    g.due(at(60))
    third = routed(opts=options(gw=0, gi=60))
    g.offer(third, at(500))  # 60 + 60 long past
    assert g.next_deadline() == at(500)
    assert [n.events for n in g.due(at(500))] == [(third.event,)]


def test_idle_group_expires_and_the_next_event_waits_group_wait_again() -> None:
    g = Grouper()
    g.offer(routed(), at(0))
    g.due(at(30))
    assert g.group_count == 1
    assert g.next_deadline() is None
    # Within group_interval of the flush the group is still there...
    g.due(at(329))
    assert g.group_count == 1
    # ...and at last_flush + group_interval it is collected.
    g.due(at(330))
    assert g.group_count == 0
    g.offer(routed(), at(400))
    assert g.next_deadline() == at(430)


def test_expiry_does_not_depend_on_when_due_ran() -> None:
    # Same offers, one grouper collected in between and one not: same deadline.
    collected, lazy = Grouper(), Grouper()
    for g in (collected, lazy):
        g.offer(routed(), at(0))
        g.due(at(30))
    collected.due(at(331))
    for g in (collected, lazy):
        g.offer(routed(), at(331))
    assert collected.next_deadline() == lazy.next_deadline() == at(361)


def test_zero_wait_and_interval_sends_every_event_on_its_own() -> None:
    g = Grouper()
    opts = options(gw=0, gi=0)
    a, b, c = routed(opts=opts), routed(opts=opts), routed(opts=opts)
    g.offer(a, at(0))
    g.offer(b, at(0))
    assert g.next_deadline() == at(0)
    assert [n.events for n in g.due(at(0))] == [(a.event,), (b.event,)]
    g.offer(c, at(5))
    assert g.next_deadline() == at(5)
    assert [n.events for n in g.due(at(5))] == [(c.event,)]
    assert g.group_count == 0  # nothing firing: collected at once


def test_groups_are_separated_by_labels_receiver_and_status() -> None:
    g = Grouper()
    items = [
        routed("a"),
        routed("b"),
        routed("a", receiver="teams"),
        routed("a", status=RESOLVED),
        routed("a"),
    ]
    for r in items:
        g.offer(r, at(0))
    notes = g.due(at(30))
    assert len(notes) == 4
    by_key = {n.group_key: n.events for n in notes}
    assert by_key[group_key_for(items[0])] == (items[0].event, items[4].event)
    assert {n.status for n in notes} == {FIRING, RESOLVED}


def test_due_orders_by_deadline_then_arrival() -> None:
    """Groups due at the same instant flush in the order their events arrived (a backlog is
    offered in the order things happened), not in the order of their keys."""
    g = Grouper()
    slow = routed("zeta", opts=options(gw=60))
    fast_b = routed("beta", opts=options(gw=10))
    fast_a = routed("alpha", opts=options(gw=10))
    for r in (slow, fast_b, fast_a):
        g.offer(r, at(0))
    notes = g.due(at(100))
    assert [n.group_labels["canary"] for n in notes] == ["beta", "alpha", "zeta"]


def test_repeat_interval_resends_firing_events_on_interval_ticks() -> None:
    g = Grouper()
    opts = options(gw=0, gi=300, ri=1000)
    r = routed(opts=opts)
    key = group_key_for(r)
    g.offer(r, at(0))
    g.mark_firing(key, [r.event])
    assert g.firing(key) == (r.event,)
    g.due(at(0))
    # 1000 s is not a multiple of 300: the repeat waits for the 4th tick, at 1200.
    assert g.next_deadline() == at(1200)
    assert g.due(at(1199)) == []
    [repeat] = g.due(at(1200))
    assert repeat.events == (r.event,)
    assert repeat.created_at == at(1200)
    assert g.next_deadline() == at(2400)
    # New events are a send of their own and restart the repeat clock.
    news = routed(opts=opts)
    g.offer(news, at(1300))
    assert g.next_deadline() == at(1500)
    assert [n.events for n in g.due(at(1500))] == [(news.event,)]
    assert g.next_deadline() == at(2700)
    g.mark_resolved(key, [r.event])
    assert g.firing(key) == ()
    assert g.next_deadline() is None
    g.due(at(1800))
    assert g.group_count == 0
    g.mark_resolved(key)  # unknown keys are ignored


def test_repeat_without_group_interval_uses_repeat_interval() -> None:
    g = Grouper()
    r = routed(opts=options(gw=0, gi=0, ri=50))
    g.offer(r, at(0))
    g.mark_firing(group_key_for(r), [r.event])
    g.due(at(0))
    assert g.next_deadline() == at(50)
    g.mark_resolved(group_key_for(r))
    assert g.next_deadline() is None


def test_stop_repeating_ends_the_repeats_in_every_group_holding_the_event() -> None:
    g = Grouper()
    chat = routed(opts=options(gw=0, gi=0, ri=50))
    pager = Routed(event=chat.event, receiver="pager", route=chat.route, status=FIRING)
    for r in (chat, pager):
        g.offer(r, at(0))
        g.mark_firing(group_key_for(r), [r.event])
    g.due(at(0))
    assert g.next_deadline() == at(50)
    g.stop_repeating(chat.event)
    assert (g.firing(group_key_for(chat)), g.firing(group_key_for(pager))) == ((), ())
    assert g.next_deadline() is None
    assert g.due(at(100)) == []
    g.stop_repeating(chat.event)  # nothing left to stop: ignored


def test_mark_firing_unknown_group() -> None:
    with pytest.raises(KeyError):
        Grouper().mark_firing("firing/{}:nobody", [])


def test_flush_all_sends_every_pending_event_but_no_repeats() -> None:
    g = Grouper()
    firing = routed("a", opts=options(gw=0, gi=10, ri=10))
    g.offer(firing, at(0))
    g.mark_firing(group_key_for(firing), [firing.event])
    g.due(at(0))
    waiting = [routed("b"), routed("c", opts=options(gw=3600)), routed("b")]
    for r in waiting:
        g.offer(r, at(100))
    notes = g.flush_all(at(101))
    assert [n.events for n in notes] == [
        (waiting[0].event, waiting[2].event),
        (waiting[1].event,),
    ]
    assert all(n.created_at == at(101) for n in notes)
    assert len(g) == 0
    assert g.flush_all(at(102)) == []


def test_retire_flushes_removed_receivers_groups_now_and_they_never_repeat() -> None:
    g = Grouper()
    firing = routed("a", receiver="gone", opts=options(gw=0, gi=10, ri=10))
    g.offer(firing, at(0))
    g.mark_firing(group_key_for(firing), [firing.event])
    g.due(at(0))
    waiting = routed("b", receiver="gone", opts=options(gw=3600))
    kept = routed("b", receiver="slack", opts=options(gw=3600))
    g.offer(waiting, at(5))
    g.offer(kept, at(5))
    [note] = g.retire({"gone"}, at(6))  # a reload removed the receiver "gone"
    assert note.receiver == "gone"
    assert note.events == (waiting.event,)
    assert note.created_at == at(6)
    assert g.group_count == 1
    assert len(g) == 1
    assert g.next_deadline() == at(3605)  # only "slack"'s group: no repeat for "gone"
    [later] = g.due(at(3605))
    assert later.receiver == "slack"


# --- invariants ---------------------------------------------------------------------------

RECEIVER_OPTIONS = {
    "slow": options(gw=30, gi=60, ri=600),
    "instant": options(gw=0, gi=0, ri=600),
    "batch": options(gw=0, gi=120, ri=600),
}

offers = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),  # canary
        st.sampled_from(sorted(RECEIVER_OPTIONS)),  # receiver
        st.sampled_from([FIRING, RESOLVED]),
        st.sampled_from([0, 0, 1, 29, 30, 45, 60, 61, 200]),  # seconds since the previous offer
        st.booleans(),  # call due() before this offer
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(offers)
def test_grouping_conserves_events_and_their_order(
    plan: list[tuple[str, str, NotificationStatus, int, bool]],
) -> None:
    g = Grouper()
    now = T0
    sent: list[Notification] = []
    offered: dict[tuple[str, NotificationStatus, str], list[CanaryEvent]] = defaultdict(list)
    for canary, receiver, status, step, call_due in plan:
        now += timedelta(seconds=step)
        if call_due:
            sent.extend(g.due(now))
        r = routed(canary, receiver, status, RECEIVER_OPTIONS[receiver])
        g.offer(r, now)
        offered[(receiver, status, canary)].append(r.event)
    sent.extend(g.flush_all(now + timedelta(seconds=1)))
    assert len(g) == 0

    delivered: dict[tuple[str, NotificationStatus, str], list[CanaryEvent]] = defaultdict(list)
    for n in sent:
        assert n.events, "no empty notifications"
        delivered[(n.receiver, n.status, n.group_labels["canary"])].extend(n.events)
    # Exactly once, in the right group, in arrival order.
    assert delivered == offered


@dataclass
class _ModelGroup:
    pending: list[CanaryEvent] = field(default_factory=list)
    deadline: datetime | None = None
    last_flush: datetime | None = None
    arrival: int = 0


class GrouperMachine(RuleBasedStateMachine):
    """Drives offer / advance-time / due against a plain model of the documented semantics."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = VirtualClock(T0)
        self.grouper = Grouper()
        self.model: dict[tuple[str, str], _ModelGroup] = {}
        self.offered_at: dict[str, datetime] = {}
        self.arrivals = 0

    @rule(canary=st.sampled_from(["a", "b"]), receiver=st.sampled_from(sorted(RECEIVER_OPTIONS)))
    def offer(self, canary: str, receiver: str) -> None:
        now = self.clock.now()
        opts = RECEIVER_OPTIONS[receiver]
        r = routed(canary, receiver, FIRING, opts)
        self.grouper.offer(r, now)
        self.offered_at[r.event.message] = now

        key = (receiver, canary)
        group = self.model.get(key)
        interval = timedelta(seconds=opts.group_interval_s)
        if group is not None and not group.pending:
            assert group.last_flush is not None
            if now >= group.last_flush + interval:
                group = None  # expired: a new group
        if group is None:
            group = self.model[key] = _ModelGroup(
                deadline=now + timedelta(seconds=opts.group_wait_s)
            )
        elif not group.pending:
            assert group.last_flush is not None
            group.deadline = max(now, group.last_flush + interval)
        if not group.pending:
            group.arrival, self.arrivals = self.arrivals, self.arrivals + 1
        group.pending.append(r.event)

    @rule(seconds=st.sampled_from([0, 1, 15, 29, 30, 31, 59, 60, 61, 119, 120, 300]))
    def advance(self, seconds: int) -> None:
        self.clock.advance_by(seconds)

    @rule()
    def advance_to_next_deadline(self) -> None:
        deadline = self.grouper.next_deadline()
        if deadline is not None:
            self.clock.advance_to(deadline)

    @rule()
    def due(self) -> None:
        now = self.clock.now()
        got = self.grouper.due(now)

        # The documented order: deadline, then arrival of the oldest pending event, then key.
        ready = sorted(
            (
                g.deadline,
                g.arrival,
                group_key(key[0], FIRING, {"canary": key[1], "namespace": "test"}),
                key,
            )
            for key, g in self.model.items()
            if g.pending and g.deadline is not None and g.deadline <= now
        )
        expected: list[tuple[str, str, tuple[CanaryEvent, ...]]] = []
        for _, _, _, key in ready:
            group = self.model[key]
            opts = RECEIVER_OPTIONS[key[0]]
            if opts.group_wait_s == 0 and opts.group_interval_s == 0:
                expected.extend((key[0], key[1], (e,)) for e in group.pending)
            else:
                expected.append((key[0], key[1], tuple(group.pending)))
            group.pending, group.deadline, group.last_flush = [], None, now

        assert [(n.receiver, n.group_labels["canary"], n.events) for n in got] == expected
        for n in got:
            assert n.created_at == now
            for e in n.events:
                assert self.offered_at.pop(e.message) <= now

    @invariant()
    def pending_matches_model(self) -> None:
        assert len(self.grouper) == sum(len(g.pending) for g in self.model.values())
        assert len(self.grouper) == len(self.offered_at)

    @invariant()
    def next_deadline_matches_model(self) -> None:
        deadlines = [g.deadline for g in self.model.values() if g.pending and g.deadline]
        assert self.grouper.next_deadline() == min(deadlines, default=None)

    @invariant()
    def memory_is_bounded(self) -> None:
        # At most one group per (receiver, canary) pair is ever held.
        assert self.grouper.group_count <= len(RECEIVER_OPTIONS) * 2


GrouperMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestGrouperMachine = GrouperMachine.TestCase
