"""The ``teams`` sink: Adaptive Card renders, Workflows-only URLs, size budget, HTTP outcomes."""

from __future__ import annotations

import json
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tests.sinks.golden import assert_golden_json
from tests.support.ports import free_port
from tests.support.teams import FakeTeams, run_fake_teams

from canarywatch.model import Notification, NotificationStatus, Phase, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import DeliveryError, DeliveryReason, SinkLoadError, validate_sink_options
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.teams import BUDGET_BYTES, TeamsSink, is_legacy_connector_url

WORKFLOWS_URL = (
    "https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
    "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=s3cr3t-sig-value"
)
LINKS = {
    "dashboard_url": "https://grafana.example/d/canary?var-ns={namespace}&var-canary={canary}",
    "runbook_url": "https://runbooks.example/canary/{transition}",
}


def rollback() -> Notification:
    return make_notification(
        make_event(
            Transition.ROLLED_BACK,
            cluster="prod-eu",
            rollout="2",
            failed_checks=5,
            phase=Phase.FAILED,
            reason="request-success-rate 88.50 < 99",
            target="podinfo",
            message="Rolling back podinfo.test failed checks threshold reached 5",
        )
    )


def weight_advanced() -> Notification:
    return make_notification(
        make_event(
            Transition.WEIGHT_ADVANCED,
            at=T0 - timedelta(seconds=60),
            rollout="2",
            weight=10,
            detail="10",
            message="Advance podinfo.test canary weight 10",
        ),
        make_event(
            Transition.WEIGHT_ADVANCED,
            rollout="2",
            weight=30,
            detail="30",
            message="Advance podinfo.test canary weight 30",
        ),
    )


def resolved() -> Notification:
    return make_notification(
        make_event(
            Transition.HALTED,
            rollout="2",
            phase=Phase.PROGRESSING,
            reason="request-duration 620ms > 500ms",
            message="Halt podinfo.test advancement request duration 620ms > 500ms",
        ),
        status=NotificationStatus.RESOLVED,
        created_at=T0 + timedelta(minutes=3),
    )


def card(payload: Any) -> dict[str, Any]:
    attachments = payload["attachments"]
    assert len(attachments) == 1
    assert attachments[0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    content: dict[str, Any] = attachments[0]["content"]
    return content


def size(payload: object) -> int:
    return len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode())


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., TeamsSink]]:
    async with aiohttp.ClientSession() as http:
        made: list[TeamsSink] = []

        def build(**options: object) -> TeamsSink:
            options.setdefault("webhook_url", WORKFLOWS_URL)
            options.setdefault("min_interval_s", 0)
            sink = TeamsSink("teams", options, http=http, log=structlog.get_logger())
            made.append(sink)
            return sink

        yield build
        for sink in made:
            await sink.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTeams]:
    async with run_fake_teams() as server:
        yield server


def closed_port_url() -> str:
    port = free_port()
    return f"http://127.0.0.1:{port}/workflows/x/triggers/manual/paths/invoke?sig=closed-sig-9"


# --- render ------------------------------------------------------------------------------------


async def test_render_golden(make_sink: Callable[..., TeamsSink]) -> None:
    sink = make_sink(links=LINKS)
    fired = sink.render(rollback())
    assert_golden_json("teams_rollback_firing.json", fired)
    assert_golden_json("teams_weight_advanced.json", sink.render(weight_advanced()))
    assert_golden_json("teams_resolved.json", sink.render(resolved()))

    content = card(fired)
    assert content["version"] == "1.2"
    assert content["msteams"] == {"width": "full"}
    title = content["body"][0]
    assert title["type"] == "TextBlock"
    assert title["color"] == "Attention"
    assert title["text"] == "Rolled back: test/podinfo"
    facts = {f["title"]: f["value"] for f in content["body"][2]["facts"]}
    assert facts["Failed checks"] == "5"
    assert facts["Cluster"] == "prod-eu"
    assert [a["type"] for a in content["actions"]] == ["Action.OpenUrl", "Action.OpenUrl"]
    assert content["actions"][0]["url"].endswith("var-ns=test&var-canary=podinfo")


async def test_title_colour_follows_severity_and_resolution(
    make_sink: Callable[..., TeamsSink],
) -> None:
    sink = make_sink()

    def color(n: Notification) -> str:
        return str(card(sink.render(n))["body"][0]["color"])

    assert color(make_notification(make_event(Transition.ROLLED_BACK))) == "Attention"
    assert color(make_notification(make_event(Transition.HALTED))) == "Warning"
    assert color(make_notification(make_event(Transition.PROMOTED))) == "Good"
    assert color(resolved()) == "Good"
    # A group takes its worst event's colour.
    group = make_notification(make_event(Transition.PROMOTED), make_event(Transition.HALTED))
    assert color(group) == "Warning"


async def test_render_stays_in_budget_with_many_long_events(
    make_sink: Callable[..., TeamsSink],
) -> None:
    sink = make_sink(links=LINKS)
    long = "🚀é" * 5000 + "\x07" + "<at>everyone</at>"
    events = [
        make_event(
            Transition.HALTED,
            canary=f"ns-{i}/app-{i}",
            at=T0 + timedelta(seconds=i),
            message=long,
            reason=long,
            rollout=str(i),
        )
        for i in range(200)
    ]
    payload = sink.render(make_notification(*events, receiver="r" * 5000))
    assert size(payload) <= BUDGET_BYTES
    text = json.dumps(payload, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogate: nothing was cut inside a character
    assert "more events" in text
    assert "<at>" not in text
    assert "\\u0007" not in text
    assert len(card(payload)["actions"]) <= 6


_PIECES = st.lists(
    st.text(st.characters(codec="utf-8"), max_size=8)
    | st.sampled_from(
        [
            "<at>Alice</at>",
            "@channel",
            "@here",
            "\x1b[31m",
            "\u202e",
            "\r\n",
            "😀",
            "👩‍👩‍👧",
            "\x00",
        ]
    ),
    max_size=12,
).map("".join)
_HOSTILE = st.tuples(_PIECES, st.integers(1, 2000)).map(lambda t: (t[0] * t[1])[:10_000])
"""Mentions, ``<at>`` tags, control and bidi characters, emoji, up to 10k characters."""


async def test_hostile_text_never_breaks_the_card(make_sink: Callable[..., TeamsSink]) -> None:
    sink = make_sink(links=LINKS)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(message=_HOSTILE, reason=_HOSTILE, name=st.text(max_size=300))
    def check(message: str, reason: str, name: str) -> None:
        ev = make_event(Transition.ROLLED_BACK, canary=f"ns/{name}", message=message, reason=reason)
        payload = sink.render(make_notification(ev, receiver=name or "r"))
        raw = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        assert len(raw.encode("utf-8")) <= BUDGET_BYTES
        assert json.loads(raw) == payload
        content = card(payload)
        assert "entities" not in content["msteams"]
        for block in content["body"]:
            texts = [block.get("text", "")] + [
                f["title"] + f["value"] for f in block.get("facts", [])
            ]
            for text in texts:
                assert "<at" not in text.lower()
                assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in text)

    check()


def test_legacy_connector_urls_are_rejected_with_an_explanation() -> None:
    legacy = [
        "https://contoso.webhook.office.com/webhookb2/1111@2222/IncomingWebhook/abc/def",
        "https://outlook.office.com/webhook/1111@2222/IncomingWebhook/abc/def",
        "https://outlook.office.com/webhookb2/1111@2222/IncomingWebhook/abc/def",
    ]
    for url in legacy:
        assert is_legacy_connector_url(url)
        with pytest.raises(SinkLoadError) as exc:
            validate_sink_options(TeamsSink, {"webhook_url": Secret(url)})
        message = str(exc.value)
        assert "retired" in message
        assert "Workflows" in message
        assert "1111@2222" not in message
    assert not is_legacy_connector_url(WORKFLOWS_URL)
    validate_sink_options(TeamsSink, {"webhook_url": Secret(WORKFLOWS_URL)})
    validate_sink_options(TeamsSink, {"webhook_url": WORKFLOWS_URL, "links": LINKS})
    with pytest.raises(SinkLoadError, match="https"):
        validate_sink_options(TeamsSink, {"webhook_url": "http://example.com/x?sig=abc"})
    with pytest.raises(SinkLoadError, match="min_interval_s"):
        validate_sink_options(TeamsSink, {"webhook_url": WORKFLOWS_URL, "min_interval_s": -1})


# --- deliver -----------------------------------------------------------------------------------


async def test_deliver_posts_the_card_and_accepts_202(
    make_sink: Callable[..., TeamsSink], fake: FakeTeams
) -> None:
    sink = make_sink(webhook_url=Secret(fake.url), links=LINKS)
    payload = sink.render(rollback())
    await sink.deliver(payload)
    assert fake.accepted == [payload]


@pytest.mark.parametrize(
    ("status", "headers", "reason", "retryable"),
    [
        (429, {"Retry-After": "7"}, DeliveryReason.RATE_LIMITED, True),
        (500, {}, DeliveryReason.HTTP_5XX, True),
        (502, {}, DeliveryReason.HTTP_5XX, True),
        (400, {}, DeliveryReason.INVALID_PAYLOAD, False),
        (401, {}, DeliveryReason.HTTP_4XX, False),
        (403, {}, DeliveryReason.HTTP_4XX, False),
        (404, {}, DeliveryReason.HTTP_4XX, False),
    ],
)
async def test_deliver_classifies_failures(
    make_sink: Callable[..., TeamsSink],
    fake: FakeTeams,
    status: int,
    headers: dict[str, str],
    reason: DeliveryReason,
    retryable: bool,
) -> None:
    sink = make_sink(webhook_url=fake.url)
    fake.script(status, headers=headers, body='{"error":{"code":"Boom","message":"no"}}')
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(rollback()))
    assert exc.value.reason is reason
    assert exc.value.retryable is retryable
    assert exc.value.status_code == status
    if status == 429:
        assert exc.value.retry_after_s == 7
    await sink.deliver(sink.render(rollback()))  # the script is used up: next one is accepted
    assert len(fake.accepted) == 1


async def test_size_limits_are_enforced(
    make_sink: Callable[..., TeamsSink], fake: FakeTeams
) -> None:
    sink = make_sink(webhook_url=fake.url)
    huge = {"type": "message", "attachments": [], "pad": "x" * 30_000}
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(huge)  # refused locally: never sent
    assert exc.value.reason is DeliveryReason.INVALID_PAYLOAD
    assert not exc.value.retryable
    assert fake.raw_sizes == []
    # The fake enforces Teams' limit itself (for sinks that do not check first).
    async with aiohttp.ClientSession() as http, http.post(fake.url, json=huge) as response:
        assert response.status == 413
        assert (await response.json())["error"]["code"] == "RequestEntityTooLarge"
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver("not a card")
    assert exc.value.reason is DeliveryReason.INVALID_PAYLOAD


async def test_pacing_spaces_messages_to_one_url(
    make_sink: Callable[..., TeamsSink], fake: FakeTeams
) -> None:
    first = make_sink(webhook_url=fake.url, min_interval_s=0.2)
    second = make_sink(webhook_url=Secret(fake.url), min_interval_s=0.2)  # same URL: same pace
    payload = first.render(rollback())
    started = time.monotonic()
    await first.deliver(payload)
    await second.deliver(payload)
    await first.deliver(payload)
    assert time.monotonic() - started >= 0.4
    assert len(fake.accepted) == 3


async def test_secret_url_never_leaks(make_sink: Callable[..., TeamsSink], fake: FakeTeams) -> None:
    with capture_logs() as logs:
        sink = make_sink(webhook_url=Secret(fake.url))
        fake.script(404, body='{"error":{"code":"WorkflowNotFound","message":"gone"}}')
        errors: list[DeliveryError] = []
        for target in (sink, make_sink(webhook_url=closed_port_url())):
            with pytest.raises(DeliveryError) as exc:
                await target.deliver(target.render(rollback()))
            errors.append(exc.value)
    assert errors[1].reason is DeliveryReason.CONNECTION
    assert errors[1].retryable
    assert errors[1].__cause__ is None
    assert errors[1].__suppress_context__
    for secret in (fake.sig, "closed-sig-9", "/workflows/"):
        assert secret not in repr(sink)
        assert secret not in repr(sink._options)
        assert all(secret not in str(e) and secret not in repr(e) for e in errors)
        assert all(secret not in repr(entry) for entry in logs)
    assert any(entry.get("error_code") == "WorkflowNotFound" for entry in logs)


async def test_teams_passes_the_sink_contract() -> None:
    url = closed_port_url()
    payloads = await check_sink_contract(
        TeamsSink,
        {"webhook_url": Secret(url), "links": LINKS, "min_interval_s": 0},
        secrets=[url, "closed-sig-9"],
        deliver=True,
    )
    assert len(payloads) == 2 * len(Transition) + 1
    assert all(size(p) <= BUDGET_BYTES for p in payloads)
