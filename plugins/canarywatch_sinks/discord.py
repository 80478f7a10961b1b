"""``discord``: embeds through a Discord webhook, one message per rollout edited in place.

Wire format (``reference/sinks.md`` §3.1): ``content`` is the headline (≤ 2,000); one embed per
event (≤ 10; the latest ten when a group has more) with a severity colour, title (≤ 256),
description (≤ 4,096), fields for rollout, phase, weight bar, failed checks, reason and links
(≤ 25, name ≤ 256, value ≤ 1,024), a footer and an ISO timestamp; all embed text together stays
≤ 6,000 (the longest texts are shortened until it fits). ``allowed_mentions: {"parse": []}`` is
on every message, and as defence in depth all untrusted text is markdown-escaped with a
zero-width space after every ``@`` (``escaping.py``).

Edit in place (``edit_in_place``, default on): a notification about one rollout
(``content.rollout_key``) is POSTed with ``?wait=true`` so Discord returns the message; its id
is kept in ``memory`` under ``message:<rollout key>`` and later notifications of that rollout
``PATCH /webhooks/{id}/{token}/messages/{message id}`` instead of posting again (a restart keeps
editing, as memory is persisted). Two exceptions, because edits notify nobody:

- the verdict (promoted, rolled back, promotion failed) edits the rollout's message to its final
  state *and* posts a new message, so the outcome reaches the channel; the PATCH goes first so
  a retried attempt repeats only idempotent work before the post;
- resolved notifications are posted as new messages and not remembered.

If the remembered message is gone (404, code 10008 "Unknown Message") a new one is posted and
remembered.

Status handling (§3.2): 200/204 success; 400 (50035 invalid form body, 40005 too large, 50006
empty) and 413 permanent ``invalid_payload``; 401/403 permanent; 404 with code 10015 (unknown
webhook) permanent and the sink turns unhealthy: it never calls that webhook again (Discord
restricts clients that keep trying), and ``check()`` raises; 401 does the same (revoked token).
429: ``retry_after`` (float seconds) from the JSON body, else ``Retry-After``, becomes
``retry_after_s``; 5xx retryable. Bucket pacing: when a response says
``X-RateLimit-Remaining: 0``, the next request waits ``X-RateLimit-Reset-After`` seconds (a 429
pushes it out the same way); a wait longer than ``MAX_INLINE_WAIT_S`` is not slept but raised
as a retryable ``rate_limited`` with ``retry_after_s``, so dispatch's attempt timeout never
fires on a pacing sleep. Requests are serialised per sink instance (one webhook per instance).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlsplit

import pydantic

from canarywatch.model import JSONValue, Notification, NotificationStatus, Severity
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    HttpAnswer,
    Payload,
    is_verdict,
    parse_retry_after,
    send_json,
)
from canarywatch_sinks.chat import ChatSink, check_https_url
from canarywatch_sinks.content import (
    EventContent,
    LinkOptions,
    SecretOption,
    describe_all,
    headline,
    rollout_key,
)
from canarywatch_sinks.escaping import discord_text, discord_truncate, discord_url, utf16_len

CONTENT_MAX: Final = 2000
EMBEDS_MAX: Final = 10
TITLE_MAX: Final = 256
DESCRIPTION_MAX: Final = 4096
FIELDS_MAX: Final = 25
FIELD_NAME_MAX: Final = 256
FIELD_VALUE_MAX: Final = 1024
FOOTER_MAX: Final = 2048
EMBED_TOTAL_MAX: Final = 6000
MAX_INLINE_WAIT_S: Final = 5.0
"""Longest bucket wait slept inside ``deliver``; longer ones are handed to dispatch."""

COLOURS: Final[Mapping[Severity, int]] = {
    Severity.INFO: 0x3498DB,
    Severity.WARNING: 0xF1C40F,
    Severity.CRITICAL: 0xE74C3C,
}
RESOLVED_COLOUR: Final = 0x2ECC71
INLINE_FIELDS: Final = frozenset({"Rollout", "Phase", "Weight", "Failed checks", "Cluster", "Gate"})

UNKNOWN_WEBHOOK: Final = 10015
UNKNOWN_MESSAGE: Final = 10008

_WEBHOOK_PATH: Final = re.compile(r"/api(?:/v\d+)?/webhooks/(\d{1,32})/([A-Za-z0-9_.-]{1,200})/?")
_FORBIDDEN_NAMES: Final = ("discord", "clyde")


class DiscordOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretOption
    """``https://discord.com/api/webhooks/{id}/{token}`` (a secret)."""
    username: str | None = pydantic.Field(default=None, min_length=1, max_length=80)
    """Per-message name override; must not contain "discord" or "clyde"."""
    links: LinkOptions = LinkOptions()
    edit_in_place: bool = True
    """Keep one message per rollout up to date instead of posting every step."""

    @pydantic.field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: pydantic.SecretStr) -> pydantic.SecretStr:
        # Messages never repeat the value: it is the credential.
        check_https_url(value.get_secret_value(), "webhook_url")
        parts = urlsplit(value.get_secret_value())
        if parts.query or parts.fragment or not _WEBHOOK_PATH.fullmatch(parts.path):
            raise ValueError("webhook_url must look like https://discord.com/api/webhooks/ID/TOKEN")
        return value

    @pydantic.field_validator("username")
    @classmethod
    def _username(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(word in value.lower() for word in _FORBIDDEN_NAMES):
            raise ValueError('username must not contain "discord" or "clyde"')
        if value != value.strip() or any(not ch.isprintable() for ch in value):
            raise ValueError("username must be printable without surrounding spaces")
        return value


# --- pure rendering ------------------------------------------------------------------------------


def _links_value(c: EventContent) -> str:
    return " · ".join(
        f"[{discord_text(link.label, 40)}]({discord_url(link.url)})" for link in c.links
    )


def _embed(c: EventContent, footer: str) -> dict[str, JSONValue]:
    colour = RESOLVED_COLOUR if c.resolved else COLOURS[c.severity]
    fields: list[JSONValue] = []
    for fact in c.facts:
        if fact.name == "Canary":  # already in the title
            continue
        fields.append(
            {
                "name": discord_text(fact.name, FIELD_NAME_MAX),
                "value": discord_text(fact.value, FIELD_VALUE_MAX) or "-",
                "inline": fact.name in INLINE_FIELDS,
            }
        )
    links = _links_value(c)
    if links and utf16_len(links) <= FIELD_VALUE_MAX:
        fields.append({"name": "Links", "value": links, "inline": False})
    embed: dict[str, JSONValue] = {
        "title": discord_text(c.title, TITLE_MAX),
        "description": discord_text(c.summary, DESCRIPTION_MAX) or "-",
        "color": colour,
        "fields": fields[:FIELDS_MAX],
        "footer": {"text": discord_text(footer, FOOTER_MAX)},
        "timestamp": c.time,
    }
    return embed


def _embed_size(embed: Mapping[str, Any]) -> int:
    size = utf16_len(embed.get("title", "")) + utf16_len(embed.get("description", ""))
    size += utf16_len(embed.get("footer", {}).get("text", ""))
    size += utf16_len(embed.get("author", {}).get("name", ""))
    for f in embed.get("fields", []):
        size += utf16_len(f["name"]) + utf16_len(f["value"])
    return size


def _fit_total(embeds: list[dict[str, Any]], limit: int) -> None:
    """Shorten the longest descriptions and field values until all embeds fit ``limit``."""
    while (over := sum(_embed_size(e) for e in embeds) - limit) > 0:
        slots: list[tuple[int, dict[str, Any], str]] = []
        for e in embeds:
            slots.append((utf16_len(e["description"]), e, "description"))
            slots.extend((utf16_len(f["value"]), f, "value") for f in e["fields"])
        size, owner, key = max(slots, key=lambda s: s[0])
        if size <= 1:  # nothing left to shorten: drop the oldest embed
            embeds.pop(0)
            continue
        owner[key] = discord_truncate(owner[key], max(1, size - over)) or "-"
        if utf16_len(owner[key]) >= size:  # "-" or an ellipsis could not shrink it
            owner[key] = "…"


def render_message(
    n: Notification, *, links: LinkOptions, username: str | None
) -> dict[str, JSONValue]:
    """The execute-webhook body for a notification."""
    contents = describe_all(n, links=links)
    shown = contents[-EMBEDS_MAX:]
    footer = f"canarywatch · {n.receiver}"
    embeds = [_embed(c, footer) for c in shown]
    _fit_total(embeds, EMBED_TOTAL_MAX)
    content = discord_text(headline(n), CONTENT_MAX - 40)
    if len(contents) > len(shown):
        content += f" ({len(contents) - len(shown)} earlier events not shown)"
    body: dict[str, JSONValue] = {
        "content": content or "canarywatch",
        "embeds": list(embeds),
        "allowed_mentions": {"parse": []},
    }
    if username is not None:
        body["username"] = username
    return body


# --- the sink ------------------------------------------------------------------------------------


class _UnknownMessage(Exception):
    """PATCH found no such message (deleted in Discord): post a new one."""


class DiscordSink(ChatSink[DiscordOptions]):
    """Discord webhook: embeds, one message per rollout edited in place, verdicts re-posted.

    Unhealthy (``ChatSink``) once Discord said the webhook is gone or its token invalid: it is
    never called again."""

    options_model: ClassVar[type[pydantic.BaseModel] | None] = DiscordOptions

    def _setup(self) -> None:
        super()._setup()
        self._not_before = 0.0
        """``time.monotonic()`` before which the bucket is empty."""

    def render(self, n: Notification) -> Payload:
        """``{"rollout_key", "verdict", "resolved", "message"}``; ``message`` is the wire body."""
        return {
            "rollout_key": rollout_key(n),
            "verdict": is_verdict(n),
            "resolved": n.status is NotificationStatus.RESOLVED,
            "message": render_message(
                n, links=self._options.links, username=self._options.username
            ),
        }

    async def deliver(self, payload: Payload) -> None:
        if not isinstance(payload, Mapping) or not isinstance(payload.get("message"), Mapping):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        if not self.healthy:
            raise self._gone()
        message: Mapping[str, JSONValue] = payload["message"]
        key = payload.get("rollout_key")
        key = key if isinstance(key, str) and self._options.edit_in_place else ""
        verdict = payload.get("verdict") is True
        resolved = payload.get("resolved") is True
        async with self._lock:
            await self._deliver(message, key=key, verdict=verdict, resolved=resolved)

    async def _deliver(
        self, message: Mapping[str, JSONValue], *, key: str, verdict: bool, resolved: bool
    ) -> None:
        stored = self.memory.get(f"message:{key}") if key and not resolved else None
        message_id = stored.get("id") if stored else None
        if message_id:
            try:
                await self._request("PATCH", f"/messages/{message_id}", _for_edit(message))
            except _UnknownMessage:
                self.log.info("discord_message_lost", rollout=key)
                message_id = None
            else:
                if not verdict:
                    return
        data = await self._request("POST", "?wait=true", message)
        new_id = data.get("id") if isinstance(data, dict) else None
        if key and not resolved and not verdict and isinstance(new_id, str):
            await self.memory.put_async(f"message:{key}", {"id": new_id})
        elif key and verdict and not message_id and isinstance(new_id, str):
            # The verdict is the first we saw of this rollout: it is the rollout's message now.
            await self.memory.put_async(f"message:{key}", {"id": new_id})

    async def _pace(self) -> None:
        wait = self._not_before - time.monotonic()
        if wait > MAX_INLINE_WAIT_S:
            raise DeliveryError(DeliveryReason.RATE_LIMITED, retryable=True, retry_after_s=wait)
        if wait > 0:
            await asyncio.sleep(wait)

    def _note_bucket(self, headers: Mapping[str, str]) -> None:
        """``headers`` have lower-case names (``HttpAnswer.headers``)."""
        if headers.get("x-ratelimit-remaining") == "0":
            reset = parse_retry_after(headers.get("x-ratelimit-reset-after"))
            if reset:
                self._not_before = max(self._not_before, time.monotonic() + reset)

    async def _request(
        self, method: str, suffix: str, body: Mapping[str, JSONValue] | None
    ) -> JSONValue:
        """One call to the webhook; the decoded answer, or the classified ``DeliveryError``."""
        await self._pace()
        url = self._options.webhook_url.get_secret_value().rstrip("/") + suffix
        answer = await send_json(
            self.http, url, dict(body) if body is not None else None, method=method
        )
        self._note_bucket(answer.headers)
        data = answer.json()
        if answer.error is None:
            return data
        code = data.get("code") if isinstance(data, dict) else None
        raise self._classify(method, answer, data, code if isinstance(code, int) else None)

    def _classify(
        self, method: str, answer: HttpAnswer, data: JSONValue, code: int | None
    ) -> Exception:
        status, headers = answer.status, answer.headers
        if status == 429:
            retry = None
            if isinstance(data, dict) and isinstance(data.get("retry_after"), int | float):
                retry = parse_retry_after(str(data["retry_after"]))
            if retry is None:
                retry = parse_retry_after(headers.get("retry-after"))
            if retry is not None:
                self._not_before = max(self._not_before, time.monotonic() + retry)
            if "via" not in headers:
                self.log.warning("discord_rate_limit_without_via", status_code=status)
            scope = headers.get("x-ratelimit-scope", "")
            self.log.warning(
                "discord_rate_limited",
                retry_after_s=retry,
                scope=scope if scope in ("user", "global", "shared") else "unknown",
            )
            return DeliveryError(
                DeliveryReason.RATE_LIMITED, retryable=True, status_code=429, retry_after_s=retry
            )
        if status == 404 and method == "PATCH" and code == UNKNOWN_MESSAGE:
            return _UnknownMessage()
        if status in (400, 413):
            self.log.error("discord_payload_rejected", status_code=status, discord_code=code)
            return DeliveryError(
                DeliveryReason.INVALID_PAYLOAD, retryable=False, status_code=status
            )
        if status == 401 or (status == 404 and code in (UNKNOWN_WEBHOOK, None)):
            return self._mark_broken(status, discord_code=code)
        assert answer.error is not None  # noqa: S101 - only failed answers are classified
        return answer.error

    async def _probe(self) -> None:
        """GET the webhook (no side effects): fails if it is gone or its token is invalid."""
        await self._request("GET", "", None)


def _for_edit(message: Mapping[str, JSONValue]) -> dict[str, JSONValue]:
    """Edit-message bodies take no ``username``/``avatar_url``."""
    return {k: v for k, v in message.items() if k not in ("username", "avatar_url")}
