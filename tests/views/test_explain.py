"""The decision recorder on its own: what a trail holds, and how far it is bounded."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from canarywatch.identity import fingerprint
from canarywatch.model import (
    CanaryEvent,
    DeliveryOutcome,
    DeliveryReason,
    NotificationStatus,
    SourceName,
    Transition,
)
from canarywatch.testing import T0, make_event, make_notification
from canarywatch.views.explain import (
    DecisionRecorder,
    InhibitedBy,
    SilencedBy,
    Target,
    explanation,
    render_explanation,
    transition_filter,
)

EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES


def event(transition: Transition = Transition.HALTED, **fields: Any) -> CanaryEvent:
    """A transition as the correlator hands it on: in rollout 1, episode 1."""
    return make_event(transition, rollout="1", episode=1, **fields)


def test_a_delivered_transition_says_who_saw_it_where_it_went_and_when_it_arrived() -> None:
    rec = DecisionRecorder()
    ev = event(occurred_at=T0 - timedelta(seconds=1))
    rec.seen(ev, T0)
    rec.duplicate(replace(ev, sources=(CANARIES,), observed_at=T0 + timedelta(seconds=1)), ev, T0)
    rec.routed(ev, T0, [Target("team-payments", "firing/{x}:team-payments", 30.0)])
    n = make_notification(ev, receiver="team-payments", created_at=T0 + timedelta(seconds=30))
    rec.notified(n, n.created_at)
    rec.delivered(n, DeliveryOutcome("team-payments", "slack", True, 2, 1.5), n.created_at)

    [trail] = rec.trails("test", "podinfo")
    data = trail.to_json()
    assert data["id"] == fingerprint(ev)
    assert (data["transition"], data["rollout"], data["episode"]) == ("halted", "1", 1)
    assert data["sightings"] == [
        {
            "source": "kubernetes-events",
            "first_at": "2025-01-02T14:08:02Z",
            "last_at": "2025-01-02T14:08:02Z",
            "count": 1,
        },
        {
            "source": "canaries",
            "first_at": "2025-01-02T14:08:03Z",
            "last_at": "2025-01-02T14:08:03Z",
            "count": 1,
        },
    ]
    assert [s["stage"] for s in data["steps"]] == [
        "seen",
        "duplicate",
        "routed",
        "notified",
        "delivered",
    ]
    duplicate = data["steps"][1]
    assert duplicate["duplicate_of"] == {
        "id": fingerprint(ev),
        "source": "kubernetes-events",
        "at": "2025-01-02T14:08:02Z",
    }
    assert data["receivers"] == {"team-payments": "delivered"}
    assert data["outcome"] == "delivered to team-payments"
    assert data["suppressed"] is None
    assert "after 2 attempts, 1.50s" in data["steps"][-1]["text"]
    assert rec.suppression(ev) is None


def test_a_repeated_sighting_by_the_same_source_is_counted_not_a_new_step() -> None:
    rec = DecisionRecorder()
    ev = event()
    rec.seen(ev, T0)
    for minute in range(1, 4):
        rec.duplicate(replace(ev, observed_at=T0 + timedelta(minutes=minute)), ev, T0)
    [trail] = rec.trails("test", "podinfo")
    assert [s.stage.value for s in trail.steps] == ["seen"]
    assert trail.to_json()["sightings"][0]["count"] == 4
    assert trail.to_json()["sightings"][0]["last_at"] == "2025-01-02T14:11:02Z"


def test_inhibited_names_the_rule_its_matchers_and_the_source_event() -> None:
    rec = DecisionRecorder()
    verdict = event(Transition.ROLLED_BACK)
    target = event(Transition.HALTED)
    by = InhibitedBy(
        rule=2,
        source_matchers=('transition="rolled-back"',),
        target_matchers=('transition=~"halted|no-traffic"',),
        equal=("namespace", "canary"),
        source=verdict,
    )
    rec.seen(target, T0)
    rec.inhibited(target, T0, by)
    [trail] = rec.trails("test", "podinfo", transition="halted")
    step = trail.to_json()["steps"][-1]
    assert step["stage"] == "inhibited"
    assert step["rule"] == 2
    assert step["source_matchers"] == ['transition="rolled-back"']
    assert step["target_matchers"] == ['transition=~"halted|no-traffic"']
    assert step["equal"] == ["namespace", "canary"]
    assert step["source_event"]["id"] == fingerprint(verdict)
    assert step["source_event"]["transition"] == "rolled-back"
    assert "inhibit rule #2" in step["text"]
    assert rec.suppression(target) == ("inhibited", step["text"])
    assert trail.outcome() == "suppressed (inhibited): nothing sent"


def test_silenced_names_the_silence() -> None:
    rec = DecisionRecorder()
    ev = event()
    rec.seen(ev, T0)
    rec.silenced(
        ev,
        T0,
        SilencedBy(
            id="config-0123456789abcdef",
            matchers=('namespace="test"',),
            ends_at=T0 + timedelta(hours=2),
            created_by="alice",
            comment="load test",
        ),
    )
    [trail] = rec.trails("test", "podinfo")
    step = trail.to_json()["steps"][-1]
    assert (step["stage"], step["silence_id"]) == ("silenced", "config-0123456789abcdef")
    assert "until 2025-01-02T16:08:02Z" in step["text"]
    reason, _ = rec.suppression(ev) or ("", "")
    assert reason == "silenced"


def test_muted_names_each_receiver_and_its_time_interval() -> None:
    rec = DecisionRecorder()
    ev = event()
    rec.seen(ev, T0)
    rec.muted(ev, T0, [Target("oncall", muted_by=("in mute_time_intervals nights",))])
    [trail] = rec.trails("test", "podinfo")
    assert trail.suppressed == "muted"
    assert "oncall (in mute_time_intervals nights)" in trail.suppressed_text


def test_dropped_at_flush_for_every_receiver_is_suppressed_for_one_it_is_not() -> None:
    rec = DecisionRecorder()
    ev = event(Transition.WEIGHT_ADVANCED)
    by = InhibitedBy(0, (), (), (), event(Transition.ROLLED_BACK))
    rec.seen(ev, T0)
    rec.routed(ev, T0, [Target("a"), Target("b")])
    rec.inhibited(ev, T0, by, receiver="a")
    assert rec.suppression(ev) is None  # b may still get it
    rec.superseded(ev, T0, "b", "2")
    assert rec.suppression(ev) is not None
    trail = rec.trail_of(ev)
    assert trail is not None
    assert trail.receivers == {"a": "inhibited", "b": "superseded"}


def test_dead_lettered_says_why_and_names_the_outbox_item() -> None:
    rec = DecisionRecorder()
    ev = event()
    rec.seen(ev, T0)
    n = make_notification(ev, receiver="hooks")
    outcome = DeliveryOutcome(
        "hooks",
        "webhook",
        False,
        1,
        0.2,
        DeliveryReason.HTTP_4XX,
        "the destination refused it (HTTP 404, not retryable)",
    )
    rec.dead_lettered(n, outcome, T0, outbox_id=7)
    [trail] = rec.trails("test", "podinfo")
    step = trail.to_json()["steps"][-1]
    assert (step["stage"], step["reason"], step["outbox_id"]) == ("dead-lettered", "http_4xx", 7)
    assert "HTTP 404" in step["text"]
    assert trail.outcome() == "dead-lettered for hooks"


def test_a_resolution_and_a_repeat_are_steps_of_the_openers_trail() -> None:
    rec = DecisionRecorder()
    opener = event(Transition.ROLLED_BACK)
    rec.seen(opener, T0)
    rec.routed(opener, T0, [Target("oncall")])
    sent = make_notification(opener, receiver="oncall")
    rec.notified(sent, T0)
    later = T0 + timedelta(hours=4)
    repeat = replace(sent, repeat=True, created_at=later)
    rec.notified(repeat, later)
    promoted = make_event(Transition.PROMOTED, rollout="2", at=later)
    rec.resolved(opener, promoted, later)
    rec.routed(opener, later, [], status=NotificationStatus.RESOLVED)
    stages = [s.stage.value for s in rec.trails("test", "podinfo")[0].steps]
    assert stages == ["seen", "routed", "notified", "repeated", "resolved", "routed"]
    assert "send_resolved" in rec.trails("test", "podinfo")[0].steps[-1].text


def test_not_news_sightings_are_one_trail_per_transition_and_do_not_crowd_out_others() -> None:
    rec = DecisionRecorder(per_canary=3)
    kept = event(Transition.ROLLED_BACK)
    rec.seen(kept, T0)
    for minute in range(10):
        late = make_event(
            Transition.WEIGHT_ADVANCED, detail="10", at=T0 + timedelta(minutes=minute)
        )
        rec.duplicate(late, None, T0, not_news="a step of rollout 1, which had already ended")
    trails = rec.trails("test", "podinfo")
    assert [t.kind.value for t in trails] == ["transition", "not-news"]
    not_news = trails[1].to_json()
    assert not_news["sightings"][0]["count"] == 10
    assert "which had already ended" in not_news["steps"][0]["text"]
    assert not_news["outcome"] == "not news: nothing sent for it"


def test_bounded_per_canary_oldest_first() -> None:
    rec = DecisionRecorder(per_canary=3)
    for weight in range(5):
        rec.seen(make_event(Transition.WEIGHT_ADVANCED, detail=str(weight), rollout="1"), T0)
    rec.seen(make_event(Transition.PROMOTED, canary="test/other"), T0)
    assert [t.event.detail for t in rec.trails("test", "podinfo")] == ["2", "3", "4"]
    assert len(rec.trails("test", "other")) == 1  # another canary keeps its own


def test_bounded_in_all_whatever_the_number_of_canaries() -> None:
    rec = DecisionRecorder(max_trails=3)
    for number in range(5):
        rec.seen(make_event(Transition.PROMOTED, canary=f"test/app{number}", rollout="1"), T0)
    assert [str(ref) for ref in rec.canaries()] == ["test/app2", "test/app3", "test/app4"]
    assert rec.trails("test", "app0") == []


def test_bounded_by_age_of_the_last_step() -> None:
    rec = DecisionRecorder(max_age_s=3600)
    old, busy = event(Transition.PROMOTED), event(Transition.ROLLED_BACK)
    rec.seen(old, T0)
    rec.seen(busy, T0)
    rec.notified(make_notification(busy), T0 + timedelta(minutes=50))  # a later step
    now = T0 + timedelta(minutes=70)
    assert [t.event.transition for t in rec.trails("test", "podinfo", now=now)] == [
        Transition.ROLLED_BACK
    ]
    assert rec.trails("test", "podinfo", now=T0 + timedelta(hours=3)) == []
    assert rec.canaries() == []  # a canary with nothing left is forgotten


def test_bounded_steps_keep_the_first_sighting() -> None:
    rec = DecisionRecorder(max_steps=4)
    ev = event(Transition.ROLLED_BACK)
    rec.seen(ev, T0)
    n = make_notification(ev, receiver="oncall")
    for hour in range(1, 7):
        at = T0 + timedelta(hours=hour)
        rec.notified(replace(n, repeat=True, created_at=at), at)
    [trail] = rec.trails("test", "podinfo")
    assert len(trail.steps) == 4
    assert trail.steps[0].stage.value == "seen"
    assert trail.steps_dropped == 3
    assert "3 older step(s) not kept" in render_explanation(explanation(rec, "test", "podinfo"))


def test_the_answer_filters_by_transition_or_id_and_renders_as_text() -> None:
    rec = DecisionRecorder()
    halted, verdict = event(Transition.HALTED), event(Transition.ROLLED_BACK)
    rec.seen(halted, T0)
    rec.seen(verdict, T0 + timedelta(minutes=1))
    assert [t["transition"] for t in explanation(rec, "test", "podinfo")["trails"]] == [
        "halted",
        "rolled-back",
    ]
    by_id = explanation(rec, "test", "podinfo", transition=fingerprint(verdict)[:6])
    assert [t["transition"] for t in by_id["trails"]] == ["rolled-back"]
    text = render_explanation(explanation(rec, "test", "podinfo", transition="halted"))
    assert text.startswith(
        "test/podinfo: 1 transition 'halted' (kept: the last 50 per canary, for 1d)"
    )
    assert f"halted  (rollout 1, episode 1, id {fingerprint(halted)})" in text
    assert "  => no decision recorded after it was seen" in text
    nothing = render_explanation(explanation(rec, "shop", "checkout"))
    assert nothing == (
        "shop/checkout: no transition recorded (canarywatch keeps the last 50 per canary, for 1d)\n"
    )


def test_no_secret_only_names() -> None:
    """Receivers by name, sinks by plugin name: nothing from a sink's options is taken."""
    rec = DecisionRecorder()
    ev = event()
    rec.seen(ev, T0)
    n = make_notification(ev, receiver="oncall")
    rec.delivered(n, DeliveryOutcome("oncall", "slack", True, 1, 0.1), T0)
    text = str(explanation(rec, "test", "podinfo"))
    assert "oncall" in text
    assert "hooks.slack.com" not in text


def test_transition_filter() -> None:
    assert transition_filter(None) is None
    assert transition_filter("rolled-back") == "rolled-back"
    assert transition_filter("a7fdcd67") == "a7fdcd67"
    with pytest.raises(ValueError, match="neither a transition"):
        transition_filter("rolledback")
    with pytest.raises(ValueError, match="neither a transition"):
        transition_filter("abc")  # too short to be an id
