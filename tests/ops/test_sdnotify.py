"""``canarywatch.sdnotify`` against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from canarywatch.sdnotify import SystemdNotifier, watchdog_interval_s, watchdog_loop

_SUN_PATH_MAX = 100  # sockaddr_un.sun_path is 108 bytes; keep a margin


class FakeSystemd:
    """A bound datagram socket: what systemd's notify socket is."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    @property
    def environ(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.env_value}

    def receive(self) -> list[str]:
        data = self.sock.recv(4096)
        return data.decode().split("\n")

    def pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        finally:
            self.sock.setblocking(True)
        return True


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter temp dir when its path would not fit in ``sun_path``."""
    if len(str(tmp_path / "notify.sock")) < _SUN_PATH_MAX:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="cw-") as name:
        yield Path(name)


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[FakeSystemd]:
    path = short_dir / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield FakeSystemd(sock, str(path))
    finally:
        sock.close()


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the abstract socket namespace is Linux-only")
    name = f"canarywatch-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    try:
        yield FakeSystemd(sock, "@" + name)
    finally:
        sock.close()


def test_ready_sends_ready_1(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    assert notifier.enabled
    assert notifier.ready() is True
    assert systemd.receive() == ["READY=1"]
    notifier.close()


def test_ready_with_status_is_one_datagram(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    notifier.ready(status="watching 2 clusters")
    assert systemd.receive() == ["READY=1", "STATUS=watching 2 clusters"]
    notifier.close()


def test_stopping_watchdog_and_status(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    notifier.stopping()
    notifier.watchdog()
    notifier.status("draining\n3 notifications  left")
    assert systemd.receive() == ["STOPPING=1"]
    assert systemd.receive() == ["WATCHDOG=1"]
    # STATUS= is one line: a newline would start a new (bogus) assignment.
    assert systemd.receive() == ["STATUS=draining 3 notifications left"]
    notifier.close()


def test_reloading_carries_monotonic_usec(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = systemd.receive()
    assert first == "RELOADING=1"
    key, _, value = second.partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    notifier.close()


def test_abstract_namespace_socket(abstract_systemd: FakeSystemd) -> None:
    assert abstract_systemd.env_value.startswith("@")
    notifier = SystemdNotifier(abstract_systemd.environ)
    assert notifier.ready() is True
    assert abstract_systemd.receive() == ["READY=1"]
    notifier.close()


def test_socket_is_reused_between_messages(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    notifier.watchdog()
    first = notifier._sock
    notifier.watchdog()
    assert notifier._sock is first is not None
    assert systemd.receive() == systemd.receive() == ["WATCHDOG=1"]
    notifier.close()
    assert notifier._sock is None


def test_unset_socket_is_a_silent_no_op() -> None:
    with capture_logs() as logs:
        notifier = SystemdNotifier({})
        assert not notifier.enabled
        assert notifier.ready() is False
        assert notifier.stopping() is False
        assert notifier.watchdog() is False
        assert notifier.status("x") is False
        assert notifier.reloading() is False
    assert notifier._sock is None
    assert logs == []


def test_empty_socket_variable_is_unset() -> None:
    assert not SystemdNotifier({"NOTIFY_SOCKET": ""}).enabled


def test_reads_os_environ_by_default(systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.env_value)
    notifier = SystemdNotifier()
    notifier.ready()
    assert systemd.receive() == ["READY=1"]
    notifier.close()


def test_missing_socket_never_raises_and_logs_once(short_dir: Path) -> None:
    gone = short_dir / "gone.sock"
    with capture_logs() as logs:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(gone)})
        assert notifier.ready() is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    failures = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert len(failures) == 1
    assert failures[0]["log_level"] == "warning"
    assert failures[0]["socket"] == str(gone)


def test_recovers_when_the_socket_comes_back(short_dir: Path) -> None:
    path = short_dir / "late.sock"
    with capture_logs() as logs:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.watchdog() is False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(2.0)
        try:
            assert notifier.watchdog() is True
            assert sock.recv(100) == b"WATCHDOG=1"
        finally:
            sock.close()
            notifier.close()
    assert [e["event"] for e in logs] == ["sd_notify_failed", "sd_notify_recovered"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "1000"}, 0.0005),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], expected: float | None
) -> None:
    assert watchdog_interval_s(environ) == expected


class _Stop(Exception):
    """Ends a watchdog loop from inside the fake sleep."""


async def test_watchdog_loop_pings_only_while_healthy(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)
    health = iter([True, True, False, False, True])
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) == 5:
            raise _Stop

    with capture_logs() as logs, pytest.raises(_Stop):
        await watchdog_loop(
            notifier, healthy=lambda: next(health), interval_s=7.5, clock_sleep=fake_sleep
        )
    assert sleeps == [7.5] * 5
    assert [systemd.receive() for _ in range(3)] == [["WATCHDOG=1"]] * 3
    assert not systemd.pending()
    events = [e["event"] for e in logs]
    assert events == ["watchdog_started", "watchdog_withheld", "watchdog_resumed"]
    notifier.close()


async def test_watchdog_loop_treats_a_raising_check_as_unhealthy(systemd: FakeSystemd) -> None:
    notifier = SystemdNotifier(systemd.environ)

    def broken() -> bool:
        raise RuntimeError("boom")

    async def fake_sleep(delay: float) -> None:
        raise _Stop

    with capture_logs() as logs, pytest.raises(_Stop):
        await watchdog_loop(notifier, healthy=broken, interval_s=1.0, clock_sleep=fake_sleep)
    assert not systemd.pending()
    assert "watchdog_check_failed" in [e["event"] for e in logs]
    notifier.close()


async def test_watchdog_loop_reads_the_interval_from_the_environment(
    systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier(systemd.environ)
    sleeps: list[float] = []

    async def fake_sleep(delay: float) -> None:
        sleeps.append(delay)
        raise _Stop

    with pytest.raises(_Stop):
        await watchdog_loop(notifier, healthy=lambda: True, clock_sleep=fake_sleep)
    assert sleeps == [15.0]
    assert systemd.receive() == ["WATCHDOG=1"]
    notifier.close()


@pytest.mark.parametrize("environ", [{}, {"WATCHDOG_USEC": "30000000"}])
async def test_watchdog_loop_returns_at_once_when_off(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    slept: list[float] = []

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)

    # {}: the watchdog is off; WATCHDOG_USEC without NOTIFY_SOCKET: nobody to ping.
    await watchdog_loop(SystemdNotifier({}), healthy=lambda: True, clock_sleep=fake_sleep)
    assert slept == []
