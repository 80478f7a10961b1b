"""``canarywatch run`` under a fake systemd: READY, WATCHDOG, RELOADING on SIGHUP, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_DEADLINE_S = 15.0


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[list[str]] = []

    def wait_for(self, assignment: str, timeout_s: float = _DEADLINE_S) -> list[str]:
        """The first datagram (from now on) containing ``assignment``."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                break
            self.seen.append(message)
            if assignment in message:
                return message
        pytest.fail(f"no {assignment} within {timeout_s}s; saw {self.seen}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with tempfile.TemporaryDirectory(prefix="cw-") as directory:
        sock = NotifySocket(Path(directory) / "notify.sock")
        try:
            yield sock
        finally:
            sock.close()


def test_run_speaks_the_notify_protocol(notify: NotifySocket, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"state:\n  dir: {tmp_path / 'state'}\nserver:\n  listen: 127.0.0.1:0\n",
        encoding="utf-8",
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "2000000",  # ping every second
    }
    env.pop("WATCHDOG_PID", None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "canarywatch", "run", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1", timeout_s=5)

        process.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING=1")
        assert any(a.startswith("MONOTONIC_USEC=") for a in reloading)
        notify.wait_for("READY=1")

        process.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        code = process.wait(timeout=30)
        assert code == 0, log_path.read_text(errors="replace")[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
