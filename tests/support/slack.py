"""A local stand-in for Slack: incoming webhook and the Web API (``reference/sinks.md`` §1).

``FakeSlack`` is an aiohttp server on 127.0.0.1 that enforces the documented limits and answers
with the documented statuses and bodies:

- ``POST /services/T000/B000/<secret>``: incoming webhook. ``200 ok``; payload problems are
  ``400 <code>`` (``no_text``, ``invalid_blocks``, ``msg_too_long``, ``too_many_attachments``,
  ``invalid_payload`` for non-JSON); a deleted webhook is ``404 no_service``, an archived
  channel ``410 channel_is_archived``, a revoked one ``403 invalid_token``.
- ``POST /api/chat.postMessage``, ``/api/chat.update``, ``/api/auth.test``: HTTP 200 with
  ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}`` (``invalid_auth``,
  ``token_revoked``, ``channel_not_found``, ``message_not_found``, ``cant_update_message``
  for someone else's message, ``msg_too_long``, ``invalid_blocks``).

Scripting: ``respond_next`` queues raw answers (429 + ``Retry-After``, 5xx bursts, any body);
``delete_webhook``/``archive_channel``/``revoke_webhook``/``revoke_token`` flip state;
``post_foreign_message`` plants a message the bot did not write. Every request is recorded
(method, path, headers, JSON body, arrival time on ``time.monotonic``) and ``violations``
collects things real Slack might tolerate but canarywatch must never do (``link_names``/``parse``
set, ``thread_ts`` pointing at a reply).
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

TEXT_MAX = 4000
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
CONTEXT_MAX = 10
BLOCKS_MAX = 50
ATTACHMENTS_MAX = 100
BLOCK_TEXT_TOTAL_MAX = 13000
"""Where ``msg_blocks_too_long`` was observed in practice (bolt-js #2509)."""


@dataclass
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    at: float


@dataclass
class Scripted:
    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"
    api: bool | None = None
    """Only for Web API calls (True), only for the webhook (False), or either (None)."""


@dataclass
class Message:
    channel: str
    ts: str
    body: dict[str, Any]
    thread_ts: str | None = None
    by_bot: bool = True
    edits: list[dict[str, Any]] = field(default_factory=list)


def _text_problem(obj: Any, limit: int) -> bool:
    return (
        not isinstance(obj, dict)
        or obj.get("type") not in ("plain_text", "mrkdwn")
        or not isinstance(obj.get("text"), str)
        or not obj["text"]
        or len(obj["text"]) > limit
    )


def _block_problem(block: Any) -> tuple[str | None, int]:
    """``(error code or None, text length)`` for one block."""
    if not isinstance(block, dict):
        return "invalid_blocks_format", 0
    kind = block.get("type")
    if len(str(block.get("block_id", ""))) > 255:
        return "invalid_blocks", 0
    if kind == "header":
        header: Any = block.get("text")
        if _text_problem(header, HEADER_MAX) or header["type"] != "plain_text":
            return "invalid_blocks", 0
        return None, len(header["text"])
    if kind == "section":
        size = 0
        text, fields = block.get("text"), block.get("fields")
        if text is None and not fields:
            return "invalid_blocks", 0
        if text is not None:
            if _text_problem(text, SECTION_MAX):
                return "invalid_blocks", 0
            size += len(text["text"])
        if fields is not None:
            if not isinstance(fields, list) or not 0 < len(fields) <= FIELDS_MAX:
                return "invalid_blocks", 0
            for f in fields:
                if _text_problem(f, FIELD_MAX):
                    return "invalid_blocks", 0
                size += len(f["text"])
        return None, size
    if kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= CONTEXT_MAX:
            return "invalid_blocks", 0
        size = 0
        for e in elements:
            if _text_problem(e, SECTION_MAX):
                return "invalid_blocks", 0
            size += len(e["text"])
        return None, size
    if kind == "divider":
        return None, 0
    return "invalid_blocks", 0


def _blocks_problem(blocks: Any) -> tuple[str | None, int]:
    if not isinstance(blocks, list):
        return "invalid_blocks_format", 0
    if len(blocks) > BLOCKS_MAX:
        return "invalid_blocks", 0
    total = 0
    for block in blocks:
        problem, size = _block_problem(block)
        if problem:
            return problem, 0
        total += size
    return None, total


def message_problem(body: Any) -> str | None:
    """Slack's error code for a message body, or ``None`` when Slack would accept it."""
    if not isinstance(body, dict):
        return "invalid_payload"
    text, blocks, attachments = body.get("text"), body.get("blocks"), body.get("attachments")
    if not text and not blocks and not attachments:
        return "no_text"
    if text is not None and (not isinstance(text, str) or len(text) > TEXT_MAX):
        return "msg_too_long"
    total = 0
    if blocks is not None:
        problem, size = _blocks_problem(blocks)
        if problem:
            return problem
        total += size
    if attachments is not None:
        if not isinstance(attachments, list):
            return "invalid_attachments"
        if len(attachments) > ATTACHMENTS_MAX:
            return "too_many_attachments"
        for att in attachments:
            if not isinstance(att, dict):
                return "invalid_attachments"
            color = att.get("color")
            hex_colour = isinstance(color, str) and color.startswith("#") and len(color) == 7
            if color is not None and color not in ("good", "warning", "danger") and not hex_colour:
                return "invalid_attachments"
            if "blocks" in att:
                problem, size = _blocks_problem(att["blocks"])
                if problem:
                    return problem
                total += size
    if total > BLOCK_TEXT_TOTAL_MAX:
        return "msg_blocks_too_long"
    return None


def all_texts(body: Any) -> list[str]:
    """Every string a message would display or notify with (for injection assertions)."""
    out: list[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key == "text":
            out.append(node)

    walk(body)
    return out


class FakeSlack:
    WEBHOOK_PATH = "/services/T000/B000/fakeWebhookSecret0123456789"
    TOKEN = "xoxb-fake-bot-token-0123456789"
    CHANNEL = "C0FAKE0001"

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.messages: dict[tuple[str, str], Message] = {}
        self.webhook_posts: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.channels: set[str] = {self.CHANNEL}
        self.webhook_state: tuple[int, str] | None = None
        self.token_state: str | None = None
        self._script: deque[Scripted] = deque()
        self._ts = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(self.WEBHOOK_PATH, self._webhook)
        app.router.add_post("/api/{method}", self._api)
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
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.WEBHOOK_PATH

    @property
    def api_url(self) -> str:
        return self.base_url + "/api"

    # -- scripting ------------------------------------------------------------------------------

    def respond_next(
        self,
        status: int,
        body: str | Mapping[str, Any] = "",
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        api: bool | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with this instead of the normal answer."""
        if isinstance(body, str):
            text, ctype = body, "text/plain"
        else:
            text, ctype = json.dumps(body), "application/json"
        for _ in range(times):
            self._script.append(Scripted(status, text, dict(headers or {}), ctype, api))

    def rate_limit_next(self, retry_after: int = 3, *, api: bool = False) -> None:
        """HTTP 429 + ``Retry-After`` (the Web API also says ``ratelimited`` in the body)."""
        body = {"ok": False, "error": "ratelimited"} if api else {"retry_after": retry_after}
        self.respond_next(429, body, headers={"Retry-After": str(retry_after)}, api=api)

    def delete_webhook(self) -> None:
        self.webhook_state = (404, "no_service")

    def archive_channel(self) -> None:
        self.webhook_state = (410, "channel_is_archived")

    def revoke_webhook(self) -> None:
        self.webhook_state = (403, "invalid_token")

    def revoke_token(self) -> None:
        self.token_state = "token_revoked"

    def post_foreign_message(self, channel: str | None = None) -> str:
        """A message someone else wrote (the bot may not ``chat.update`` it)."""
        channel = channel or self.CHANNEL
        ts = self._next_ts()
        self.messages[(channel, ts)] = Message(channel, ts, {"text": "hi"}, by_bot=False)
        return ts

    def delete_message(self, channel: str, ts: str) -> None:
        del self.messages[(channel, ts)]

    # -- queries ----------------------------------------------------------------------------------

    def calls(self, path_suffix: str) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(path_suffix)]

    def top_level(self, channel: str | None = None) -> list[Message]:
        channel = channel or self.CHANNEL
        return [m for m in self.messages.values() if m.channel == channel and not m.thread_ts]

    def replies(self, ts: str, channel: str | None = None) -> list[Message]:
        channel = channel or self.CHANNEL
        return [m for m in self.messages.values() if m.channel == channel and m.thread_ts == ts]

    # -- handlers -------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        return f"1735826882.{next(self._ts):06d}"

    async def _record(self, request: web.Request) -> Request:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        rec = Request(request.method, request.path, dict(request.headers), body, time.monotonic())
        self.requests.append(rec)
        if isinstance(body, dict):
            for key in ("link_names", "parse"):
                if key in body:
                    self.violations.append(f"{key} was set")
        return rec

    def _scripted(self, api: bool) -> web.Response | None:
        if self._script and self._script[0].api in (None, api):
            s = self._script.popleft()
            return web.Response(
                status=s.status, text=s.body, headers=dict(s.headers), content_type=s.content_type
            )
        return None

    async def _webhook(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        scripted = self._scripted(api=False)
        if scripted is not None:
            return scripted
        if self.webhook_state is not None:
            status, code = self.webhook_state
            return web.Response(status=status, text=code)
        problem = message_problem(rec.json)
        if problem:
            return web.Response(status=400, text=problem)
        self.webhook_posts.append(rec.json)
        return web.Response(status=200, text="ok")

    async def _api(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        scripted = self._scripted(api=True)
        if scripted is not None:
            return scripted
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.TOKEN}":
            return _fail("not_authed" if not auth else "invalid_auth")
        if self.token_state is not None:
            return _fail(self.token_state)
        method = request.match_info["method"]
        body = rec.json
        if method == "auth.test":
            return _ok(user_id="UFAKEBOT", team_id="T000")
        if not isinstance(body, dict):
            return _fail("invalid_json")
        if method == "chat.postMessage":
            return self._post_message(body)
        if method == "chat.update":
            return self._update(body)
        return _fail("unknown_method")

    def _post_message(self, body: dict[str, Any]) -> web.Response:
        channel = body.get("channel")
        if channel not in self.channels:
            return _fail("channel_not_found")
        problem = message_problem({k: v for k, v in body.items() if k != "channel"})
        if problem:
            return _fail(problem)
        thread_ts = body.get("thread_ts")
        if thread_ts is not None:
            parent = self.messages.get((channel, thread_ts))
            if parent is None:
                return _fail("thread_not_found")
            if parent.thread_ts:
                self.violations.append("thread_ts points at a reply")
        ts = self._next_ts()
        self.messages[(channel, ts)] = Message(channel, ts, body, thread_ts=thread_ts)
        return _ok(channel=channel, ts=ts, message={"text": body.get("text", ""), "ts": ts})

    def _update(self, body: dict[str, Any]) -> web.Response:
        channel, ts = body.get("channel"), body.get("ts")
        if channel not in self.channels:
            return _fail("channel_not_found")
        message = self.messages.get((channel, ts))  # type: ignore[arg-type]
        if message is None:
            return _fail("message_not_found")
        if not message.by_bot:
            return _fail("cant_update_message")
        problem = message_problem({k: v for k, v in body.items() if k not in ("channel", "ts")})
        if problem:
            return _fail(problem)
        message.edits.append(body)
        message.body = {**message.body, **body}
        return _ok(channel=channel, ts=ts, text=body.get("text", ""))


def _ok(**fields: Any) -> web.Response:
    return web.json_response({"ok": True, **fields})


def _fail(error: str) -> web.Response:
    return web.json_response({"ok": False, "error": error})
