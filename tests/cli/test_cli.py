"""The command line as a user runs it: output shapes and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from canarywatch.cli.entry import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = Path(__file__).parents[1] / "recordings"


def test_replay_prints_one_json_line_per_notification(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(RECORDINGS / "rollback.jsonl")]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["events"][0]["transition"] for r in records] == [
        "revision-detected",
        "analysis-started",
        "weight-advanced",
        "weight-advanced",
        "halted",
        "rolled-back",
    ]
    last = records[-1]
    assert set(last) == {"at", "receiver", "status", "group", "group_key", "events"}
    assert last["receiver"] == "default"
    assert last["status"] == "firing"
    assert last["at"] == "2026-08-04T14:08:02Z"
    event = last["events"][0]
    for key in (
        "canary", "transition", "severity", "phase", "weight", "failed_checks", "message",
        "reason", "rollout", "labels", "observed_at", "sources",
    ):  # fmt: skip
        assert key in event
    assert event["canary"] == "test/podinfo"
    assert event["severity"] == "critical"
    assert event["labels"]["transition"] == "rolled-back"


def test_replay_with_a_policy_file_routes_to_its_receivers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        """
route:
  receiver: everything
  group_by: ["..."]
  routes:
    - receiver: oncall
      matchers: ['severity="critical"']
receivers:
  - name: everything
    sink: jsonl
  - name: oncall
    sink: jsonl
""",
        encoding="utf-8",
    )
    assert main(["replay", str(RECORDINGS / "no-traffic-halt.jsonl"), "--config", str(policy)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_receiver = {(r["receiver"], r["events"][0]["transition"]) for r in records}
    assert ("oncall", "rolled-back") in by_receiver
    assert ("everything", "rolled-back") not in by_receiver
    assert ("everything", "no-traffic") in by_receiver


def test_replay_rejects_a_bad_line_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    good = (RECORDINGS / "rollback.jsonl").read_text(encoding="utf-8").splitlines()
    bad.write_text("\n".join([good[1], '{"at": "yesterday", "source": "canaries"}']) + "\n")
    assert main(["replay", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err
    assert "'at'" in err


def test_check_config_accepts_the_examples_and_names_key_and_line_on_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for example in ("canarywatch.example.yaml", "policy.example.yaml"):
        assert main(["check-config", str(ROOT / "config" / example)]) == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "route:\n  receiver: oncall\nreceivers:\n  - name: oncall\n    sink: slak\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["check-config", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml:5" in err
    assert "receivers[0].sink" in err
    assert "slak" in err


def test_plugins_lists_the_builtin_sinks_with_their_distribution(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for name in ("console", "jsonl"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "canarywatch" in line
        assert "canarywatch_sinks." in line


def test_demo_replay_plays_the_bundled_day_through_the_console_sink() -> None:
    # A real subprocess: the installed entry point, the packaged scenario, the real sink.
    done = subprocess.run(
        [sys.executable, "-m", "canarywatch", "demo", "--replay"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rolled-back" in done.stdout
    assert "test/podinfo" in done.stdout
    assert "56 observations -> 39 transitions -> 39 notifications" in done.stderr


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"canarywatch {metadata.version('canarywatch')}\n"


@pytest.mark.parametrize("action", ["add", "list", "expire"])
def test_the_daemon_options_count_after_the_action_as_before_it(action: str) -> None:
    rest = {
        "add": ['namespace="shop"', "--created-by", "ana", "--comment", "load test"],
        "list": [],
        "expire": ["some-id"],
    }[action]
    url, token = "http://127.0.0.1:19999", "/run/token"
    before = build_parser().parse_args(
        ["silence", "--url", url, "--token-file", token, action, *rest]
    )
    after = build_parser().parse_args(
        ["silence", action, *rest, "--url", url, "--token-file", token]
    )
    for args in (before, after):
        assert args.url == url
        assert args.token_file == Path(token)
    # Not given after the action: what was given before it (or the default) stands.
    untouched = build_parser().parse_args(["silence", "--url", url, action, *rest])
    assert untouched.url == url
    assert untouched.token_file is None
    assert build_parser().parse_args(["outbox", "list"]).url == "http://127.0.0.1:9797"


def test_silence_add_with_url_after_the_action_reaches_that_daemon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens on port 9 (discard): the error must name the given address, not 9797.
    code = main(
        [
            "silence", "add", "--url", "http://127.0.0.1:9", 'namespace="shop"',
            "--created-by", "ana", "--comment", "x",
        ]
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "http://127.0.0.1:9" in err


def test_demo_json_without_replay_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("canarywatch: demo --json needs --replay")


@pytest.mark.parametrize("command", [["tail"], ["silence", "list"], ["outbox", "list"]])
def test_an_unreadable_token_file_is_one_line_naming_it_and_why(
    command: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "token"
    for path, why in ((missing, "No such file or directory"), (tmp_path, "Is a directory")):
        assert main([*command, "--token-file", str(path)]) == 2
        err = capsys.readouterr().err
        assert err == f"canarywatch: {path}: cannot read token file: {why}\n"


def test_record_output_in_a_missing_directory_or_naming_one_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cases = {
        tmp_path / "nope" / "bug.jsonl": f"{tmp_path / 'nope'}: no such directory",
        tmp_path: "it is a directory",
    }
    for output, why in cases.items():
        assert main(["record", "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err == f"canarywatch: {output}: cannot write the recording: {why}\n"
    assert not (tmp_path / "nope").exists()  # not created on the way
