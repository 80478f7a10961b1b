"""The sink contract-test kit (``canarywatch.testing``): it passes good sinks, built-in ones
included, and catches each way a sink can break the contract."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import aiohttp
import pydantic
import pytest
from tests.support.ports import free_port

from canarywatch.model import Notification, NotificationStatus, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import (
    BoundLogger,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    SinkMemory,
    classify_exception,
    classify_http,
    clean_text,
)
from canarywatch.testing import (
    HOSTILE_STRINGS,
    HTTP_EXPECTATIONS,
    MENTION_TOKENS,
    HttpExpectation,
    RecordingSink,
    SinkContract,
    SinkContractError,
    check_sink_contract,
    hostile_notifications,
    payload_strings,
)
from canarywatch_sinks.console import ConsoleSink
from canarywatch_sinks.discord import DiscordSink
from canarywatch_sinks.jsonl import JsonlSink
from canarywatch_sinks.slack import SlackSink
from canarywatch_sinks.teams import TeamsSink
from canarywatch_sinks.webhook import WebhookSink

SLACK_LIVE = ("<!channel>", "<!here>", "<@U123>", "<http://evil|x>")


def closed_url(path: str = "/hook/T0/B0/url-path-secret") -> str:
    port = free_port()
    return f"http://127.0.0.1:{port}{path}"


# --- a small, correct HTTP sink and broken variants of it --------------------------------------


class ChatOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    url: pydantic.SecretStr

    @pydantic.field_validator("url", mode="before")
    @classmethod
    def _reveal(cls, value: object) -> object:
        return value.reveal() if isinstance(value, Secret) else value


class ChatSink(Sink):
    """Posts ``{"text": ...}``; escapes ``& < >`` and ``@`` the way a chat sink should."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = ChatOptions

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        super().__init__(name, options, http=http, log=log, memory=memory)
        self.opts = ChatOptions.model_validate(dict(options))

    def escape(self, text: str) -> str:
        text = clean_text(text, max_len=500)
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return text.replace("@", "@\u200b")

    def render(self, n: Notification) -> Payload:
        lines = [f"{n.status.value}: {n.receiver}"]
        for e in n.events:
            lines.append(self.escape(f"{e.canary} {e.transition.value}: {e.message} {e.reason}"))
        return {"text": "\n".join(lines)}

    async def deliver(self, payload: Payload) -> None:
        try:
            async with self.http.post(self.opts.url.get_secret_value(), json=payload) as resp:
                error = classify_http(resp.status, resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise classify_exception(exc) from None
        if error is not None:
            raise error


class RawMentionSink(ChatSink):
    def escape(self, text: str) -> str:
        return clean_text(text)


class FragileSink(ChatSink):
    def render(self, n: Notification) -> Payload:
        for e in n.events:
            if len(e.message) > 5000:
                raise ValueError("message too long")
        return super().render(n)


class StatefulSink(ChatSink):
    """Numbers its messages: same output for the same call twice, different on a fresh sink."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.seen: dict[str, int] = {}

    def render(self, n: Notification) -> Payload:
        key = f"{n.events[0].transition}{n.status}{len(n.events)}"
        number = self.seen.setdefault(key, len(self.seen))
        return {"text": f"#{number} {n.group_key}"}


class MisclassifyingSink(ChatSink):
    """Treats every failure as permanent and ignores Retry-After."""

    async def deliver(self, payload: Payload) -> None:
        async with self.http.post(self.opts.url.get_secret_value(), json=payload) as resp:
            if resp.status >= 300:
                raise DeliveryError(DeliveryReason.HTTP_4XX, retryable=False)


class UnclassifiedSink(ChatSink):
    """Lets aiohttp's own exception escape (``raise_for_status``)."""

    async def deliver(self, payload: Payload) -> None:
        async with self.http.post(
            self.opts.url.get_secret_value(), json=payload, raise_for_status=True
        ):
            pass


class UrlLeakingSink(ChatSink):
    """Logs the URL and chains an exception quoting it: both leak the secret path."""

    async def deliver(self, payload: Payload) -> None:
        url = self.opts.url.get_secret_value()
        self.log.info("posting", target=url)
        async with self.http.post(url, json=payload) as resp:
            error = classify_http(resp.status, resp.headers)
        if error is not None:
            raise error from RuntimeError(f"POST {url} failed")


class IgnoresUrlSink(ChatSink):
    async def deliver(self, payload: Payload) -> None:
        return None


class FiringOnlySink(ChatSink):
    supports_resolve: ClassVar[bool] = False

    def render(self, n: Notification) -> Payload:
        if n.status is NotificationStatus.RESOLVED:
            raise ValueError("this sink does not render resolved notifications")
        return super().render(n)


# --- the good cases ----------------------------------------------------------------------------


async def test_a_correct_sink_passes_every_check() -> None:
    options = {"url": Secret(closed_url())}
    contract = SinkContract(
        ChatSink, options, forbidden_in_payload=MENTION_TOKENS, url_option="url"
    )
    contract.check_declaration()
    rendered = await contract.check_render()
    assert len(rendered) == 2 * len(Transition) + 1
    fuzzed = await contract.check_escaping()
    assert len(fuzzed) == 2 * len(HOSTILE_STRINGS) + 1
    outcomes = await contract.check_http_outcomes()
    assert set(outcomes) == set(HTTP_EXPECTATIONS)
    assert outcomes[200] is None
    assert outcomes[204] is None
    limited = outcomes[429]
    assert limited is not None
    assert limited.reason is DeliveryReason.RATE_LIMITED
    assert limited.retry_after_s == 7
    assert limited.retryable
    assert outcomes[404] is not None
    assert not outcomes[404].retryable
    await contract.check_secrets(deliver=True)
    all_rendered = await check_sink_contract(
        ChatSink, options, forbidden_in_payload=MENTION_TOKENS, url_option="url", deliver=True
    )
    assert all_rendered == rendered


@pytest.mark.parametrize(
    ("sink_cls", "options", "kit"),
    [
        pytest.param(
            WebhookSink,
            {"url": Secret(closed_url()), "hmac_secret": Secret("whsec-kit")},
            {"url_option": "url"},
            id="webhook",
        ),
        pytest.param(
            SlackSink,
            {"webhook_url": Secret(closed_url("/services/T0/B0/slack-path-secret"))},
            {
                "url_option": "webhook_url",
                "forbidden_in_payload": SLACK_LIVE,
                # Slack's webhooks answer 200 "ok"; anything else is an error.
                "http_expectations": {
                    204: HttpExpectation.failure(DeliveryReason.HTTP_4XX, retryable=False)
                },
            },
            id="slack",
        ),
        pytest.param(
            DiscordSink,
            {"webhook_url": Secret(closed_url("/api/webhooks/123/discord-token-secret"))},
            {
                "url_option": "webhook_url",
                "forbidden_in_payload": MENTION_TOKENS,
                # Only "message" goes to Discord; the rest is bookkeeping for deliver().
                "wire_strings": lambda p: payload_strings(p["message"]),
            },
            id="discord",
        ),
        pytest.param(
            TeamsSink,
            {"webhook_url": Secret(closed_url()), "min_interval_s": 0},
            {"url_option": "webhook_url"},
            id="teams",
        ),
        pytest.param(ConsoleSink, {"color": "never"}, {}, id="console"),
    ],
)
async def test_the_built_in_sinks_pass_the_kit(
    sink_cls: type[Sink], options: Mapping[str, object], kit: dict[str, object]
) -> None:
    rendered = await check_sink_contract(sink_cls, options, **kit)  # type: ignore[arg-type]
    assert len(rendered) == 2 * len(Transition) + 1


async def test_jsonl_passes_with_a_real_delivery(tmp_path: Path) -> None:
    path = f"{tmp_path}/out.jsonl"
    assert await check_sink_contract(JsonlSink, {"path": path}, deliver=True)


async def test_the_recording_sink_still_passes_the_old_call() -> None:
    payloads = await check_sink_contract(RecordingSink, {}, deliver=True)
    assert len(payloads) == 2 * len(Transition) + 1


async def test_a_sink_without_resolve_is_only_asked_for_firing() -> None:
    payloads = await SinkContract(FiringOnlySink, {"url": closed_url()}).check_render()
    assert len(payloads) == len(Transition) + 1


def test_hostile_notifications_carry_every_string_and_all_tokens() -> None:
    notifications = hostile_notifications()
    texts = [e.message for n in notifications for e in n.events]
    for hostile in HOSTILE_STRINGS:
        assert hostile in texts
    assert all(token in HOSTILE_STRINGS for token in MENTION_TOKENS)
    assert max(len(t) for t in texts) >= 10_000
    grouped = notifications[-1]
    assert len(grouped.events) == len(HOSTILE_STRINGS)


def test_payload_strings_walks_keys_values_and_bytes() -> None:
    payload = {"a": ["x", {"<!here>": 1}], "b": None}
    assert list(payload_strings(payload)) == ["a", "x", "<!here>", "b"]
    assert list(payload_strings(b"caf\xc3\xa9")) == ["café"]


# --- what it catches ---------------------------------------------------------------------------


async def test_catches_raw_mentions_only_when_asked() -> None:
    options = {"url": closed_url()}
    await SinkContract(RawMentionSink, options).check_escaping()  # opt-in: passes without
    with pytest.raises(SinkContractError) as err:
        await SinkContract(
            RawMentionSink, options, forbidden_in_payload=MENTION_TOKENS
        ).check_escaping()
    message = str(err.value)
    assert "'<!channel>' appears unescaped" in message
    assert "'@everyone' appears unescaped" in message


async def test_catches_render_raising_on_hostile_text() -> None:
    contract = SinkContract(FragileSink, {"url": closed_url()})
    await contract.check_render()
    with pytest.raises(SinkContractError, match="render raised ValueError for hostile text"):
        await contract.check_escaping()


async def test_catches_hidden_state_in_render() -> None:
    with pytest.raises(SinkContractError, match="a fresh sink rendering in another order"):
        await SinkContract(StatefulSink, {"url": closed_url()}).check_render()


async def test_catches_misclassified_http_statuses() -> None:
    contract = SinkContract(MisclassifyingSink, {"url": closed_url()}, url_option="url")
    with pytest.raises(SinkContractError) as err:
        await contract.check_http_outcomes()
    message = str(err.value)
    assert (
        "HTTP 429: got http_4xx, not retryable, expected rate_limited, retryable, "
        "retry_after_s=7" in message
    )
    assert "HTTP 500: got http_4xx, not retryable, expected http_5xx, retryable" in message
    assert "HTTP 503" in message
    assert "HTTP 404" not in message  # permanent 4xx is what it should be


async def test_catches_unclassified_exceptions() -> None:
    contract = SinkContract(UnclassifiedSink, {"url": closed_url()}, url_option="url")
    with pytest.raises(SinkContractError, match="HTTP 500: deliver raised ClientResponseError"):
        await contract.check_http_outcomes()


async def test_catches_a_sink_that_never_calls_its_url() -> None:
    contract = SinkContract(IgnoresUrlSink, {"url": closed_url()}, url_option="url")
    with pytest.raises(SinkContractError, match="HTTP 200: deliver sent no request to url"):
        await contract.check_http_outcomes()


async def test_catches_url_leaks_into_logs_and_error_chains() -> None:
    contract = SinkContract(UrlLeakingSink, {"url": Secret(closed_url())}, url_option="url")
    with pytest.raises(SinkContractError) as err:
        await contract.check_http_outcomes()
    message = str(err.value)
    assert "a secret appears in a log event" in message
    assert "a secret appears in a DeliveryError" in message


async def test_reports_a_missing_or_non_url_option() -> None:
    with pytest.raises(SinkContractError, match="url_option 'nope' is not a URL option"):
        await SinkContract(ChatSink, {"url": closed_url()}, url_option="nope").check_http_outcomes()
    with pytest.raises(SinkContractError, match="check_http_outcomes needs url_option"):
        await SinkContract(ChatSink, {"url": closed_url()}).check_http_outcomes()


def test_declaration_problems_are_listed() -> None:
    class Old(ChatSink):
        api_version: ClassVar[int] = 0

    with pytest.raises(SinkContractError) as err:
        SinkContract(Old, {"url": closed_url(), "extra": 1}).check_declaration()
    assert "api_version is 0, expected 1" in str(err.value)
    assert "options rejected" in str(err.value)
