"""The pipeline records each decision in its trail: deduplicated, inhibited, silenced, muted,
dropped at flush, routed and grouped (``canarywatch.views.explain``, README "Why (not)
notified")."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

import pytest
import structlog

from canarywatch.config import parse_config
from canarywatch.identity import fingerprint
from canarywatch.model import CanaryEvent, SourceName, Transition
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.silence import Silencer, config_silence_id
from canarywatch.testing import T0, make_event
from canarywatch.views.explain import DecisionRecorder, Trail

EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def pipeline(config_text: str = "") -> tuple[Pipeline, DecisionRecorder]:
    config = parse_config(config_text) if config_text else None
    recorder = DecisionRecorder()
    silencer = Silencer(None, config.silences) if config is not None else None
    return policy.build_pipeline(config, silencer=silencer, explain=recorder), recorder


def offer(p: Pipeline, transition: Transition, minutes: float, **fields: object) -> CanaryEvent:
    when = T0 + timedelta(minutes=minutes)
    candidate = make_event(transition, at=when, **fields)  # type: ignore[arg-type]
    event = p.offer_event(candidate, when)
    assert event is not None
    return event


def only(recorder: DecisionRecorder, transition: str) -> Trail:
    [trail] = recorder.trails("test", "podinfo", transition=transition)
    return trail


def test_a_sighting_by_a_second_source_is_deduplicated_against_the_first() -> None:
    p, recorder = pipeline()
    offer(p, Transition.REVISION_DETECTED, 0)
    first = offer(p, Transition.WEIGHT_ADVANCED, 1, detail="10")
    later = T0 + timedelta(minutes=1, seconds=3)
    again = make_event(Transition.WEIGHT_ADVANCED, detail="10", at=later, sources=(CANARIES,))
    assert p.offer_event(again, later) is None  # the correlator: a repeat

    trail = only(recorder, "weight-advanced")
    data = trail.to_json()
    assert data["id"] == fingerprint(first)
    assert [s["source"] for s in data["sightings"]] == ["kubernetes-events", "canaries"]
    steps = {s["stage"]: s for s in data["steps"]}
    assert steps["duplicate"]["duplicate_of"] == {
        "id": fingerprint(first),
        "source": "kubernetes-events",
        "at": "2025-01-02T14:09:02Z",
    }
    assert steps["duplicate"]["at"] == "2025-01-02T14:09:05Z"
    assert (
        "first sighting (by kubernetes-events at 2025-01-02T14:09:02Z)"
        in (steps["duplicate"]["text"])
    )
    # Routed and grouped once, to the default receiver, each event its own group.
    assert steps["routed"]["targets"][0]["receiver"] == "default"
    assert data["receivers"] == {"default": "waiting"}
    [n] = [n for n in p.due(later) if n.events[0].transition is Transition.WEIGHT_ADVANCED]
    assert {s.stage.value for s in trail.steps} >= {"notified"}
    assert trail.receivers == {"default": "notified"}
    assert steps["routed"]["targets"][0]["group_key"] == n.group_key


INHIBIT = """
receivers: [{name: oncall, sink: console}]
route: {receiver: oncall}
inhibit_rules:
  - source_matchers: ['transition="metrics-source-down"']
    target_matchers: ['transition="no-traffic"']
    equal: [cluster]
  - source_matchers: ['transition="awaiting-approval"']
    target_matchers: ['transition="halted"']
    equal: [namespace, canary]
"""


def test_an_inhibited_transition_names_the_rule_and_the_source_event() -> None:
    p, recorder = pipeline(INHIBIT)
    offer(p, Transition.REVISION_DETECTED, 0)
    offer(p, Transition.ANALYSIS_STARTED, 1)
    gate = offer(p, Transition.AWAITING_APPROVAL, 2, detail="promotion")
    halted = offer(p, Transition.HALTED, 3, reason="request-success-rate")

    trail = only(recorder, "halted")
    assert trail.id == fingerprint(halted)
    assert trail.suppressed == "inhibited"
    step = trail.to_json()["steps"][-1]
    assert step["stage"] == "inhibited"
    assert step["rule"] == 1  # the index in inhibit_rules
    assert step["source_matchers"] == ['transition="awaiting-approval"']
    assert step["target_matchers"] == ['transition="halted"']
    assert step["equal"] == ["namespace", "canary"]
    assert step["source_event"]["id"] == fingerprint(gate)
    assert step["source_event"]["transition"] == "awaiting-approval"
    assert "inhibit rule #1" in step["text"]
    assert recorder.suppression(halted) == ("inhibited", step["text"])
    assert p.stats.suppressed == {"inhibited": 1}


def test_a_verdict_inhibits_steps_still_waiting_in_their_group_at_the_flush() -> None:
    p, recorder = pipeline(
        """
receivers: [{name: oncall, sink: console}]
route: {receiver: oncall, group_wait: 1m}
"""
    )
    offer(p, Transition.REVISION_DETECTED, 0)
    offer(p, Transition.WEIGHT_ADVANCED, 0.1, detail="10")
    verdict = offer(p, Transition.ROLLED_BACK, 0.2)
    sent = p.due(T0 + timedelta(minutes=2))
    assert [e.transition for n in sent for e in n.events] == [
        Transition.REVISION_DETECTED,
        Transition.ROLLED_BACK,
    ]
    trail = only(recorder, "weight-advanced")
    assert trail.suppressed == "inhibited"
    assert trail.receivers == {"oncall": "inhibited"}
    step = trail.to_json()["steps"][-1]
    assert (step["stage"], step["receiver"], step["rule"]) == ("inhibited", "oncall", 0)
    assert step["source_event"]["id"] == fingerprint(verdict)
    assert step["text"].startswith("at the flush: inhibited by inhibit rule #0")


SILENCE = f"""
receivers: [{{name: oncall, sink: console}}]
route: {{receiver: oncall}}
silences:
  - matchers: ['canary="podinfo"', 'transition="halted"']
    starts_at: "{(T0 - timedelta(hours=1)).isoformat()}"
    ends_at: "{(T0 + timedelta(hours=1)).isoformat()}"
    created_by: alice
    comment: load test
"""


def test_a_silenced_transition_names_the_silence() -> None:
    p, recorder = pipeline(SILENCE)
    config = parse_config(SILENCE)
    offer(p, Transition.REVISION_DETECTED, 0)
    halted = offer(p, Transition.HALTED, 1)

    trail = only(recorder, "halted")
    assert trail.suppressed == "silenced"
    step = trail.to_json()["steps"][-1]
    assert step["silence_id"] == config_silence_id(config.silences[0])
    assert step["matchers"] == ['canary="podinfo"', 'transition="halted"']
    assert step["origin"] == "config"
    assert "by alice" in step["text"]
    assert "'load test'" in step["text"]
    assert recorder.suppression(halted) is not None
    assert only(recorder, "revision-detected").suppressed == ""


MUTED = """
time_intervals:
  - name: afternoons
    time_intervals: [{times: [{start_time: "12:00", end_time: "18:00"}]}]
receivers: [{name: oncall, sink: console}, {name: audit, sink: console}]
route:
  receiver: audit
  routes:
    - matchers: ['severity="warning"']
      receiver: oncall
      mute_time_intervals: [afternoons]
    - matchers: ['severity="critical"']
      receiver: oncall
      mute_time_intervals: [afternoons]
      continue: true
    - matchers: ['severity="critical"']
      receiver: audit
"""


def test_a_muted_transition_names_the_time_interval_and_a_partly_muted_one_too() -> None:
    p, recorder = pipeline(MUTED)
    offer(p, Transition.REVISION_DETECTED, 0)  # info: audit (root), not muted
    offer(p, Transition.HALTED, 1)  # warning: oncall only, muted at 14:08 UTC
    offer(p, Transition.ROLLED_BACK, 2)  # critical: oncall muted, audit not

    halted = only(recorder, "halted")
    assert halted.suppressed == "muted"
    step = halted.to_json()["steps"][-1]
    assert step["muted"] == [{"receiver": "oncall", "by": ["in mute_time_intervals afternoons"]}]
    assert p.stats.suppressed == {"muted": 1}

    verdict = only(recorder, "rolled-back")
    assert verdict.suppressed == ""
    routed = next(s for s in verdict.to_json()["steps"] if s["stage"] == "routed")
    assert [t["receiver"] for t in routed["targets"]] == ["audit"]
    assert routed["muted"] == [{"receiver": "oncall", "by": ["in mute_time_intervals afternoons"]}]


def test_a_late_step_of_an_ended_rollout_is_not_news_and_says_so() -> None:
    p, recorder = pipeline()
    offer(p, Transition.REVISION_DETECTED, 0)
    offer(p, Transition.ROLLED_BACK, 1)
    late = make_event(Transition.WEIGHT_ADVANCED, detail="20", at=T0 + timedelta(minutes=2))
    assert p.offer_event(replace(late, sources=(CANARIES,)), late.observed_at) is None
    [trail] = [t for t in recorder.trails("test", "podinfo") if t.kind.value == "not-news"]
    text = trail.to_json()["steps"][0]["text"]
    assert "a step of rollout 1, which had already ended" in text


def test_start_up_state_is_recorded_as_such() -> None:
    config = parse_config("catch_up_window: 10m\n")
    recorder = DecisionRecorder()
    p = policy.build_pipeline(config, catch_up=True, explain=recorder)
    old = make_event(Transition.PROMOTED, at=T0, occurred_at=T0 - timedelta(hours=1))
    p.offer_event(old, T0, stale_before=T0 - timedelta(minutes=10))
    trail = only(recorder, "promoted")
    assert trail.suppressed == "catch_up"
    assert "before the catch-up window" in trail.suppressed_text


def test_without_a_recorder_nothing_changes() -> None:
    with_trails, _ = pipeline(INHIBIT)
    without = policy.build_pipeline(parse_config(INHIBIT))
    for p in (with_trails, without):
        offer(p, Transition.REVISION_DETECTED, 0)
        offer(p, Transition.AWAITING_APPROVAL, 1, detail="promotion")
        offer(p, Transition.HALTED, 2)
    assert with_trails.stats == without.stats
