"""The command line as a real process: what a user sees on stderr and the exit status.

Helpers shared by the modules here: run ``python -m canarywatch`` (stdout open, a pipe whose
reader is already gone, or a file), stop a long-running command as systemd or a user would, and
a daemon subprocess for the commands that talk to one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLI = (sys.executable, "-m", "canarywatch")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Done:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    signalled: bool
    """We had to stop it (it was still running after ``stop_after``)."""

    def explain(self) -> str:
        return f"canarywatch {' '.join(self.args)} -> {self.returncode}\n{self.stderr[-3000:]}"

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def assert_clean(done: Done) -> None:
    """No traceback and nothing Python printed on its own (``Exception ignored in ...``)."""
    assert TRACEBACK not in done.stderr, done.explain()
    assert "Exception ignored" not in done.stderr, done.explain()
    assert "BrokenPipeError" not in done.stderr, done.explain()
    # Not killed by a signal; SIGTERM that we sent may end a command that has no handler.
    assert done.returncode >= 0 or (done.signalled and done.returncode == -signal.SIGTERM), (
        done.explain()
    )


def closed_pipe() -> int:
    """The writing end of a pipe whose reader has already gone (``| head`` that exited)."""
    read, write = os.pipe()
    os.close(read)
    return write


def run_cli(
    args: Sequence[str],
    *,
    stdout: int | None = subprocess.PIPE,
    stop_after: float = 20.0,
    stop_signal: int = signal.SIGTERM,
    timeout: float = 60.0,
) -> Done:
    """Run one command; one still running after ``stop_after`` seconds gets ``stop_signal``."""
    args = tuple(args)
    proc = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    signalled = False
    try:
        out, err = proc.communicate(timeout=stop_after)
    except subprocess.TimeoutExpired:
        signalled = True
        proc.send_signal(stop_signal)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    return Done(args, proc.returncode, out or "", err or "", signalled)


@contextmanager
def busy_port() -> Iterator[int]:
    """A port someone else listens on (bound here, port 0: safe when tests run in parallel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def daemon_config(directory: Path, *, listen: str = "127.0.0.1:0") -> Path:
    """A config the daemon runs with and nothing else: no cluster, state in ``directory``."""
    path = directory / "canarywatch.yaml"
    path.write_text(
        f'server: {{listen: "{listen}"}}\n'
        f"state: {{dir: {json.dumps(str(directory / 'state'))}}}\n"
        "log: {level: info, format: json}\n",
        encoding="utf-8",
    )
    return path


class Daemon:
    """``canarywatch run`` as a subprocess; its output (JSON log lines) goes to a file."""

    def __init__(self, directory: Path) -> None:
        self.config = daemon_config(directory)
        self.log_path = directory / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*CLI, "run", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        try:
            started = self.wait_for("daemon_started", timeout=timeout)
        except AssertionError:
            self.stop()
            raise
        self.url = f"http://{started['listen']}"

    def wait_for(self, event: str, *, timeout: float = 30.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(encoding="utf-8").splitlines():
                if f'"{event}"' in line:
                    record: dict[str, object] = json.loads(line)
                    return record
            if self.process.poll() is not None:
                raise AssertionError(f"the daemon exited: {self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {event} in {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")[-3000:]

    def stop(self) -> int:
        """SIGTERM to the process we started (never by name); its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _default_sigint() -> None:
    """Ctrl-C as on a terminal: a test run in the background (no job control) would otherwise
    hand its children SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Started:
    """A command running in the background; its stdout and stderr go to files we can poll."""

    def __init__(self, args: Sequence[str], directory: Path) -> None:
        self.args = tuple(args)
        self.out_path = directory / "stdout"
        self.err_path = directory / "stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [*CLI, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=ENV,
                preexec_fn=_default_sigint,
            )

    def text(self, stream: str = "stderr") -> str:
        path = self.err_path if stream == "stderr" else self.out_path
        return path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, *, stream: str = "stderr", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text(stream):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"no {text!r} on {stream}:\n{self.text()[-3000:]}")
            time.sleep(0.05)

    def stop(self, sig: int, *, timeout: float = 30.0) -> Done:
        """Send ``sig`` (to the process we started) and wait for it to exit."""
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        return Done(
            self.args, self.process.returncode, self.text("stdout"), self.text(), signalled=True
        )
