"""The ``alertmanager`` sink: pure renders, fan-out to replicas, and a real Alertmanager 0.25."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs
from tests.sinks.golden import assert_golden_json
from tests.support.alertmanager import RunningAlertmanager, run_alertmanager
from tests.support.ports import free_port
from tests.support.webhook_receiver import WebhookReceiver, run_webhook_receiver

from canarywatch.model import Notification, NotificationStatus, Phase, Transition
from canarywatch.secrets import Secret
from canarywatch.sinks import DeliveryError, DeliveryReason, SinkLoadError, validate_sink_options
from canarywatch.testing import T0, check_sink_contract, make_event, make_notification
from canarywatch_sinks.alertmanager import AlertmanagerSink, alertname

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
LINKS = {
    "dashboard_url": "https://grafana.example/d/canary?var-ns={namespace}&var-canary={canary}",
    "runbook_url": "https://runbooks.example/canary/{transition}",
}


def parse_time(text: str) -> datetime:
    """Alertmanager's RFC 3339 with up to nanoseconds (Python takes at most microseconds)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    return datetime.fromisoformat(text)


def closed_url() -> str:
    port = free_port()
    return f"http://127.0.0.1:{port}"


def rollback(canary: str = "test/podinfo", **kw: Any) -> Notification:
    return make_notification(
        make_event(
            Transition.ROLLED_BACK,
            canary=canary,
            cluster="prod-eu",
            rollout="2",
            failed_checks=5,
            phase=Phase.FAILED,
            reason="request-success-rate 88.50 < 99",
            message="Rolling back podinfo.test failed checks threshold reached 5",
            at=kw.pop("at", T0),
        ),
        **kw,
    )


@pytest.fixture
async def make_sink() -> AsyncIterator[Callable[..., AlertmanagerSink]]:
    async with aiohttp.ClientSession() as http:
        made: list[AlertmanagerSink] = []

        def build(**options: object) -> AlertmanagerSink:
            options.setdefault("urls", ["http://alertmanager.example:9093"])
            sink = AlertmanagerSink("alertmanager", options, http=http, log=structlog.get_logger())
            made.append(sink)
            return sink

        yield build
        for sink in made:
            await sink.aclose()


# --- render (pure) -----------------------------------------------------------------------------


async def test_render_golden(make_sink: Callable[..., AlertmanagerSink]) -> None:
    sink = make_sink(links=LINKS)
    assert_golden_json("alertmanager_rollback_firing.json", sink.render(rollback()))
    advanced = make_notification(
        make_event(
            Transition.WEIGHT_ADVANCED, rollout="2", weight=10, at=T0 - timedelta(minutes=1)
        ),
        make_event(
            Transition.WEIGHT_ADVANCED,
            rollout="2",
            weight=30,
            message="Advance podinfo.test canary weight 30",
        ),
    )
    rendered = sink.render(advanced)
    assert_golden_json("alertmanager_weight_advanced.json", rendered)
    assert isinstance(rendered, list)
    assert len(rendered) == 1
    assert "30%" in rendered[0]["annotations"]["description"]
    done = rollback(status=NotificationStatus.RESOLVED, created_at=T0 + timedelta(minutes=4))
    resolved = sink.render(done)
    assert_golden_json("alertmanager_resolved.json", resolved)
    assert isinstance(resolved, list)
    assert resolved[0]["endsAt"] == "2025-01-02T14:12:02Z"


async def test_render_takes_times_from_the_notification(
    make_sink: Callable[..., AlertmanagerSink],
) -> None:
    sink = make_sink(ends_at_after_s=240, resend_interval_s=30)
    later = T0 + timedelta(seconds=90)
    alerts = sink.render(rollback(created_at=later))
    assert isinstance(alerts, list)
    (alert,) = alerts
    assert alert["startsAt"] == "2025-01-02T14:08:02Z"  # observed time: stable per alert
    assert alert["endsAt"] == "2025-01-02T14:13:32Z"  # created_at + 240 s
    assert sink.render(rollback(created_at=later)) == alerts
    assert alert["labels"] == {
        "alertname": "CanaryRolledBack",
        "namespace": "test",
        "canary": "podinfo",
        "cluster": "prod-eu",
        "severity": "critical",
        "rollout": "2",
    }
    assert "generatorURL" not in alert  # no dashboard configured
    assert set(alert["annotations"]) == {"summary", "description"}


def test_alertnames_are_camel_case_and_label_names_valid() -> None:
    assert alertname(make_event(Transition.ROLLED_BACK)) == "CanaryRolledBack"
    assert alertname(make_event(Transition.METRICS_SOURCE_DOWN)) == "CanaryMetricsSourceDown"
    for transition in Transition:
        name = alertname(make_event(transition))
        assert LABEL_NAME.match(name)
        assert name.startswith("Canary")


def test_options_validation() -> None:
    ok = {"urls": ["https://am-0:9093", "https://am-1:9093/am"]}
    validate_sink_options(AlertmanagerSink, ok)
    validate_sink_options(
        AlertmanagerSink,
        {**ok, "basic_auth": {"username": "cw", "password": Secret("pw")}, "tls": {}},
    )
    bad: list[tuple[dict[str, object], str]] = [
        ({"urls": []}, "urls"),
        ({"urls": ["ftp://x"]}, "http"),
        ({"urls": ["https://u:p@am:9093"]}, "basic_auth"),
        (
            {**ok, "basic_auth": {"username": "cw", "password": "pw"}, "bearer_token": "t"},
            "not both",
        ),
        ({**ok, "resend_interval_s": 300, "ends_at_after_s": 300}, "exceed"),
        ({**ok, "tls": {"cert_file": "/x.pem"}}, "key_file"),
        ({**ok, "colour": "red"}, "colour"),
    ]
    for options, expected in bad:
        with pytest.raises(SinkLoadError, match=expected):
            validate_sink_options(AlertmanagerSink, options)


# --- deliver against local fakes ---------------------------------------------------------------


async def test_push_carries_auth_and_the_route_prefix(
    make_sink: Callable[..., AlertmanagerSink],
) -> None:
    async with run_webhook_receiver(path="/am/api/v2/alerts") as fake:
        base = fake.url.removesuffix("/api/v2/alerts")
        basic = make_sink(urls=[base + "/"], basic_auth={"username": "cw", "password": "pw-1"})
        await basic.deliver(basic.render(rollback()))
        bearer = make_sink(urls=[base], bearer_token=Secret("tok-2"))
        await bearer.deliver(bearer.render(rollback()))
    first, second = fake.requests
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(b"cw:pw-1").decode()
    assert second.headers["Authorization"] == "Bearer tok-2"
    assert first.json() == basic.render(rollback())


@pytest.mark.parametrize(
    ("status", "reason", "retryable"),
    [
        (400, DeliveryReason.INVALID_PAYLOAD, False),
        (415, DeliveryReason.INVALID_PAYLOAD, False),
        (422, DeliveryReason.INVALID_PAYLOAD, False),
        (401, DeliveryReason.HTTP_4XX, False),
        (500, DeliveryReason.HTTP_5XX, True),
        (503, DeliveryReason.HTTP_5XX, True),
    ],
)
async def test_failures_are_classified(
    make_sink: Callable[..., AlertmanagerSink],
    status: int,
    reason: DeliveryReason,
    retryable: bool,
) -> None:
    async with run_webhook_receiver(path="/api/v2/alerts") as fake:
        sink = make_sink(urls=[fake.url.removesuffix("/api/v2/alerts")])
        fake.script(status)
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver(sink.render(rollback()))
    assert (exc.value.reason, exc.value.retryable, exc.value.status_code) == (
        reason,
        retryable,
        status,
    )


async def test_heartbeat_refreshes_firing_and_repeats_resolved(
    make_sink: Callable[..., AlertmanagerSink],
) -> None:
    async with run_webhook_receiver(path="/api/v2/alerts") as fake:
        sink = make_sink(urls=[fake.url.removesuffix("/api/v2/alerts")])
        assert sink.resend_interval_s == 60
        await sink.heartbeat([], T0)
        assert fake.requests == []
        firing = rollback("test/a")
        done = rollback("test/b", status=NotificationStatus.RESOLVED, created_at=T0)
        await sink.heartbeat([firing, done], T0 + timedelta(minutes=10))
    (request,) = fake.requests
    by_canary = {a["labels"]["canary"]: a for a in request.json()}
    assert by_canary["a"]["endsAt"] == "2025-01-02T14:23:02Z"  # now + 300 s
    assert by_canary["a"]["startsAt"] == "2025-01-02T14:08:02Z"  # unchanged identity
    assert by_canary["b"]["endsAt"] == "2025-01-02T14:08:02Z"  # resolved stays resolved


async def test_all_replicas_down_is_retryable_and_secrets_stay_hidden(
    make_sink: Callable[..., AlertmanagerSink],
) -> None:
    with capture_logs() as logs:
        sink = make_sink(
            urls=[closed_url(), closed_url()],
            basic_auth={"username": "cw", "password": Secret("hunter2-pw")},
        )
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver(sink.render(rollback()))
    assert exc.value.reason is DeliveryReason.CONNECTION
    assert exc.value.retryable
    failed = [e for e in logs if e["event"] == "replica_push_failed"]
    assert len(failed) == 2
    assert "hunter2-pw" not in repr(logs) + repr(sink) + repr(exc.value) + str(exc.value)
    with pytest.raises(DeliveryError) as bad:
        await sink.deliver({"not": "a list"})
    assert bad.value.reason is DeliveryReason.INVALID_PAYLOAD


async def test_alertmanager_passes_the_sink_contract() -> None:
    payloads = await check_sink_contract(
        AlertmanagerSink,
        {"urls": [closed_url()], "bearer_token": Secret("contract-bearer-token"), "links": LINKS},
        deliver=True,
    )
    assert len(payloads) == 2 * len(Transition) + 1
    for alerts in payloads:
        assert isinstance(alerts, list)
        for alert in alerts:
            assert all(LABEL_NAME.match(k) for k in alert["labels"])
            assert alert["startsAt"] <= alert["endsAt"]


# --- against the real binary -------------------------------------------------------------------


def unique_canary() -> str:
    return f"test/app-{uuid4().hex[:10]}"


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[RunningAlertmanager]:
    async with run_alertmanager(tmp_path / "am") as am:
        yield am


@pytest.mark.needs_binaries
async def test_real_alertmanager_lifecycle(
    alertmanager: RunningAlertmanager, make_sink: Callable[..., AlertmanagerSink]
) -> None:
    """Firing -> read back; heartbeat moves endsAt/updatedAt; resolved -> gone."""
    sink = make_sink(urls=[alertmanager.url], links=LINKS)
    canary = unique_canary()
    name = canary.split("/")[1]
    now = datetime.now(UTC)
    firing = rollback(
        canary, at=now - timedelta(seconds=30), created_at=now - timedelta(seconds=20)
    )
    async with aiohttp.ClientSession() as http:
        await sink.deliver(sink.render(firing))
        (alert,) = await alertmanager.alerts(http, canary=name)
        assert alert["labels"] == {
            "alertname": "CanaryRolledBack",
            "namespace": "test",
            "canary": name,
            "cluster": "prod-eu",
            "severity": "critical",
            "rollout": "2",
        }
        assert alert["annotations"]["summary"] == f"Rolled back: {canary}"
        assert "Failed checks: 5." in alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"] == "https://runbooks.example/canary/rolled-back"
        assert alert["status"]["state"] == "active"
        ends = parse_time(alert["endsAt"])
        assert ends > datetime.now(UTC) + timedelta(seconds=200)

        await asyncio.sleep(0.05)
        await sink.heartbeat([firing], datetime.now(UTC))
        (refreshed,) = await alertmanager.alerts(http, canary=name)
        assert parse_time(refreshed["endsAt"]) > ends + timedelta(seconds=15)
        assert parse_time(refreshed["updatedAt"]) > parse_time(alert["updatedAt"])
        assert refreshed["startsAt"] == alert["startsAt"]
        assert refreshed["fingerprint"] == alert["fingerprint"]

        resolved = rollback(
            canary,
            at=now - timedelta(seconds=30),
            status=NotificationStatus.RESOLVED,
            created_at=datetime.now(UTC),
        )
        await sink.deliver(sink.render(resolved))
        assert await alertmanager.alerts(http, canary=name) == []


@pytest.mark.needs_binaries
async def test_real_replicas_each_hold_the_alert_and_one_down_is_fine(
    tmp_path: Path, make_sink: Callable[..., AlertmanagerSink]
) -> None:
    async with (
        run_alertmanager(tmp_path / "a") as am_a,
        run_alertmanager(tmp_path / "b", route_prefix="/am") as am_b,
        aiohttp.ClientSession() as http,
    ):
        both = make_sink(urls=[am_a.url, am_b.url])
        canary = unique_canary()
        name = canary.split("/")[1]
        await both.deliver(both.render(rollback(canary, created_at=datetime.now(UTC))))
        assert len(await am_a.alerts(http, canary=name)) == 1
        assert len(await am_b.alerts(http, canary=name)) == 1

        with capture_logs() as logs:
            half = make_sink(urls=[closed_url(), am_b.url])
            other = unique_canary()
            await half.deliver(half.render(rollback(other, created_at=datetime.now(UTC))))
        assert len(await am_b.alerts(http, canary=other.split("/")[1])) == 1
        (warning,) = [e for e in logs if e["event"] == "replica_push_failed"]
        assert warning["reason"] == "connection"
        assert warning["log_level"] == "warning"


@pytest.mark.needs_binaries
async def test_real_invalid_label_set_is_permanent(
    alertmanager: RunningAlertmanager, make_sink: Callable[..., AlertmanagerSink]
) -> None:
    """Our labels are always valid, so the bad batch is hand-made: 400 -> invalid_payload."""
    sink = make_sink(urls=[alertmanager.url])
    now = datetime.now(UTC)
    bad = [
        {
            "labels": {"alertname": "CanaryRolledBack", "bad-name": "x"},
            "annotations": {},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=5)).isoformat(),
        }
    ]
    with capture_logs() as logs, pytest.raises(DeliveryError) as exc:
        await sink.deliver(bad)
    assert exc.value.reason is DeliveryReason.INVALID_PAYLOAD
    assert not exc.value.retryable
    assert exc.value.status_code == 400
    (failed,) = [e for e in logs if e["event"] == "replica_push_failed"]
    assert "invalid label set" in failed["detail"]


@pytest.mark.needs_binaries
async def test_real_alertmanager_notifies_its_webhook_receiver(
    tmp_path: Path, make_sink: Callable[..., AlertmanagerSink]
) -> None:
    """End to end: our push -> Alertmanager routes it -> its webhook reaches a capture server."""
    async with (
        run_webhook_receiver() as capture,
        run_alertmanager(tmp_path / "am", webhook_url=capture.url) as am,
    ):
        sink = make_sink(urls=[am.url])
        canary = unique_canary()
        now = datetime.now(UTC)
        await sink.deliver(sink.render(rollback(canary, at=now, created_at=now)))
        (first,) = await capture.wait_for(1)
        body = first.json()
        assert body["status"] == "firing"
        assert body["alerts"][0]["labels"]["canary"] == canary.split("/")[1]
        assert body["alerts"][0]["labels"]["alertname"] == "CanaryRolledBack"

        done = datetime.now(UTC)
        resolved = rollback(canary, at=now, status=NotificationStatus.RESOLVED, created_at=done)
        await sink.deliver(sink.render(resolved))
        requests = await _wait_resolved(capture)
        assert requests[-1].json()["alerts"][0]["status"] == "resolved"


async def _wait_resolved(capture: WebhookReceiver) -> list[Any]:
    async with asyncio.timeout(15):
        while not any(r.json()["status"] == "resolved" for r in capture.requests):
            await capture.wait_for(len(capture.requests) + 1)
    return capture.requests
