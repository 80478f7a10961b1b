"""Ctrl-C and SIGTERM on the long-running commands: one line on stderr, the right exit status.

- ``demo``: stopping it is how a demo ends: one line, exit 0, for SIGINT and SIGTERM alike.
- ``run``: SIGTERM drains and exits 0 (systemd's stop); Ctrl-C drains the same way and exits 130
  with one line, as a shell expects of an interrupted command.
- ``record``, ``tail``: Ctrl-C is 130 with one line (``record`` says what it wrote); SIGTERM on
  ``record`` ends the recording normally.

Each signal is sent once the command is up (it has printed that it is), to the process we
started.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.cli import Daemon, Done, Started, assert_clean, daemon_config

from canarywatch.cli.exitcodes import EXIT_INTERRUPTED, EXIT_OK


def _one_line(done: Done, *, after_header: bool = False) -> str:
    """What the command said on stderr besides its log records (JSON): one line (after the
    demo's header)."""
    assert_clean(done)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("{")]
    assert said, done.explain()
    if not after_header:
        assert len(said) == 1, done.explain()
    return said[-1]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = Daemon(tmp_path_factory.mktemp("daemon"))
    daemon.start()
    yield daemon
    assert daemon.stop() == EXIT_OK, daemon.log()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_stopping_the_demo_is_one_line_and_success(sig: signal.Signals, tmp_path: Path) -> None:
    demo = Started(["demo", "--port", "0", "--duration", "60s"], tmp_path)
    demo.wait_for("playing 6 Flagger scenario(s)")
    done = demo.stop(sig)
    assert done.returncode == EXIT_OK, done.explain()
    line = _one_line(done, after_header=True)
    assert line.startswith("canarywatch demo: stopped after "), done.explain()
    assert "RuntimeError" not in done.stderr


def test_sigterm_on_run_drains_and_exits_0_and_says_nothing_is_configured(tmp_path: Path) -> None:
    run = Started(["run", "--config", str(daemon_config(tmp_path))], tmp_path)
    run.wait_for('"sources_listed"')
    done = run.stop(signal.SIGTERM)
    assert done.returncode == EXIT_OK, done.explain()
    assert_clean(done)
    assert '"drain_finished"' in done.stderr
    assert "interrupted" not in done.stderr
    # No cluster, no metrics source, no webhook intake: said once, as a warning, at start.
    warnings = [line for line in done.stderr.splitlines() if '"sources_not_configured"' in line]
    assert len(warnings) == 1, done.explain()
    assert '"level": "warning"' in warnings[0]


def test_ctrl_c_on_run_drains_then_exits_130_with_one_line(tmp_path: Path) -> None:
    run = Started(["run", "--config", str(daemon_config(tmp_path))], tmp_path)
    run.wait_for('"sources_listed"')
    done = run.stop(signal.SIGINT)
    assert done.returncode == EXIT_INTERRUPTED, done.explain()
    assert '"drain_finished"' in done.stderr  # the same clean shutdown as SIGTERM
    assert _one_line(done) == "canarywatch run: interrupted (shut down cleanly)"


def test_ctrl_c_on_record_exits_130_saying_what_it_wrote(tmp_path: Path) -> None:
    output = tmp_path / "bug.jsonl"
    config = daemon_config(tmp_path)
    record = Started(["record", "--config", str(config), "--output", str(output)], tmp_path)
    record.wait_for('"recording_started"')
    done = record.stop(signal.SIGINT)
    assert done.returncode == EXIT_INTERRUPTED, done.explain()
    assert (
        _one_line(done) == f"canarywatch record: interrupted (recorded 0 observations to {output})"
    )
    assert output.exists()


def test_sigterm_on_record_ends_the_recording(tmp_path: Path) -> None:
    output = tmp_path / "bug.jsonl"
    config = daemon_config(tmp_path)
    record = Started(["record", "--config", str(config), "--output", str(output)], tmp_path)
    record.wait_for('"recording_started"')
    done = record.stop(signal.SIGTERM)
    assert done.returncode == EXIT_OK, done.explain()
    assert _one_line(done) == f"recorded 0 observations to {output}"


def test_ctrl_c_on_tail_exits_130_with_one_line(daemon: Daemon, tmp_path: Path) -> None:
    tail = Started(["tail", "--url", daemon.url], tmp_path)
    tail.wait_for("0 canaries", stream="stdout")
    done = tail.stop(signal.SIGINT)
    assert done.returncode == EXIT_INTERRUPTED, done.explain()
    assert _one_line(done) == "canarywatch tail: interrupted"
