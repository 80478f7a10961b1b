"""Config loading: defaults, the route tree as written, secrets, and errors naming file, line, key.

The root route's defaults are defined in ``config.routing`` and applied, with inheritance, by
``pipeline.route.build_route``; the tests that check them through a loaded config build the tree
with ``policy.build_route`` as the daemon does.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from canarywatch.config import (
    Config,
    ConfigError,
    RouteSpec,
    config_schema_markdown,
    format_key_path,
    load_config,
    parse_config,
    walk_route,
)
from canarywatch.errors import ConfigError as BaseConfigError
from canarywatch.labels.matchers import parse_matchers
from canarywatch.labels.timeintervals import TimeInterval, any_contains
from canarywatch.pipeline import policy
from canarywatch.secrets import Secret

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "canarywatch.example.yaml"
POLICY = ROOT / "config" / "policy.example.yaml"
TOKEN = "s3cr3t-token-value"


def parse(text: str, **environ: str) -> Config:
    return parse_config(textwrap.dedent(text), filename="config.yaml", environ=environ)


def error_of(text: str, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, **environ)
    return caught.value


def test_config_error_is_the_shared_error_type() -> None:
    assert ConfigError is BaseConfigError


def test_config_error_text_names_file_line_and_path() -> None:
    error = ConfigError("unknown sink 'slak'", path="receivers[1].sink", line=14, file="c.yaml")
    assert str(error) == "c.yaml:14: receivers[1].sink: unknown sink 'slak'"
    assert str(ConfigError("bad", line=3)) == "line 3: bad"


def test_empty_config_is_the_builtin_default_policy() -> None:
    config = parse("")
    assert [(r.name, r.sink) for r in config.receivers] == [("default", "console")]
    assert config.route == RouteSpec(receiver="default")  # as written: nothing filled in
    route = policy.build_route(config.route)  # root defaults applied by pipeline.route
    assert route.receiver == "default"
    assert (route.group_wait_s, route.group_interval_s) == (0, 0)
    assert route.repeat_interval_s == 4 * 3600
    assert route.group_by == ("cluster", "namespace", "canary")
    assert dict(config.time_intervals) == {}
    assert config.cluster == "default"
    assert config.catch_up_window_s == 600
    assert config.state.retention == 120 * 3600
    assert config.state.dir == Path("state")
    assert (config.server.host, config.server.port) == ("127.0.0.1", 9797)
    assert (config.log.level, config.log.format) == ("info", "auto")


def test_route_without_receivers_uses_default_receiver() -> None:
    config = parse("route: {receiver: default, group_wait: 10s}")
    assert config.route.group_wait == 10
    assert policy.build_route(config.route).group_wait_s == 10


def test_receivers_without_route_need_a_default_receiver() -> None:
    error = error_of("receivers: [{name: x, sink: console}]")
    assert "receiver 'default'" in str(error)


def test_route_tree_is_kept_as_written_and_children_inherit_when_built() -> None:
    config = parse(
        """
        receivers: [{name: a, sink: console}, {name: b, sink: jsonl}]
        time_intervals:
          - name: nights
            time_intervals: [{times: [{start_time: "22:00", end_time: "24:00"}]}]
        route:
          receiver: a
          group_by: [canary]
          group_interval: 1m
          routes:
            - matchers: ['severity="critical"']
              group_wait: 5s
              mute_time_intervals: [nights]
              routes:
                - receiver: b
                  group_by: ["..."]
                  continue: true
        """
    )
    written = config.route.routes[0]
    assert (written.receiver, written.group_by, written.group_wait) == (None, None, 5)
    assert (written.group_interval, written.repeat_interval) == (None, None)
    assert written.matchers == ('severity="critical"',)  # strings, checked by matchers
    assert written.routes[0].group_by == ("...",)
    assert [format_key_path(loc) for loc, _ in walk_route(config.route)] == [
        "route",
        "route.routes[0]",
        "route.routes[0].routes[0]",
    ]
    tree = policy.build_route(config.route)
    child = tree.routes[0]
    grandchild = child.routes[0]
    assert (child.receiver, child.group_by, child.group_wait_s) == ("a", ("canary",), 5)
    assert child.group_interval_s == 60
    assert child.repeat_interval_s == 4 * 3600
    assert [str(m) for m in child.matchers] == ['severity="critical"']
    assert child.mute_time_intervals == ("nights",)
    assert grandchild.receiver == "b"
    assert grandchild.group_by is None  # "..." = every label
    assert grandchild.group_wait_s == 5
    assert grandchild.mute_time_intervals == ()  # not inherited, as in Alertmanager
    assert grandchild.continue_ is True
    assert grandchild.matchers == ()
    assert [r.receiver for r in tree.walk()] == ["a", "a", "b"]
    options = grandchild.options(send_resolved=True)
    assert (options.group_by, options.group_wait_s, options.send_resolved) == (None, 5, True)


def test_example_config_loads_and_documents_every_key() -> None:
    config = load_config(EXAMPLE)
    assert config.cluster == "prod-eu-1"
    assert config.receiver("audit").options["path"] == "./state/notifications.jsonl"
    offhours = config.time_intervals["offhours"]
    assert offhours[0].location is not None
    assert offhours[0].location.key == "Europe/Berlin"
    # Monday 2025-06-02 20:00 in Berlin, and a Sunday: both off hours; Monday noon is not.
    assert any_contains(offhours, datetime(2025, 6, 2, 18, 0, tzinfo=UTC))
    assert any_contains(offhours, datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    assert not any_contains(offhours, datetime(2025, 6, 2, 10, 0, tzinfo=UTC))
    text = EXAMPLE.read_text(encoding="utf-8")
    for row in config_schema_markdown().splitlines()[2:]:
        key = row.split("`")[1].rsplit(".", 1)[-1].removesuffix("[]")
        assert re.search(rf"\b{re.escape(key)}:", text), f"{key} is not in the example"


def test_policy_example_routes_critical_and_teams() -> None:
    config = load_config(POLICY)
    receivers = [r.receiver for r in config.route.routes]
    assert receivers == ["on-call", "platform", "team-payments", "team-search"]
    tree = policy.build_route(config.route)
    on_call = tree.routes[0]
    assert on_call.continue_
    assert on_call.group_wait_s == 0
    assert config.route.routes[2].routes[0].receiver is None  # as written
    assert tree.routes[2].routes[0].receiver == "team-payments"  # inherited when built
    assert len(config.inhibit_rules) == 2
    assert {r.sink for r in config.receivers} <= {"console", "jsonl"}


def test_unknown_top_level_key_names_its_line_and_suggests() -> None:
    error = error_of(
        """
        cluster: a
        recievers: []
        """
    )
    assert error.line == 3
    assert error.path == "recievers"
    assert "did you mean 'receivers'" in str(error)
    assert str(error).startswith("config.yaml:3: recievers: unknown key")


def test_nested_error_has_key_path_and_line() -> None:
    error = error_of(
        """
        receivers:
          - name: a
            sink: console
          - name: b
            sink: console
            send_resolved: maybe
        route: {receiver: a}
        """
    )
    assert (error.path, error.line) == ("receivers[1].send_resolved", 7)
    assert "true or false" in error.message


def test_alertmanager_keys_get_a_hint() -> None:
    error = error_of(
        """
        route:
          receiver: default
          routes:
            - match: {severity: critical}
        """
    )
    assert error.path == "route.routes[0].match"
    assert "use matchers" in error.message


def test_all_problems_are_reported_in_line_order() -> None:
    error = error_of(
        """
        route:
          receiver: default
          group_wait: 5
          group_interval: soon
        log: {level: verbose}
        """
    )
    assert [(e.path, e.line) for e in error.all_errors] == [
        ("route.group_wait", 4),
        ("route.group_interval", 5),
        ("log.level", 6),
    ]
    assert "needs a unit" in error.message
    assert len(str(error).splitlines()) == 3


def test_duplicate_keys_are_refused() -> None:
    error = error_of(
        """
        cluster: a
        cluster: b
        """
    )
    assert (error.path, error.line, error.message) == ("cluster", 3, "duplicate key 'cluster'")


def test_yaml_syntax_error_has_a_line_but_no_source_text() -> None:
    error = error_of(
        """
        server:
          token: {value: "abc
        log: [
        """
    )
    assert error.line is not None
    assert str(error).startswith("config.yaml:")
    assert "abc" not in str(error)


def test_document_must_be_a_mapping() -> None:
    assert "mapping" in error_of("- a\n- b\n").message


def test_missing_required_key_points_at_its_parent() -> None:
    error = error_of(
        """
        receivers:
          - sink: console
        """
    )
    assert (error.path, error.line, error.message) == (
        "receivers[0].name",
        3,
        "required key is missing",
    )


def test_receiver_names_are_unique_and_references_exist() -> None:
    error = error_of(
        """
        receivers:
          - {name: a, sink: console}
          - {name: a, sink: jsonl}
        route:
          receiver: a
          routes:
            - receiver: nobody
              active_time_intervals: [never]
        """
    )
    found = {(e.path, e.line): e.message for e in error.all_errors}
    assert found[("receivers[1].name", 4)] == "duplicate receiver name 'a'"
    assert found[("route.routes[0].receiver", 8)] == "unknown receiver 'nobody' (known: a)"
    assert "unknown time interval 'never'" in found[("route.routes[0].active_time_intervals[0]", 9)]


def test_root_route_rules() -> None:
    error = error_of(
        """
        time_intervals:
          - name: t
            time_intervals: [{weekdays: [saturday]}]
        route:
          matchers: ['severity="critical"']
          continue: true
          mute_time_intervals: [t]
        """
    )
    paths = {e.path for e in error.all_errors}
    assert paths == {
        "route.receiver",
        "route.matchers",
        "route.continue",
        "route.mute_time_intervals",
    }


def test_group_interval_may_be_zero_but_repeat_interval_may_not() -> None:
    config = parse("route: {receiver: default, group_interval: 0s, routes: [{group_interval: 2m}]}")
    assert config.route.group_interval == 0
    assert policy.build_route(config.route).routes[0].group_interval_s == 120
    assert (
        error_of("route: {receiver: default, group_interval: -1s}").path == "route.group_interval"
    )
    assert (
        error_of("route: {receiver: default, repeat_interval: 0s}").path == "route.repeat_interval"
    )


def test_bad_matcher_reports_the_matcher_parser_message() -> None:
    error = error_of(
        """
        inhibit_rules:
          - source_matchers: ['severity="critical"']
            target_matchers: ['severity']
        """
    )
    assert (error.path, error.line) == ("inhibit_rules[0].target_matchers[0]", 4)
    assert "matcher" in error.message


def test_a_matchers_item_may_hold_several_matchers_as_in_alertmanager() -> None:
    """Issue 16: these pass ``amtool check-config``; validation and routing read them alike."""
    config = parse(
        """
        receivers: [{name: default, sink: console}, {name: shop, sink: console}]
        route:
          receiver: default
          matchers: ['{}']
          routes:
            - receiver: shop
              matchers: ['namespace="shop", severity="critical"', '{canary="cart"}', 'rollout="1",']
        inhibit_rules:
          - source_matchers: ['transition="rolled-back", severity="critical"']
            target_matchers: ['{transition="halted"}']
            equal: [canary]
        silences:
          - matchers: ['namespace="shop", canary="cart",']
            starts_at: 2025-01-01T00:00:00Z
            ends_at: 2025-01-02T00:00:00Z
            created_by: alice
            comment: test
        """
    )
    route = policy.build_route(config.route)
    assert route.matchers == ()  # '{}' is no matcher, so the root may carry it
    (child,) = route.routes
    assert [str(m) for m in child.matchers] == [
        'namespace="shop"',
        'severity="critical"',
        'canary="cart"',
        'rollout="1"',
    ]
    labels = {"namespace": "shop", "severity": "critical", "canary": "cart", "rollout": "1"}
    assert [node.receiver for node in route.match(labels)] == ["shop"]
    assert [node.receiver for node in route.match({**labels, "rollout": "2"})] == ["default"]
    assert config.inhibit_rules is not None
    (rule,) = config.inhibit_rules
    assert [str(m) for m in parse_matchers(rule.source_matchers)] == [
        'transition="rolled-back"',
        'severity="critical"',
    ]
    assert len(parse_matchers(config.silences[0].matchers)) == 2


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("(?=a)", "look-ahead"),
        ("\\\\Z", "\\z"),
        ("a{1001}", "at most 1000"),
        ("a*+", "possessive"),
        ("\\\\u00eb", "\\x{eb}"),
    ],
)
def test_python_only_regex_syntax_is_a_config_error_naming_the_key(
    pattern: str, reason: str
) -> None:
    error = error_of(
        f"""
        receivers: [{{name: default, sink: console}}]
        route:
          receiver: default
          routes:
            - matchers: ['namespace=~"{pattern}"']
        """
    )
    assert (error.path, error.line) == ("route.routes[0].matchers[0]", 6)
    assert "RE2" in error.message
    assert reason in error.message


def test_group_by_all_labels_must_stand_alone() -> None:
    error = error_of('route: {receiver: default, group_by: ["...", canary]}')
    assert error.path == "route.group_by"
    assert "only entry" in error.message


def test_non_loopback_listener_requires_a_token() -> None:
    error = error_of("server: {listen: '0.0.0.0:9797'}")
    assert error.path == "server.listen"
    assert "requires server.token" in error.message
    config = parse("server: {listen: '0.0.0.0:9797', token: {env: CW_TOKEN}}", CW_TOKEN=TOKEN)
    assert isinstance(config.server.token, Secret)
    assert config.server.token.reveal() == TOKEN
    assert not config.server.loopback
    assert TOKEN not in repr(config)
    assert parse("server: {listen: '[::1]:0'}").server.loopback


def test_inline_token_is_refused_without_echoing_it() -> None:
    error = error_of(f"server: {{token: {TOKEN}}}")
    assert error.path == "server.token"
    assert TOKEN not in str(error)
    assert "{env: VARIABLE}" in str(error)


def test_missing_env_secret_names_key_path_not_value() -> None:
    error = error_of("server: {token: {env: CW_MISSING}}")
    assert (error.path, error.line) == ("server.token", 1)
    assert "CW_MISSING" in error.message


def test_receiver_option_secrets_resolve(tmp_path: Path) -> None:
    secret_file = tmp_path / "hook"
    secret_file.write_text("https://hooks.example/T0/B0/XYZ\n", encoding="utf-8")
    config = parse(
        f"""
        receivers:
          - name: default
            sink: console
            options:
              webhook_url: {{file: {secret_file}}}
              headers: {{authorization: {{env: CW_AUTH}}}}
              channels: [a, {{value: b}}]
              timeout: 5
        """,
        CW_AUTH=TOKEN,
    )
    options = config.receiver("default").options
    url = options["webhook_url"]
    assert isinstance(url, Secret)
    assert url.reveal() == "https://hooks.example/T0/B0/XYZ"
    headers = options["headers"]
    assert isinstance(headers, Mapping)
    assert headers["authorization"] == Secret(TOKEN)
    assert options["channels"] == ("a", Secret("b"))
    assert options["timeout"] == 5
    assert TOKEN not in repr(config)
    assert "XYZ" not in repr(config)


def test_plain_string_in_a_secret_looking_option_is_refused() -> None:
    error = error_of(
        """
        receivers:
          - name: default
            sink: slack
            options:
              url: https://example.org
              webhook_url: https://hooks.slack.com/services/T/B/XYZ
        """
    )
    assert (error.path, error.line) == ("receivers[0].options.webhook_url", 7)
    assert "XYZ" not in str(error)


def test_ambiguous_secret_reference_is_refused() -> None:
    error = error_of(
        """
        receivers:
          - name: default
            sink: slack
            options:
              channel: {env: A, file: /b}
        """
    )
    assert error.path == "receivers[0].options.channel"
    assert "exactly one of env, file, value" in error.message


def test_non_string_top_level_keys_are_refused() -> None:
    assert "keys must be names" in error_of("1: x").message


def test_option_secret_that_cannot_be_read_is_located() -> None:
    error = error_of(
        """
        receivers:
          - name: default
            sink: slack
            options:
              token: {file: /nonexistent/canarywatch/token}
        """
    )
    assert (error.path, error.line) == ("receivers[0].options.token", 6)


def test_receiver_lookup() -> None:
    config = parse("")
    assert config.receiver("default").sink == "console"
    with pytest.raises(KeyError):
        config.receiver("nope")


def test_error_at_lets_later_checks_point_at_the_line() -> None:
    config = parse(
        """
        receivers:
          - name: default
            sink: console
          - name: chat
            sink: slak
        """
    )
    error = config.error_at(("receivers", 1, "sink"), "unknown sink 'slak' (known: console)")
    assert str(error) == "config.yaml:6: receivers[1].sink: unknown sink 'slak' (known: console)"


def test_time_intervals_are_parsed_into_the_one_implementation() -> None:
    config = parse(
        """
        time_intervals:
          - name: office
            time_intervals:
              - times: [{start_time: "09:00", end_time: "17:00"}]
                weekdays: ["monday:friday"]
                location: Europe/Berlin
          - name: month-end
            time_intervals: [{days_of_month: ["-2:-1"], months: [february]}, {years: [2030]}]
        """
    )
    assert list(config.time_intervals) == ["office", "month-end"]
    office = config.time_intervals["office"]
    assert all(isinstance(i, TimeInterval) for i in office)
    # 2025-06-02 is a Monday; Berlin is UTC+2 in June.
    # (Matching: tests/labels/test_timeintervals.py.)
    assert any_contains(office, datetime(2025, 6, 2, 7, 0, tzinfo=UTC))
    assert not any_contains(office, datetime(2025, 6, 2, 15, 0, tzinfo=UTC))
    assert len(config.time_intervals["month-end"]) == 2
    assert policy.build_time_intervals(config) is config.time_intervals  # no second parse


@pytest.mark.parametrize(
    ("interval", "path", "fragment"),
    [
        ("{times: [{start_time: '10:00', end_time: '09:00'}]}", "times[0]", "equal or greater"),
        ("{times: [{start_time: '25:00', end_time: '26:00'}]}", "times[0].start_time", "HH:MM"),
        ("{weekdays: ['friday:monday']}", "weekdays[0]", "start day cannot be after end"),
        ("{weekdays: [funday]}", "weekdays[0]", "weekday"),
        ("{days_of_month: ['0']}", "days_of_month[0]", "out of range"),
        ("{months: ['13']}", "months[0]", "month"),
        ("{years: ['2026:2025']}", "years[0]", "is before start year"),
        ("{months: [june], years: [true]}", "years[0]", "expected a string"),
        ("{times: [{start_time: 19:00, end_time: '20:00'}]}", "times[0].start_time", "quote it"),
        ("{location: Mars/Olympus}", "location", "unknown time zone"),
    ],
)
def test_time_interval_validation(interval: str, path: str, fragment: str) -> None:
    """canarywatch.labels.timeintervals judges; the loader adds where the interval sits, and
    its line."""
    error = error_of(f"time_intervals:\n- name: t\n  time_intervals: [{interval}]")
    assert error.path == f"time_intervals[0].time_intervals[0].{path}"
    assert error.line == 3
    assert fragment in error.message


def test_time_interval_names_are_unique() -> None:
    error = error_of(
        """
        time_intervals:
          - {name: t, time_intervals: [{weekdays: [monday]}]}
          - {name: t, time_intervals: [{weekdays: [tuesday]}]}
        """
    )
    assert (error.path, error.line) == ("time_intervals[1].name", 4)


def test_silences_need_zoned_ordered_times() -> None:
    config = parse(
        """
        silences:
          - matchers: ['namespace="sandbox"']
            starts_at: 2025-01-01T00:00:00Z
            ends_at: 2025-01-02T00:00:00+02:00
            created_by: me
            comment: testing
        """
    )
    assert config.silences[0].starts_at == datetime(2025, 1, 1, tzinfo=UTC)
    backwards = error_of(
        """
        silences:
          - matchers: ['namespace="sandbox"']
            starts_at: 2025-01-02T00:00:00Z
            ends_at: 2025-01-01T00:00:00Z
            created_by: me
            comment: testing
        """
    )
    assert (backwards.path, backwards.line) == ("silences[0]", 3)
    assert "after starts_at" in backwards.message
    naive = error_of(
        """
        silences:
          - matchers: ['a="b"']
            starts_at: 2025-01-01 00:00:00
            ends_at: 2025-01-02 00:00:00
            created_by: me
            comment: testing
        """
    )
    assert "time zone" in naive.message


def test_load_config_reports_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.file == str(tmp_path / "absent.yaml")
    assert "cannot read" in caught.value.message


def test_alias_bomb_is_cheap() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    error = error_of("\n".join(lines))
    assert error.path == "a0"


def test_schema_table_lists_every_key_with_defaults() -> None:
    table = config_schema_markdown()
    rows = {line.split("`")[1]: line for line in table.splitlines()[2:]}
    assert "| `route.group_wait` | duration | `0s` |" in rows["route.group_wait"]
    assert "| `route.group_interval` | duration | `0s` |" in rows["route.group_interval"]
    assert "| `route.repeat_interval` | duration | `4h` |" in rows["route.repeat_interval"]
    assert "| `state.retention` | duration | `120h` |" in rows["state.retention"]
    assert "required" in rows["receivers[].name"]
    assert "secret" in rows["server.token"]
    assert "route.routes" in rows
    assert "time_intervals[].time_intervals[].times[].start_time" in rows
    assert all(line.count(" | ") == 3 for line in table.splitlines()[2:])


def test_watch_timings_are_settings_per_cluster() -> None:
    """Issue 12: how long a silent watch is trusted (and how long a list may take) are set in
    the file, per cluster, and reach the cluster's watches; the defaults stay 60 s and 10 s."""
    from canarywatch.sources.build import watch_settings

    config = parse_config(
        "clusters:\n"
        "  - {name: a, connection: host, host: 'http://127.0.0.1:1', silent_stream: 15s,"
        " watch_start_timeout: 3s}\n"
        "  - {name: b, connection: host, host: 'http://127.0.0.1:2'}\n"
    )
    fast, default = (watch_settings(c) for c in config.clusters)
    assert (fast.silent_stream_s, fast.watch_start_timeout_s) == (15.0, 3.0)
    assert (default.silent_stream_s, default.watch_start_timeout_s) == (60.0, 10.0)
    with pytest.raises(ConfigError, match="silent_stream"):
        parse_config(
            "clusters: [{name: a, connection: host, host: 'http://x', silent_stream: 0s}]\n"
        )
