"""``slack``: Block Kit messages through an incoming webhook, or threads through a bot token.

Two modes, chosen by the options (``reference/sinks.md`` §1):

**Webhook** (``webhook_url``): one message per notification, POSTed as JSON. A ``header``
block with the headline, then a coloured attachment bar (``good``/``warning``/``danger`` by
the worst severity; ``good`` when resolved) holding, per event, a ``section`` (title, summary,
mrkdwn fields for the facts) and a ``context`` (time, links). ``text`` is always sent as the
notification/screen-reader fallback. The response body is plain text: ``ok`` on 200, else an
error code that is classified by body first, status second (§1.2).

**Bot** (``token`` + ``channel``): ``chat.postMessage``/``chat.update`` with
``Authorization: Bearer``. One thread per rollout (``content.rollout_key``): the first
notification of a rollout posts the *parent*, a live progress card (weight bar, phase, failed
checks, latest transition) whose ``{channel, ts}`` is kept in ``memory`` under
``thread:<rollout key>`` so a restart keeps threading. Each later notification first edits the
parent in place (``chat.update``, idempotent, so a retried attempt does no harm) and then
replies with ``thread_ts`` = the parent's ts; the verdict (promoted, rolled back, promotion
failed) is replied with ``reply_broadcast: true`` so it also reaches the channel. Resolved
notifications reply without touching the parent. Notifications about no single rollout (grouped
across canaries) are posted as standalone messages. If the parent was deleted
(``message_not_found``) or is not ours (``cant_update_message``) a new thread is started.

``render`` is pure, so in bot mode it returns everything ``deliver`` needs: ``rollout_key``,
``verdict``, ``resolved``, ``progress`` (the facts of the progress card), ``parent`` (the card
as first posted) and ``message`` (the reply); ``deliver`` merges ``progress`` with the stored one
(``progress:<rollout key>``) so a notification without a weight does not blank the bar.

Escaping (§1.3): every untrusted string is cleaned, ``& < >`` become entities and truncation
happens after escaping without cutting an entity (``escaping.py``); ``link_names``/``parse`` are
never sent. The only way a mention gets out is the operator's ``mention`` option, prepended to
firing critical messages.

Pacing: posts to the destination (the webhook, or the channel) are serialised and spaced at
least ``min_interval_s`` apart (Slack allows about one per second); ``chat.update`` (Tier 3) is
serialised but not spaced. A sink instance has one destination, so the lock is per instance.

Health: 403/404/410 from the webhook (revoked, deleted, archived) and auth/scope/channel errors
from the Web API are permanent and set ``healthy`` to false; ``check()`` then raises. In bot mode
``check()`` also calls ``auth.test``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import pydantic

from canarywatch.model import JSONValue, Notification, NotificationStatus, Severity, Transition
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    classify_http,
    clean_text,
    format_time,
    is_verdict,
    parse_retry_after,
    send_json,
    weight_bar,
)
from canarywatch_sinks.chat import ChatSink, check_https_url
from canarywatch_sinks.content import (
    TITLES,
    EventContent,
    LinkOptions,
    SecretOption,
    describe_all,
    headline,
    render_link,
    rollout_key,
    worst_severity,
)
from canarywatch_sinks.escaping import slack_escape, slack_text, slack_url, utf16_len

# --- limits (reference/sinks.md §1.1; defaults, not vendor constants) --------------------------
TEXT_MAX: Final = 4000
HEADER_MAX: Final = 150
SECTION_MAX: Final = 3000
FIELD_MAX: Final = 2000
FIELDS_MAX: Final = 10
CONTEXT_ELEMENTS_MAX: Final = 10
BLOCKS_MAX: Final = 50
BLOCK_TEXT_BUDGET: Final = 11000
"""Total block text per message: well under where ``msg_blocks_too_long`` was seen (~13k)."""
EVENTS_SHOWN_MAX: Final = 20
"""Two blocks per event, plus header, mention and "more" lines: stays under ``BLOCKS_MAX``."""

COLOURS: Final[Mapping[Severity, str]] = {
    Severity.INFO: "good",
    Severity.WARNING: "warning",
    Severity.CRITICAL: "danger",
}

# --- error codes (reference/sinks.md §1.2, §1.4, §5) -----------------------------------------
PAYLOAD_ERRORS: Final = frozenset(
    {
        "invalid_payload",
        "user_not_found",
        "no_text",
        "missing_text_or_fallback_or_attachments",
        "invalid_blocks",
        "invalid_blocks_format",
        "too_many_attachments",
        "invalid_attachments",
        "msg_too_long",
        "msg_blocks_too_long",
        "invalid_arguments",
        "invalid_arg_name",
        "invalid_json",
        "json_not_object",
        "invalid_form_data",
        "invalid_charset",
        "invalid_post_type",
        "missing_post_type",
        "no_text_or_blocks",
    }
)
BROKEN_ERRORS: Final = frozenset(
    {
        # webhook: revoked, deleted, restricted, archived
        "action_prohibited",
        "invalid_token",
        "posting_to_general_channel_denied",
        "channel_not_found",
        "no_service",
        "no_service_id",
        "no_active_hooks",
        "no_team",
        "channel_is_archived",
        # Web API: auth, scope, channel
        "not_authed",
        "invalid_auth",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_in_channel",
        "is_archived",
        "access_denied",
        "ekm_access_denied",
        "team_access_not_granted",
        "org_login_required",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
    }
)
TRANSIENT_ERRORS: Final[Mapping[str, DeliveryReason]] = {
    "internal_error": DeliveryReason.HTTP_5XX,
    "fatal_error": DeliveryReason.HTTP_5XX,
    "service_unavailable": DeliveryReason.HTTP_5XX,
    "rollup_error": DeliveryReason.HTTP_5XX,
    "request_timeout": DeliveryReason.TIMEOUT,
}
PARENT_GONE: Final = frozenset({"message_not_found", "cant_update_message"})
"""``chat.update`` answers that mean "start a new thread"."""
PARENT_FROZEN: Final = frozenset({"edit_window_closed", "is_inactive"})
"""``chat.update`` answers that mean "leave the parent as it is, keep replying"."""

_ERROR_CODE: Final = re.compile(r"[a-z0-9_]{1,64}")
_CHANNEL_ID: Final = re.compile(r"[CGD][A-Z0-9]{2,}")
_MENTION: Final = re.compile(
    r"(?:<(?:!subteam\^[A-Z0-9]+|!here|!channel|!everyone|@[UW][A-Z0-9]+)(?:\|[^<>|&]{1,80})?>"
    r"\s*)+"
)


class SlackOptions(pydantic.BaseModel):
    """``webhook_url`` for webhook mode, or ``token`` + ``channel`` for bot mode (threads)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    webhook_url: SecretOption | None = None
    """Incoming-webhook URL (a secret): one URL = one channel chosen at install."""
    token: SecretOption | None = None
    """Bot token ``xoxb-…`` (a secret) with ``chat:write``; enables threads and edits."""
    channel: str | None = None
    """Channel ID (``C…``/``G…``) for bot mode; the bot must be a member of private channels."""
    api_url: str = "https://slack.com/api"
    """Web API base URL (overridable for tests and proxies)."""
    links: LinkOptions = LinkOptions()
    mention: str | None = None
    """Literal Slack mention(s) prepended to firing critical messages, e.g. ``<!subteam^S01>``."""
    min_interval_s: float = pydantic.Field(default=1.0, ge=0, le=60)
    """Least time between two posts to the destination."""

    @pydantic.field_validator("webhook_url")
    @classmethod
    def _webhook(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None:
            check_https_url(value.get_secret_value(), "webhook_url")
        return value

    @pydantic.field_validator("token")
    @classmethod
    def _token(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None:
            raw = value.get_secret_value()
            if not raw or any(ch.isspace() for ch in raw):
                raise ValueError("token must be non-empty without whitespace")
        return value

    @pydantic.field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not _CHANNEL_ID.fullmatch(value):
            raise ValueError("channel must be a channel ID such as C0123456789, not a name")
        return value

    @pydantic.field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        check_https_url(value, "api_url")
        return value.rstrip("/")

    @pydantic.field_validator("mention")
    @classmethod
    def _mention(cls, value: str | None) -> str | None:
        if value is not None and not _MENTION.fullmatch(value.strip()):
            raise ValueError(
                "mention must be Slack mention syntax: <!subteam^ID>, <@U…>, <!here>, <!channel>"
            )
        return value.strip() if value is not None else None

    @pydantic.model_validator(mode="after")
    def _one_mode(self) -> SlackOptions:
        bot = self.token is not None or self.channel is not None
        if self.webhook_url is not None and bot:
            raise ValueError("give either webhook_url, or token and channel, not both")
        if self.webhook_url is None and not (self.token is not None and self.channel is not None):
            raise ValueError("give webhook_url, or token and channel")
        return self


# --- pure rendering ------------------------------------------------------------------------------


def _plain(text: str) -> dict[str, JSONValue]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, JSONValue]:
    return {"type": "mrkdwn", "text": text}


def _bold(escaped: str) -> str:
    return f"*{escaped}*"


def _link_texts(links: Sequence[tuple[str, str]]) -> list[str]:
    return [f"<{slack_url(url)}|{slack_escape(label)}>" for label, url in links]


def _event_blocks(c: EventContent, budget: int) -> list[dict[str, JSONValue]]:
    """A section (title, summary, facts) and a context (time, links) for one event."""
    section_max = max(80, min(SECTION_MAX, budget // 2))
    title = slack_text(c.title, max(40, min(300, section_max // 3)))
    summary = slack_text(c.summary, section_max - utf16_len(title) - 3) or "-"
    facts = c.facts[:FIELDS_MAX]
    field_max = max(24, min(FIELD_MAX, budget // 2 // max(1, len(facts))))
    fields: list[JSONValue] = []
    for fact in facts:
        name = _bold(slack_text(fact.name, 40))
        value = slack_text(fact.value, field_max - utf16_len(name) - 1) or "-"
        fields.append(_mrkdwn(f"{name}\n{value}"))
    section: dict[str, JSONValue] = {
        "type": "section",
        "text": _mrkdwn(f"{_bold(title)}\n{summary}"),
    }
    if fields:
        section["fields"] = fields
    context = [_mrkdwn(slack_escape(c.time))]
    context += [_mrkdwn(t) for t in _link_texts([(link.label, link.url) for link in c.links])]
    return [section, {"type": "context", "elements": list(context[:CONTEXT_ELEMENTS_MAX])}]


def render_message(
    n: Notification, *, links: LinkOptions, mention: str | None
) -> dict[str, JSONValue]:
    """The Block Kit message for a notification (the webhook body, and the bot's reply)."""
    contents = describe_all(n, links=links)
    resolved = n.status is NotificationStatus.RESOLVED
    severity = worst_severity(n)
    ping = mention if (not resolved and severity is Severity.CRITICAL) else None
    head = headline(n)
    prefix = f"{ping} " if ping else ""
    text = prefix + slack_text(head, TEXT_MAX - utf16_len(prefix))
    blocks: list[JSONValue] = [{"type": "header", "text": _plain(slack_text(head, HEADER_MAX))}]
    if ping:
        blocks.append({"type": "section", "text": _mrkdwn(ping)})
    shown = contents[:EVENTS_SHOWN_MAX]
    budget = BLOCK_TEXT_BUDGET // max(1, len(shown))
    detail: list[JSONValue] = []
    for c in shown:
        detail.extend(_event_blocks(c, budget))
    if len(contents) > len(shown):
        more = len(contents) - len(shown)
        detail.append({"type": "context", "elements": [_mrkdwn(f"+{more} more events not shown")]})
    if not detail:  # an attachment needs content
        detail.append({"type": "context", "elements": [_mrkdwn("no events")]})
    colour = COLOURS[Severity.INFO] if resolved else COLOURS[severity]
    return {"text": text, "blocks": blocks, "attachments": [{"color": colour, "blocks": detail}]}


def progress_of(n: Notification, *, links: LinkOptions) -> dict[str, str]:
    """The facts of a rollout's progress card that this notification knows (strings only)."""
    events = sorted(n.events, key=lambda e: e.observed_at)
    first, latest = events[0], events[-1]
    p: dict[str, str] = {
        "canary": f"{first.canary.namespace}/{first.canary.name}",
        "rollout": first.rollout,
        "transition": latest.transition.value,
        "severity": latest.severity.value,
        "summary": clean_text(latest.message) if latest.message else "",
        "time": format_time(latest.observed_at),
        "epoch": f"{latest.observed_at.timestamp():.3f}",
    }
    if first.canary.cluster:
        p["cluster"] = first.canary.cluster
    for e in events:
        if e.weight is not None:
            p["weight"] = str(e.weight)
        if e.phase is not None:
            p["phase"] = e.phase.value
        if e.failed_checks is not None:
            p["failed_checks"] = str(e.failed_checks)
        if e.reason:
            p["reason"] = clean_text(e.reason)
    if links.dashboard_url:
        p["link:Dashboard"] = render_link(links.dashboard_url, latest)
    if links.runbook_url:
        p["link:Runbook"] = render_link(links.runbook_url, latest)
    return p


def merge_progress(stored: Mapping[str, str] | None, new: Mapping[str, str]) -> dict[str, str]:
    """Newer facts win; a fact the newer one lacks (no weight in a ``halted``) is kept."""
    if not stored:
        return dict(new)

    def epoch(p: Mapping[str, str]) -> float:
        try:
            return float(p.get("epoch", "0"))
        except ValueError:
            return 0.0

    if epoch(new) >= epoch(stored):
        return {**stored, **new}
    return {**new, **stored}


def render_parent(
    progress: Mapping[str, str], *, mention: str | None = None
) -> dict[str, JSONValue]:
    """The live progress card heading a rollout's thread (pure; re-rendered on every update)."""
    try:
        transition: Transition | None = Transition(progress.get("transition", ""))
    except ValueError:
        transition = None
    status = TITLES.get(transition, progress.get("transition", "")) if transition else "-"
    try:
        severity = Severity(progress.get("severity", "info"))
    except ValueError:
        severity = Severity.INFO
    canary = progress.get("canary", "")
    rollout = progress.get("rollout", "")
    title = f"{canary} rollout {rollout}" if rollout else canary
    prefix = f"{mention} " if mention else ""
    text = prefix + slack_text(f"{title}: {status}", TEXT_MAX - utf16_len(prefix))
    blocks: list[JSONValue] = [{"type": "header", "text": _plain(slack_text(title, HEADER_MAX))}]
    if mention:
        blocks.append({"type": "section", "text": _mrkdwn(mention)})
    facts: list[tuple[str, str]] = [("Status", status)]
    if progress.get("weight", "").isdigit():
        facts.append(("Weight", weight_bar(int(progress["weight"]))))
    for key, name in (
        ("phase", "Phase"),
        ("failed_checks", "Failed checks"),
        ("reason", "Reason"),
        ("cluster", "Cluster"),
    ):
        if progress.get(key):
            facts.append((name, progress[key]))
    fields: list[JSONValue] = [
        _mrkdwn(f"{_bold(slack_text(name, 40))}\n{slack_text(value, 1000) or '-'}")
        for name, value in facts
    ]
    summary = slack_text(progress.get("summary", ""), 1000)
    section: dict[str, JSONValue] = {
        "type": "section",
        "text": _mrkdwn(_bold(slack_text(status, 300)) + (f"\n{summary}" if summary else "")),
        "fields": fields,
    }
    links = [
        (k.removeprefix("link:"), v) for k, v in sorted(progress.items()) if k.startswith("link:")
    ]
    context = [_mrkdwn("Updated " + slack_escape(progress.get("time", "")))]
    context += [_mrkdwn(t) for t in _link_texts(links)]
    colour = COLOURS[severity]
    if transition is Transition.PROMOTED:
        colour = COLOURS[Severity.INFO]
    return {
        "text": text,
        "blocks": blocks,
        "attachments": [
            {"color": colour, "blocks": [section, {"type": "context", "elements": context}]}
        ],
    }


# --- the sink ------------------------------------------------------------------------------------


class _ParentGone(Exception):
    """``chat.update`` says the parent cannot be edited: start a new thread."""


class SlackSink(ChatSink[SlackOptions]):
    """Slack incoming webhook (one message per notification) or bot (one thread per rollout).

    Unhealthy (``ChatSink``) once Slack said the webhook/token/channel is gone for good."""

    supports_threads: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = SlackOptions

    def _setup(self) -> None:
        super()._setup()
        self.bot_mode = self._options.token is not None
        self._last_post: float | None = None

    # -- render -------------------------------------------------------------------------------

    def render(self, n: Notification) -> Payload:
        """Webhook mode: the wire body. Bot mode: everything ``deliver`` needs (see module doc)."""
        opts = self._options
        message = render_message(n, links=opts.links, mention=opts.mention)
        if not self.bot_mode:
            return message
        verdict = is_verdict(n)
        resolved = n.status is NotificationStatus.RESOLVED
        key = rollout_key(n)
        critical = not resolved and worst_severity(n) is Severity.CRITICAL
        progress = progress_of(n, links=opts.links) if key else {}
        parent = render_parent(progress, mention=opts.mention if critical else None) if key else {}
        body: dict[str, JSONValue] = {"channel": opts.channel, **message}
        if verdict and key:
            body["reply_broadcast"] = True
        return {
            "rollout_key": key,
            "verdict": verdict,
            "resolved": resolved,
            "progress": dict(progress),
            "parent": {"channel": opts.channel, **parent} if key else {},
            "message": body,
        }

    # -- deliver ------------------------------------------------------------------------------

    async def deliver(self, payload: Payload) -> None:
        if not isinstance(payload, Mapping):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        async with self._lock:
            if self.bot_mode:
                await self._deliver_bot(payload)
            else:
                await self._post_webhook(payload)

    async def _pace(self) -> None:
        """Space posts ``min_interval_s`` apart, measured from the end of the previous one."""
        if self._last_post is None:
            return
        wait = self._last_post + self._options.min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _post_webhook(self, body: Mapping[str, JSONValue]) -> None:
        assert self._options.webhook_url is not None  # noqa: S101 - mode fixed in __init__
        await self._pace()
        try:
            answer = await send_json(
                self.http, self._options.webhook_url.get_secret_value(), dict(body)
            )
        finally:
            self._last_post = time.monotonic()
        status = answer.status
        if status == 200:
            return
        code = _error_code(answer.text)
        if code in PAYLOAD_ERRORS:
            self.log.error("slack_payload_rejected", slack_error=code, status_code=status)
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False, status_code=status)
        if code in BROKEN_ERRORS or status in (403, 404, 410):
            raise self._mark_broken(status, slack_error=code)
        error = answer.error
        if error is None:  # another 2xx: Slack says only 200 is success
            error = DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=status)
        self.log.warning("slack_error_received", slack_error=code, status_code=status)
        raise error

    async def _api(self, method: str, body: Mapping[str, JSONValue]) -> dict[str, Any]:
        """One Web API call; the decoded ``ok: true`` answer, or ``_ApiError``."""
        assert self._options.token is not None  # noqa: S101 - mode fixed in __init__
        headers = {"Authorization": f"Bearer {self._options.token.get_secret_value()}"}
        answer = await send_json(
            self.http, f"{self._options.api_url}/{method}", dict(body), headers=headers
        )
        data = answer.json()
        if isinstance(data, dict) and data.get("ok") is True:
            return data
        code = _error_code(data.get("error") if isinstance(data, dict) else None)
        raise _ApiError(code, answer.status, answer.headers)

    def _classify_api(self, err: _ApiError) -> DeliveryError:
        code, status = err.code, err.status
        if code == "ratelimited" or status == 429:
            retry = parse_retry_after(err.headers.get("retry-after"))
            return DeliveryError(
                DeliveryReason.RATE_LIMITED, retryable=True, status_code=status, retry_after_s=retry
            )
        if code in TRANSIENT_ERRORS:
            return DeliveryError(TRANSIENT_ERRORS[code], retryable=True, status_code=status)
        if code in PAYLOAD_ERRORS:
            self.log.error("slack_payload_rejected", slack_error=code, status_code=status)
            return DeliveryError(
                DeliveryReason.INVALID_PAYLOAD, retryable=False, status_code=status
            )
        if code in BROKEN_ERRORS:
            return self._mark_broken(status, slack_error=code)
        http_error = classify_http(status, err.headers)
        if http_error is not None:
            return http_error
        self.log.warning("slack_error_received", slack_error=code, status_code=status)
        return DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=status)

    async def _post_message(self, body: Mapping[str, JSONValue]) -> dict[str, Any]:
        await self._pace()
        try:
            return await self._api("chat.postMessage", body)
        except _ApiError as err:
            raise self._classify_api(err) from None
        finally:
            self._last_post = time.monotonic()

    async def _update_parent(
        self, thread: Mapping[str, str], card: Mapping[str, JSONValue]
    ) -> None:
        body = {k: v for k, v in card.items() if k != "channel"}
        body.update(channel=thread["channel"], ts=thread["ts"])
        try:
            await self._api("chat.update", body)
        except _ApiError as err:
            if err.code in PARENT_GONE:
                raise _ParentGone from None
            if err.code in PARENT_FROZEN:
                self.log.info("thread_parent_frozen", slack_error=err.code)
                return
            raise self._classify_api(err) from None

    async def _start_thread(self, key: str, card: Mapping[str, JSONValue]) -> None:
        resp = await self._post_message(card)
        channel, ts = resp.get("channel"), resp.get("ts")
        if not (isinstance(channel, str) and isinstance(ts, str)):
            self.log.warning("thread_not_recorded", rollout=key)
            return
        await self.memory.put_async(f"thread:{key}", {"channel": channel, "ts": ts})
        self.log.info("thread_started", rollout=key)

    async def _deliver_bot(self, payload: Mapping[str, JSONValue]) -> None:
        message = payload.get("message")
        progress = payload.get("progress")
        parent = payload.get("parent")
        key = payload.get("rollout_key")
        if not (
            isinstance(message, Mapping)
            and isinstance(progress, Mapping)
            and isinstance(parent, Mapping)
            and isinstance(key, str)
        ):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        if not key:
            await self._post_message(message)
            return
        thread = self.memory.get(f"thread:{key}")
        resolved = payload.get("resolved") is True
        if thread is None or not {"channel", "ts"} <= thread.keys():
            if resolved:  # nothing to resolve in this channel's threads: say it plainly
                await self._post_message(_without(message, "reply_broadcast"))
                return
            await self._start_thread(key, parent)
            await self.memory.put_async(
                f"progress:{key}", {str(k): str(v) for k, v in progress.items()}
            )
            return
        if not resolved:
            merged = merge_progress(self.memory.get(f"progress:{key}"), progress)
            try:
                await self._update_parent(thread, render_parent(merged))
            except _ParentGone:
                self.log.info("thread_parent_lost", rollout=key)
                await self._start_thread(
                    key, {"channel": thread["channel"], **render_parent(merged)}
                )
                await self.memory.put_async(f"progress:{key}", merged)
                return
            await self.memory.put_async(f"progress:{key}", merged)
        reply = dict(message)
        reply.update(channel=thread["channel"], thread_ts=thread["ts"])
        await self._post_message(reply)

    # -- health -------------------------------------------------------------------------------

    async def _probe(self) -> None:
        """Bot mode: ``auth.test`` verifies the token. A webhook has nothing to ask."""
        if self.bot_mode:
            try:
                await self._api("auth.test", {})
            except _ApiError as err:
                raise self._classify_api(err) from None


class _ApiError(Exception):
    """A Web API answer other than ``ok: true`` (internal; turned into ``DeliveryError``)."""

    def __init__(self, code: str, status: int, headers: Mapping[str, str]) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.headers = headers


def _error_code(value: object) -> str:
    """Slack's error code if it looks like one (``[a-z0-9_]``), else ``unrecognised``."""
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value.strip()):
        return value.strip()
    return "unrecognised"


def _without(message: Mapping[str, JSONValue], key: str) -> dict[str, JSONValue]:
    return {k: v for k, v in message.items() if k != key}
