"""``canarywatch replay --explain``: a recording carries its own explanation, printed as
``canarywatch explain`` prints a running daemon's (issue 15, "Explain every decision")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canarywatch.cli.entry import main
from canarywatch.cli.exitcodes import EXIT_CONFIG
from canarywatch.formats import recording
from canarywatch.pipeline import policy
from canarywatch.pipeline.replay import replay
from canarywatch.views.explain import DecisionRecorder, explanation, render_explanation

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
MULTISOURCE = RECORDINGS / "rollback-multisource.jsonl"
ROLLBACK = RECORDINGS / "rollback.jsonl"
GROUP_WAIT = """
receivers: [{name: oncall, sink: console}]
route: {receiver: oncall, group_wait: 10m}
"""


def test_every_transition_of_a_bundled_recording_is_explained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", str(MULTISOURCE), "--explain"]) == 0
    out = capsys.readouterr().out
    assert not any(line.startswith("{") for line in out.splitlines())  # no notification JSON
    assert out.startswith("test/podinfo: 6 transitions\n")
    # The same recorder, filled by the same pipeline, renders the very same text.
    recorder = DecisionRecorder(per_canary=100_000, max_age_s=None, max_trails=None)
    for _ in replay(recording.read(MULTISOURCE), policy.build_pipeline(None, explain=recorder)):
        pass
    assert out == render_explanation(explanation(recorder, "test", "podinfo"))
    # Four sources saw the rollback; each later one is deduplicated against the first sighting.
    verdict = out[out.index("\nrolled-back") :]
    assert "  => handed to delivery for default" in verdict
    assert "seen by: kubernetes-events at 2026-08-04T14:08:02Z (2 times" in verdict
    for source in ("canaries", "flagger-webhook", "flagger-metrics"):
        assert (
            f"seen again by {source}: deduplicated against the first sighting "
            "(by kubernetes-events at 2026-08-04T14:08:02Z)"
        ) in verdict


def test_one_transition_suppressed_at_the_flush_names_rule_and_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "policy.yaml"
    config.write_text(GROUP_WAIT, encoding="utf-8")
    args = ["replay", str(ROLLBACK), "--config", str(config), "--canary", "test/podinfo"]
    assert main([*args, "--transition", "halted"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("test/podinfo: 1 transition 'halted'\n")
    assert "  => suppressed (inhibited): nothing sent\n" in out
    assert "group_wait 10m" in out
    assert (
        "at the flush: inhibited by inhibit rule #0 (source_matchers "
        '{transition=~"rolled-back|promotion-failed"}'
    ) in out
    assert "through the firing rolled-back of test/podinfo (rollout e-" in out


def test_stats_still_go_to_stderr_and_a_bad_transition_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["replay", str(ROLLBACK), "--explain", "--stats"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.err)["transitions"] == 6
    assert "test/podinfo: 6 transitions" in captured.out
    assert main(["replay", str(ROLLBACK), "--explain", "--transition", "rolledback"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith("canarywatch: --transition 'rolledback' is neither a transition")
