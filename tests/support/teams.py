"""A local stand-in for a Teams Workflows webhook ("post to a channel when a webhook request …").

Behaves like the real trigger as far as a caller can see (``reference/sinks.md`` §2.2–2.3):

- the trigger URL carries ``sig=``; a wrong or missing ``sig`` answers 401 with a JSON error;
- bodies above 28 KB answer 413 ``RequestEntityTooLarge``;
- a body that is not a ``message`` with Adaptive Card attachments answers 400 (the flow would
  fail on it: ``'attachments' is of type 'Null'``);
- otherwise 202 Accepted with an empty body, and the card is recorded;
- ``script(status, headers=..., body=...)`` queues canned answers (429 + ``Retry-After``, 5xx,
  404) that are returned before any of the checks above.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

SIZE_LIMIT_BYTES = 28 * 1024
WORKFLOW_PATH = "/workflows/0a1b2c3d/triggers/manual/paths/invoke"
CARD = "application/vnd.microsoft.card.adaptive"


@dataclass
class _Canned:
    status: int
    headers: Mapping[str, str]
    body: str


@dataclass
class FakeTeams:
    """Records every accepted card; ``url`` is the secret trigger URL to configure."""

    sig: str = "fake-sig-0123456789abcdef"
    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    """Every request body that was JSON, accepted or not, in order."""
    accepted: list[dict[str, Any]] = field(default_factory=list)
    raw_sizes: list[int] = field(default_factory=list)
    _script: deque[_Canned] = field(default_factory=deque)

    def script(
        self, status: int, *, headers: Mapping[str, str] | None = None, body: str = ""
    ) -> None:
        """Answer the next request with ``status`` (queued; one request each)."""
        self._script.append(_Canned(status, dict(headers or {}), body))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.raw_sizes.append(len(raw))
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            self.received.append(data)
        if self._script:
            canned = self._script.popleft()
            return web.Response(status=canned.status, headers=canned.headers, text=canned.body)
        if request.query.get("sig") != self.sig:
            return _error(401, "DirectApiAuthorizationRequired", "The request must be authorized")
        if len(raw) > SIZE_LIMIT_BYTES:
            return _error(413, "RequestEntityTooLarge", "Request Entity too large")
        if request.content_type != "application/json" or not _valid_message(data):
            return _error(400, "InvalidRequestContent", "'attachments' is of type 'Null'")
        assert isinstance(data, dict)
        self.accepted.append(data)
        return web.Response(status=202)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _valid_message(data: object) -> bool:
    if not isinstance(data, dict) or data.get("type") != "message":
        return False
    attachments = data.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return False
    for attachment in attachments:
        if not isinstance(attachment, dict) or attachment.get("contentType") != CARD:
            return False
        content = attachment.get("content")
        if not isinstance(content, dict) or content.get("type") != "AdaptiveCard":
            return False
        if not isinstance(content.get("body"), list):
            return False
    return True


@asynccontextmanager
async def run_fake_teams(sig: str = "fake-sig-0123456789abcdef") -> AsyncIterator[FakeTeams]:
    """Serve a ``FakeTeams`` on 127.0.0.1 (a free port) until the block exits."""
    fake = FakeTeams(sig=sig)
    app = web.Application()
    app.router.add_post(WORKFLOW_PATH, fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        fake.url = f"http://{host}:{port}{WORKFLOW_PATH}?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={sig}"
        yield fake
    finally:
        await runner.cleanup()
