"""``canarywatch check-config``: every problem in one run, sink options at their own key, secrets
checked without being read, and ``-`` for standard input."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
from tests.cli import CLI, ENV, assert_clean, run_cli

from canarywatch.cli.entry import main
from canarywatch.cli.exitcodes import EXIT_CONFIG

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "config" / "kubernetes").glob("*/config.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_an_unknown_sink_is_reported_with_a_route_error_and_every_missing_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        f"""
        receivers:
          - name: oncall
            sink: slack
            options:
              webhook_url: {{file: {tmp_path / "no-such-webhook"}}}
          - name: audit
            sink: slak
        route:
          receiver: oncall
          routes:
            - receiver: on-call
        server:
          listen: 0.0.0.0:9797
          token: {{file: {tmp_path / "no-such-token"}}}
        """,
    )
    assert main(["check-config", str(config)]) == EXIT_CONFIG
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("canarywatch: configuration error: ")
    lines[0] = lines[0].removeprefix("canarywatch: configuration error: ")
    assert [line.split(": ")[1] for line in lines] == [
        "receivers[0].options.webhook_url",
        "receivers[1].sink",
        "route.routes[0].receiver",
        "server.token",
    ]
    assert lines[0].startswith(f"{config}:5: ")
    assert "no-such-webhook" in lines[0]
    assert lines[1] == (
        f"{config}:7: receivers[1].sink: unknown sink 'slak'; known sinks: "
        "alertmanager, console, discord, jsonl, slack, teams, webhook"
    )
    assert "no-such-token" in lines[3]


def test_a_sink_option_error_names_the_option_and_its_line_in_our_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        """
        receivers:
          - name: team
            sink: slack
            options:
              webhook_url: {value: "https://hooks.slack.com/services/T/B/x"}
              chanel: "#deploys"
              min_interval_s: soon
              links:
                dashbord: https://grafana.example/d/x
        route: {receiver: team}
        """,
    )
    assert main(["check-config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "Extra inputs are not permitted" not in err
    assert "Input should be" not in err
    assert f"{config}:6: receivers[0].options.chanel: unknown option 'chanel' (did you mean " in err
    assert f"{config}:7: receivers[0].options.min_interval_s: expected a number" in err
    assert f"{config}:9: receivers[0].options.links.dashbord: unknown option 'dashbord'" in err
    assert f"{config}:4:" not in err  # never the `options:` line for one option's problem


def test_a_sink_without_options_names_each_option_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        """
        receivers:
          - name: out
            sink: jsonl
            options: {colour: red}
        route: {receiver: out}
        """,
    )
    assert main(["check-config", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{config}:4: receivers[0].options.colour: unknown option 'colour'" in err


@pytest.mark.parametrize("config", SHIPPED, ids=lambda path: path.parent.name)
def test_every_shipped_kubernetes_config_checks_with_skip_secrets(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", "--skip-secrets", str(config)]) == 0
    assert capsys.readouterr().out.endswith("; secrets not read)\n")


def test_the_shipped_configs_are_all_found() -> None:
    assert [path.parent.name for path in SHIPPED] == ["base", "sidecar"]


@pytest.mark.skipif(
    Path("/var/run/secrets/canarywatch").exists(), reason="the cluster's secrets are here"
)
def test_without_skip_secrets_every_missing_secret_file_is_named_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ROOT / "config" / "kubernetes" / "base" / "config.yaml"
    assert main(["check-config", str(base)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "receivers[0].options.webhook_url: cannot read secret file" in err
    assert "server.token: cannot read secret file" in err


def test_skip_secrets_still_reports_everything_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        """
        receivers:
          - name: team
            sink: slack
            options:
              webhook_url: {file: /only/in/the/pod}
              chanel: "#x"
        route: {receiver: team}
        server: {token: {file: ''}}
        """,
    )
    assert main(["check-config", "--skip-secrets", str(config)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "/only/in/the/pod" not in err
    assert "receivers[0].options.chanel" in err
    assert "server.token: {file: ...} needs a non-empty string" in err


def _with_stdin(args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    """``canarywatch ARGS`` with ``stdin`` as standard input (``None``: closed, ``<&-``)."""
    if stdin is None:
        return subprocess.run(
            ["sh", "-c", 'exec "$@" <&-', "sh", *CLI, *args],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, env=ENV, timeout=60, check=False
    )


def test_check_config_reads_standard_input_for_dash() -> None:
    done = _with_stdin(
        ["check-config", "-"], "receivers: [{name: a, sink: slak}]\nroute: {receiver: a}\n"
    )
    assert done.returncode == EXIT_CONFIG, done.stderr
    assert done.stderr.startswith("canarywatch: configuration error: <stdin>:1: receivers[0].sink")
    ok = _with_stdin(["check-config", "-"], "route: {receiver: default}\n")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("<stdin>: ok (1 receivers")
    routes = _with_stdin(["route-test", "-", "severity=critical"], "cluster: x\n")
    assert routes.returncode == 0, routes.stderr
    assert routes.stdout.startswith("default\n")


def test_a_closed_standard_input_is_one_line() -> None:
    done = _with_stdin(["check-config", "-"], None)
    assert "Traceback" not in done.stderr
    assert done.returncode == EXIT_CONFIG
    assert done.stderr == (
        "canarywatch: -: cannot read the configuration from standard input: it is closed\n"
    )


def test_check_config_as_a_process_prints_no_traceback(tmp_path: Path) -> None:
    config = write(tmp_path, "receivers: [{name: a, sink: slak, options: {x: 1}}]\n")
    done = run_cli(["check-config", "--skip-secrets", str(config)])
    assert_clean(done)
    assert done.returncode == EXIT_CONFIG


@pytest.mark.skipif(
    Path("/var/run/secrets/canarywatch").exists(), reason="the cluster's secrets are here"
)
def test_route_test_and_replay_need_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    """Neither sends anything, so a config whose secrets exist only in the cluster works."""
    base = str(ROOT / "config" / "kubernetes" / "base" / "config.yaml")
    assert main(["route-test", base, "severity=critical"]) == 0
    assert capsys.readouterr().out.startswith("platform\n")
    rollback = str(ROOT / "tests" / "recordings" / "rollback.jsonl")
    assert main(["replay", rollback, "--config", base]) == 0
    assert '"receiver":"platform"' in capsys.readouterr().out.replace(" ", "")
    # Delivering does need them: --send reads them and says which is missing.
    assert main(["replay", rollback, "--config", base, "--send"]) == EXIT_CONFIG
    assert "cannot read secret file" in capsys.readouterr().err
