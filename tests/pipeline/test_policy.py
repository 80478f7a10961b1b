"""Notification policy end to end through replay: grouping timers, repeats, resolutions,
flush-time inhibition, shipped default inhibit rules."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from canarywatch.config import parse_config
from canarywatch.formats import recording
from canarywatch.labels.matchers import Matcher, MatchOp
from canarywatch.model import Notification, NotificationStatus, Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.pipeline.inhibit import Inhibitor, InhibitRule
from canarywatch.pipeline.replay import replay
from canarywatch.testing import make_event

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


def run(policy_yaml: str, name: str = "rollback", *, then_s: float = 0) -> list[Notification]:
    """Replay a recording; with ``then_s``, virtual time goes on that long after it."""
    config = parse_config(policy_yaml)
    observations = recording.read(RECORDINGS / f"{name}.jsonl")
    if then_s:
        last = observations[-1]
        later = Observation(
            at=last.at + timedelta(seconds=then_s),
            source=SourceName.KUBERNETES_EVENTS,
            data={"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "1"}}},
        )
        observations = [*observations, later]
    return list(replay(observations, policy.build_pipeline(config)))


def test_group_wait_batches_a_canary_and_the_verdict_mutes_its_pending_steps() -> None:
    out = run(
        """
receivers: [{name: team, sink: jsonl}]
route: {receiver: team, group_wait: 10m, group_interval: 10m}
"""
    )
    (first,) = out  # replay follows waiting groups past the end, not repeats
    # Everything waited together; at flush the rollback (firing) mutes its rollout's steps.
    assert [e.transition.value for e in first.events] == [
        "revision-detected",
        "analysis-started",
        "rolled-back",
    ]
    assert first.created_at == first.events[0].observed_at + timedelta(minutes=10)
    assert first.group_labels == {"cluster": "default", "namespace": "test", "canary": "podinfo"}


def test_inhibit_rules_empty_list_turns_the_shipped_defaults_off() -> None:
    out = run(
        """
receivers: [{name: team, sink: jsonl}]
route: {receiver: team, group_wait: 10m}
inhibit_rules: []
"""
    )
    assert [e.transition.value for n in out for e in n.events] == [
        "revision-detected",
        "analysis-started",
        "weight-advanced",
        "weight-advanced",
        "halted",
        "rolled-back",
    ]


def test_firing_conditions_repeat_and_resolutions_reach_send_resolved_receivers() -> None:
    out = run(
        """
receivers:
  - {name: oncall, sink: jsonl, send_resolved: true}
  - {name: quiet, sink: jsonl}
route:
  receiver: quiet
  group_by: ["..."]
  repeat_interval: 1h
  routes:
    - {receiver: oncall, matchers: ['severity=~"warning|critical"'], continue: true}
""",
        then_s=3 * 3600,
    )
    oncall = [n for n in out if n.receiver == "oncall"]
    resolved = [n for n in oncall if n.status is NotificationStatus.RESOLVED]
    # The halt's analysis condition closes when the rollback ends the rollout.
    assert [e.transition.value for n in resolved for e in n.events] == ["halted"]
    repeats = [n for n in oncall if n.repeat]
    assert repeats, "a still-firing rollback is re-sent every repeat_interval"
    assert {e.transition.value for n in repeats for e in n.events} == {"rolled-back"}
    first_repeat = repeats[0]
    rolled_back = next(
        n for n in oncall if not n.repeat and n.events[0].transition.value == "rolled-back"
    )
    assert first_repeat.created_at - rolled_back.created_at == timedelta(hours=1)
    # The receiver without send_resolved gets no resolution and no repeat of what it had.
    quiet = [n for n in out if n.receiver == "quiet"]
    assert all(n.status is NotificationStatus.FIRING for n in quiet)


def test_the_documented_policy_example_replays_as_documented() -> None:
    config = parse_config(
        (Path(__file__).resolve().parents[2] / "config" / "policy.example.yaml").read_text()
    )
    out = list(replay(recording.read(RECORDINGS / "day.jsonl"), policy.build_pipeline(config)))
    by_receiver: dict[str, list[str]] = {}
    for n in out:
        by_receiver.setdefault(n.receiver, []).extend(
            f"{e.canary}:{e.transition.value}" for e in n.events
        )
    # Rollbacks page on-call, firing and then resolved when a later rollout is promoted.
    assert by_receiver["on-call"].count("test/podinfo:rolled-back") >= 1
    assert "shop/checkout:rolled-back" in by_receiver["on-call"]
    # Payments (namespaces shop, payments) hears about checkout; nobody else's canaries.
    assert "shop/checkout:no-traffic" in by_receiver["team-payments"]
    assert all(item.startswith("shop/") for item in by_receiver["team-payments"])
    # Everything not routed to a team lands on the catch-all.
    assert "test/frontend:promoted" in by_receiver["catch-all"]


LABEL = st.sampled_from(["transition", "severity", "namespace", "canary", "rollout"])
VALUE = st.sampled_from(["a", "b", "rolled-back", "halted", ""])


@st.composite
def rules(draw: st.DrawFn) -> InhibitRule:
    def matchers() -> tuple[Matcher, ...]:
        return tuple(
            Matcher(draw(LABEL), draw(st.sampled_from(list(MatchOp))), draw(VALUE))
            for _ in range(draw(st.integers(1, 2)))
        )

    return InhibitRule(matchers(), matchers(), tuple(draw(st.lists(LABEL, max_size=2))))


@given(
    rule_list=st.lists(rules(), max_size=3),
    target=st.dictionaries(LABEL, VALUE),
    sources=st.lists(st.dictionaries(LABEL, VALUE), max_size=3),
)
def test_inhibition_never_mutes_an_event_no_rule_matches(
    rule_list: list[InhibitRule], target: dict[str, str], sources: list[dict[str, str]]
) -> None:
    target_event = make_event(labels=target)
    firing = [make_event(labels=s) for s in sources]
    muted = Inhibitor(rule_list).mutes(target_event, firing)
    could = any(
        all(m.matches(target) for m in rule.target_matchers)
        and any(
            all(m.matches(s) for m in rule.source_matchers)
            and all(s.get(k, "") == target.get(k, "") for k in rule.equal)
            for s in sources
        )
        for rule in rule_list
    )
    if muted:
        assert could
