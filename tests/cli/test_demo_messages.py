"""``canarywatch demo``'s notifications carry Flagger's own message where Flagger wrote one
(issue 15), through the real command: the simulated cluster, the real daemon, the console sink.

The simulated Flagger writes a step's Canary status and then its Event, and the status often
reaches the daemon first. With the default route (``group_wait: 0s``) the notification goes out
at once, with a text that says it comes from the Canary status; with a ``group_wait`` the
Event's text arrives while the step waits in its group and is the one shown.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from canarywatch.normalise.status import STATUS_TEXT

FLAGGER_TEXT = {
    "weight-advanced": "Advance podinfo.test canary weight ",
    "promoted": "Promotion completed! Scaling down podinfo.test",
}


def demo(tmp_path: Path, *args: str) -> list[tuple[str, str]]:
    """``(transition, message)`` of every weight step and promotion the demo printed."""
    command = ["demo", "--port", "0", "--duration", "8s", "--scenario", "successful_rollout"]
    done = subprocess.run(
        [sys.executable, "-m", "canarywatch", *command, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    found = []
    for line in done.stdout.splitlines():
        for transition in FLAGGER_TEXT:
            if f"  {transition}  " in line:
                found.append((transition, line.split('"')[1]))
    assert [t for t, _ in found].count("weight-advanced") == 5, done.stdout
    assert [t for t, _ in found].count("promoted") == 1, done.stdout
    return found


def test_a_message_sent_before_flaggers_says_it_comes_from_the_canary_status(
    tmp_path: Path,
) -> None:
    for transition, message in demo(tmp_path):
        assert message.startswith((FLAGGER_TEXT[transition], STATUS_TEXT)), message


def test_with_a_group_wait_the_demo_shows_flaggers_own_message(tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text(
        "receivers: [{name: screen, sink: console}]\n"
        'route: {receiver: screen, group_by: ["..."], group_wait: 2s}\n',
        encoding="utf-8",
    )
    for transition, message in demo(tmp_path, "--config", str(config)):
        assert message.startswith(FLAGGER_TEXT[transition]), message
