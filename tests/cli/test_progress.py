"""Long commands keep a status line on a terminal (stderr a TTY: here a pty), and only there."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
from pathlib import Path

from tests.cli import CLI, ENV, daemon_config

from canarywatch.cli.progress import Progress, format_elapsed

ROOT = Path(__file__).resolve().parents[2]
DAY = ROOT / "tests" / "recordings" / "day.jsonl"
TERMINAL = -100
"""``stdout=TERMINAL``: stdout on the same pty as stderr."""


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_draws_in_place_throttled_and_clears() -> None:
    now = [0.0]
    stream = Terminal()
    with Progress(stream, now=lambda: now[0], min_interval_s=1.0) as status:
        assert status.active
        status.update("recording: 1 observations")
        status.update("recording: 2 observations")  # too soon: skipped
        now[0] = 1.5
        status.update("recording: 3")
        status.update("recording: 4", force=True)
    assert stream.getvalue() == (
        "\rrecording: 1 observations\rrecording: 3             \rrecording: 4\r            \r"
    )


def test_progress_is_silent_off_a_terminal_or_when_stdout_shares_it() -> None:
    pipe = io.StringIO()
    with Progress(pipe) as status:
        status.update("x")
    assert not status.active
    assert pipe.getvalue() == ""
    terminal = Terminal()
    with Progress(terminal, unless=Terminal()) as shared:
        shared.update("x")
    assert not shared.active
    assert terminal.getvalue() == ""
    assert not Progress(None).active


def test_format_elapsed() -> None:
    assert [format_elapsed(s) for s in (0, 59.9, 75, 3725)] == ["0s", "59s", "1m15s", "1h02m05s"]


def _run_with_stderr_on_a_pty(args: list[str], *, stdout: int | None) -> tuple[int, str]:
    """Run ``canarywatch ARGS`` with stderr on a pty (and stdout too if ``stdout`` is
    ``TERMINAL``); returns its exit status and what the terminal received."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, *args],
            stdin=subprocess.DEVNULL,
            stdout=slave if stdout == TERMINAL else stdout,
            stderr=slave,
            env=ENV,
        )
    finally:
        os.close(slave)
    received = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 30)
            assert ready, "the command went quiet on its terminal"
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the pty has gone
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, received.decode("utf-8", "replace")


def test_record_shows_its_progress_on_a_terminal(tmp_path: Path) -> None:
    config = daemon_config(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["record", "--config", str(config), "--output", str(output), "--duration", "1500ms"]
    code, terminal = _run_with_stderr_on_a_pty(args, stdout=subprocess.DEVNULL)
    assert code == 0, terminal
    assert f"\rrecording to {output}: 0 observations, 0s" in terminal
    assert f"recorded 0 observations to {output}" in terminal
    assert "Traceback" not in terminal


def test_record_prints_no_progress_into_a_pipe(tmp_path: Path) -> None:
    config = daemon_config(tmp_path)
    output = tmp_path / "out.jsonl"
    args = ["record", "--config", str(config), "--output", str(output), "--duration", "1s"]
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=ENV, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert f"recording to {output}:" not in done.stderr
    assert done.stderr.endswith(f"recorded 0 observations to {output}\n")


def test_replay_shows_its_progress_when_the_notifications_go_elsewhere(tmp_path: Path) -> None:
    out = tmp_path / "notifications.jsonl"
    with out.open("wb") as stdout:
        code, terminal = _run_with_stderr_on_a_pty(["replay", str(DAY)], stdout=stdout.fileno())
    assert code == 0, terminal
    assert "\rreplaying: 1/56 observations, 0 notifications" in terminal
    assert terminal.endswith("\r")  # the status line is cleared at the end
    assert len(out.read_text(encoding="utf-8").splitlines()) == 39


def test_replay_to_the_same_terminal_shows_no_status_line() -> None:
    code, terminal = _run_with_stderr_on_a_pty(["replay", str(DAY)], stdout=TERMINAL)
    assert code == 0, terminal
    assert "replaying:" not in terminal
    assert terminal.count('"receiver"') == 39
