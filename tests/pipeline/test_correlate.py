"""Identity, rollout and episode rules of reference/transitions.md, on hand-built events."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from canarywatch.identity import fingerprint
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Condition,
    SourceName,
    Transition,
)
from canarywatch.pipeline.correlate import Correlator

T0 = datetime(2026, 8, 4, 14, 0, tzinfo=UTC)
PODINFO = CanaryRef("test", "podinfo", "prod")
EV = SourceName.KUBERNETES_EVENTS
ST = SourceName.CANARIES


def ev(
    transition: Transition,
    minute: float = 0,
    *,
    detail: str = "",
    source: SourceName = EV,
    canary: CanaryRef = PODINFO,
    reason: str = "",
    hints: Mapping[str, str] | None = None,
) -> CanaryEvent:
    return CanaryEvent(
        canary=canary,
        transition=transition,
        observed_at=T0 + timedelta(minutes=minute),
        sources=(source,),
        severity=TRANSITIONS[transition].severity,
        detail=detail,
        reason=reason,
        hints=dict(hints or {}),
    )


def run(events: list[CanaryEvent]) -> list[CanaryEvent]:
    correlator = Correlator()
    out = []
    for e in events:
        result = correlator(e, e.observed_at)
        if result.new is not None:
            out.append(result.new)
    return out


def names(events: list[CanaryEvent]) -> list[tuple[str, str]]:
    return [(e.transition.value, e.detail) for e in events]


def test_five_failed_checks_are_one_halted_and_rollback_pair_is_one() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.WEIGHT_ADVANCED, 1, detail="10"),
            *[
                ev(Transition.HALTED, 2 + i, reason=f"request-success-rate 9{i} < 99")
                for i in range(5)
            ],
            ev(Transition.ROLLED_BACK, 8, reason="failed-checks"),
            ev(Transition.ROLLED_BACK, 8.01),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("weight-advanced", "10"),
        ("halted", ""),
        ("rolled-back", ""),
    ]
    assert out[-1].reason == "failed-checks"
    assert out[-1].labels["severity"] == "critical"


def test_halt_after_an_advance_is_a_new_episode() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.HALTED, 1),
            ev(Transition.HALTED, 2),
            ev(Transition.WEIGHT_ADVANCED, 3, detail="10"),
            ev(Transition.HALTED, 4),
        ]
    )
    halted = [e for e in out if e.transition is Transition.HALTED]
    assert [h.episode for h in halted] == [1, 2]


def test_not_ready_twice_in_a_rollout_is_two_episodes() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.NOT_READY, 0.1),
            ev(Transition.NOT_READY, 0.5),
            ev(Transition.ANALYSIS_STARTED, 1),
            ev(Transition.PROMOTING, 5),
            ev(Transition.NOT_READY, 5.1),
            ev(Transition.FINALISING, 6),
            ev(Transition.PROMOTED, 7),
        ]
    )
    assert [e.transition for e in out].count(Transition.NOT_READY) == 2


def test_two_gates_approved_are_two_pairs_even_as_count_bumps() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.AWAITING_APPROVAL, 1, detail="promotion"),
            ev(Transition.APPROVED, 2, detail="promotion"),
            ev(Transition.APPROVED, 2.5, detail="promotion"),  # a relisted/late copy
            ev(Transition.AWAITING_APPROVAL, 3, detail="promotion"),
            ev(Transition.APPROVED, 4, detail="promotion"),  # count bump of the first Event
        ]
    )
    assert names(out)[1:] == [
        ("awaiting-approval", "promotion"),
        ("approved", "promotion"),
        ("awaiting-approval", "promotion"),
        ("approved", "promotion"),
    ]


def test_same_transition_from_two_sources_is_one_event_with_both_sources() -> None:
    correlator = Correlator()
    first = correlator(ev(Transition.REVISION_DETECTED, 0), T0)
    second = correlator(
        ev(Transition.REVISION_DETECTED, 0.01, source=ST, hints={"spec": "abc"}), T0
    )
    assert first.new is not None
    assert second.new is None
    assert second.duplicate_of is not None
    assert second.duplicate_of.sources == (EV, ST)
    third = correlator(ev(Transition.WEIGHT_ADVANCED, 1, detail="10", source=ST), T0)
    assert third.new is not None
    # The rollout keeps the id it started with, so all its events carry the same one.
    assert third.new.rollout == first.new.rollout == "1"


def test_rollout_id_is_the_applied_spec_when_known_at_the_start() -> None:
    correlator = Correlator()
    first = correlator(ev(Transition.REVISION_DETECTED, 0, source=ST, hints={"spec": "abc"}), T0)
    later = correlator(ev(Transition.WEIGHT_ADVANCED, 1, detail="10"), T0)
    assert first.new is not None
    assert later.new is not None
    assert first.new.rollout == later.new.rollout == "abc"


def test_new_revision_starts_a_new_rollout_and_same_texts_are_news_again() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.WEIGHT_ADVANCED, 1, detail="10"),
            ev(Transition.PROMOTED, 5),
            ev(Transition.REVISION_DETECTED, 60),
            ev(Transition.WEIGHT_ADVANCED, 61, detail="10"),
        ]
    )
    assert [e.rollout for e in out] == ["1", "1", "1", "2", "2"]


def test_rollback_condition_resolves_on_a_later_promotion() -> None:
    correlator = Correlator()
    for e in [ev(Transition.REVISION_DETECTED, 0), ev(Transition.ROLLED_BACK, 1)]:
        correlator(e, e.observed_at)
    assert Condition.ROLLOUT_FAILED in correlator.open_conditions(PODINFO)
    correlator(ev(Transition.REVISION_DETECTED, 30), T0)
    result = correlator(ev(Transition.PROMOTED, 40), T0)
    assert [r.transition for r in result.resolved] == [Transition.ROLLED_BACK]
    assert correlator.open_conditions(PODINFO) == {}


def test_late_duplicate_does_not_close_a_newer_condition() -> None:
    correlator = Correlator()
    for e in [
        ev(Transition.REVISION_DETECTED, 0),
        ev(Transition.WEIGHT_ADVANCED, 1, detail="10"),
        ev(Transition.HALTED, 2),
        ev(Transition.WEIGHT_ADVANCED, 2.1, detail="10", source=ST),  # slow source, same step
    ]:
        correlator(e, e.observed_at)
    assert Condition.ANALYSIS in correlator.open_conditions(PODINFO)
    again = correlator(ev(Transition.HALTED, 3), T0)
    assert again.new is None


def test_canaries_are_independent() -> None:
    other = CanaryRef("shop", "checkout", "prod")
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.REVISION_DETECTED, 0, canary=other),
            ev(Transition.HALTED, 1),
            ev(Transition.HALTED, 1, canary=other),
        ]
    )
    assert len(out) == 4


def test_labels_carry_the_documented_set() -> None:
    (event,) = run([ev(Transition.AWAITING_APPROVAL, 0, detail="rollout")])
    assert set(event.labels) == {
        "transition",
        "severity",
        "cluster",
        "namespace",
        "canary",
        "target",
        "phase",
        "rollout",
        "gate",
    }
    assert event.labels["gate"] == "rollout"
    assert event.labels["cluster"] == "prod"


SEQUENCE = st.lists(
    st.sampled_from(
        [
            (Transition.REVISION_DETECTED, ""),
            (Transition.WEIGHT_ADVANCED, "10"),
            (Transition.WEIGHT_ADVANCED, "20"),
            (Transition.HALTED, ""),
            (Transition.NO_TRAFFIC, ""),
            (Transition.NOT_READY, ""),
            (Transition.AWAITING_APPROVAL, "promotion"),
            (Transition.APPROVED, "promotion"),
            (Transition.ROLLED_BACK, ""),
            (Transition.PROMOTED, ""),
        ]
    ),
    max_size=40,
)


@given(SEQUENCE)
def test_feeding_every_event_twice_equals_feeding_it_once(
    seq: list[tuple[Transition, str]],
) -> None:
    events = [ev(t, i, detail=d) for i, (t, d) in enumerate(seq)]
    doubled = [e for e in events for _ in range(2)]
    assert names(run(doubled)) == names(run(events))


def test_a_status_halt_joins_the_no_traffic_episode_either_way_round() -> None:
    events_first = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.NO_TRAFFIC, 1),
            ev(Transition.HALTED, 1.01, source=ST),  # failedChecks 0 -> 1: same failed check
        ]
    )
    status_first = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.HALTED, 1, source=ST),
            ev(Transition.NO_TRAFFIC, 1.01),
        ]
    )
    assert names(events_first) == [("revision-detected", ""), ("no-traffic", "")]
    assert names(status_first) == [("revision-detected", ""), ("halted", "")]


def test_a_rollout_approval_seen_after_the_new_revision_is_the_same_approval() -> None:
    out = run(
        [
            ev(Transition.AWAITING_APPROVAL, 0, detail="rollout"),
            ev(Transition.APPROVED, 1, detail="rollout"),
            ev(Transition.REVISION_DETECTED, 1.01),
            # The Canary status diff (Waiting -> Progressing) arrives after the Events.
            ev(Transition.APPROVED, 1.02, detail="rollout", source=ST),
            ev(Transition.REVISION_DETECTED, 1.02, source=ST, hints={"spec": "abc"}),
        ]
    )
    assert names(out) == [
        ("awaiting-approval", "rollout"),
        ("approved", "rollout"),
        ("revision-detected", ""),
    ]


def test_every_outage_gets_its_own_recovery() -> None:
    source = CanaryRef("canarywatch", "cluster-prod", "prod")
    seq = [
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_UNREACHABLE,  # the other source of the same cluster says it too
        Transition.CLUSTER_REACHABLE,
        Transition.CLUSTER_REACHABLE,
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
    ]
    out = run([ev(t, i, canary=source, source=SourceName.SELF) for i, t in enumerate(seq)])
    assert [e.transition for e in out] == [
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
    ]


def test_a_scraped_verdict_after_the_next_revision_belongs_to_the_previous_rollout() -> None:
    metrics = SourceName.FLAGGER_METRICS
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.PROMOTED, 5),
            ev(Transition.REVISION_DETECTED, 5.1),
            ev(Transition.PROMOTED, 5.2, source=metrics),  # the scrape after the promotion
            ev(Transition.ROLLED_BACK, 9, source=metrics),  # Events lost: still news
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("promoted", ""),
        ("revision-detected", ""),
        ("rolled-back", ""),
    ]


def test_a_step_reported_after_the_verdict_is_not_news() -> None:
    out = run(
        [
            ev(Transition.REVISION_DETECTED, 0),
            ev(Transition.HALTED, 1),
            ev(Transition.ROLLED_BACK, 5),
            ev(Transition.HALTED, 5.01, source=ST),  # the status stream, lagging behind
            ev(Transition.WEIGHT_ADVANCED, 5.02, detail="20", source=ST),
            ev(Transition.REVISION_DETECTED, 30),
            ev(Transition.HALTED, 31),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("halted", ""),
        ("rolled-back", ""),
        ("revision-detected", ""),
        ("halted", ""),
    ]


def test_an_old_revision_event_after_the_status_showed_the_verdict_opens_no_rollout() -> None:
    """Issue 12: after an API outage the Canary backlog (new spec, then rolled back) was
    processed before the Events backlog; the Event "New revision detected!" from before the
    verdict started a phantom rollout that repeated the whole rollback. Flagger's own time
    (``occurred_at``) says it happened before the verdict: not a new rollout."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    spec = {"spec": "5f7d9"}
    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 10, source=ST, hints=spec)),
            at(6, ev(Transition.ROLLED_BACK, 10, source=ST, hints=spec)),
            # the Events backlog, replayed after the status one
            at(0, ev(Transition.REVISION_DETECTED, 10.1)),
            at(1, ev(Transition.WEIGHT_ADVANCED, 10.1, detail="10")),
            at(6, ev(Transition.ROLLED_BACK, 10.1)),
            # the next real revision is news again
            at(20, ev(Transition.REVISION_DETECTED, 20)),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("rolled-back", ""),
        ("revision-detected", ""),
    ]
    assert out[0].rollout == "5f7d9"
    assert out[2].rollout != out[0].rollout


def test_the_status_written_with_the_verdict_is_that_rollout_not_a_new_one() -> None:
    """The Events reported a whole rollout (no spec in them); the Canary status, written by the
    same reconcile as the verdict, arrives after it (a backlog, a slow stream) showing the spec
    for the first time. Issue 12 item 5: that is the rollout the Events reported, not a new
    one repeating its rollback; a spec first seen minutes later is a new rollout."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0)),
            at(1, ev(Transition.WEIGHT_ADVANCED, 1, detail="10")),
            at(9, ev(Transition.ROLLED_BACK, 9)),
            at(9.02, ev(Transition.REVISION_DETECTED, 9.5, source=ST, hints={"spec": "s1"})),
            at(9.02, ev(Transition.ROLLED_BACK, 9.5, source=ST, hints={"spec": "s1"})),
            at(20, ev(Transition.REVISION_DETECTED, 20, source=ST, hints={"spec": "s2"})),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("weight-advanced", "10"),
        ("rolled-back", ""),
        ("revision-detected", ""),
    ]
    assert out[3].rollout == "s2"


def test_a_lagging_canary_backlog_adds_nothing_to_what_the_events_told() -> None:
    """Issue 12 item 4 (fault matrix, API outage): the Events watch came back first and
    reported the rollback of rollout 1, the next revision and its promotion; the Canary watch
    came back 1.2 s later with its own backlog of the same minutes. It added a `rolled-back` to
    the promoted rollout and a phantom rollout under the spec. Flagger's own times say which
    rollout each status write belongs to."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    s1, s2 = {"spec": "s1"}, {"spec": "s2"}
    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0)),
            at(0, ev(Transition.REVISION_DETECTED, 0, source=ST, hints=s1)),
            # the outage: the Events backlog first...
            at(5, ev(Transition.ROLLED_BACK, 20)),
            at(8, ev(Transition.REVISION_DETECTED, 20)),
            at(9, ev(Transition.WEIGHT_ADVANCED, 20, detail="10")),
            at(12, ev(Transition.PROMOTED, 20)),
            # ...then the Canary backlog of the same minutes
            at(5, ev(Transition.ROLLED_BACK, 21, source=ST, hints=s1)),
            at(8.01, ev(Transition.REVISION_DETECTED, 21, source=ST, hints=s2)),
            at(9, ev(Transition.WEIGHT_ADVANCED, 21, detail="10", source=ST, hints=s2)),
            at(12, ev(Transition.PROMOTED, 21, source=ST, hints=s2)),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("rolled-back", ""),
        ("revision-detected", ""),
        ("weight-advanced", "10"),
        ("promoted", ""),
    ]
    assert [e.rollout for e in out] == ["1", "1", "2", "2", "2"]


def test_a_verdict_of_the_previous_rollout_reported_late_is_notified_under_its_id() -> None:
    """The next revision's Events arrived before anything said the previous rollout ended; the
    status then shows its rollback, from before the new revision: that rollout's verdict, late,
    not one of the new rollout, and not lost."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0)),
            at(2, ev(Transition.WEIGHT_ADVANCED, 2, detail="10")),
            at(8, ev(Transition.REVISION_DETECTED, 9)),
            at(5, ev(Transition.ROLLED_BACK, 9.5, source=ST, hints={"spec": "s1"})),
            at(9, ev(Transition.WEIGHT_ADVANCED, 10, detail="10")),
        ]
    )
    assert [(e.transition.value, e.rollout) for e in out] == [
        ("revision-detected", "1"),
        ("weight-advanced", "1"),
        ("revision-detected", "2"),
        ("rolled-back", "1"),
        ("weight-advanced", "2"),
    ]


def test_a_canary_list_first_then_the_events_backlog_invents_nothing() -> None:
    """The fault matrix's API outage with the Canary watch back first: its list shows rollout
    1 rolled back and rollout 2 already promoted (no start time: the status shows its latest
    write). The Events backlog then repeats the rollback (older than the promotion: rollout 1's,
    not a second verdict of rollout 2) and the second revision (older than its verdict)."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    s1, s2 = {"spec": "s1"}, {"spec": "s2"}
    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0)),
            at(0, ev(Transition.REVISION_DETECTED, 0, source=ST, hints=s1)),
            # after the outage, the Canary list first
            at(5, ev(Transition.ROLLED_BACK, 20, source=ST, hints=s1)),
            at(12, ev(Transition.REVISION_DETECTED, 20, source=ST, hints=s2)),
            at(12, ev(Transition.PROMOTED, 20, source=ST, hints=s2)),
            # then the Events backlog of the same minutes
            at(5, ev(Transition.ROLLED_BACK, 21)),
            at(8, ev(Transition.REVISION_DETECTED, 21)),
            at(9, ev(Transition.WEIGHT_ADVANCED, 21, detail="10")),
            at(12, ev(Transition.PROMOTED, 21)),
        ]
    )
    assert names(out) == [
        ("revision-detected", ""),
        ("rolled-back", ""),
        ("revision-detected", ""),
        ("promoted", ""),
    ]


def test_a_stalled_events_backlog_repeats_nothing_the_status_already_told() -> None:
    """The fault matrix's silent watch: the Events watch stalled while the Canary status told
    the confirm-rollout gate, the start, the promotion gate and the promotion. The stalled
    Events arrive afterwards: their gates are the same occurrences (by Flagger's clock, before
    each episode closed), and their analysis-started (which the status cannot see) is late but
    true, so it is announced once; nothing is repeated under the new rollout id."""

    def at(minute: float, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=T0 + timedelta(minutes=minute))

    spec = {"spec": "s1"}
    start = {"spec": "s1", "start": "true"}
    out = run(
        [
            at(1, ev(Transition.AWAITING_APPROVAL, 1, detail="rollout", source=ST)),
            at(2, ev(Transition.APPROVED, 2, detail="rollout", source=ST)),
            at(3, ev(Transition.REVISION_DETECTED, 3, source=ST, hints=start)),
            at(6, ev(Transition.AWAITING_APPROVAL, 6, detail="promotion", source=ST, hints=spec)),
            at(7, ev(Transition.APPROVED, 7, detail="promotion", source=ST, hints=spec)),
            at(9, ev(Transition.PROMOTED, 9, source=ST, hints=spec)),
            # the stalled Events watch, caught up
            at(1, ev(Transition.AWAITING_APPROVAL, 10, detail="rollout")),
            at(2, ev(Transition.APPROVED, 10, detail="rollout")),
            at(3, ev(Transition.REVISION_DETECTED, 10)),
            at(4, ev(Transition.ANALYSIS_STARTED, 10)),
            at(6, ev(Transition.AWAITING_APPROVAL, 10, detail="promotion")),
            at(7, ev(Transition.APPROVED, 10, detail="promotion")),
            at(9, ev(Transition.PROMOTED, 10)),
        ]
    )
    assert names(out) == [
        ("awaiting-approval", "rollout"),
        ("approved", "rollout"),
        ("revision-detected", ""),
        ("awaiting-approval", "promotion"),
        ("approved", "promotion"),
        ("promoted", ""),
        ("analysis-started", ""),
    ]


def test_a_stalled_events_backlog_within_one_second_repeats_nothing() -> None:
    """As above, but Flagger's times have one-second resolution: the confirm-rollout gate is
    passed in the reconcile that detects the revision (the same second), and a rollout can
    start and end within one second of a fast test. The fault matrix's silent watch announced
    the backlog's gates again under the new rollout and its start as a phantom rollout "2"."""
    second = T0.replace(microsecond=0)

    def at(seconds: int, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=second + timedelta(seconds=seconds))

    spec = {"spec": "s1"}
    start = {"spec": "s1", "start": "true"}
    out = run(
        [
            at(0, ev(Transition.AWAITING_APPROVAL, 0.01, detail="rollout", source=ST)),
            at(1, ev(Transition.APPROVED, 0.02, detail="rollout", source=ST)),
            at(1, ev(Transition.REVISION_DETECTED, 0.03, source=ST, hints=start)),
            at(1, ev(Transition.ROLLED_BACK, 0.04, source=ST, hints=spec)),
            # the stalled Events watch, caught up
            at(0, ev(Transition.AWAITING_APPROVAL, 1, detail="rollout")),
            at(1, ev(Transition.APPROVED, 1, detail="rollout")),
            at(1, ev(Transition.REVISION_DETECTED, 1)),
            at(1, ev(Transition.ROLLED_BACK, 1)),
        ]
    )
    assert names(out) == [
        ("awaiting-approval", "rollout"),
        ("approved", "rollout"),
        ("revision-detected", ""),
        ("rolled-back", ""),
    ]
    assert {e.rollout for e in out[2:]} == {"s1"}


def test_a_promotion_gate_in_the_second_its_rollout_began_is_news() -> None:
    """Only the confirm-rollout gate is passed before the revision starts: the promotion gate
    of a rollout that fast (a test at 600x) is that rollout's, not a repeat of the previous
    rollout's (the fault matrix's long history lost it)."""
    second = T0.replace(microsecond=0)

    def at(seconds: int, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=second + timedelta(seconds=seconds))

    gate = [
        (Transition.AWAITING_APPROVAL, "promotion"),
        (Transition.APPROVED, "promotion"),
        (Transition.PROMOTED, ""),
    ]
    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0.01)),
            *(at(0, ev(t, 0.02, detail=d)) for t, d in gate),
            at(1, ev(Transition.REVISION_DETECTED, 0.03)),
            *(at(1, ev(t, 0.04, detail=d)) for t, d in gate),
        ]
    )
    assert names(out) == 2 * [("revision-detected", ""), *((t.value, d) for t, d in gate)]


def test_the_next_revision_in_the_second_of_the_verdict_is_a_new_rollout() -> None:
    """The other side of the one-second tie: a rollout that began earlier, its rollback, and
    the next revision's Event in the rollback's second (the fault matrix's API outage at 600x)
    is the next rollout, not a late sighting of this one's start."""
    second = T0.replace(microsecond=0)

    def at(seconds: int, e: CanaryEvent) -> CanaryEvent:
        return dataclasses.replace(e, occurred_at=second + timedelta(seconds=seconds))

    out = run(
        [
            at(0, ev(Transition.REVISION_DETECTED, 0.01)),
            at(1, ev(Transition.ROLLED_BACK, 0.02)),
            at(1, ev(Transition.REVISION_DETECTED, 0.03)),
            at(1, ev(Transition.NOT_READY, 0.04)),
        ]
    )
    assert [(e.transition.value, e.rollout) for e in out] == [
        ("revision-detected", "1"),
        ("rolled-back", "1"),
        ("revision-detected", "2"),
        ("not-ready", "2"),
    ]


# -- rollout-failed: every failed rollout fires until the canary's next promotion ---------------


def resolved_by(correlator: Correlator, events: list[CanaryEvent]) -> list[list[str]]:
    """Per event fed, the ``rollout`` ids of the openers it resolved."""
    return [[r.rollout for r in correlator(e, e.observed_at).resolved] for e in events]


def test_a_promotion_resolves_every_failed_rollout_before_it_once() -> None:
    correlator = Correlator()
    feed = [
        ev(Transition.REVISION_DETECTED, 0, hints={"spec": "a"}),
        ev(Transition.ROLLED_BACK, 5, reason="failed-checks"),
        ev(Transition.REVISION_DETECTED, 10, hints={"spec": "b"}),
        ev(Transition.ROLLED_BACK, 15, reason="progress-deadline"),
        ev(Transition.ROLLED_BACK, 15.01, source=ST),  # the status says it too: a repeat
        ev(Transition.REVISION_DETECTED, 20, hints={"spec": "c"}),
        ev(Transition.PROMOTED, 25),
        ev(Transition.PROMOTED, 25.01, source=ST),
        ev(Transition.REVISION_DETECTED, 30, hints={"spec": "d"}),
        ev(Transition.PROMOTED, 35),
    ]
    assert resolved_by(correlator, feed) == [[], [], [], [], [], [], ["a", "b"], [], [], []]
    assert correlator.firing(PODINFO) == ()


def test_promotion_failed_and_terminated_follow_the_same_rule() -> None:
    correlator = Correlator()
    feed = [
        ev(Transition.REVISION_DETECTED, 0, hints={"spec": "a"}),
        ev(Transition.PROMOTION_FAILED, 5),
        ev(Transition.REVISION_DETECTED, 10, hints={"spec": "b"}),
        ev(Transition.ROLLED_BACK, 15),
        ev(Transition.TERMINATED, 20),
        ev(Transition.TERMINATED, 21, source=ST),
    ]
    assert resolved_by(correlator, feed) == [[], [], [], [], ["a", "b"], []]


def test_a_late_repeat_of_an_older_failure_does_not_displace_the_latest() -> None:
    correlator = Correlator()
    metrics = SourceName.FLAGGER_METRICS
    for e in [
        ev(Transition.REVISION_DETECTED, 0, hints={"spec": "a"}),
        ev(Transition.ROLLED_BACK, 5),
        ev(Transition.REVISION_DETECTED, 10, hints={"spec": "b"}),
        ev(Transition.ROLLED_BACK, 15),
        ev(Transition.ROLLED_BACK, 15.5, source=metrics),  # the scrape, late: rollout b's
    ]:
        correlator(e, e.observed_at)
    assert correlator.open_conditions(PODINFO)[Condition.ROLLOUT_FAILED].rollout == "b"
    assert [e.rollout for e in correlator.firing(PODINFO)] == ["a", "b"]
    latest = correlator.open_conditions(PODINFO)[Condition.ROLLOUT_FAILED]
    assert latest.sources == (EV, metrics)


def test_failed_rollouts_still_firing_survive_a_restart() -> None:
    correlator = Correlator()
    for e in [
        ev(Transition.REVISION_DETECTED, 0, hints={"spec": "a"}),
        ev(Transition.ROLLED_BACK, 5),
        ev(Transition.REVISION_DETECTED, 10, hints={"spec": "b"}),
        ev(Transition.HALTED, 11),
        ev(Transition.ROLLED_BACK, 15),
    ]:
        correlator(e, e.observed_at)
    correlator.mark_unannounced(correlator.firing(PODINFO)[0])
    restored = Correlator.restore(correlator.snapshot())
    assert restored.firing(PODINFO) == correlator.firing(PODINFO)
    result = restored(ev(Transition.PROMOTED, 40), T0)
    assert [r.rollout for r in result.resolved] == ["b"]  # "a" was never notified


def test_a_condition_never_notified_closes_without_a_resolution() -> None:
    correlator = Correlator()
    opened = [
        correlator(e, e.observed_at).new
        for e in [ev(Transition.REVISION_DETECTED, 0), ev(Transition.HALTED, 1)]
    ]
    halted = opened[1]
    assert halted is not None
    correlator.mark_unannounced(halted)
    result = correlator(ev(Transition.WEIGHT_ADVANCED, 2, detail="10"), T0)
    assert result.new is not None
    assert result.resolved == ()
    again = correlator(ev(Transition.HALTED, 3), T0).new  # a new episode, notified this time
    assert again is not None
    assert [r.episode for r in correlator(ev(Transition.PROMOTED, 4), T0).resolved] == [2]


VERDICTS = st.lists(
    st.sampled_from(
        [
            (Transition.REVISION_DETECTED, ""),
            (Transition.WEIGHT_ADVANCED, "10"),
            (Transition.HALTED, ""),
            (Transition.ROLLED_BACK, ""),
            (Transition.PROMOTION_FAILED, ""),
            (Transition.PROMOTED, ""),
            (Transition.TERMINATED, ""),
        ]
    ),
    max_size=40,
)


@given(VERDICTS, st.lists(st.sampled_from([EV, ST, SourceName.FLAGGER_METRICS]), min_size=40))
def test_each_failed_rollout_resolves_once_at_the_next_promotion_or_termination(
    seq: list[tuple[Transition, str]], sources: list[SourceName]
) -> None:
    """The rule, as a model: a new rolled-back/promotion-failed fires until the next new
    promoted/terminated of the canary, which resolves every one still firing, each once."""
    correlator = Correlator()
    firing: list[str] = []
    for i, (transition, detail) in enumerate(seq):
        result = correlator(ev(transition, i, detail=detail, source=sources[i]), T0)
        verdicts = [
            fingerprint(r) for r in result.resolved if r.spec.opens is Condition.ROLLOUT_FAILED
        ]
        if result.new is not None and transition in (Transition.PROMOTED, Transition.TERMINATED):
            assert verdicts == firing
            firing = []
        else:
            assert verdicts == []
        if result.new is not None and result.new.spec.opens is Condition.ROLLOUT_FAILED:
            firing.append(fingerprint(result.new))
    still = correlator.firing(PODINFO)
    assert [fingerprint(e) for e in still if e.spec.opens is Condition.ROLLOUT_FAILED] == firing


def test_a_slower_source_repeating_a_closed_occurrence_is_no_new_episode() -> None:
    """Real Flagger 1.44: the primary's "not ready" reaches the webhook, "Promotion … failed"
    closes readiness, then the Events watch delivers the same "not ready" Event."""
    text = 'primary-primary.test not ready: deployment "primary-primary" exceeded its deadline'

    def not_ready(minute: float, source: SourceName) -> CanaryEvent:
        event = ev(Transition.NOT_READY, minute, source=source)
        return dataclasses.replace(event, message=text)

    events = [
        ev(Transition.REVISION_DETECTED, 0),
        ev(Transition.PROMOTING, 1),
        not_ready(1.1, SourceName.FLAGGER_WEBHOOK),
        ev(Transition.PROMOTION_FAILED, 1.2, source=SourceName.FLAGGER_WEBHOOK),
        not_ready(1.3, EV),  # the same occurrence, late
        not_ready(1.4, SourceName.FLAGGER_WEBHOOK),  # the webhook again: Flagger said it again
    ]
    out = run(events)
    assert [e.transition for e in out].count(Transition.NOT_READY) == 2
    # Without the webhook's second report the late Events sighting adds nothing at all.
    assert [e.transition for e in run(events[:5])].count(Transition.NOT_READY) == 1


def test_a_late_initialized_after_the_next_revision_is_the_same_initialization() -> None:
    """Real Flagger 1.37: the status said Initialized, the webhook said "New revision
    detected!", and only then did the Events watch deliver "Initialization done!"."""
    out = run(
        [
            ev(Transition.INITIALIZED, 0, source=SourceName.CANARIES),
            ev(Transition.REVISION_DETECTED, 1, source=SourceName.FLAGGER_WEBHOOK),
            ev(Transition.INITIALIZED, 1.1),
            ev(Transition.ANALYSIS_STARTED, 2),
        ]
    )
    assert [e.transition for e in out].count(Transition.INITIALIZED) == 1


def test_occurrences_are_remembered_as_long_as_the_api_server_keeps_events() -> None:
    """Issue 12 item 6: a busy canary's 200 Event occurrences, a restart, and the relist
    re-delivering all of them: none is new (it was 64 remembered, the rest re-announced)."""
    correlator = Correlator()

    def occurrence(i: int, minute: float) -> CanaryEvent:
        return ev(Transition.NOT_READY, minute, hints={"occurrence": f"uid-{i}/1"})

    for i in range(200):
        correlator(occurrence(i, i * 0.1), T0 + timedelta(minutes=i * 0.1))
    restored = Correlator.restore(correlator.snapshot())
    again = [restored(occurrence(i, 30), T0 + timedelta(minutes=30)) for i in range(200)]
    assert all(r.new is None and r.duplicate_of is None for r in again)
    # Past the API server's lifetime of an Event, the memory lets go.
    later = T0 + timedelta(hours=30)
    restored(ev(Transition.NOT_READY, 0, hints={"occurrence": "uid-new/1"}), later)
    assert len(restored._canaries[PODINFO].occurrences) == 1
