"""A local HTTP endpoint that captures POSTed JSON: for the ``webhook`` sink and Alertmanager.

With an HMAC secret it verifies ``X-Canarywatch-Signature`` the way a receiver should (over
``timestamp + "." + raw body``, constant-time compare) and answers 401 on a mismatch. Canned
answers (``script``) come first, so tests can provoke 429/5xx/4xx; while ``failing`` is set it
answers 500 (an outage of any length). Each capture keeps when it arrived (``time.monotonic()``)
and what it was answered, for tests that measure delays or count only what was accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Captured:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    verified: bool | None
    """Signature check result; ``None`` when the receiver has no secret."""
    at: float = 0.0
    """``time.monotonic()`` when it arrived."""
    status: int = 200
    """What the receiver answered (only a 2xx was accepted)."""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class WebhookReceiver:
    secret: bytes | None = None
    url: str = ""
    failing: bool = False
    """Answer every request 500 while set (after ``script``'s canned answers)."""
    requests: list[Captured] = field(default_factory=list)
    _script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def script(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        self._script.append((status, dict(headers or {})))

    def verify(self, headers: Mapping[str, str], body: bytes) -> bool:
        assert self.secret is not None
        given = headers.get("X-Canarywatch-Signature", "")
        timestamp = headers.get("X-Canarywatch-Timestamp", "")
        mac = hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(given, "sha256=" + mac.hexdigest())

    def accepted(self) -> list[Captured]:
        """The requests it answered with a 2xx, in arrival order."""
        return [c for c in self.requests if c.ok]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        at = time.monotonic()
        headers = dict(request.headers)
        verified = self.verify(request.headers, body) if self.secret is not None else None
        if self._script:
            status, extra = self._script.popleft()
            answer = web.Response(status=status, headers=extra)
        elif self.failing:
            answer = web.Response(status=500, text="down")
        elif verified is False:
            answer = web.Response(status=401, text="bad signature")
        else:
            answer = web.Response(status=200, text="ok")
        self.requests.append(
            Captured(request.method, request.path_qs, headers, body, verified, at, answer.status)
        )
        async with self._arrived:
            self._arrived.notify_all()
        return answer

    async def wait_for(self, count: int, *, timeout_s: float = 10.0) -> list[Captured]:
        async with asyncio.timeout(timeout_s), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests


@asynccontextmanager
async def run_webhook_receiver(
    secret: bytes | None = None, *, path: str = "/hook"
) -> AsyncIterator[WebhookReceiver]:
    """Serve a ``WebhookReceiver`` on 127.0.0.1 (a free port) at ``path`` until the block exits."""
    receiver = WebhookReceiver(secret=secret)
    app = web.Application()
    app.router.add_route("*", path, receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        receiver.url = f"http://{host}:{port}{path}"
        yield receiver
    finally:
        await runner.cleanup()
