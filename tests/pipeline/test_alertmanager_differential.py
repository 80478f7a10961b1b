"""Inhibition, grouping, silences and time intervals, case by case against the real Alertmanager.

The counterpart of ``tests/cli/test_route_test.py`` (routing against ``amtool config routes test``)
for what needs a running Alertmanager 0.25 (project issue 16). Seeded generators build a few
hundred cases; canarywatch answers through the code its pipeline runs, built from a parsed config
(``Inhibitor.mutes`` over the firing events, ``Router`` + ``Grouper``, ``Silencer.mutes``, the
``Router``'s time-interval muting); Alertmanager through its HTTP API (``status.inhibitedBy``,
``/api/v2/alerts/groups``, ``status.silencedBy``, webhook notifications). Any difference fails
with the case printed.

One Alertmanager serves the whole module: each test loads its config with ``POST /-/reload``.
Every alert carries a ``case`` label and every rule, route and silence of a case is restricted
to that label, so all the cases of a test sit in one config and one batch of alerts. The
inhibitor and the dispatcher read the alert store's subscription in order, so once a sentinel
alert posted last has been taken in by both (``Live.settle``), every case's alerts have been.

Documented differences (README, "differences from Alertmanager") are applied where they are
named: canarywatch's root ``group_by`` default is written into the Alertmanager config,
Alertmanager's groups with the same receiver and labels (one per route) are merged, one-shot
transitions are compared as inhibition targets only, and the config differences are checked as
such (Alertmanager accepts, canarywatch refuses naming the key).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from structlog.testing import capture_logs
from tests.support.alertmanager import RunningAlertmanager, run_alertmanager
from tests.support.amtool import AlertmanagerOracle
from tests.support.http_server import local_server

from canarywatch.config import DEFAULT_GROUP_BY, parse_config
from canarywatch.errors import ConfigError
from canarywatch.labels.matchers import MatchOp, escape_value, format_label_set, parse_matcher
from canarywatch.model import TRANSITIONS, CanaryEvent, Condition, SourceName, Transition
from canarywatch.pipeline import policy
from canarywatch.pipeline.group import Grouper
from canarywatch.pipeline.silence import Silencer
from canarywatch.testing import make_event

Key = tuple[tuple[str, str], ...]
"""An alert as Alertmanager stores it: sorted labels, empty values dropped."""

INHIBIT_CASES = 300
GROUPING_CASES = 150
SILENCE_CASES = 150
INTERVAL_DEFINITIONS = 150
INTERVAL_SAMPLES = 60

CLUSTERS = ("prod", "staging")
NAMESPACES = ("shop", "pay")
NAMES = ("a", "b")
SELF_CANARY = "canarywatch/flagger"
EXTRAS = {"team": ("a", "b", "zoë", 'x"y'), "env": ("live", "dark")}
VALUES: Mapping[str, tuple[str, ...]] = {
    "transition": (
        "rolled-back",
        "promotion-failed",
        "halted",
        "no-traffic",
        "awaiting-approval",
        "not-ready",
        "metrics-source-down",
        "weight-advanced",
        "promoted",
    ),
    "severity": ("info", "warning", "critical"),
    "cluster": CLUSTERS,
    "namespace": (*NAMESPACES, "canarywatch"),
    "canary": ("shop/a", "pay/b", SELF_CANARY),
    **EXTRAS,
}
REGEXES: Mapping[str, tuple[str, ...]] = {
    "transition": (
        "rolled-back|promotion-failed",
        "halted|no-traffic",
        "[a-z]+-[a-z]+",
        "(?i)HALTED|NO-TRAFFIC",
        "metrics-.*|cluster-.*",
        "promot.*",
    ),
    "severity": ("warning|critical", "[[:lower:]]{4,7}", "crit.*"),
    "cluster": ("prod", "prod|staging", "s.*"),
    "namespace": ("shop|pay", r"\w+", "canary.*"),
    "canary": ("shop/.*", r"pay/\pL", ".*/a"),
    "team": ("a|b", "a", "[ab]?", r"\w+", "zo.", 'x"y|a'),
    "env": ("live", "l.*", "dark|live"),
}
ANY_REGEXES = (".*", ".+", "")
EQUAL_NAMES = ("cluster", "namespace", "canary", "team", "env", "severity")
OPENERS = {
    cond: tuple(t for t, spec in TRANSITIONS.items() if spec.opens is cond) for cond in Condition
}
CANARY_CONDITIONS = tuple(c for c in Condition if c is not Condition.SOURCE)
ONE_SHOTS = tuple(t for t, spec in TRANSITIONS.items() if spec.opens is None)
RECEIVERS = tuple(f"r{i}" for i in range(4))
NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
"""Inhibition and grouping do not depend on time; the pipeline still takes a ``now``."""

BASE_CONFIG: Mapping[str, Any] = {
    "route": {
        "receiver": "null",
        "group_wait": "1h",
        "group_interval": "1h",
        "repeat_interval": "4h",
    },
    "receivers": [{"name": "null"}],
}
"""No notification is ever due: the API shows the state, nothing is sent."""


def key(labels: Mapping[str, str]) -> Key:
    return tuple(sorted((name, value) for name, value in labels.items() if value))


def shown(labels: Mapping[str, str] | Key) -> str:
    return format_label_set(dict(labels))


def disagreements(ours: Mapping[Key, bool], theirs: Mapping[Key, bool | None], what: str) -> str:
    return "\n".join(
        f"  {shown(alert)}: canarywatch {what} {ours[alert]}, Alertmanager {theirs.get(alert)}"
        for alert in sorted(ours)
        if ours[alert] != theirs.get(alert)
    )


def am_key(labels: Mapping[str, str]) -> Key:
    return tuple(sorted((name, value) for name, value in labels.items() if name != "case"))


# -- one Alertmanager for the module ---------------------------------------------------------


@dataclass(slots=True)
class Live:
    am: RunningAlertmanager
    http: aiohttp.ClientSession
    config_path: Path
    loads: int = 0

    async def load(self, config: Mapping[str, Any]) -> str:
        """Replace the config (plus this load's sentinel rule); returns the sentinel's name."""
        self.loads += 1
        sentinel = f"load-{self.loads}"
        rules = [
            *config.get("inhibit_rules", ()),
            {
                "source_matchers": [f'sentinel="{sentinel}-source"'],
                "target_matchers": [f'sentinel="{sentinel}-target"'],
            },
        ]
        text = json.dumps({**config, "inhibit_rules": rules}, indent=1)
        await asyncio.to_thread(self.config_path.write_text, text, encoding="utf-8")
        async with self.http.post(f"{self.am.url}/-/reload") as response:
            assert response.status == 200, await response.text()
        return sentinel

    async def post(self, path: str, body: object) -> Any:
        async with self.http.post(f"{self.am.url}{path}", json=body) as response:
            assert response.status == 200, f"{path}: {await response.text()}"
            return await response.json() if response.content_length else None

    async def get(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.am.url}{path}", params=params) as response:
            assert response.status == 200, f"{path}: {await response.text()}"
            return await response.json()

    async def post_alerts(self, alerts: Iterable[Mapping[str, str]]) -> None:
        await self.post("/api/v2/alerts", [{"labels": dict(labels)} for labels in alerts])

    async def settle(self, sentinel: str) -> None:
        """Until the inhibitor and the dispatcher have taken in every alert posted so far."""
        await self.post_alerts([{"sentinel": f"{sentinel}-target"}])
        await self.post_alerts([{"sentinel": f"{sentinel}-source"}])
        async with asyncio.timeout(20):
            while True:
                target = await self.get("/api/v2/alerts", filter=f'sentinel="{sentinel}-target"')
                grouped = await self.get(
                    "/api/v2/alerts/groups", filter=f'sentinel="{sentinel}-source"'
                )
                if target and target[0]["status"]["inhibitedBy"] and grouped:
                    return
                await asyncio.sleep(0.05)

    async def alerts_by_case(self, prefix: str) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for alert in await self.get("/api/v2/alerts", filter=f'case=~"{prefix}.*"'):
            found.setdefault(alert["labels"]["case"], []).append(alert)
        return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    workdir = tmp_path_factory.mktemp("alertmanager")
    async with (
        run_alertmanager(workdir, config=json.dumps(BASE_CONFIG)) as am,
        aiohttp.ClientSession() as http,
    ):
        yield Live(am, http, workdir / "alertmanager.yml")


# -- generators ------------------------------------------------------------------------------


def matcher(rng: random.Random) -> str:
    """One matcher string: all four operators, missing labels, RE2-only regexes."""
    name = rng.choice(tuple(VALUES))
    op = rng.choice(("=", "!=", "=~", "!~"))
    if "~" in op:
        value = rng.choice(REGEXES[name] if rng.random() < 0.8 else ANY_REGEXES)
    else:
        value = rng.choice((*VALUES[name], "", "other"))
    return f'{name}{op}"{escape_value(value)}"'


def event(rng: random.Random, transition: Transition, canary: str, cluster: str) -> CanaryEvent:
    """An event with the usual labels, plus ``team``/``env`` present, absent or empty."""
    fields: dict[str, Any] = {}
    if canary == SELF_CANARY:
        fields["sources"] = (SourceName.SELF,)
    base = make_event(transition, canary=canary, cluster=cluster, **fields)
    labels = dict(base.labels)
    for name, values in EXTRAS.items():
        roll = rng.random()
        if roll < 0.5:
            labels[name] = rng.choice(values)
        elif roll < 0.6:
            labels[name] = ""  # Alertmanager drops it: the same as a missing label
    return dataclasses.replace(base, labels=labels)


def firing_events(rng: random.Random) -> list[CanaryEvent]:
    """Firing condition openers across canaries, clusters and self-event pseudo-canaries: at
    most one per canary and condition, as the correlator keeps them."""
    events: list[CanaryEvent] = []
    for cluster in rng.sample(CLUSTERS, rng.randint(1, 2)):
        if rng.random() < 0.3:
            events.append(event(rng, rng.choice(OPENERS[Condition.SOURCE]), SELF_CANARY, cluster))
        for namespace in NAMESPACES:
            for name in NAMES:
                if rng.random() < 0.4:
                    for cond in rng.sample(CANARY_CONDITIONS, rng.randint(1, 2)):
                        opener = rng.choice(OPENERS[cond])
                        events.append(event(rng, opener, f"{namespace}/{name}", cluster))
    return events or [event(rng, Transition.HALTED, "shop/a", "prod")]


def canary_events(rng: random.Random, count: int) -> list[CanaryEvent]:
    """``count`` events of any transition, distinct label sets."""
    found: dict[Key, CanaryEvent] = {}
    while len(found) < count:
        canary = rng.choice((*(f"{n}/{c}" for n in NAMESPACES for c in NAMES), SELF_CANARY))
        made = event(rng, rng.choice(tuple(Transition)), canary, rng.choice(CLUSTERS))
        found.setdefault(key(made.labels), made)
    return list(found.values())


def canarywatch_config(**sections: Any) -> str:
    base: dict[str, Any] = {
        "receivers": [{"name": name, "sink": "console"} for name in ("null", *RECEIVERS)],
        "route": {"receiver": "null"},
    }
    return json.dumps({**base, **sections})


# -- inhibition ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InhibitCase:
    id: str
    rules: tuple[Mapping[str, Any], ...]
    firing: tuple[CanaryEvent, ...]
    one_shots: tuple[CanaryEvent, ...]
    """Targets only: each is posted with the firing events in a sub-case of its own, since
    one-shots never inhibit in canarywatch (README) but would in Alertmanager."""

    def describe(self) -> str:
        lines = [f"case {self.id}: inhibit_rules {json.dumps(self.rules)}"]
        lines += [f"  firing {shown(e.labels)}" for e in self.firing]
        lines += [f"  one-shot {shown(e.labels)}" for e in self.one_shots]
        return "\n".join(lines)


def inhibit_rule(rng: random.Random) -> dict[str, Any]:
    return {
        "source_matchers": [matcher(rng) for _ in range(rng.randint(1, 2))],
        "target_matchers": [matcher(rng) for _ in range(rng.randint(1, 2))],
        "equal": rng.sample(EQUAL_NAMES, rng.randint(0, 3)),
    }


def inhibit_case(rng: random.Random, index: int) -> InhibitCase:
    firing = firing_events(rng)
    one_shots = []
    if rng.random() < 0.5:
        canary = rng.choice((f"{rng.choice(NAMESPACES)}/{rng.choice(NAMES)}", SELF_CANARY))
        one_shots.append(event(rng, rng.choice(ONE_SHOTS), canary, rng.choice(CLUSTERS)))
    rules = tuple(inhibit_rule(rng) for _ in range(rng.randint(1, 3)))
    return InhibitCase(f"inh-{index}", rules, tuple(firing), tuple(one_shots))


def canarywatch_inhibited(case: InhibitCase) -> dict[str, dict[Key, bool]]:
    """Sub-case id -> alert -> muted, through the inhibitor the pipeline builds from the config.

    The pipeline asks ``Inhibitor.mutes(event, firing)`` with every firing event of every
    canary, on arrival and again at flush; with all of them firing that is the answer here.
    """
    config = parse_config(canarywatch_config(inhibit_rules=case.rules), filename=f"{case.id}.yaml")
    with capture_logs():  # inhibit_rule_never_fires for generated rules is expected
        inhibitor = policy.build_inhibitor(config)
    found = {case.id: {key(e.labels): inhibitor.mutes(e, case.firing) for e in case.firing}}
    for index, one_shot in enumerate(case.one_shots):
        found[f"{case.id}_{index}"] = {key(one_shot.labels): inhibitor.mutes(one_shot, case.firing)}
    return found


def alertmanager_inhibit_rules(case: InhibitCase) -> list[dict[str, Any]]:
    """The case's rules, restricted to its alerts and kept within each sub-case."""
    only = f'case=~"{case.id}(_[0-9]+)?"'
    return [
        {
            "source_matchers": [*rule["source_matchers"], only],
            "target_matchers": [*rule["target_matchers"], only],
            "equal": [*rule["equal"], "case"],
        }
        for rule in case.rules
    ]


def inhibit_alerts(case: InhibitCase) -> list[dict[str, str]]:
    alerts = [{**dict(key(e.labels)), "case": case.id} for e in case.firing]
    for index, one_shot in enumerate(case.one_shots):
        sub = f"{case.id}_{index}"
        alerts += [{**dict(key(e.labels)), "case": sub} for e in (*case.firing, one_shot)]
    return alerts


@pytest.mark.needs_binaries
@pytest.mark.asyncio(loop_scope="module")
async def test_inhibition_agrees_with_alertmanager_on_generated_cases(live: Live) -> None:
    rng = random.Random(20261206)
    cases = [inhibit_case(rng, index) for index in range(INHIBIT_CASES)]
    rules = [rule for case in cases for rule in alertmanager_inhibit_rules(case)]
    sentinel = await live.load({**BASE_CONFIG, "inhibit_rules": rules})
    await live.post_alerts(alert for case in cases for alert in inhibit_alerts(case))
    await live.settle(sentinel)
    stored = await live.alerts_by_case("inh-")
    differences: list[str] = []
    muted = compared = 0
    for case in cases:
        for sub, ours in canarywatch_inhibited(case).items():
            theirs = {
                am_key(a["labels"]): bool(a["status"]["inhibitedBy"]) for a in stored.get(sub, [])
            }
            compared += len(ours)
            muted += sum(ours.values())
            # A sub-case is compared on its one-shot only (the others are the main case's).
            if any(ours[alert] != theirs.get(alert) for alert in ours):
                differences.append(
                    f"{case.describe()}\n {sub}:\n{disagreements(ours, theirs, 'muted')}"
                )
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences[:8])
    assert compared > 4 * INHIBIT_CASES
    assert muted > INHIBIT_CASES / 5, "the generator hardly ever inhibits: it proves little"


# -- grouping --------------------------------------------------------------------------------

Group = tuple[str, Key, frozenset[Key]]
"""Receiver, group labels, the alerts in the group."""


def shown_groups(groups: Iterable[Group]) -> str:
    return "".join(
        f"\n    {receiver} {shown(labels)}: {', '.join(shown(a) for a in sorted(alerts))}"
        for receiver, labels, alerts in sorted(groups)
    )


def group_by(rng: random.Random) -> list[str] | None:
    roll = rng.random()
    if roll < 0.3:
        return None  # unset: inherited (the root's default, see ``alertmanager_group_route``)
    if roll < 0.45:
        return []  # on the root one group; below it, inherited as if unset
    if roll < 0.6:
        return ["..."]
    return rng.sample((*VALUES, "name"), rng.randint(1, 3))


def grouping_route(rng: random.Random, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    if depth == 0 or rng.random() < 0.7:
        node["receiver"] = rng.choice(RECEIVERS)
    chosen = group_by(rng)
    if chosen is not None:
        node["group_by"] = chosen
    if depth > 0:
        node["matchers"] = [matcher(rng) for _ in range(rng.randint(1, 2))]
        node["continue"] = rng.random() < 0.4
    if depth < 3 and rng.random() < (0.9 if depth == 0 else 0.4):
        node["routes"] = [grouping_route(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return node


@dataclass(frozen=True, slots=True)
class GroupCase:
    id: str
    route: Mapping[str, Any]
    events: tuple[CanaryEvent, ...]

    def describe(self) -> str:
        lines = [f"case {self.id}: route {json.dumps(self.route)}"]
        lines += [f"  event {shown(e.labels)}" for e in self.events]
        return "\n".join(lines)


def canarywatch_groups(case: GroupCase) -> set[Group]:
    """Route every event and offer it to the grouper, as the pipeline does; group by key."""
    config = parse_config(canarywatch_config(route=case.route), filename=f"{case.id}.yaml")
    router = policy.build_router(config)
    grouper = Grouper()
    for e in case.events:
        for routed in router.route(e, NOW):
            grouper.offer(routed, NOW)
    groups: dict[str, tuple[str, Key, set[Key]]] = {}
    for n in grouper.flush_all(NOW):
        found = groups.setdefault(n.group_key, (n.receiver, key(n.group_labels), set()))
        found[2].update(key(e.labels) for e in n.events)
    return {(receiver, labels, frozenset(alerts)) for receiver, labels, alerts in groups.values()}


def alertmanager_group_route(case: GroupCase) -> dict[str, Any]:
    """The case's tree as a child of the real root, matching only its alerts.

    canarywatch's root ``group_by`` defaults to ``[cluster, namespace, canary]`` (README,
    defaults table), Alertmanager's to ``[]``: an unset root ``group_by`` is written out. The
    real root sets none, so the case root's ``group_by: []`` inherits "one group", as a root's.
    """
    node = {**case.route, "matchers": [f'case="{case.id}"']}
    node.setdefault("group_by", list(DEFAULT_GROUP_BY))
    return node


def alertmanager_groups(found: Sequence[Mapping[str, Any]]) -> tuple[dict[str, set[Group]], int]:
    """Case id -> its groups, those with the same receiver and labels merged (Alertmanager
    keeps one group per route, canarywatch one per receiver and labels: README); and how many
    groups were merged into another."""
    merged: dict[str, dict[tuple[str, Key], set[Key]]] = {}
    count = 0
    for group in found:
        cases = {alert["labels"].get("case", "") for alert in group["alerts"]}
        (case,) = cases
        if not case.startswith("grp-"):
            continue
        labels = am_key(group["labels"])  # "..." groups by case too: not the case's own label
        groups = merged.setdefault(case, {})
        target = (group["receiver"]["name"], labels)
        count += target in groups
        members = groups.setdefault(target, set())
        members.update(am_key(alert["labels"]) for alert in group["alerts"])
    by_case = {
        case: {(receiver, labels, frozenset(alerts)) for (receiver, labels), alerts in g.items()}
        for case, g in merged.items()
    }
    return by_case, count


@pytest.mark.needs_binaries
@pytest.mark.asyncio(loop_scope="module")
async def test_grouping_agrees_with_alertmanager_on_generated_trees(live: Live) -> None:
    rng = random.Random(20261207)
    cases = [
        GroupCase(f"grp-{i}", grouping_route(rng, 0), tuple(canary_events(rng, rng.randint(4, 8))))
        for i in range(GROUPING_CASES)
    ]
    config = {
        "route": {**BASE_CONFIG["route"], "routes": [alertmanager_group_route(c) for c in cases]},
        "receivers": [{"name": name} for name in ("null", *RECEIVERS)],
    }
    sentinel = await live.load(config)
    await live.post_alerts(
        {**dict(key(e.labels)), "case": case.id} for case in cases for e in case.events
    )
    await live.settle(sentinel)
    found = await live.get("/api/v2/alerts/groups", filter='case=~"grp-.*"')
    theirs, merged = alertmanager_groups(found)
    differences = []
    groups = 0
    for case in cases:
        ours = canarywatch_groups(case)
        groups += len(ours)
        if ours != theirs.setdefault(case.id, set()):
            differences.append(
                f"{case.describe()}\n  only canarywatch:{shown_groups(ours - theirs[case.id])}"
                f"\n  only Alertmanager:{shown_groups(theirs[case.id] - ours)}"
            )
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences[:5])
    assert groups > 2 * GROUPING_CASES
    assert merged > 0, "no case reaches one receiver twice: the documented difference is untried"


# -- silences --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SilenceCase:
    id: str
    silences: tuple[tuple[tuple[str, ...], bool], ...]
    """Each silence's matcher strings, and whether it is active now (else it starts later)."""
    events: tuple[CanaryEvent, ...]

    def describe(self) -> str:
        lines = [f"case {self.id}:"]
        lines += [f"  silence {list(m)} {'active' if a else 'pending'}" for m, a in self.silences]
        lines += [f"  event {shown(e.labels)}" for e in self.events]
        return "\n".join(lines)


def silence_case(rng: random.Random, index: int) -> SilenceCase:
    silences = tuple(
        (tuple(matcher(rng) for _ in range(rng.randint(1, 3))), rng.random() < 0.85)
        for _ in range(rng.randint(1, 3))
    )
    return SilenceCase(f"sil-{index}", silences, tuple(canary_events(rng, rng.randint(3, 6))))


def silence_window(active: bool, now: datetime) -> tuple[datetime, datetime]:
    start = now - timedelta(hours=1) if active else now + timedelta(hours=1)
    return start, start + timedelta(hours=2)


def canarywatch_silenced(case: SilenceCase, now: datetime) -> dict[Key, bool]:
    """Config silences through the ``Silencer`` the pipeline asks (runtime ones match alike)."""
    declared = []
    for matchers, active in case.silences:
        start, end = silence_window(active, now)
        declared.append(
            {
                "matchers": list(matchers),
                "starts_at": start.isoformat(),
                "ends_at": end.isoformat(),
                "created_by": "differential",
                "comment": case.id,
            }
        )
    config = parse_config(canarywatch_config(silences=declared), filename=f"{case.id}.yaml")
    silencer = Silencer(None, config.silences)
    return {key(e.labels): silencer.mutes(e, now) is not None for e in case.events}


def api_matcher(text: str) -> dict[str, Any]:
    """A generated matcher string as the silences API takes it (``parse_matcher`` is checked
    against Alertmanager's parser in ``tests/labels/test_matchers.py``)."""
    m = parse_matcher(text)
    return {
        "name": m.name,
        "value": m.value,
        "isRegex": m.op in (MatchOp.REGEX, MatchOp.NOT_REGEX),
        "isEqual": m.op in (MatchOp.EQUAL, MatchOp.REGEX),
    }


@pytest.mark.needs_binaries
@pytest.mark.asyncio(loop_scope="module")
async def test_silences_agree_with_alertmanager_on_generated_cases(live: Live) -> None:
    rng = random.Random(20261208)
    cases = [silence_case(rng, index) for index in range(SILENCE_CASES)]
    sentinel = await live.load(BASE_CONFIG)
    now = datetime.now(UTC)
    for case in cases:
        for matchers, active in case.silences:
            start, end = silence_window(active, now)
            only = {"name": "case", "value": case.id, "isRegex": False, "isEqual": True}
            body = {
                "matchers": [*(api_matcher(m) for m in matchers), only],
                "startsAt": start.isoformat(),
                "endsAt": end.isoformat(),
                "createdBy": "differential",
                "comment": case.id,
            }
            await live.post("/api/v2/silences", body)
    await live.post_alerts(
        {**dict(key(e.labels)), "case": case.id} for case in cases for e in case.events
    )
    await live.settle(sentinel)
    stored = await live.alerts_by_case("sil-")
    checked_at = datetime.now(UTC)
    differences = []
    silenced = 0
    for case in cases:
        ours = canarywatch_silenced(case, checked_at)
        theirs = {
            am_key(a["labels"]): bool(a["status"]["silencedBy"]) for a in stored.get(case.id, [])
        }
        silenced += sum(ours.values())
        if ours != theirs:
            differences.append(f"{case.describe()}\n{disagreements(ours, theirs, 'silenced')}")
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences[:8])
    assert silenced > SILENCE_CASES / 3, "the generator hardly ever silences: it proves little"


# -- time intervals: what each accepts -------------------------------------------------------

# Scalars as a user might write them, (valid, invalid) for each key; "09:00" unquoted is text
# in both YAML readers ("17:00" unquoted is not: see DOCUMENTED_CONFIG_DIFFERENCES).
RAW_SCALARS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "times": (
        ('"09:00"', "09:00", '"17:00"', '"24:00"', '"00:00"', '"23:59"', '"12:30"'),
        ('"9:00"', "9:00", '"25:00"', '"09:60"', '""', "1020", '"24:01"'),
    ),
    "weekdays": (
        ("monday", "Monday", "monday:friday", '"sunday:saturday"', "FRIDAY", "tuesday:thursday"),
        ("friday:monday", "mon", "1", "monday:tuesday:wednesday", '""', "saturday:sunday"),
    ),
    "days_of_month": (
        ("1", '"1:5"', "-1", '"-3:-1"', "-31", '"1:31"', '"+1"', '"1:-1"', '"10:-5"', "31"),
        ("0", "32", '"-1:5"', '"5:1"', "-32", '"a"', '" 1"', '"-5:-10"', '"-10:-20"', '"1:2:3"'),
    ),
    "months": (
        ("january", "January", '"january:march"', "1", '"1:3"', "12", '"1:march"', "December"),
        ('"march:january"', "jan", '"12:1"', '"x"'),
    ),
    "years": (
        ("2024", '"2024:2026"', "0", "99999", '"-1"', '"2026:2026"'),
        ('"2026:2024"', '"abc"', '"2024:"', "20.24"),
    ),
    "location": (
        ("UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+5", "EST", '""'),
        ('"Mars/Olympus"', "utc", '"Europe/berlin"', "Berlin"),
    ),
}


def scalar(rng: random.Random, name: str) -> str:
    valid, invalid = RAW_SCALARS[name]
    return rng.choice(valid if rng.random() < 0.85 else invalid)


def raw_interval(rng: random.Random) -> list[str]:
    """One interval's YAML lines (8-space indent), scalars exactly as a user might write them."""
    lines: list[str] = []
    fields = rng.sample(tuple(RAW_SCALARS), rng.randint(1, 3))
    for name in fields:
        roll = rng.random()
        if roll < 0.05:
            lines.append(f"        {name}:")  # null: unrestricted
        elif roll < 0.1 and name != "location":
            lines.append(f"        {name}: []")
        elif name == "location":
            lines.append(f"        location: {scalar(rng, name)}")
        elif name == "times":
            lines.append("        times:")
            for _ in range(rng.randint(1, 2)):
                keys = ("start_time", "end_time") if rng.random() < 0.95 else ("start_time",)
                for index, time_key in enumerate(keys):
                    lead = "          - " if index == 0 else "            "
                    lines.append(f"{lead}{time_key}: {scalar(rng, name)}")
        else:
            lines.append(f"        {name}:")
            lines += [f"          - {scalar(rng, name)}" for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.03:
        lines.append("        weekday: [monday]")  # a misspelt key
    lines[0] = "      - " + lines[0][8:]
    return lines


def interval_definition(rng: random.Random) -> str:
    lines = ["time_intervals:", "  - name: window", "    time_intervals:"]
    for _ in range(rng.randint(1, 2)):
        lines += raw_interval(rng)
    return "\n".join(lines) + "\n"


ROUTE_WITH_WINDOW = """\
route:
  receiver: "null"
  routes:
    - matchers: ['severity="info"']
      mute_time_intervals: [window]
"""


@pytest.mark.needs_binaries
def test_time_interval_definitions_accepted_and_refused_like_amtool(tmp_path: Path) -> None:
    oracle = AlertmanagerOracle(tmp_path / "am")
    rng = random.Random(20261209)
    differences = []
    accepted = 0
    for _ in range(INTERVAL_DEFINITIONS):
        definition = interval_definition(rng)
        am = oracle.check_text(f'{ROUTE_WITH_WINDOW}receivers:\n  - name: "null"\n{definition}')
        ours = f'{ROUTE_WITH_WINDOW}receivers:\n  - name: "null"\n    sink: console\n{definition}'
        try:
            parse_config(ours, filename="intervals.yaml")
        except ConfigError as exc:
            ok, why = False, str(exc)
        else:
            ok, why = True, ""
        accepted += ok
        if ok != am.ok:
            differences.append(
                f"{definition}  amtool: {am.output.splitlines()[-1]}\n  canarywatch: "
                f"{'accepted' if ok else why}"
            )
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences)
    assert INTERVAL_DEFINITIONS / 5 < accepted < INTERVAL_DEFINITIONS * 4 / 5


def interval_section(*lines: str) -> str:
    return "time_intervals:\n  - name: window\n    time_intervals:\n" + "".join(
        f"      {'- ' if index == 0 else '  '}{line}\n" for index, line in enumerate(lines)
    )


DOCUMENTED_CONFIG_DIFFERENCES: Mapping[str, tuple[str, str]] = {
    # name: (config section, the key path canarywatch's error names)
    # PyYAML reads an unquoted 17:00 as the base-60 number 1020, go-yaml as text.
    "unquoted base-60 time": (
        interval_section("times:", "  - start_time: 09:00", "    end_time: 17:00"),
        "times[0].end_time",
    ),
    "month outside 1..12": (interval_section('months: ["13"]'), "months[0]"),
    "month 0 in a range": (interval_section('months: ["0:3"]'), "months[0]"),
    "the machine's zone": (interval_section("location: Local"), "location"),
    "inhibit rule without source_matchers": (
        "inhibit_rules:\n  - target_matchers: ['severity=\"warning\"']\n    equal: [namespace]\n",
        "inhibit_rules[0].source_matchers",
    ),
    "inhibit rule without target_matchers": (
        "inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n",
        "inhibit_rules[0].target_matchers",
    ),
    "deprecated source_match": (
        "inhibit_rules:\n  - source_match: {severity: critical}\n"
        "    target_matchers: ['severity=\"warning\"']\n",
        "inhibit_rules[0].source_match:",
    ),
    "deprecated match_re": (
        'route:\n  receiver: "null"\n  routes:\n    - match_re: {severity: "warn.*"}\n',
        "route.routes[0].match_re",
    ),
}


@pytest.mark.needs_binaries
@pytest.mark.parametrize("name", sorted(DOCUMENTED_CONFIG_DIFFERENCES))
def test_documented_config_differences(tmp_path: Path, name: str) -> None:
    """README, "differences from Alertmanager": Alertmanager 0.25 accepts these, canarywatch
    refuses them naming the key, since they do not mean what they seem to (or are deprecated)."""
    section, where = DOCUMENTED_CONFIG_DIFFERENCES[name]
    route = "" if section.startswith("route:") else ROUTE_WITH_WINDOW
    intervals = (
        "" if section.startswith("time_intervals:") else interval_section("weekdays: [monday]")
    )
    am = AlertmanagerOracle(tmp_path).check_text(
        f'{route}receivers:\n  - name: "null"\n{intervals}{section}'
    )
    assert am.ok, am.output
    with pytest.raises(ConfigError) as refused:
        parse_config(
            f'{route}receivers:\n  - name: "null"\n    sink: console\n{intervals}{section}'
        )
    assert where in str(refused.value)


# -- time intervals: which instants they contain --------------------------------------------

ZONES = (None, "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september",
    "october", "november", "december",
)  # fmt: skip


def hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def near_times(rng: random.Random, local: datetime, inside: bool) -> dict[str, str]:
    """A span of the day at least two minutes away from ``local``'s minute on either edge."""
    m = local.hour * 60 + local.minute
    after, before = m + 4 <= 1439, m >= 4
    if not inside and after and (not before or rng.random() < 0.5):
        start = rng.randint(m + 3, min(1439, m + 300))
        end = rng.randint(start + 1, min(1440, start + 300))
    elif not inside and before:
        end = rng.randint(max(1, m - 300), m - 2)
        start = rng.randint(max(0, end - 300), end - 1)
    else:
        start, end = max(0, m - rng.randint(2, 300)), min(1440, m + rng.randint(3, 300))
    return {"start_time": hhmm(start), "end_time": hhmm(end)}


def near_range(
    rng: random.Random, current: int, low: int, high: int, inside: bool
) -> tuple[int, int]:
    if inside:
        return rng.randint(low, current), rng.randint(current, high)
    other = rng.choice([n for n in range(low, high + 1) if n != current])
    return other, other


def spelled(begin: str, end: str) -> str:
    return begin if begin == end else f"{begin}:{end}"


def near_now_interval(rng: random.Random, now: datetime) -> dict[str, Any]:
    """An interval whose fields each contain ``now`` or not (by choice), in a random zone."""
    zone = rng.choice(ZONES)
    local = now.astimezone(ZoneInfo(zone) if zone else UTC)
    spec: dict[str, Any] = {} if zone is None else {"location": zone}
    for name in rng.sample(("times", "weekdays", "days_of_month", "months", "years"), 2):
        inside = rng.random() < 0.75
        if name == "times":
            spec[name] = [near_times(rng, local, inside)]
        elif name == "weekdays":
            lo, hi = near_range(rng, (local.weekday() + 1) % 7, 0, 6, inside)
            spec[name] = [spelled(WEEKDAYS[lo], WEEKDAYS[hi])]
        elif name == "days_of_month":
            days = (local.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            lo, hi = near_range(rng, local.day, 1, days.day, inside)
            if lo == hi and rng.random() < 0.5:
                lo = hi = lo - days.day - 1  # the same day counted from the month's end
            spec[name] = [spelled(str(lo), str(hi))]
        elif name == "months":
            lo, hi = near_range(rng, local.month, 1, 12, inside)
            names = rng.random() < 0.5
            spec[name] = [
                spelled(MONTHS[lo - 1] if names else str(lo), MONTHS[hi - 1] if names else str(hi))
            ]
        else:
            lo, hi = near_range(rng, local.year, local.year - 2, local.year + 2, inside)
            spec[name] = [spelled(str(lo), str(hi))]
    return spec


@pytest.mark.needs_binaries
@pytest.mark.asyncio(loop_scope="module")
async def test_time_interval_muting_agrees_with_alertmanager_now(live: Live) -> None:
    """Alertmanager shows time-interval muting only by sending or not: each case is a route
    with ``active_time_intervals`` or ``mute_time_intervals`` to a webhook of its own."""
    rng = random.Random(20261210)
    now = datetime.now(UTC)
    cases = [
        (
            f"ti-{i}",
            rng.choice(("active_time_intervals", "mute_time_intervals")),
            [near_now_interval(rng, now) for _ in range(rng.randint(1, 2))],
        )
        for i in range(INTERVAL_SAMPLES)
    ]
    async with local_server() as hook:
        targets = [*(case_id for case_id, _, _ in cases), "ti-sentinel"]
        routes = [
            {
                "receiver": case_id,
                "matchers": [f'case="{case_id}"'],
                "group_wait": "0s",
                kind: [case_id],
            }
            for case_id, kind, _ in cases
        ]
        config = {
            "route": {
                **BASE_CONFIG["route"],
                "routes": [
                    *routes,
                    {
                        "receiver": "ti-sentinel",
                        "matchers": ['case="ti-sentinel"'],
                        "group_wait": "0s",
                    },
                ],
            },
            "receivers": [
                {"name": "null"},
                *({"name": t, "webhook_configs": [{"url": hook.url(f"/{t}")}]} for t in targets),
            ],
            "time_intervals": [
                {"name": case_id, "time_intervals": specs} for case_id, _, specs in cases
            ],
        }
        await live.load(config)
        before = datetime.now(UTC)
        await live.post_alerts({"case": case_id} for case_id, _, _ in cases)
        await live.post_alerts([{"case": "ti-sentinel"}])
        async with asyncio.timeout(20):
            while "/ti-sentinel" not in {r.path for r in hook.requests}:
                await asyncio.sleep(0.05)
        # Every group flushes at once (group_wait 0s) and a muted one never calls: wait until
        # no call has come for a second.
        seen = -1
        while seen != len(hook.requests):
            seen = len(hook.requests)
            await asyncio.sleep(1.0)
        after = datetime.now(UTC)
        sent = {r.path.lstrip("/") for r in hook.requests}
    config_text = canarywatch_config(
        receivers=[{"name": name, "sink": "console"} for name in ("null", *targets)],
        route={
            "receiver": "null",
            "routes": [{k: v for k, v in r.items() if k != "group_wait"} for r in routes],
        },
        time_intervals=[{"name": case_id, "time_intervals": specs} for case_id, _, specs in cases],
    )
    router = policy.build_router(parse_config(config_text, filename="intervals.yaml"))
    differences = []
    unsure = 0
    for case_id, kind, specs in cases:
        e = make_event(labels={"case": case_id})
        ours = {bool(router.route(e, at)) for at in (before, after)}
        if len(ours) != 1:
            unsure += 1  # an edge passed while Alertmanager decided
            continue
        (notified,) = ours
        if notified != (case_id in sent):
            differences.append(
                f"{case_id} {kind} {json.dumps(specs)} at {before.isoformat()}: canarywatch "
                f"{'sends' if notified else 'mutes'}, Alertmanager "
                f"{'sent' if case_id in sent else 'did not send'}"
            )
    assert not differences, f"{len(differences)} differences:\n" + "\n".join(differences)
    assert unsure <= 2
    assert 0.2 * INTERVAL_SAMPLES < len(sent - {"ti-sentinel"}) < 0.8 * INTERVAL_SAMPLES
