"""The systemd notify protocol (``sd_notify(3)``), in the standard library only.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: an ``AF_UNIX`` datagram socket,
either a path (``/run/systemd/notify``) or, when it starts with ``@``, a name in the Linux
abstract namespace. Each datagram is newline-separated ``KEY=VALUE`` assignments:

- ``READY=1`` once the daemon serves (sources started, web server listening);
- ``RELOADING=1`` + ``MONOTONIC_USEC=...`` when a SIGHUP reload begins, then ``READY=1``;
- ``STOPPING=1`` when the drain begins, so ``systemctl`` shows "deactivating";
- ``STATUS=...`` a one-line status for ``systemctl status``;
- ``WATCHDOG=1`` a keep-alive; systemd kills the service (and ``Restart=`` restarts it) when
  none arrives within ``WatchdogSec``.

Outside systemd (``NOTIFY_SOCKET`` unset: a container, a terminal, the tests) every call is a
no-op. Sending never raises: a notify socket that has gone away is logged once and otherwise
ignored, because losing ``STATUS=`` must never stop a delivery. The protocol is one
``sendto``, so it is not worth a dependency (``systemd-python`` needs libsystemd headers).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from structlog.typing import FilteringBoundLogger

from canarywatch.logs import get_logger

Sleep = Callable[[float], Awaitable[None]]
"""``asyncio.sleep``'s shape; the tests pass a fake that records the delays."""

_SEND_TIMEOUT_S: Final = 1.0
"""A datagram to a full notify socket blocks; never longer than this."""


def _address(raw: str) -> str | bytes:
    """``@name`` -> the abstract-namespace address ``b"\\0name"``; a path is used as is."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class SystemdNotifier:
    """Sends ``sd_notify`` messages to ``$NOTIFY_SOCKET``; does nothing when it is unset.

    ``environ`` replaces ``os.environ`` (tests pass their own). One socket is opened lazily and
    reused; ``close()`` releases it. Methods return whether the datagram was sent.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.socket_path: str | None = raw or None
        self._address: str | bytes | None = _address(raw) if raw else None
        self._sock: socket.socket | None = None
        self._failed_once = False
        self._log = log if log is not None else get_logger("sdnotify")

    @property
    def enabled(self) -> bool:
        """Whether systemd gave us a notify socket."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments in one datagram; ``False`` when not sent."""
        if self._address is None or not assignments:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(_SEND_TIMEOUT_S)
                self._sock = sock
            self._sock.sendto(message, self._address)
        except OSError as exc:
            self._close_socket()
            if not self._failed_once:
                self._failed_once = True
                self._log.warning(
                    "sd_notify_failed",
                    socket=self.socket_path,
                    error=exc.strerror or type(exc).__name__,
                )
            return False
        if self._failed_once:
            self._failed_once = False
            self._log.info("sd_notify_recovered", socket=self.socket_path)
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with an optional ``STATUS=``): startup or a reload is complete."""
        return self.notify("READY=1", *_status_line(status))

    def reloading(self, status: str | None = None) -> bool:
        """``RELOADING=1`` stamped with ``CLOCK_MONOTONIC``; follow with ``ready()``."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status_line(status))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the graceful drain has begun."""
        return self.notify("STOPPING=1", *_status_line(status))

    def status(self, text: str) -> bool:
        """``STATUS=<text>``, shown by ``systemctl status`` (one line, no secrets)."""
        return self.notify(*_status_line(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket (the notifier can still be used; it reopens on demand)."""
        self._close_socket()

    def _close_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_line(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.split()),)


def watchdog_interval_s(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``WatchdogSec``, as ``sd_watchdog_enabled(3)``
    recommends; ``None`` when the watchdog is off or meant for another process.

    systemd sets ``WATCHDOG_USEC`` (the timeout) and ``WATCHDOG_PID`` (the main PID) for the
    service's main process only; a child that inherited them must not ping.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec.isdigit() or int(raw_usec) <= 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid and (not raw_pid.isdigit() or int(raw_pid) != os.getpid()):
        return None
    return int(raw_usec) / 2 / 1_000_000


async def watchdog_loop(
    notifier: SystemdNotifier,
    *,
    healthy: Callable[[], bool],
    interval_s: float | None = None,
    clock_sleep: Sleep = asyncio.sleep,
    log: FilteringBoundLogger | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``interval_s`` while ``healthy()`` says so; runs until cancelled.

    ``interval_s`` defaults to ``watchdog_interval_s()``. When the watchdog is off (or there is
    no notify socket) this returns at once, so start it only when ``watchdog_interval_s()`` is
    not ``None``. While ``healthy()`` is false (or raises) no ping is sent, so systemd restarts
    a process that is alive but stuck; one warning per unhealthy streak.
    """
    log = log if log is not None else get_logger("sdnotify")
    interval = watchdog_interval_s() if interval_s is None else interval_s
    if interval is None or interval <= 0 or not notifier.enabled:
        log.debug("watchdog_disabled")
        return
    log.info("watchdog_started", interval_s=interval)
    unhealthy = False
    while True:
        try:
            ok = healthy()
        except Exception:  # a broken health check means unhealthy, not a dead watchdog loop
            log.exception("watchdog_check_failed")
            ok = False
        if ok:
            if unhealthy:
                log.info("watchdog_resumed")
                unhealthy = False
            notifier.watchdog()
        elif not unhealthy:
            unhealthy = True
            log.warning("watchdog_withheld", interval_s=interval)
        await clock_sleep(interval)
