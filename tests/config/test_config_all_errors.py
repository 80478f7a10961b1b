"""Config errors all at once and in plain words (issue 15).

A bad value (pass 2) no longer hides what the later checks find (unknown receivers, sinks,
secrets); what was left out to check the rest is not reported a second time, and errors after a
left-out list item still name the item's place as written. Secrets can be checked without being
read. An unquoted ``19:00`` says what YAML made of it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

import pytest

from canarywatch.config import (
    Config,
    ConfigError,
    Secret,
    UncheckedSecret,
    load_config,
    parse_config,
)


def errors_of(text: str, **options: object) -> dict[tuple[str, int | None], str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(text), filename="c.yaml", environ={}, **options)  # type: ignore[arg-type]
    return {(e.path, e.line): e.message for e in caught.value.all_errors}


def test_a_bad_value_does_not_hide_unknown_receivers_or_unreadable_secrets(tmp_path: Path) -> None:
    found = errors_of(
        f"""
        receivers:
          - name: a
            sink: console
            options:
              token: {{file: {tmp_path / "missing-one"}}}
        route:
          receiver: a
          group_wait: 5
          routes:
            - receiver: nobody
        server:
          listen: 0.0.0.0:9797
          token: {{file: {tmp_path / "missing-two"}}}
        """
    )
    assert set(found) == {
        ("receivers[0].options.token", 6),
        ("route.group_wait", 9),
        ("route.routes[0].receiver", 11),
        ("server.token", 14),
    }
    assert "missing-one" in found[("receivers[0].options.token", 6)]
    assert "missing-two" in found[("server.token", 14)]
    assert found[("route.routes[0].receiver", 11)] == "unknown receiver 'nobody' (known: a)"


def test_what_pass_two_left_out_is_not_reported_again() -> None:
    """A receiver with a bad name is left out; a route to it is not 'unknown' on top, and a
    lease naming a cluster that was left out is not 'no cluster named' either."""
    found = errors_of(
        """
        receivers:
          - {name: a, sink: console, send_resolved: maybe}
          - {name: "b c", sink: console}
          - {name: d, sink: console}
        route:
          receiver: a
          routes:
            - receiver: "b c"
            - receiver: d
            - receiver: e
        clusters:
          - {name: one, connection: host}
        leader_election: {enabled: true, cluster: one}
        """
    )
    assert set(found) == {
        ("receivers[0].send_resolved", 3),
        ("receivers[1].name", 4),
        ("route.routes[0].receiver", 9),
        ("route.routes[2].receiver", 11),
        ("clusters[0]", 13),
    }
    # 'a' kept (only its bad key was left out); 'b c' left out, and a route to it not reported.
    assert found[("route.routes[2].receiver", 11)] == "unknown receiver 'e' (known: a, d)"


def test_errors_after_a_left_out_item_name_the_item_as_written() -> None:
    """receivers[0] is left out, so the validated list is one shorter: the duplicate name is
    still receivers[2] at line 5, not receivers[1] at line 4."""
    found = errors_of(
        """
        receivers:
          - {name: a, sink: console, colour: red}
          - {name: b, sink: console}
          - {name: b, sink: jsonl}
        route: {receiver: b}
        """
    )
    assert found == {
        ("receivers[0].colour", 3): found[("receivers[0].colour", 3)],
        ("receivers[2].name", 5): "duplicate receiver name 'b'",
    }
    assert found[("receivers[0].colour", 3)].startswith("unknown key 'colour'")


def test_every_duplicate_key_is_reported() -> None:
    found = errors_of("cluster: a\ncluster: b\nlog: {level: info}\nlog: {level: debug}\n")
    assert set(found) == {("cluster", 2), ("log", 4)}


def _sinks_named_slak(config: Config) -> Iterable[ConfigError]:
    for index, receiver in enumerate(config.receivers):
        if receiver.sink == "slak":
            yield config.error_at(("receivers", index, "sink"), "unknown sink 'slak'")


def test_a_further_check_runs_too_and_names_places_as_written() -> None:
    """``check`` (check-config's sinks) sees the receivers without the bad first one: its
    receivers[0] is receivers[1] of the file."""
    found = errors_of(
        """
        receivers:
          - {name: a, sink: console, send_resolved: maybe}
          - {name: b, sink: slak}
        route: {receiver: b, routes: [{receiver: c}]}
        """,
        check=_sinks_named_slak,
    )
    assert set(found) == {
        ("receivers[0].send_resolved", 3),
        ("receivers[1].sink", 4),
        ("route.routes[0].receiver", 5),
    }
    assert found[("receivers[1].sink", 4)] == "unknown sink 'slak'"


def test_skip_secrets_checks_the_form_but_reads_nothing(tmp_path: Path) -> None:
    text = f"""
        receivers:
          - name: a
            sink: console
            options:
              token: {{file: {tmp_path / "only-in-the-cluster"}}}
        route: {{receiver: a}}
        server:
          listen: 0.0.0.0:9797
          token: {{env: ONLY_IN_THE_POD}}
        """
    config = parse_config(textwrap.dedent(text), environ={}, skip_secrets=True)
    assert isinstance(config.server.token, UncheckedSecret)
    assert isinstance(config.receivers[0].options["token"], UncheckedSecret)
    assert "only-in-the-cluster" not in repr(config)
    # {value: ...} is read as ever; a malformed reference is still refused.
    inline = parse_config("server: {token: {value: t}}", skip_secrets=True)
    assert inline.server.token == Secret("t")
    with pytest.raises(ConfigError) as caught:
        parse_config("server: {token: {file: ''}}", skip_secrets=True)
    assert caught.value.path == "server.token"
    found = errors_of(text)
    assert set(found) == {("receivers[0].options.token", 6), ("server.token", 10)}


def test_load_config_takes_skip_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {listen: '0.0.0.0:1', token: {file: /nowhere/token}}\n")
    with pytest.raises(ConfigError, match="cannot read secret file"):
        load_config(path)
    assert isinstance(load_config(path, skip_secrets=True).server.token, UncheckedSecret)


@pytest.mark.parametrize(
    ("interval", "path", "written", "number"),
    [
        ("{times: [{start_time: 19:00, end_time: '20:00'}]}", "times[0].start_time", "19:00", 1140),
        ("{times: [{start_time: '08:00', end_time: 24:00}]}", "times[0].end_time", "24:00", 1440),
        ("{days_of_month: [1:7]}", "days_of_month[0]", "1:7", 67),
    ],
)
def test_an_unquoted_time_says_yaml_read_a_base_60_number(
    interval: str, path: str, written: str, number: int
) -> None:
    found = errors_of(f"time_intervals:\n- name: t\n  time_intervals: [{interval}]")
    assert list(found) == [(f"time_intervals[0].time_intervals[0].{path}", 3)]
    message = next(iter(found.values()))
    assert f"YAML read {written} as the number {number}" in message
    assert "base 60" in message
    assert f'quote it, "{written}"' in message
    assert "couldn't parse timestamp" not in message


def test_a_base_60_number_elsewhere_is_explained_too() -> None:
    found = errors_of("cluster: 1:30\n")
    assert found == {
        ("cluster", 1): (
            "YAML read 1:30 as the number 90 (unquoted digits with a colon are base 60 in "
            'YAML 1.1): quote it, "1:30"'
        )
    }
