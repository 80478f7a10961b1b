"""``teams``: an Adaptive Card per notification, posted to a Microsoft Teams *Workflows* webhook.

Only Workflows (Power Automate "Post to a channel when a webhook request is received") URLs are
accepted. Office 365 connector URLs (``*.webhook.office.com/webhookb2/…``,
``outlook.office.com/webhook…/IncomingWebhook/…``) and their MessageCard format are retired by
Microsoft, so options validation rejects them and ``canarywatch check-config`` fails.

Options::

    webhook_url: {env: TEAMS_WEBHOOK_URL}  # secret: the sig= query parameter is the credential
    links: {dashboard_url: "https://grafana/…?var-canary={canary}", runbook_url: "…"}
    min_interval_s: 1.0                     # pacing per URL (Workflows throttle); 0 disables

Wire body (``render``)::

    {"type": "message",
     "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                      "contentUrl": null,
                      "content": {"type": "AdaptiveCard", "version": "1.2",
                                  "body": [TextBlock title, TextBlock summary, FactSet, …],
                                  "actions": [Action.OpenUrl …], "msteams": {"width": "full"}}}]}

The title is coloured with the named colours ``Attention`` (critical), ``Warning`` (warning) and
``Good`` (info, and every resolved notification). The JSON stays under a 20 KB budget (Teams
refuses ~28 KB): field caps shrink step by step and trailing events are summarised as
"… and N more" until it fits. Truncation works on characters, never on bytes, so a multi-byte
character is never cut. Untrusted text has control and invisible characters stripped and
``<at>`` mention tags removed; the card never carries ``msteams.entities``, so nothing in it can
ping anybody.

Pacing is the one wait inside ``deliver``: with ``min_interval_s`` > 0 an attempt first waits
for its slot on that URL, so the dispatcher's per-attempt timeout must exceed it.

Responses: any 2xx (typically 202 Accepted, i.e. queued; card errors happen later inside the
flow) is success; 429 (``Retry-After``) and 5xx are retryable; 400/401/403/404 and other 4xx are
permanent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar
from urllib.parse import urlsplit

import pydantic

from canarywatch.model import CanaryEvent, JSONValue, Notification, NotificationStatus, Severity
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    clean_text,
    dumps,
    encode_json,
    format_time,
    send_json,
)
from canarywatch_sinks.base import BuiltinSink
from canarywatch_sinks.chat import check_https_url
from canarywatch_sinks.content import (
    EventContent,
    LinkOptions,
    SecretOption,
    describe,
    headline,
    truncate,
    worst_severity,
)

BUDGET_BYTES = 20_000
"""The largest JSON body ``render`` produces (UTF-8 bytes); Teams refuses about 28 KB."""
HARD_LIMIT_BYTES = 28 * 1024
"""Bodies above this are refused locally: Teams would answer "Request Entity too large"."""
MAX_ACTIONS = 6
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"

_LEGACY_HOSTS = ("webhook.office.com", "outlook.office.com")
_LEGACY_PATHS = ("/webhookb2/", "/incomingwebhook/")
_AT_TAG = re.compile(r"<\s*/?\s*at\b[^>]*(?:>|$)", re.IGNORECASE)
"""An ``<at>`` mention tag, or what is left of one where the text was cut."""

_COLORS: Mapping[Severity, str] = {
    Severity.CRITICAL: "Attention",
    Severity.WARNING: "Warning",
    Severity.INFO: "Good",
}

LEGACY_CONNECTOR_MESSAGE = (
    "this is an Office 365 connector URL (Incoming Webhook, MessageCard format); Microsoft has "
    "retired those connectors. Create a Workflows webhook instead (Teams channel ⋯ → Workflows → "
    '"Post to a channel when a webhook request is received") and use the URL it gives you'
)


def is_legacy_connector_url(url: str) -> bool:
    """Whether ``url`` is a retired Office 365 connector URL (host and path both match)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    path = parts.path.lower()
    host_match = any(host == h or host.endswith("." + h) for h in _LEGACY_HOSTS)
    return host_match and any(p in path for p in _LEGACY_PATHS)


class TeamsOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretOption
    """The Workflows trigger URL (``…/workflows/<id>/triggers/manual/paths/invoke?…&sig=…``)."""
    links: LinkOptions = LinkOptions()
    min_interval_s: float = pydantic.Field(default=1.0, ge=0, le=60)
    """At most one message per this many seconds per URL (shared by sinks using the URL)."""

    @pydantic.field_validator("webhook_url")
    @classmethod
    def _workflows_url(cls, value: pydantic.SecretStr) -> pydantic.SecretStr:
        # Messages never quote the value: it is a credential.
        url = value.get_secret_value()
        check_https_url(url, "webhook_url")
        if is_legacy_connector_url(url):
            raise ValueError(LEGACY_CONNECTOR_MESSAGE)
        return value


@dataclass(frozen=True, slots=True)
class _Caps:
    title: int
    summary: int
    fact: int
    events: int
    actions: bool = True


# Tried in order until the card fits BUDGET_BYTES; the last one always fits.
_TIERS = (
    _Caps(title=250, summary=2000, fact=500, events=25),
    _Caps(title=200, summary=800, fact=200, events=15),
    _Caps(title=150, summary=300, fact=100, events=8),
    _Caps(title=120, summary=120, fact=60, events=3),
    _Caps(title=100, summary=60, fact=40, events=1, actions=False),
)

# Shared by every TeamsSink in the process: monotonic time of the next free slot per URL digest.
_NEXT_SLOT: dict[str, float] = {}


def _text(value: str, limit: int) -> str:
    """Untrusted text for a card: one line, no control characters, no ``<at>`` tags, capped."""
    head = value[: 2 * limit + 64]  # cleaning only shrinks text: skip work on what is cut anyway
    text = clean_text(head)
    while True:  # removing a tag or a control sequence can join the pieces of another
        cleaned = clean_text(_AT_TAG.sub("", text))
        if cleaned == text:
            break
        text = cleaned
    if len(head) < len(value) and len(text) <= limit:
        text = text[: limit - 1].rstrip() + "…"
    return truncate(text, limit)


def _bounded(event: CanaryEvent) -> CanaryEvent:
    """``event`` with message and reason cut to what the largest card could show."""
    limit = 2 * _TIERS[0].summary + 64
    if len(event.message) <= limit and len(event.reason) <= limit:
        return event
    return replace(event, message=event.message[:limit], reason=event.reason[:limit])


def _color(n: Notification, severity: Severity) -> str:
    return "Good" if n.status is NotificationStatus.RESOLVED else _COLORS[severity]


class TeamsSink(BuiltinSink[TeamsOptions]):
    """Posts one Adaptive Card per notification to a Teams Workflows webhook."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = TeamsOptions

    def _setup(self) -> None:
        url = self._options.webhook_url.get_secret_value()
        self._url_key = hashlib.sha256(url.encode()).hexdigest()

    # --- render ---------------------------------------------------------------------------

    def render(self, n: Notification) -> Payload:
        """The message with one Adaptive Card, at most ``BUDGET_BYTES`` of JSON."""
        links = self._options.links
        contents = [describe(_bounded(ev), status=n.status, links=links) for ev in n.events]
        for caps in _TIERS:
            payload = self._message(self._card(n, contents, caps))
            if len(dumps(payload).encode()) <= BUDGET_BYTES:
                return payload
        # Unreachable with sane receiver names; kept so the budget is a guarantee.
        return self._message(self._card(n, contents[:0], _TIERS[-1]))

    @staticmethod
    def _message(card: dict[str, JSONValue]) -> dict[str, JSONValue]:
        return {
            "type": "message",
            "attachments": [
                {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}
            ],
        }

    def _card(
        self, n: Notification, contents: list[EventContent], caps: _Caps
    ) -> dict[str, JSONValue]:
        title = headline(n) if len(contents) != 1 else contents[0].title
        body: list[JSONValue] = [
            {
                "type": "TextBlock",
                "text": _text(title, caps.title),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": _color(n, worst_severity(n)),
            }
        ]
        shown = contents[: caps.events]
        for content in shown:
            body.extend(self._event_blocks(n, content, caps, several=len(contents) > 1))
        if len(contents) > len(shown):
            more = len(contents) - len(shown)
            body.append(
                {
                    "type": "TextBlock",
                    "text": f"… and {more} more event{'s' if more > 1 else ''}",
                    "wrap": True,
                    "isSubtle": True,
                }
            )
        footer = " · ".join(
            ["canarywatch", _text(n.receiver, 100), n.status.value, format_time(n.created_at)]
        )
        body.append(
            {"type": "TextBlock", "text": footer, "size": "Small", "isSubtle": True, "wrap": True}
        )
        card: dict[str, JSONValue] = {
            "$schema": CARD_SCHEMA,
            "type": "AdaptiveCard",
            "version": "1.2",
            "body": body,
        }
        actions = self._actions(shown) if caps.actions else []
        if actions:
            card["actions"] = actions
        card["msteams"] = {"width": "full"}
        return card

    @staticmethod
    def _event_blocks(
        n: Notification, content: EventContent, caps: _Caps, *, several: bool
    ) -> list[JSONValue]:
        blocks: list[JSONValue] = []
        if several:
            blocks.append(
                {
                    "type": "TextBlock",
                    "text": _text(content.title, caps.title),
                    "weight": "Bolder",
                    "wrap": True,
                    "separator": True,
                    "color": _color(n, content.severity),
                }
            )
        summary = _text(content.summary, caps.summary)
        if summary and summary != _text(content.title, caps.title):
            blocks.append({"type": "TextBlock", "text": summary, "wrap": True})
        facts: list[JSONValue] = [
            {"title": _text(f.name, 40), "value": _text(f.value, caps.fact)} for f in content.facts
        ]
        facts.append({"title": "Observed", "value": content.time})
        blocks.append({"type": "FactSet", "facts": facts})
        return blocks

    @staticmethod
    def _actions(contents: list[EventContent]) -> list[JSONValue]:
        canaries = {str(c.event.canary) for c in contents if c.links}
        seen: set[str] = set()
        actions: list[JSONValue] = []
        for content in contents:
            for link in content.links:
                if link.url in seen or len(actions) >= MAX_ACTIONS:
                    continue
                seen.add(link.url)
                label = link.label
                if len(canaries) > 1:
                    label = f"{label}: {_text(str(content.event.canary), 60)}"
                actions.append({"type": "Action.OpenUrl", "title": label, "url": link.url})
        return actions

    # --- deliver --------------------------------------------------------------------------

    async def deliver(self, payload: Payload) -> None:
        """POST the card once; raise a classified ``DeliveryError`` on anything but 2xx."""
        if not isinstance(payload, Mapping):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        body = encode_json(payload)
        if len(body) > HARD_LIMIT_BYTES:
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        await self._pace()
        url = self._options.webhook_url.get_secret_value()
        answer = await send_json(self.http, url, body, payload_errors=(400, 413))
        if answer.error is None:
            return
        self.log.debug(
            "delivery_rejected",
            status_code=answer.status,
            reason=answer.error.reason.value,
            error_code=_error_code(answer.text),
        )
        raise answer.error

    async def _pace(self) -> None:
        """Keep messages to one URL ``min_interval_s`` apart, across sinks sharing the URL."""
        interval = self._options.min_interval_s
        if interval <= 0:
            return
        now = time.monotonic()
        slot = max(now, _NEXT_SLOT.get(self._url_key, 0.0))
        _NEXT_SLOT[self._url_key] = slot + interval
        if slot > now:
            await asyncio.sleep(slot - now)


def _error_code(text: str) -> str | None:
    """``error.code`` of a Workflows error body (``{"error": {"code": …}}``), cleaned; or None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
        if isinstance(code, str):
            return clean_text(code, max_len=64)
    return None
