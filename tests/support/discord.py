"""A local stand-in for a Discord webhook (``reference/sinks.md`` §3).

``FakeDiscord`` serves on 127.0.0.1:

- ``POST /api/webhooks/{id}/{token}``: execute; ``204`` by default, ``200`` + the message
  (with an ``id``) with ``?wait=true``.
- ``PATCH /api/webhooks/{id}/{token}/messages/{message_id}``: edit; ``200`` + the message, or
  ``404 {"code": 10008}`` for an unknown message.
- ``GET /api/webhooks/{id}/{token}``: the webhook object.

It enforces the documented limits (content ≤ 2,000, ≤ 10 embeds, title ≤ 256, description
≤ 4,096, ≤ 25 fields with name ≤ 256 / value ≤ 1,024, footer ≤ 2,048, ≤ 6,000 embed text in
total, username ≤ 80 without "discord"/"clyde", something to send) with ``400`` +
``{"code": 50035 | 50006, "message", "errors"}``; a wrong token is ``401`` code 50027, a deleted
webhook ``404`` code 10015. A rate-limit bucket (``limit`` requests per ``window_s``) sends the
``X-RateLimit-*`` headers on every answer and a ``429`` JSON ``{"message", "retry_after",
"global"}`` + ``Retry-After`` + ``X-RateLimit-Scope`` + ``Via`` when exceeded.

Scripting: ``respond_next`` queues raw answers (429s, 5xx bursts, anything). Every request is
recorded (method, path, query, headers, JSON body, ``time.monotonic`` arrival); ``pings()``
lists what would have notified someone given the message's ``allowed_mentions``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

CONTENT_MAX = 2000
EMBEDS_MAX = 10
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
EMBED_TOTAL_MAX = 6000
USERNAME_MAX = 80


@dataclass
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    json: Any
    at: float


@dataclass
class Scripted:
    status: int
    body: str
    headers: Mapping[str, str]


@dataclass
class Message:
    id: str
    body: dict[str, Any]
    edits: list[dict[str, Any]] = field(default_factory=list)


def _size(text: Any) -> int:
    return len(text.strip()) if isinstance(text, str) else 0


def message_problem(body: Any, *, edit: bool = False) -> tuple[int, str] | None:
    """``(code, what)`` Discord would answer with ``400``, or ``None`` when acceptable."""
    if not isinstance(body, dict):
        return 50035, "body is not an object"
    content, embeds = body.get("content"), body.get("embeds")
    if not edit and not content and not embeds:
        return 50006, "Cannot send an empty message"
    if content is not None and (not isinstance(content, str) or len(content) > CONTENT_MAX):
        return 50035, "content: Must be 2000 or fewer in length."
    username = body.get("username")
    if username is not None:
        if edit:
            return 50035, "username: not allowed when editing"
        if not isinstance(username, str) or not 1 <= len(username) <= USERNAME_MAX:
            return 50035, "username: Must be between 1 and 80 in length."
        if "discord" in username.lower() or "clyde" in username.lower():
            return 50035, "username: Username cannot contain discord or clyde"
    mentions = body.get("allowed_mentions")
    if mentions is not None and (
        not isinstance(mentions, dict)
        or ("parse" in mentions and ("users" in mentions or "roles" in mentions))
    ):
        return 50035, "allowed_mentions: parse is mutually exclusive with users/roles"
    if embeds is None:
        return None
    if not isinstance(embeds, list) or len(embeds) > EMBEDS_MAX:
        return 50035, "embeds: Must be 10 or fewer in length."
    total = 0
    for i, embed in enumerate(embeds):
        if not isinstance(embed, dict):
            return 50035, f"embeds.{i}: not an object"
        for key, limit in (("title", TITLE_MAX), ("description", DESCRIPTION_MAX)):
            value = embed.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                return 50035, f"embeds.{i}.{key}: Must be {limit} or fewer in length."
            total += _size(value)
        colour = embed.get("color")
        if colour is not None and (not isinstance(colour, int) or not 0 <= colour <= 0xFFFFFF):
            return 50035, f"embeds.{i}.color: invalid"
        footer = embed.get("footer", {}).get("text")
        if footer is not None and len(footer) > FOOTER_MAX:
            return 50035, f"embeds.{i}.footer.text: too long"
        total += _size(footer)
        total += _size(embed.get("author", {}).get("name"))
        fields = embed.get("fields", [])
        if not isinstance(fields, list) or len(fields) > FIELDS_MAX:
            return 50035, f"embeds.{i}.fields: Must be 25 or fewer in length."
        for j, f in enumerate(fields):
            name, value = f.get("name"), f.get("value")
            if not isinstance(name, str) or not name.strip() or len(name) > FIELD_NAME_MAX:
                return 50035, f"embeds.{i}.fields.{j}.name: invalid"
            if not isinstance(value, str) or not value.strip() or len(value) > FIELD_VALUE_MAX:
                return 50035, f"embeds.{i}.fields.{j}.value: invalid"
            total += _size(name) + _size(value)
    if total > EMBED_TOTAL_MAX:
        return 50035, "embeds: Embed size exceeds maximum size of 6000"
    return None


_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")


def pings(body: Mapping[str, Any]) -> list[str]:
    """What this message would notify, given ``allowed_mentions`` (content only, like Discord)."""
    content = body.get("content") or ""
    allowed = body.get("allowed_mentions")
    parse = ["users"] if allowed is None else list(allowed.get("parse", []))
    found: list[str] = []
    if "everyone" in parse:
        found += [m for m in ("@everyone", "@here") if m in content]
    if "users" in parse:
        found += [f"user:{u}" for u in _USER.findall(content)]
    if "roles" in parse:
        found += [f"role:{r}" for r in _ROLE.findall(content)]
    return found


class FakeDiscord:
    WEBHOOK_ID = "112233445566778899"
    TOKEN = "fakeWebhookToken_0123456789-abcdefABCDEF"

    def __init__(self, *, limit: int = 5, window_s: float = 2.0) -> None:
        self.requests: list[Request] = []
        self.messages: dict[str, Message] = {}
        self.posted: list[dict[str, Any]] = []
        self.deleted = False
        self.limit = limit
        self.window_s = window_s
        self.rate_limited = 0
        self._window: deque[float] = deque()
        self._script: deque[Scripted] = deque()
        self._ids = itertools.count(1_300_000_000_000_000_001)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Self:
        app = web.Application()
        base = "/api/webhooks/{id}/{token}"
        app.router.add_post(base, self._execute)
        app.router.add_get(base, self._get)
        app.router.add_patch(base + "/messages/{message_id}", self._edit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhooks/{self.WEBHOOK_ID}/{self.TOKEN}"

    # -- scripting ----------------------------------------------------------------------------

    def respond_next(
        self,
        status: int,
        body: str | Mapping[str, Any] = "",
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        for _ in range(times):
            self._script.append(Scripted(status, text, dict(headers or {})))

    def rate_limit_next(self, retry_after: float = 1.5, *, via: bool = True) -> None:
        headers = {
            "Retry-After": str(math.ceil(retry_after)),
            "X-RateLimit-Scope": "user",
            "X-RateLimit-Global": "false",
        }
        if via:
            headers["Via"] = "1.1 google"
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        self.respond_next(429, {**body, "global": False}, headers=headers)

    def delete_webhook(self) -> None:
        self.deleted = True

    def delete_message(self, message_id: str) -> None:
        del self.messages[message_id]

    def pings(self) -> list[str]:
        return [p for r in self.requests if isinstance(r.json, dict) for p in pings(r.json)]

    # -- handlers -----------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> Request:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Request(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            time.monotonic(),
        )
        self.requests.append(rec)
        return rec

    def _bucket_headers(self) -> dict[str, str]:
        now = time.monotonic()
        while self._window and self._window[0] <= now - self.window_s:
            self._window.popleft()
        remaining = max(0, self.limit - len(self._window))
        reset_after = (self._window[0] + self.window_s - now) if self._window else self.window_s
        reset_after = math.ceil(reset_after * 1000) / 1000  # never round the wait down
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": "fakebucket",
        }

    def _gate(self, request: web.Request) -> web.Response | None:
        """Script, auth and bucket; ``None`` when the request may proceed."""
        if self._script:
            s = self._script.popleft()
            return web.Response(
                status=s.status,
                text=s.body,
                headers={**self._bucket_headers(), **s.headers},
                content_type="application/json",
            )
        if request.match_info["id"] != self.WEBHOOK_ID or self.deleted:
            return _error(404, 10015, "Unknown Webhook")
        if request.match_info["token"] != self.TOKEN:
            return _error(401, 50027, "Invalid Webhook Token")
        headers = self._bucket_headers()
        if headers["X-RateLimit-Remaining"] == "0":
            self.rate_limited += 1
            retry = float(headers["X-RateLimit-Reset-After"])
            body = {"message": "You are being rate limited.", "retry_after": retry, "global": False}
            return web.json_response(
                body,
                status=429,
                headers={
                    **headers,
                    "Retry-After": str(math.ceil(retry)),
                    "X-RateLimit-Scope": "user",
                    "Via": "1.1 google",
                },
            )
        self._window.append(time.monotonic())
        return None

    async def _execute(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (gated := self._gate(request)) is not None:
            return gated
        problem = message_problem(rec.json)
        if problem:
            return _error(400, *problem, headers=self._bucket_headers())
        message_id = str(next(self._ids))
        message = {"id": message_id, "webhook_id": self.WEBHOOK_ID, "type": 0, **rec.json}
        self.messages[message_id] = Message(message_id, message)
        self.posted.append(rec.json)
        if request.query.get("wait") == "true":
            return web.json_response(message, headers=self._bucket_headers())
        return web.Response(status=204, headers=self._bucket_headers())

    async def _edit(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if (gated := self._gate(request)) is not None:
            return gated
        message = self.messages.get(request.match_info["message_id"])
        if message is None:
            return _error(404, 10008, "Unknown Message", headers=self._bucket_headers())
        problem = message_problem(rec.json, edit=True)
        if problem:
            return _error(400, *problem, headers=self._bucket_headers())
        message.edits.append(rec.json)
        message.body = {**message.body, **rec.json}
        return web.json_response(message.body, headers=self._bucket_headers())

    async def _get(self, request: web.Request) -> web.Response:
        await self._record(request)
        if (gated := self._gate(request)) is not None:
            return gated
        return web.json_response(
            {"id": self.WEBHOOK_ID, "type": 1, "name": "canarywatch", "token": self.TOKEN},
            headers=self._bucket_headers(),
        )


def _error(
    status: int, code: int, message: str, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if code == 50035:
        body = {"code": code, "message": "Invalid Form Body", "errors": {"detail": message}}
    return web.json_response(body, status=status, headers=dict(headers or {}))
