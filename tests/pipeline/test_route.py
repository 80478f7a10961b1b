"""The route tree: Alertmanager matching, inheritance, dedup and time-interval muting."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from tests.support.alertmanager import run_alertmanager

from canarywatch.config import DEFAULT_GROUP_BY, RouteSpec, parse_config
from canarywatch.labels.timeintervals import parse_time_intervals
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    NotificationStatus,
    RouteOptions,
    SourceName,
    Transition,
)
from canarywatch.pipeline import policy
from canarywatch.pipeline.route import Route, Router, build_route, group_labels

NOW = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)  # a Wednesday
SATURDAY = datetime(2025, 6, 7, 12, 0, tzinfo=UTC)


def event(**labels: str) -> CanaryEvent:
    return CanaryEvent(
        canary=CanaryRef(labels.get("namespace", "test"), labels.get("canary", "podinfo")),
        transition=Transition(labels.get("transition", "promoted")),
        observed_at=NOW,
        sources=(SourceName.KUBERNETES_EVENTS,),
        labels=labels,
    )


def spec(*matchers: str, **kwargs: object) -> RouteSpec:
    """A route node as written in the config (``continue_`` stands for the ``continue`` key)."""
    if "continue_" in kwargs:
        kwargs["continue"] = kwargs.pop("continue_")
    return RouteSpec.model_validate({"matchers": matchers, **kwargs})


def receivers(router: Router, labels: Mapping[str, str], now: datetime = NOW) -> list[str]:
    return [r.receiver for r in router.route(event(**labels), now)]


# The example tree of Alertmanager's docs/configuration.md, adapted to canary labels.
TREE = build_route(
    spec(
        receiver="default",
        group_by=("namespace",),
        routes=(
            spec('severity="critical"', receiver="pager", group_wait="30s"),
            spec(
                'namespace=~"payments|billing"',
                receiver="payments",
                group_by=("canary",),
                routes=(
                    spec('transition="rolled-back"', receiver="payments-oncall"),
                    spec('transition="halted"', continue_=True, receiver="payments-audit"),
                    spec('severity="warning"', receiver="payments-warnings"),
                ),
            ),
            spec('team="platform"', receiver="platform", continue_=True),
            spec('team=~"plat.*"', receiver="platform-archive"),
            spec('team="platform"', receiver="never-reached"),
        ),
    )
)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({}, ["default"]),  # the root handles what no child matches
        ({"severity": "critical", "namespace": "payments"}, ["pager"]),  # first match wins
        ({"namespace": "billing"}, ["payments"]),  # a node with no matching child
        ({"namespace": "payments", "transition": "rolled-back"}, ["payments-oncall"]),
        (
            {"namespace": "payments", "transition": "halted", "severity": "warning"},
            ["payments-audit", "payments-warnings"],  # continue on a nested node
        ),
        ({"namespace": "payments", "transition": "halted"}, ["payments-audit"]),
        ({"namespace": "paymentsx"}, ["default"]),  # regexes are anchored
        ({"team": "platform"}, ["platform", "platform-archive"]),  # continue, then stop
        ({"team": "platypus"}, ["platform-archive"]),
    ],
)
def test_matching(labels: dict[str, str], expected: list[str]) -> None:
    assert receivers(Router(TREE), labels) == expected


def test_inheritance_and_defaults() -> None:
    # Root defaults: transitions are discrete news, so neither wait nor batch by default.
    assert TREE.group_wait_s == 0.0
    assert TREE.group_interval_s == 0.0
    assert TREE.repeat_interval_s == 4 * 3600.0
    pager, payments = TREE.routes[0], TREE.routes[1]
    assert pager.group_wait_s == 30.0
    assert pager.group_by == ("namespace",)  # inherited
    assert payments.receiver == "payments"
    oncall, _, warnings = payments.routes
    assert oncall.group_by == ("canary",)  # inherited from its parent, not the root
    assert oncall.group_wait_s == 0.0
    assert warnings.receiver == "payments-warnings"

    deep = build_route(
        spec(
            receiver="root",
            group_interval="1m",
            routes=(
                spec(
                    "a=1",
                    receiver="mid",
                    repeat_interval="10m",
                    group_by=("...",),
                    routes=(spec("b=2"),),
                ),
            ),
        )
    )
    leaf = deep.routes[0].routes[0]
    assert leaf.receiver == "mid"  # receiver inherits
    assert leaf.group_by is None  # '...' inherits
    assert (leaf.group_wait_s, leaf.group_interval_s, leaf.repeat_interval_s) == (0.0, 60.0, 600.0)
    root = build_route(spec(receiver="r", routes=(spec("a=1", receiver="x"),)))
    assert root.group_by == DEFAULT_GROUP_BY == ("cluster", "namespace", "canary")
    assert root.routes[0].group_by == DEFAULT_GROUP_BY  # the default inherits too
    assert build_route(spec(receiver="r", group_by=())).group_by == ()  # one group
    # A positive group_interval batches; zero is allowed anywhere.
    assert build_route(spec(receiver="r", group_interval="5m")).group_interval_s == 300
    assert build_route(spec(receiver="r", group_interval="0s")).group_interval_s == 0


def test_empty_group_by_below_the_root_inherits_as_in_alertmanager() -> None:
    """Alertmanager keeps ``GroupBy`` nil for ``group_by: []``, so the parent's applies."""
    tree = build_route(
        spec(
            receiver="root",
            group_by=("namespace",),
            routes=(
                spec("team=a", receiver="a", group_by=()),
                spec(
                    "team=b",
                    receiver="b",
                    group_by=("canary",),
                    routes=(spec("severity=critical", group_by=()),),
                ),
                spec("team=c", receiver="c", group_by=("...",), routes=(spec("x=1", group_by=()),)),
            ),
        )
    )
    a, b, c = tree.routes
    assert a.group_by == ("namespace",)  # not (): that would be one group for everything
    assert b.routes[0].group_by == ("canary",)
    assert c.routes[0].group_by is None  # '...' inherits through an empty list too
    router = Router(tree)
    (routed,) = router.route(event(team="a", namespace="shop", canary="podinfo"), NOW)
    assert group_labels(routed.event.labels, routed.route.group_by) == {"namespace": "shop"}
    # On the root an empty list is still one group for everything (Alertmanager's default).
    assert (
        build_route(spec(receiver="r", group_by=(), routes=(spec("a=1"),))).routes[0].group_by == ()
    )


def test_time_intervals_do_not_inherit() -> None:
    tree = build_route(
        spec(
            receiver="root",
            routes=(spec("a=1", mute_time_intervals=("weekends",), routes=(spec("b=2"),)),),
        )
    )
    assert tree.routes[0].mute_time_intervals == ("weekends",)
    assert tree.routes[0].routes[0].mute_time_intervals == ()


@pytest.mark.parametrize(
    ("root", "fault"),
    [
        ({}, "needs a receiver"),
        ({"receiver": "r", "matchers": ["a=1"]}, "no matchers"),
        ({"receiver": "r", "continue": True}, "no continue"),
        ({"receiver": "r", "mute_time_intervals": ["x"]}, "cannot have mute"),
        ({"receiver": "r", "group_by": ["...", "canary"]}, "must be the only entry of group_by"),
        ({"receiver": "r", "group_by": ["a", "a"]}, "lists a label twice"),
        (
            {"receiver": "r", "repeat_interval": "0s"},
            r"repeat_interval\s+Input should be greater than 0",
        ),
        ({"receiver": "r", "group_wait": "-1s"}, r"group_wait\s+Value error, invalid duration"),
        (
            {"receiver": "r", "routes": [{}, {"group_interval": "-5s"}]},
            r"routes\.1\.group_interval",
        ),
    ],
)
def test_build_route_rejects(root: dict[str, object], fault: str) -> None:
    """Each node is checked when it is read (the model), the root's own rules when it is built."""
    with pytest.raises(ValueError, match=fault):
        build_route(RouteSpec.model_validate(root))


def test_routed_carries_the_matched_node_options() -> None:
    router = Router(TREE, send_resolved={"pager": True})
    [routed] = router.route(event(severity="critical"), NOW)
    assert routed.receiver == "pager"
    assert routed.status is NotificationStatus.FIRING
    assert routed.route == RouteOptions(
        group_by=("namespace",),
        group_wait_s=30.0,
        group_interval_s=0.0,
        repeat_interval_s=14400.0,
        send_resolved=True,
    )


def test_identical_targets_are_deduplicated() -> None:
    tree = build_route(
        spec(
            receiver="slack",
            group_by=("canary",),
            routes=(
                spec("team=a", continue_=True),  # receiver inherited: slack
                spec('canary=~".+"', continue_=True),  # slack again, same group labels
                spec("team=a", group_by=("team",), continue_=True),  # slack, other group labels
                spec("team=a", receiver="teams"),
            ),
        )
    )
    routed = Router(tree).route(event(team="a", canary="podinfo"), NOW)
    assert [(r.receiver, r.route.group_by) for r in routed] == [
        ("slack", ("canary",)),
        ("slack", ("team",)),
        ("teams", ("canary",)),
    ]


def test_resolved_goes_only_to_receivers_that_want_it() -> None:
    tree = build_route(
        spec(receiver="quiet", routes=(spec("a=1", receiver="loud", continue_=True),))
    )
    router = Router(tree, send_resolved={"loud": True, "quiet": False})
    result = router.resolve(event(a="1"), NOW, NotificationStatus.RESOLVED)
    assert [(r.receiver, r.status) for r in result.routed] == [
        ("loud", NotificationStatus.RESOLVED)
    ]
    assert router.route(event(b="2"), NOW, NotificationStatus.RESOLVED) == []
    assert [r.receiver for r in router.route(event(b="2"), NOW)] == ["quiet"]


INTERVALS = {
    "weekends": parse_time_intervals([{"weekdays": ["saturday", "sunday"]}]),
    "office": parse_time_intervals(
        [
            {
                "times": [{"start_time": "09:00", "end_time": "17:00"}],
                "weekdays": ["monday:friday"],
                "location": "Europe/Berlin",
            }
        ]
    ),
}


def muting_router() -> Router:
    tree = build_route(
        spec(
            receiver="default",
            routes=(
                spec("team=a", receiver="a-pager", mute_time_intervals=("weekends",)),
                spec("team=b", receiver="b-chat", active_time_intervals=("office",)),
                spec(
                    "team=c",
                    receiver="c",
                    active_time_intervals=("office",),
                    mute_time_intervals=("weekends",),
                    continue_=True,
                ),
                spec("team=c", receiver="c-always"),
            ),
        )
    )
    return Router(tree, time_intervals=INTERVALS)


@pytest.mark.parametrize(
    ("team", "now", "expected", "muted"),
    [
        ("a", NOW, ["a-pager"], 0),
        ("a", SATURDAY, [], 1),  # muted: no fall-through to the root's receiver
        ("b", NOW, ["b-chat"], 0),  # 12:00 UTC is 14:00 in Berlin
        ("b", datetime(2025, 6, 4, 15, 30, tzinfo=UTC), [], 1),  # 17:30 in Berlin
        ("b", datetime(2025, 6, 4, 6, 59, tzinfo=UTC), [], 1),  # 08:59 in Berlin (CEST)
        ("b", datetime(2025, 6, 4, 7, 0, tzinfo=UTC), ["b-chat"], 0),  # 09:00 in Berlin
        ("c", NOW, ["c", "c-always"], 0),
        ("c", SATURDAY, ["c-always"], 1),
        ("z", SATURDAY, ["default"], 0),
    ],
)
def test_time_interval_muting(team: str, now: datetime, expected: list[str], muted: int) -> None:
    router = muting_router()
    assert receivers(router, {"team": team}, now) == expected
    assert router.muted_count == muted


def test_muted_result_names_the_target() -> None:
    result = muting_router().resolve(event(team="a"), SATURDAY)
    assert result.routed == ()
    assert [m.receiver for m in result.muted] == ["a-pager"]


def test_a_target_reached_unmuted_is_not_counted_muted() -> None:
    tree = build_route(
        spec(
            receiver="slack",
            routes=(
                spec("a=1", mute_time_intervals=("weekends",), continue_=True),
                spec("a=1"),
            ),
        )
    )
    router = Router(tree, time_intervals=INTERVALS)
    assert [r.receiver for r in router.route(event(a="1"), SATURDAY)] == ["slack"]
    assert router.muted_count == 0


def test_undefined_time_interval_is_refused() -> None:
    tree = build_route(spec(receiver="r", routes=(spec("a=1", mute_time_intervals=("x",)),)))
    with pytest.raises(ValueError, match="undefined time interval 'x'"):
        Router(tree)


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ((), {}),
        (("namespace", "canary"), {"canary": "podinfo", "namespace": "test"}),
        (("namespace", "missing"), {"namespace": "test"}),  # absent labels are left out
        (None, {"canary": "podinfo", "namespace": "test", "severity": "info"}),
        (("blank",), {}),  # an empty value counts as absent
    ],
)
def test_group_labels(group_by: tuple[str, ...] | None, expected: dict[str, str]) -> None:
    labels = {"severity": "info", "namespace": "test", "canary": "podinfo", "blank": ""}
    got = group_labels(labels, group_by)
    assert got == expected
    assert list(got) == sorted(got)


def test_walk_is_depth_first() -> None:
    assert [r.receiver for r in TREE.walk()][:6] == [
        "default",
        "pager",
        "payments",
        "payments-oncall",
        "payments-audit",
        "payments-warnings",
    ]
    assert isinstance(TREE.routes[0], Route)


# --- grouping against the real Alertmanager ------------------------------------------------------

GROUPING_TREE: dict[str, Any] = {
    "receiver": "root",
    "group_by": ["namespace"],  # explicit: canarywatch's root default differs on purpose
    "group_wait": "1h",
    "routes": [
        {"receiver": "empty", "matchers": ['team="a"'], "group_by": []},
        {
            "receiver": "own",
            "matchers": ['team="b"'],
            "group_by": ["canary"],
            "routes": [
                {"receiver": "own-empty", "matchers": ['severity="critical"'], "group_by": []}
            ],
        },
        {
            "receiver": "all",
            "matchers": ['team="c"'],
            "group_by": ["..."],
            "routes": [
                {"receiver": "all-empty", "matchers": ['severity="critical"'], "group_by": []}
            ],
        },
        {"receiver": "omitted", "matchers": ['team="d"']},
    ],
}
GROUPING_RECEIVERS = ("root", "empty", "own", "own-empty", "all", "all-empty", "omitted")
GROUPING_ALERTS = [
    {"team": team, "namespace": ns, "canary": canary, "severity": severity}
    for team, ns, canary, severity in itertools.product(
        "abcde", ("n1", "n2"), ("c1", "c2"), ("critical", "warning")
    )
]

Grouped = set[tuple[str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]]


def canarywatch_groups() -> Grouped:
    config = {
        "route": GROUPING_TREE,
        "receivers": [{"name": name, "sink": "console"} for name in GROUPING_RECEIVERS],
    }
    root = policy.build_route(parse_config(json.dumps(config), filename="c.yaml").route)
    return {
        (
            node.receiver,
            tuple(sorted(group_labels(labels, node.group_by).items())),
            tuple(sorted(labels.items())),
        )
        for labels in GROUPING_ALERTS
        for node in root.match(labels)
    }


async def alertmanager_groups(tmp_path: Path) -> Grouped:
    config = {"route": GROUPING_TREE, "receivers": [{"name": n} for n in GROUPING_RECEIVERS]}
    async with (
        run_alertmanager(tmp_path / "am", config=json.dumps(config)) as am,
        aiohttp.ClientSession() as http,
    ):
        body = [{"labels": labels} for labels in GROUPING_ALERTS]
        async with http.post(f"{am.url}/api/v2/alerts", json=body) as response:
            assert response.status == 200, await response.text()
        async with asyncio.timeout(15):
            while True:
                async with http.get(f"{am.url}/api/v2/alerts/groups") as response:
                    groups = await response.json()
                found = {
                    (
                        group["receiver"]["name"],
                        tuple(sorted(group["labels"].items())),
                        tuple(sorted(alert["labels"].items())),
                    )
                    for group in groups
                    for alert in group["alerts"]
                }
                if len(found) >= len(GROUPING_ALERTS):
                    return found
                await asyncio.sleep(0.1)


@pytest.mark.needs_binaries
async def test_group_keys_agree_with_real_alertmanager(tmp_path: Path) -> None:
    """Same tree, same alerts: every alert lands in the same receiver and group labels."""
    theirs = await alertmanager_groups(tmp_path)
    ours = canarywatch_groups()
    assert ours == theirs, f"only canarywatch: {ours - theirs}; only Alertmanager: {theirs - ours}"
    # The point of the tree: an empty child list inherits instead of grouping everything.
    by_receiver = {receiver: {g for r, g, _ in ours if r == receiver} for receiver, _, _ in ours}
    assert by_receiver["empty"] == {(("namespace", "n1"),), (("namespace", "n2"),)}
    assert by_receiver["own-empty"] == {(("canary", "c1"),), (("canary", "c2"),)}
    assert len(by_receiver["all-empty"]) == 4  # every label: one group per critical alert
