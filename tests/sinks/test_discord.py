"""The ``discord`` sink: golden renders, edit-in-place against ``FakeDiscord``, status handling,
bucket pacing, hostile text and secrets."""

from __future__ import annotations

import json
import re
import time
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
from tests.support.discord import FakeDiscord, message_problem, pings
from tests.support.ports import free_port

from canarywatch.model import Notification, NotificationStatus, Phase, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    InMemorySinkMemory,
    SinkLoadError,
    validate_sink_options,
)
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.discord import DiscordSink
from canarywatch_sinks.escaping import ZWSP

LINKS = {
    "dashboard_url": "https://grafana.example/d/canary?var-ns={namespace}&var-canary={canary}",
    "runbook_url": "https://runbooks.example/flagger/{transition}",
}
S = timedelta(seconds=1)
KEY = "message:/test/podinfo@2"


def step(transition: Transition, at: timedelta, **fields: Any) -> Notification:
    status = fields.pop("status", NotificationStatus.FIRING)
    return make_notification(
        make_event(transition, at=T0 + at, rollout="2", **fields), status=status
    )


def revision() -> Notification:
    return step(
        Transition.REVISION_DETECTED,
        -300 * S,
        target="podinfo",
        message="New revision detected! Scaling up podinfo.test",
    )


def advanced(weight: int = 30) -> Notification:
    return step(
        Transition.WEIGHT_ADVANCED,
        (weight - 200) * S,
        weight=weight,
        detail=str(weight),
        phase=Phase.PROGRESSING,
        message=f"Advance podinfo.test canary weight {weight}",
    )


def halted() -> Notification:
    return step(
        Transition.HALTED,
        -60 * S,
        failed_checks=2,
        reason="request-success-rate 88.50 < 99",
        message="Halt podinfo.test advancement success rate 88.50% < 99%",
    )


def rollback() -> Notification:
    return step(
        Transition.ROLLED_BACK,
        0 * S,
        failed_checks=5,
        reason="failed-checks",
        phase=Phase.FAILED,
        target="podinfo",
        message="Rolling back podinfo.test failed checks threshold reached 5 (*all* [5/5])",
    )


def resolved() -> Notification:
    return step(
        Transition.ROLLED_BACK,
        600 * S,
        failed_checks=5,
        phase=Phase.FAILED,
        status=NotificationStatus.RESOLVED,
        message="Rolling back podinfo.test failed checks threshold reached 5",
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


SinkFactory = Callable[..., DiscordSink]


@pytest.fixture
def discord(http: aiohttp.ClientSession, fake: FakeDiscord) -> SinkFactory:
    def build(memory: InMemorySinkMemory | None = None, **options: Any) -> DiscordSink:
        opts: dict[str, Any] = {"webhook_url": Secret(fake.webhook_url)}
        opts.update(options)
        return DiscordSink("discord", opts, http=http, log=structlog.get_logger(), memory=memory)

    return build


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({}, "webhook_url: required option is missing"),
        ({"webhook_url": "https://discord.com/api/channels/1/messages"}, "webhooks/ID/TOKEN"),
        ({"webhook_url": "https://discord.com/api/webhooks/1/tok?wait=true"}, "webhooks/ID/TOKEN"),
        ({"webhook_url": "http://discord.com/api/webhooks/1/tok"}, "https"),
        (
            {"webhook_url": "https://discord.com/api/webhooks/1/t", "username": "My Discord"},
            "clyde",
        ),
        ({"webhook_url": "https://discord.com/api/webhooks/1/t", "username": "x" * 81}, "80"),
        (
            {"webhook_url": "https://discord.com/api/webhooks/1/t", "color": 1},
            "unknown option 'color'",
        ),
    ],
)
def test_options_are_validated_without_echoing_values(
    options: dict[str, object], complaint: str
) -> None:
    with pytest.raises(SinkLoadError) as exc:
        validate_sink_options(DiscordSink, options)
    assert complaint in str(exc.value)
    assert "tok" not in str(exc.value).replace("TOKEN", "")


def test_options_accept_secrets() -> None:
    validate_sink_options(
        DiscordSink,
        {
            "webhook_url": Secret("https://discord.com/api/webhooks/123/abc-DEF_1"),
            "username": "canarywatch",
            "links": LINKS,
            "edit_in_place": False,
        },
    )


# --- golden renders ------------------------------------------------------------------------------

GOLDEN_CASES = [("rollback", rollback), ("weight_advanced", advanced), ("resolved", resolved)]


@pytest.mark.parametrize(("name", "make"), GOLDEN_CASES)
async def test_render_golden(
    discord: SinkFactory, name: str, make: Callable[[], Notification]
) -> None:
    payload = discord(links=LINKS, username="canarywatch").render(make())
    assert_golden_json(f"discord_{name}.json", payload)
    assert isinstance(payload, dict)
    assert message_problem(payload["message"]) is None
    assert payload["message"]["allowed_mentions"] == {"parse": []}
    assert payload["rollout_key"] == "/test/podinfo@2"


async def test_colours_follow_severity(discord: SinkFactory) -> None:
    def colour(n: Notification) -> int:
        payload = discord().render(n)
        assert isinstance(payload, dict)
        return int(payload["message"]["embeds"][0]["color"])

    assert colour(rollback()) == 0xE74C3C
    assert colour(halted()) == 0xF1C40F
    assert colour(advanced()) == 0x3498DB
    assert colour(resolved()) == 0x2ECC71


async def test_many_long_events_fit_the_limits(discord: SinkFactory) -> None:
    events = [
        make_event(
            Transition.HALTED,
            canary=f"ns{i}/{'a' * 300}",
            at=T0 + i * S,
            reason="r" * 3000,
            message="m" * 9000,
        )
        for i in range(14)
    ]
    payload = discord(links=LINKS).render(make_notification(*events, group_labels={}))
    assert isinstance(payload, dict)
    message = payload["message"]
    assert message_problem(message) is None
    assert len(message["embeds"]) == 10
    assert "(4 earlier events not shown)" in message["content"]
    assert payload["rollout_key"] == ""


# --- delivery: edit in place -------------------------------------------------------------------


async def test_one_message_per_rollout_edited_in_place(
    discord: SinkFactory, fake: FakeDiscord
) -> None:
    memory = InMemorySinkMemory()
    sink = discord(memory=memory, username="canarywatch")
    for n in (revision(), advanced(10), halted(), rollback(), resolved()):
        await sink.deliver(sink.render(n))

    methods = [(r.method, r.query.get("wait")) for r in fake.requests]
    assert methods == [
        ("POST", "true"),
        ("PATCH", None),
        ("PATCH", None),
        ("PATCH", None),  # the verdict updates the rollout's message...
        ("POST", "true"),  # ...and is posted anew so the channel is notified
        ("POST", "true"),  # resolved: a new message
    ]
    first_id = memory.get(KEY)
    assert first_id is not None
    patch_paths = {r.path for r in fake.requests if r.method == "PATCH"}
    assert patch_paths == {
        f"/api/webhooks/{fake.WEBHOOK_ID}/{fake.TOKEN}/messages/{first_id['id']}"
    }
    assert all("username" not in r.json for r in fake.requests if r.method == "PATCH")
    assert all(r.json["allowed_mentions"] == {"parse": []} for r in fake.requests)
    progress = fake.messages[first_id["id"]]
    assert len(progress.edits) == 3
    assert progress.body["embeds"][0]["title"].startswith("Rolled back")
    assert len(fake.messages) == 3
    assert memory.get(KEY) == first_id  # the verdict did not move the rollout's message


async def test_a_rollout_id_ending_in_at_is_edited_in_place(
    discord: SinkFactory, fake: FakeDiscord
) -> None:
    memory = InMemorySinkMemory()
    sink = discord(memory=memory)
    for transition in (Transition.REVISION_DETECTED, Transition.HALTED):
        payload = sink.render(make_notification(make_event(transition, rollout="7@")))
        assert isinstance(payload, dict)
        assert payload["rollout_key"] == "/test/podinfo@7@"
        await sink.deliver(payload)
    assert [r.method for r in fake.requests] == ["POST", "PATCH"]
    assert memory.get("message:/test/podinfo@7@") is not None


async def test_edit_in_place_survives_a_restart(discord: SinkFactory, fake: FakeDiscord) -> None:
    memory = InMemorySinkMemory()
    first = discord(memory=memory)
    await first.deliver(first.render(revision()))
    await first.aclose()
    second = discord(memory=memory)
    await second.deliver(second.render(advanced(20)))
    assert [r.method for r in fake.requests] == ["POST", "PATCH"]
    (message,) = fake.messages.values()
    assert "20%" in json.dumps(message.body, ensure_ascii=False)


async def test_edit_in_place_can_be_turned_off(discord: SinkFactory, fake: FakeDiscord) -> None:
    sink = discord(edit_in_place=False)
    for n in (revision(), advanced(), halted()):
        await sink.deliver(sink.render(n))
    assert [r.method for r in fake.requests] == ["POST"] * 3


async def test_deleted_message_is_replaced(discord: SinkFactory, fake: FakeDiscord) -> None:
    memory = InMemorySinkMemory()
    sink = discord(memory=memory)
    await sink.deliver(sink.render(revision()))
    old = memory.get(KEY)
    assert old is not None
    fake.delete_message(old["id"])
    await sink.deliver(sink.render(advanced()))
    new = memory.get(KEY)
    assert new is not None
    assert new["id"] != old["id"]
    assert sink.healthy
    await sink.deliver(sink.render(halted()))
    assert [r.method for r in fake.requests] == ["POST", "PATCH", "POST", "PATCH"]


async def test_first_seen_verdict_becomes_the_rollouts_message(
    discord: SinkFactory, fake: FakeDiscord
) -> None:
    memory = InMemorySinkMemory()
    sink = discord(memory=memory)
    await sink.deliver(sink.render(rollback()))
    await sink.deliver(sink.render(halted()))  # late step of the same rollout
    assert [r.method for r in fake.requests] == ["POST", "PATCH"]


# --- status handling -----------------------------------------------------------------------------


RF = {"code": 50035, "message": "Invalid Form Body"}
TOO_LARGE = {"code": 40005, "message": "Request entity too large"}
BAD_TOKEN = {"code": 50027, "message": "Invalid Webhook Token"}
NO_PERMS = {"code": 50013, "message": "Missing Permissions"}
NO_HOOK = {"code": 10015, "message": "Unknown Webhook"}
LIMITED = {"retry_after": 1.5, "global": False}
VIA = {"Retry-After": "2", "Via": "1.1 google"}


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason", "retryable", "healthy", "retry_after"),
    [
        (400, RF, {}, "invalid_payload", False, True, None),
        (400, TOO_LARGE, {}, "invalid_payload", False, True, None),
        (413, "", {}, "invalid_payload", False, True, None),
        (401, BAD_TOKEN, {}, "http_4xx", False, False, None),
        (403, NO_PERMS, {}, "http_4xx", False, True, None),
        (404, NO_HOOK, {}, "http_4xx", False, False, None),
        (429, LIMITED, VIA, "rate_limited", True, True, 1.5),
        (429, "", {"Retry-After": "3"}, "rate_limited", True, True, 3.0),
        (500, "", {}, "http_5xx", True, True, None),
        (502, "<html>bad gateway</html>", {}, "http_5xx", True, True, None),
        (503, "", {}, "http_5xx", True, True, None),
    ],
)
async def test_errors_are_classified(
    discord: SinkFactory,
    fake: FakeDiscord,
    status: int,
    body: str | dict[str, object],
    headers: dict[str, str],
    reason: str,
    retryable: bool,
    healthy: bool,
    retry_after: float | None,
) -> None:
    sink = discord()
    fake.respond_next(status, body, headers=headers)
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert exc.value.reason is DeliveryReason(reason)
    assert exc.value.retryable is retryable
    assert exc.value.status_code == status
    assert exc.value.retry_after_s == retry_after
    assert sink.healthy is healthy


async def test_deleted_webhook_is_never_called_again(
    discord: SinkFactory, fake: FakeDiscord
) -> None:
    sink = discord()
    await sink.check()
    assert fake.requests[-1].method == "GET"
    fake.delete_webhook()
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert (exc.value.status_code, exc.value.retryable) == (404, False)
    assert not sink.healthy
    calls = len(fake.requests)
    with pytest.raises(DeliveryError):
        await sink.deliver(sink.render(advanced()))
    with pytest.raises(DeliveryError):
        await sink.check()
    assert len(fake.requests) == calls

    fresh = discord()
    with pytest.raises(DeliveryError):
        await fresh.check()
    assert not fresh.healthy


async def test_wrong_token_is_permanent(http: aiohttp.ClientSession, fake: FakeDiscord) -> None:
    url = fake.webhook_url.replace(fake.TOKEN, "not-the-token")
    sink = DiscordSink("discord", {"webhook_url": url}, http=http, log=structlog.get_logger())
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert (exc.value.status_code, exc.value.retryable) == (401, False)
    assert not sink.healthy


async def test_connection_refused_is_retryable(http: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/webhooks/1/refusedToken"
    sink = DiscordSink("discord", {"webhook_url": url}, http=http, log=structlog.get_logger())
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert (exc.value.reason, exc.value.retryable) == (DeliveryReason.CONNECTION, True)
    assert "refusedToken" not in str(exc.value)
    await sink.check()  # transient: logged, not raised


# --- rate limits -------------------------------------------------------------------------------


async def test_bucket_is_respected_before_it_says_429(discord: SinkFactory) -> None:
    async with FakeDiscord(limit=2, window_s=0.4) as tight, aiohttp.ClientSession() as http:
        sink = DiscordSink(
            "discord",
            {"webhook_url": tight.webhook_url, "edit_in_place": False},
            http=http,
            log=structlog.get_logger(),
        )
        for _ in range(5):
            await sink.deliver(sink.render(advanced()))
        assert tight.rate_limited == 0
        times = [r.at for r in tight.requests]
        assert times[2] - times[0] >= 0.4
        assert times[4] - times[2] >= 0.4


async def test_429_delays_the_next_request(discord: SinkFactory, fake: FakeDiscord) -> None:
    sink = discord()
    fake.rate_limit_next(retry_after=0.3)
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert exc.value.retry_after_s == 0.3
    await sink.deliver(sink.render(revision()))
    first, second = fake.requests
    assert second.at - first.at >= 0.3


async def test_long_waits_are_handed_to_dispatch(discord: SinkFactory, fake: FakeDiscord) -> None:
    sink = discord()
    fake.rate_limit_next(retry_after=30)
    with pytest.raises(DeliveryError):
        await sink.deliver(sink.render(revision()))
    started = time.monotonic()
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(revision()))
    assert time.monotonic() - started < 1
    assert exc.value.reason is DeliveryReason.RATE_LIMITED
    assert exc.value.retryable
    assert exc.value.retry_after_s is not None
    assert 25 < exc.value.retry_after_s <= 30
    assert len(fake.requests) == 1


# --- hostile text --------------------------------------------------------------------------------

HOSTILE = [
    "@everyone",
    "@here",
    "<@123456789012345678>",
    "<@!123456789012345678>",
    "<@&987654321098765432>",
    "<#123>",
    "[click](https://evil.example)",
    "<https://evil.example>",
    "**bold** __u__ ~~s~~ ||spoiler|| `code` ```block```",
    "> quote",
    "# heading",
    "- item",
    "\\",
    "&",
    "🙂",
    "👩\u200d👩\u200d👧",
    "\x1b[31m",
    "\u202e",
    "\n",
]
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20)), max_size=40).map(
    "".join
) | st.sampled_from(HOSTILE).map(lambda s: s * (10_000 // len(s) + 1))
MARKDOWN = set("\\*_~`|<>[]()#")


def texts(message: dict[str, Any]) -> list[str]:
    out = [message["content"]]
    for embed in message["embeds"]:
        out += [embed["title"], embed["description"], embed["footer"]["text"]]
        out += [t for f in embed["fields"] for t in (f["name"], f["value"])]
    return out


def assert_inert(message: dict[str, Any]) -> None:
    assert message["allowed_mentions"] == {"parse": []}
    assert message_problem(message) is None
    assert pings({k: v for k, v in message.items() if k != "allowed_mentions"}) == []
    for text in texts(message):
        raw = [m.group() for m in re.finditer(r"\\.|.", text, re.DOTALL) if len(m.group()) == 1]
        assert not MARKDOWN & set(raw), text  # every markdown character is escaped
        assert "@everyone" not in text
        assert "@here" not in text
        assert all(text[m.end()] == ZWSP for m in re.finditer("@", text)), text


async def test_hostile_text_never_pings_links_or_overflows(discord: SinkFactory) -> None:
    sink = discord()

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(message=hostile_text, reason=hostile_text, name=hostile_text, rollout=hostile_text)
    def check(message: str, reason: str, name: str, rollout: str) -> None:
        ev = make_event(
            Transition.ROLLED_BACK,
            canary=f"ns/{name}",
            cluster=name[:50],
            rollout=rollout or "1",
            weight=30,
            message=message,
            reason=reason,
            detail=reason,
        )
        payload = sink.render(make_notification(ev, receiver=name[:30] or "r"))
        assert isinstance(payload, dict)
        assert_inert(payload["message"])

    check()


async def test_hostile_text_is_accepted_by_discord(discord: SinkFactory, fake: FakeDiscord) -> None:
    sink = discord()
    evil = "".join(HOSTILE) * 300
    await sink.deliver(sink.render(make_notification(make_event(message=evil, reason=evil))))
    (posted,) = fake.posted
    assert_inert(posted)
    assert fake.pings() == []


# --- secrets and the contract --------------------------------------------------------------------


async def test_secrets_never_leak(
    http: aiohttp.ClientSession, fake: FakeDiscord, discord: SinkFactory
) -> None:
    errors: list[DeliveryError] = []
    with capture_logs() as logs:
        sinks = [discord(), discord()]
        fake.rate_limit_next(retry_after=0.01, via=False)
        fake.respond_next(400, {"code": 50035, "message": "Invalid Form Body"})
        fake.delete_webhook()
        for sink in sinks:
            for _ in range(2):
                with pytest.raises(DeliveryError) as exc:
                    await sink.deliver(sink.render(rollback()))
                errors.append(exc.value)
        gone = DiscordSink(
            "discord",
            {"webhook_url": f"http://127.0.0.1:{free_port()}/api/webhooks/1/{fake.TOKEN}"},
            http=http,
            log=structlog.get_logger(),
        )
        with pytest.raises(DeliveryError) as exc:
            await gone.deliver(gone.render(rollback()))
        errors.append(exc.value)
        sinks.append(gone)
    events = {entry["event"] for entry in logs}
    assert {"sink_marked_unhealthy", "discord_payload_rejected", "discord_rate_limited"} <= events
    assert all(fake.TOKEN not in repr(entry) for entry in logs)
    assert all(fake.TOKEN not in str(e) and fake.TOKEN not in repr(e) for e in errors)
    assert all(fake.TOKEN not in repr(s) and fake.TOKEN not in repr(s.__dict__) for s in sinks)


async def test_discord_passes_the_sink_contract() -> None:
    url = f"http://127.0.0.1:{free_port()}/api/webhooks/1/contractToken"
    payloads = await check_sink_contract(
        DiscordSink, {"webhook_url": Secret(url), "links": LINKS}, deliver=True
    )
    assert len(payloads) == 2 * len(Transition) + 1
    for payload in payloads:
        assert isinstance(payload, dict)
        assert message_problem(payload["message"]) is None
