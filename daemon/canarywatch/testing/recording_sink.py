"""``RecordingSink``: a sink that keeps what it was given and fails, hangs or blocks on cue."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar, Final

import aiohttp
import structlog

from canarywatch.clock import Clock
from canarywatch.model import Notification
from canarywatch.sinks import (
    BoundLogger,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    notification_to_json,
)

__all__ = ["HANG", "RecordingSink"]


class _Hang:
    """Script step: the attempt never finishes (until the dispatcher's timeout cancels it)."""


HANG: Final = _Hang()


class RecordingSink(Sink):
    """A sink that records payloads and follows a script of failures.

    ``render`` returns ``notification_to_json(n)``. Each ``deliver`` call is one attempt: it
    takes the next scripted step (``fail_next``/``hang_next``; none left means succeed), then
    waits while ``pause()``d, then records the payload. With a ``clock`` it also records when
    each attempt started (``attempted_at``), so tests can assert backoff delays.

    Unlike real sinks it needs no ``http`` session; pass one or not.
    """

    supports_resolve: ClassVar[bool] = True

    def __init__(
        self,
        name: str = "recording",
        options: Mapping[str, object] | None = None,
        *,
        http: aiohttp.ClientSession | None = None,
        log: BoundLogger | None = None,
        clock: Clock | None = None,
    ) -> None:
        # Deliberately not Sink.__init__: that one requires a session this sink never uses.
        self.name = name
        self.log = log if log is not None else structlog.get_logger()
        self.clock = clock
        self.payloads: list[Payload] = []
        self.attempts = 0
        self.attempted_at: list[datetime] = []
        self.checked = False
        self.closed = False
        self._script: deque[DeliveryError | _Hang] = deque()
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()

    def fail_next(self, n: int = 1, error: DeliveryError | None = None) -> None:
        """Make the next ``n`` attempts raise ``error`` (default: a retryable HTTP 503)."""
        err = error or DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=503)
        self._script.extend([err] * n)

    def hang_next(self, n: int = 1) -> None:
        """Make the next ``n`` attempts hang until cancelled (exercises per-attempt timeouts)."""
        self._script.extend([HANG] * n)

    def pause(self) -> None:
        """Block every attempt (after its scripted step) until ``resume()``."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    def render(self, n: Notification) -> Payload:
        return notification_to_json(n)

    async def deliver(self, payload: Payload) -> None:
        self.attempts += 1
        if self.clock is not None:
            self.attempted_at.append(self.clock.now())
        async with self._changed:
            self._changed.notify_all()
        step = self._script.popleft() if self._script else None
        if isinstance(step, _Hang):
            await asyncio.Event().wait()
        elif step is not None:
            raise step
        await self._open.wait()
        self.payloads.append(payload)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, count: int) -> list[Payload]:
        """Wait until at least ``count`` payloads were delivered (bound it with a timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.payloads) >= count)
        return self.payloads

    async def wait_for_attempts(self, count: int) -> None:
        """Wait until ``deliver`` was entered at least ``count`` times."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.attempts >= count)

    async def check(self) -> None:
        self.checked = True

    async def aclose(self) -> None:
        self.closed = True
