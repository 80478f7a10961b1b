"""Inhibition as in Alertmanager (README "Notification policy", project issue 16 items 4-7).

The sources of a rule are every firing event, of every canary and self-event pseudo-canary
(``equal`` alone limits the reach); an event matching both sides never mutes another that also
matches both; one-shot transitions never fire, so never inhibit. Where the claim is about
Alertmanager's semantics, the same firing label sets are posted to a running Alertmanager with
the same rules and its ``status.inhibitedBy`` decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs
from tests.support.alertmanager import run_alertmanager

from canarywatch.config import parse_config
from canarywatch.errors import ConfigError
from canarywatch.labels.matchers import parse_matchers
from canarywatch.model import CanaryEvent, SourceName, Transition
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.inhibit import Inhibitor, InhibitRule
from canarywatch.testing import T0, make_event

LabelSet = tuple[tuple[str, str], ...]


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@dataclass(frozen=True)
class Rule:
    source: tuple[str, ...]
    target: tuple[str, ...]
    equal: tuple[str, ...]

    def as_config(self) -> dict[str, Any]:
        return {
            "source_matchers": list(self.source),
            "target_matchers": list(self.target),
            "equal": list(self.equal),
        }


@dataclass(frozen=True)
class Case:
    rules: tuple[Rule, ...]
    events: tuple[CanaryEvent, ...]
    inhibited: frozenset[tuple[str, str]]
    """``(canary "ns/name", transition)`` expected muted; every other event is notified."""


def ev(transition: Transition, canary: str, cluster: str = "prod", **fields: Any) -> CanaryEvent:
    if transition is Transition.AWAITING_APPROVAL:
        fields.setdefault("detail", "rollout")
    if transition is Transition.METRICS_SOURCE_DOWN:
        fields.setdefault("sources", (SourceName.SELF,))
    return make_event(transition, canary=canary, cluster=cluster, **fields)


ROLLED_BACK_MUTES_NAMESPACE = Rule(
    ('transition="rolled-back"',), ('severity="warning"',), ("namespace",)
)
CASES = {
    # Item 4: another canary's rollback mutes a warning through `equal: [namespace]`.
    "other-canary-same-namespace": Case(
        (ROLLED_BACK_MUTES_NAMESPACE,),
        (ev(Transition.ROLLED_BACK, "shop/a"), ev(Transition.NO_TRAFFIC, "shop/b")),
        frozenset({("shop/b", "no-traffic")}),
    ),
    # Item 4: `equal: [cluster]` reaches every namespace of the cluster, and no further.
    "other-canary-same-cluster": Case(
        (Rule(('transition="rolled-back"',), ('severity="warning"',), ("cluster",)),),
        (
            ev(Transition.ROLLED_BACK, "shop/a"),
            ev(Transition.NO_TRAFFIC, "pay/b"),
            ev(Transition.NO_TRAFFIC, "pay/c", cluster="staging"),
        ),
        frozenset({("pay/b", "no-traffic")}),
    ),
    # Item 4: config/policy.example.yaml's own rule: a self-event (its own pseudo-canary)
    # mutes the analysis warnings of the canaries of its cluster.
    "self-event-source": Case(
        (
            Rule(
                ('transition="metrics-source-down"',),
                ('transition=~"no-traffic|halted"',),
                ("cluster",),
            ),
        ),
        (
            ev(Transition.METRICS_SOURCE_DOWN, "canarywatch/flagger"),
            ev(Transition.NO_TRAFFIC, "shop/a"),
            ev(Transition.HALTED, "pay/b"),
            ev(Transition.HALTED, "pay/c", cluster="staging"),
        ),
        frozenset({("shop/a", "no-traffic"), ("pay/b", "halted")}),
    ),
    # Item 5: both match both sides: neither mutes the other.
    "two-sided-matches-mute-nothing": Case(
        (
            Rule(
                ('severity="warning"',), ('severity="warning"',), ("cluster", "namespace", "canary")
            ),
        ),
        (ev(Transition.AWAITING_APPROVAL, "shop/a"), ev(Transition.NO_TRAFFIC, "shop/a")),
        frozenset(),
    ),
    # Item 5: a target matching both sides is still muted by a source matching one side only.
    "two-sided-target-one-sided-source": Case(
        (Rule(('severity=~"warning|critical"',), ('severity="warning"',), ("namespace",)),),
        (
            ev(Transition.ROLLED_BACK, "shop/a"),
            ev(Transition.AWAITING_APPROVAL, "shop/b"),
            ev(Transition.NO_TRAFFIC, "shop/b"),
            ev(Transition.NO_TRAFFIC, "pay/c"),
        ),
        frozenset({("shop/b", "awaiting-approval"), ("shop/b", "no-traffic")}),
    ),
}


def pipeline_for(rules: Sequence[Rule], *, group_wait: str = "1s") -> Pipeline:
    config = {
        "receivers": [{"name": "capture", "sink": "jsonl"}],
        "route": {"receiver": "capture", "group_by": ["..."], "group_wait": group_wait},
        "inhibit_rules": [rule.as_config() for rule in rules],
    }
    return policy.build_pipeline(parse_config(json.dumps(config), filename="c.yaml"))


def run_canarywatch(case: Case) -> tuple[dict[LabelSet, bool], Pipeline]:
    """Offer every event, flush after ``group_wait``: label set -> muted, for every firing event."""
    pipeline = pipeline_for(case.rules)
    offered = [pipeline.offer_event(event, T0) for event in case.events]
    sent = {label_set(e) for n in pipeline.due(T0 + timedelta(seconds=2)) for e in n.events}
    firing = [e for c in pipeline.correlator.canaries() for e in pipeline.correlator.firing(c)]
    assert {label_set(e) for e in firing} == {label_set(e) for e in offered if e is not None}
    return {label_set(e): label_set(e) not in sent for e in firing}, pipeline


def label_set(event: CanaryEvent) -> LabelSet:
    """What Alertmanager stores: a label with an empty value is no label."""
    return tuple(sorted((k, v) for k, v in event.labels.items() if v))


def muted_names(result: dict[LabelSet, bool]) -> frozenset[tuple[str, str]]:
    return frozenset(
        (f"{dict(ls)['namespace']}/{dict(ls)['canary']}", dict(ls)["transition"])
        for ls, muted in result.items()
        if muted
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_inhibition(name: str) -> None:
    case = CASES[name]
    result, pipeline = run_canarywatch(case)
    assert muted_names(result) == case.inhibited
    assert pipeline.stats.suppressed.get("inhibited", 0) == len(case.inhibited)


async def alertmanager_inhibited(
    tmp_path: Path, case: Case, alerts: Sequence[LabelSet]
) -> dict[LabelSet, bool]:
    config = {
        "route": {
            "receiver": "null",
            "group_by": ["..."],
            "group_wait": "100ms",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "null"}],
        "inhibit_rules": [rule.as_config() for rule in case.rules],
    }
    async with (
        run_alertmanager(tmp_path / "am", config=json.dumps(config)) as am,
        aiohttp.ClientSession() as http,
    ):
        body = [{"labels": dict(ls)} for ls in alerts]
        async with http.post(f"{am.url}/api/v2/alerts", json=body) as response:
            assert response.status == 200, await response.text()
        async with asyncio.timeout(15):
            while True:
                found = await am.alerts(http)
                if len(found) == len(alerts) and all(
                    a["status"]["state"] != "unprocessed" for a in found
                ):
                    break
                await asyncio.sleep(0.1)
        # One more group_interval: every group re-evaluated with the whole source cache.
        await asyncio.sleep(1.5)
        found = await am.alerts(http)
    return {tuple(sorted(a["labels"].items())): bool(a["status"]["inhibitedBy"]) for a in found}


@pytest.mark.needs_binaries
@pytest.mark.parametrize("name", sorted(CASES))
async def test_inhibition_agrees_with_real_alertmanager(tmp_path: Path, name: str) -> None:
    """The firing events' label sets, posted with the same rules: the same ones inhibited."""
    case = CASES[name]
    ours, _ = run_canarywatch(case)
    theirs = await alertmanager_inhibited(tmp_path, case, list(ours))
    assert ours == theirs, f"{name}: canarywatch {ours}; Alertmanager {theirs}"


def test_a_rollback_mutes_another_canarys_warning_on_arrival() -> None:
    """No group_wait: the source already firing decides when the target arrives."""
    pipeline = pipeline_for((ROLLED_BACK_MUTES_NAMESPACE,), group_wait="0s")
    pipeline.offer_event(ev(Transition.ROLLED_BACK, "shop/a"), T0)
    pipeline.offer_event(ev(Transition.NO_TRAFFIC, "shop/b"), T0)
    pipeline.offer_event(ev(Transition.NO_TRAFFIC, "pay/c"), T0)
    sent = [(str(e.canary), e.transition) for n in pipeline.due(T0) for e in n.events]
    assert sorted(sent) == [
        ("pay/c", Transition.NO_TRAFFIC),
        ("shop/a", Transition.ROLLED_BACK),
    ]


def test_an_event_matching_both_sides_does_not_mute_itself_or_its_twin() -> None:
    rule = InhibitRule(
        parse_matchers(['severity="warning"']), parse_matchers(['severity="warning"'])
    )
    approval = ev(Transition.AWAITING_APPROVAL, "shop/a").labels
    gate = make_event(Transition.AWAITING_APPROVAL, labels=approval)
    twin = make_event(Transition.NO_TRAFFIC, labels={**approval, "transition": "no-traffic"})
    inhibitor = Inhibitor([rule])
    assert not inhibitor.mutes(gate, [gate, twin])
    assert not inhibitor.mutes(twin, [gate, twin])


def test_one_shot_transitions_never_inhibit() -> None:
    """Item 6: only condition openers fire; a one-shot in ``firing`` is no source."""
    rule = InhibitRule(
        parse_matchers(['transition="promoted"']), parse_matchers(['severity="warning"'])
    )
    promoted = make_event(Transition.PROMOTED)
    warning = make_event(Transition.LOW_TRAFFIC_PROMOTION)
    assert not Inhibitor([rule]).mutes(warning, [promoted])


def test_one_shot_source_in_the_pipeline_mutes_nothing() -> None:
    rule = Rule(('transition="weight-advanced"',), ('transition="no-traffic"',), ("canary",))
    pipeline = pipeline_for((rule,), group_wait="0s")
    pipeline.offer_event(ev(Transition.WEIGHT_ADVANCED, "shop/a", detail="10"), T0)
    pipeline.offer_event(ev(Transition.NO_TRAFFIC, "shop/a"), T0)
    sent = [e.transition for n in pipeline.due(T0) for e in n.events]
    assert sent == [Transition.WEIGHT_ADVANCED, Transition.NO_TRAFFIC]


@pytest.mark.parametrize(
    ("source", "never_fires"),
    [
        ('transition="promoted"', True),
        ('transition=~"promoted|weight-advanced"', True),
        ('severity="info", transition!="not-ready"', True),
        ('severity="info"', False),
        ('transition=~"promoted|rolled-back"', False),
        ('severity="warning"', False),
        ('namespace="shop"', False),
    ],
)
def test_a_rule_that_can_never_fire_is_logged(source: str, never_fires: bool) -> None:
    rule = InhibitRule(parse_matchers([source]), parse_matchers(['severity="warning"']))
    assert rule.source_can_fire() is not never_fires
    with capture_logs() as logs:
        Inhibitor([rule])
    warned = [e for e in logs if e["event"] == "inhibit_rule_never_fires"]
    assert len(warned) == int(never_fires)
    if never_fires:
        assert warned[0]["log_level"] == "warning"
        assert warned[0]["source_matchers"] == [str(m) for m in parse_matchers([source])]


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("source_match", "use source_matchers"),
        ("source_match_re", "use source_matchers"),
        ("target_match", "use target_matchers"),
        ("target_match_re", "use target_matchers"),
    ],
)
def test_deprecated_alertmanager_inhibit_keys_are_refused_with_the_replacement(
    key: str, hint: str
) -> None:
    """Item 7: Alertmanager 0.25 still accepts them; copied configs get a clear message."""
    rule = {
        "source_matchers": ['transition="rolled-back"'],
        "target_matchers": ['severity="warning"'],
        key: {"severity": "critical"},
    }
    config = {
        "receivers": [{"name": "capture", "sink": "jsonl"}],
        "route": {"receiver": "capture"},
        "inhibit_rules": [rule],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config), filename="c.yaml")
    text = str(caught.value)
    assert hint in text
    assert key in text
    assert "inhibit_rules" in text


@pytest.mark.parametrize("key", ["match", "match_re"])
def test_deprecated_alertmanager_route_keys_are_refused_with_the_replacement(key: str) -> None:
    config = {
        "receivers": [{"name": "capture", "sink": "jsonl"}],
        "route": {"receiver": "capture", "routes": [{"receiver": "capture", key: {"a": "b"}}]},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config), filename="c.yaml")
    assert "use matchers" in str(caught.value)
