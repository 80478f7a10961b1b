"""The ``webhook`` sink: versioned envelope, HMAC signature, headers, HTTP outcomes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import aiohttp
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from tests.sinks.golden import assert_golden_json
from tests.support.ports import free_port
from tests.support.webhook_receiver import WebhookReceiver, run_webhook_receiver

from canarywatch.model import Notification, NotificationStatus, Phase, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    SinkLoadError,
    idempotency_key,
    notification_to_json,
    validate_sink_options,
)
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.webhook import WebhookSink, signature

HMAC_KEY = "whsec-0123456789"
T0_UNIX = "1735826882"  # 2025-01-02T14:08:02Z


def rollback() -> Notification:
    return make_notification(
        make_event(
            Transition.ROLLED_BACK,
            cluster="prod-eu",
            rollout="2",
            episode=1,
            failed_checks=5,
            phase=Phase.FAILED,
            reason="failed-checks",
            target="podinfo",
            message="Rolling back podinfo.test failed checks threshold reached 5",
        )
    )


def closed_url() -> str:
    port = free_port()
    return f"http://127.0.0.1:{port}/hook?token=closed-port-token"


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., WebhookSink]]:
    async with aiohttp.ClientSession() as http:
        made: list[WebhookSink] = []

        def build(**options: object) -> WebhookSink:
            options.setdefault("url", "https://hooks.example/canary")
            sink = WebhookSink("webhook", options, http=http, log=structlog.get_logger())
            made.append(sink)
            return sink

        yield build
        for sink in made:
            await sink.aclose()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with run_webhook_receiver(HMAC_KEY.encode()) as server:
        yield server


async def test_render_golden(make_sink: Callable[..., WebhookSink]) -> None:
    sink = make_sink()
    fired = sink.render(rollback())
    assert_golden_json("webhook_rollback_firing.json", fired)
    advanced = make_notification(
        make_event(
            Transition.WEIGHT_ADVANCED,
            at=T0 - timedelta(minutes=1),
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
    assert_golden_json("webhook_weight_advanced.json", sink.render(advanced))
    done = make_notification(
        make_event(Transition.HALTED, rollout="2", reason="request-duration 620ms > 500ms"),
        status=NotificationStatus.RESOLVED,
        created_at=T0 + timedelta(minutes=3),
    )
    assert_golden_json("webhook_resolved.json", sink.render(done))
    assert fired == {
        "version": "1",
        "kind": "canarywatch.notification",
        "key": idempotency_key(rollback()),
        "notification": notification_to_json(rollback()),
    }


async def test_deliver_signs_the_exact_body(
    make_sink: Callable[..., WebhookSink], receiver: WebhookReceiver
) -> None:
    sink = make_sink(
        url=Secret(receiver.url),
        hmac_secret=Secret(HMAC_KEY),
        headers={"X-Team": "payments", "Authorization": Secret("Bearer hdr-secret")},
    )
    payload = sink.render(rollback())
    await sink.deliver(payload)
    await sink.deliver(payload)  # a retry: same bytes, same headers
    first, second = receiver.requests
    assert first.verified is True
    assert first.method == "POST"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Canarywatch-Timestamp"] == T0_UNIX
    expected = hmac.new(HMAC_KEY.encode(), T0_UNIX.encode() + b"." + first.body, hashlib.sha256)
    assert first.headers["X-Canarywatch-Signature"] == "sha256=" + expected.hexdigest()
    assert first.headers["X-Team"] == "payments"
    assert first.headers["Authorization"] == "Bearer hdr-secret"
    assert first.json() == payload
    assert second.body == first.body
    assert second.headers["X-Canarywatch-Signature"] == first.headers["X-Canarywatch-Signature"]
    key = first.headers["X-Canarywatch-Idempotency-Key"]
    assert key == second.headers["X-Canarywatch-Idempotency-Key"]
    assert key == payload["key"] == idempotency_key(rollback())


async def test_the_idempotency_key_names_the_message_not_the_rendering(
    make_sink: Callable[..., WebhookSink], receiver: WebhookReceiver
) -> None:
    """Issue 12: a replica taking over (or a restart) renders a delivered notification again
    with its own times; the receiver must see the same key and drop it. A deliberate repeat
    (``repeat_interval``) and another status or receiver are other messages."""
    sink = make_sink(url=Secret(receiver.url), hmac_secret=Secret(HMAC_KEY))
    first = rollback()
    again = dataclasses.replace(
        first,
        created_at=first.created_at + timedelta(seconds=7),
        events=tuple(
            dataclasses.replace(e, observed_at=e.observed_at + timedelta(seconds=3))
            for e in first.events
        ),
    )
    await sink.deliver(sink.render(first))
    await sink.deliver(sink.render(again))
    one, two = receiver.requests
    assert one.body != two.body
    assert (
        one.headers["X-Canarywatch-Idempotency-Key"] == two.headers["X-Canarywatch-Idempotency-Key"]
    )
    others = {
        idempotency_key(dataclasses.replace(first, repeat=True)),
        idempotency_key(dataclasses.replace(first, status=NotificationStatus.RESOLVED)),
        idempotency_key(dataclasses.replace(first, receiver="other")),
    }
    assert idempotency_key(first) not in others
    assert len(others) == 3


async def test_unsigned_delivery_and_a_wrong_key(
    make_sink: Callable[..., WebhookSink], receiver: WebhookReceiver
) -> None:
    plain = make_sink(url=receiver.url)
    with pytest.raises(DeliveryError) as exc:  # the receiver insists on a signature
        await plain.deliver(plain.render(rollback()))
    assert exc.value.status_code == 401
    assert not exc.value.retryable
    assert "X-Canarywatch-Signature" not in receiver.requests[0].headers
    wrong = make_sink(url=receiver.url, hmac_secret="not-the-key")
    with pytest.raises(DeliveryError):
        await wrong.deliver(wrong.render(rollback()))
    assert receiver.requests[1].verified is False


@pytest.mark.parametrize(
    ("status", "reason", "retryable"),
    [
        (429, DeliveryReason.RATE_LIMITED, True),
        (500, DeliveryReason.HTTP_5XX, True),
        (503, DeliveryReason.HTTP_5XX, True),
        (400, DeliveryReason.HTTP_4XX, False),
        (404, DeliveryReason.HTTP_4XX, False),
        (410, DeliveryReason.HTTP_4XX, False),
        (302, DeliveryReason.HTTP_4XX, False),
    ],
)
async def test_failures_are_classified(
    make_sink: Callable[..., WebhookSink],
    receiver: WebhookReceiver,
    status: int,
    reason: DeliveryReason,
    retryable: bool,
) -> None:
    sink = make_sink(url=receiver.url, hmac_secret=Secret(HMAC_KEY))
    receiver.script(status, {"Retry-After": "3", "Location": "https://elsewhere.example/"})
    with pytest.raises(DeliveryError) as exc:
        await sink.deliver(sink.render(rollback()))
    assert (exc.value.reason, exc.value.retryable, exc.value.status_code) == (
        reason,
        retryable,
        status,
    )
    if status == 429:
        assert exc.value.retry_after_s == 3
    assert len(receiver.requests) == 1  # redirects are not followed
    await sink.deliver(sink.render(rollback()))


def test_options_validation() -> None:
    validate_sink_options(WebhookSink, {"url": "https://h.example/x", "timeout": 5})
    validate_sink_options(
        WebhookSink, {"url": Secret("https://h.example/x"), "headers": {"X-A": Secret("b")}}
    )
    bad: list[tuple[dict[str, object], str]] = [
        ({"url": "ftp://h.example/x"}, "http"),
        ({"url": "https://h/x", "headers": {"Content-Type": "text/plain"}}, "set by canarywatch"),
        ({"url": "https://h/x", "headers": {"X-Canarywatch-Signature": "x"}}, "set by"),
        ({"url": "https://h/x", "headers": {"Bad Name": "x"}}, "invalid header name"),
        ({"url": "https://h/x", "headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
        ({"url": "https://h/x", "hmac_secret": ""}, "empty"),
        ({"url": "https://h/x", "timeout_s": 0}, "timeout"),
    ]
    for options, expected in bad:
        with pytest.raises(SinkLoadError, match=expected) as exc:
            validate_sink_options(WebhookSink, options)
        assert "a\r\nX-B" not in str(exc.value)


async def test_secrets_never_leak(make_sink: Callable[..., WebhookSink]) -> None:
    url = closed_url()
    with capture_logs() as logs:
        sink = make_sink(
            url=Secret(url),
            hmac_secret=Secret(HMAC_KEY),
            headers={"Authorization": Secret("Bearer hdr-secret")},
        )
        payload = sink.render(rollback())
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver(payload)
    assert exc.value.reason is DeliveryReason.CONNECTION
    assert exc.value.retryable
    assert exc.value.__cause__ is None
    for secret in (url, "closed-port-token", HMAC_KEY, "hdr-secret"):
        for text in (repr(sink), repr(sink._options), str(exc.value), repr(logs), str(payload)):
            assert secret not in text


async def test_webhook_passes_the_sink_contract() -> None:
    payloads = await check_sink_contract(
        WebhookSink,
        {"url": closed_url(), "hmac_secret": Secret(HMAC_KEY), "headers": {"X-A": Secret("hv")}},
        secrets=["closed-port-token", "hv"],
        deliver=True,
    )
    assert len(payloads) == 2 * len(Transition) + 1


def test_signature_is_over_timestamp_dot_body() -> None:
    body = '{"a":"é"}'.encode()
    mac = hmac.new(b"k", b"17." + body, hashlib.sha256).hexdigest()
    assert signature(b"k", "17", body) == "sha256=" + mac


async def test_hostile_text_round_trips(make_sink: Callable[..., WebhookSink]) -> None:
    sink = make_sink(hmac_secret=HMAC_KEY)

    @settings(max_examples=40, deadline=None)
    @given(message=st.text(max_size=2000), name=st.text(max_size=50))
    def check(message: str, name: str) -> None:
        n = make_notification(make_event(message=message, canary=f"ns/{name}"))
        payload = sink.render(n)
        body = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        raw = body.encode()
        assert json.loads(raw) == payload
        headers = sink.request_headers(raw, T0_UNIX)
        assert headers["X-Canarywatch-Signature"] == signature(HMAC_KEY.encode(), T0_UNIX, raw)

    check()
