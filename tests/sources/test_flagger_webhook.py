"""The Flagger event-webhook source, served by the daemon's real HTTP app on a local port.

Flagger's bodies are the byte-exact fixtures; what the route emits goes through the real
``WebhookNormaliser`` and, end to end, through the real pipeline next to the Event watch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.config.sources import DEFAULT_MAX_BODY_BYTES, WebhookIntakeSettings
from canarywatch.formats import recording
from canarywatch.logs import get_logger
from canarywatch.model import Observation, SourceName, Transition
from canarywatch.normalise.webhook import WebhookNormaliser
from canarywatch.pipeline import policy
from canarywatch.secrets import Secret
from canarywatch.sources.flagger_webhook import (
    REJECT_REASONS,
    WEBHOOK_PATH,
    webhook_rejected_counter,
    webhook_routes,
)
from canarywatch.web.server import Readiness, WebServer, build_app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "flagger"
RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
NOW = datetime(2026, 8, 4, 14, 0, tzinfo=UTC)
SECRET = "hook-s3cret-value"

EXPECTED = {
    "event-webhook-advance.json": ("test/podinfo", Transition.WEIGHT_ADVANCED, "20"),
    "event-webhook-canary-failed.json": ("test/podinfo", Transition.ROLLED_BACK, ""),
    "event-webhook-halt-no-values-custom-metadata.json": (
        "shop/checkout",
        Transition.NO_TRAFFIC,
        "",
    ),
    "event-webhook-halt-success-rate.json": ("test/podinfo", Transition.HALTED, ""),
    "event-webhook-new-revision.json": ("test/podinfo", Transition.REVISION_DETECTED, ""),
    "event-webhook-promotion-completed.json": ("test/podinfo", Transition.PROMOTED, ""),
    "event-webhook-rollback-threshold.json": ("test/podinfo", Transition.ROLLED_BACK, ""),
    "event-webhook-waiting-approval.json": (
        "test/frontend",
        Transition.AWAITING_APPROVAL,
        "rollout",
    ),
}
JSON = {"Content-Type": "application/json"}


@dataclass
class Served:
    base: str
    http: aiohttp.ClientSession
    clock: VirtualClock
    registry: CollectorRegistry
    emitted: list[Observation] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.base + WEBHOOK_PATH

    def rejected(self, reason: str) -> float:
        value = self.registry.get_sample_value(
            "canarywatch_webhook_rejected_total", {"reason": reason}
        )
        assert value is not None
        return value

    async def post(
        self, body: bytes, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any]:
        async with self.http.post(
            self.url, data=body, headers=JSON if headers is None else headers, **kw
        ) as response:
            return response.status, await response.json()


@asynccontextmanager
async def serve(
    settings: WebhookIntakeSettings | None = None,
    *,
    server_token: Secret | None = None,
    default_cluster: str = "",
    emit: Callable[[Observation], Awaitable[None]] | None = None,
    emit_timeout_s: float = 2.0,
) -> AsyncIterator[Served]:
    """The daemon's real ``build_app`` with the webhook route, on 127.0.0.1:<free port>."""
    clock = VirtualClock(NOW)
    registry = CollectorRegistry()
    served: Served

    async def collect(obs: Observation) -> None:
        served.emitted.append(obs)

    routes = webhook_routes(
        emit or collect,
        settings or WebhookIntakeSettings(enabled=True),
        clock=clock,
        rejected=webhook_rejected_counter(registry),
        log=get_logger("source.flagger_webhook"),
        default_cluster=default_cluster,
        emit_timeout_s=emit_timeout_s,
    )
    app = build_app(
        registry=registry, readiness=Readiness(), token=server_token, extra_routes=routes
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            served = Served(f"http://127.0.0.1:{server.port}", http, clock, registry)
            yield served
    finally:
        await server.close()


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_every_flagger_body_is_accepted_and_normalises(name: str) -> None:
    body = fixture_bytes(name)
    async with serve() as s:
        status, answer = await s.post(body)
    assert (status, answer) == (202, {"status": "accepted"})
    assert len(s.emitted) == 1
    obs = s.emitted[0]
    assert obs.source is SourceName.FLAGGER_WEBHOOK
    assert obs.at == NOW
    assert obs.cluster == ""
    assert obs.data == json.loads(body)  # the decoded body, unescaped (\u003c is "<")
    normalised = WebhookNormaliser()(obs)
    assert len(normalised.events) == 1
    event = normalised.events[0]
    canary, transition, detail = EXPECTED[name]
    assert (str(event.canary), event.transition, event.detail) == (canary, transition, detail)
    assert event.sources == (SourceName.FLAGGER_WEBHOOK,)
    assert (
        s.registry.get_sample_value("canarywatch_webhook_rejected_total", {"reason": "x"}) is None
    )
    assert all(s.rejected(reason) == 0 for reason in REJECT_REASONS)


async def test_escaped_characters_survive_decoding() -> None:
    async with serve() as s:
        await s.post(fixture_bytes("event-webhook-halt-success-rate.json"))
    message = s.emitted[0].data["metadata"]["eventMessage"]
    assert message == "Halt podinfo.test advancement success rate 96.12% < 99%"


@pytest.mark.parametrize(
    ("configured", "default", "expected"),
    [(None, "", ""), (None, "prod-eu-1", "prod-eu-1"), ("edge", "prod-eu-1", "edge")],
)
async def test_observations_carry_the_configured_cluster(
    configured: str | None, default: str, expected: str
) -> None:
    settings = WebhookIntakeSettings(enabled=True, cluster=configured)
    async with serve(settings, default_cluster=default) as s:
        status, _ = await s.post(fixture_bytes("event-webhook-advance.json"))
    assert status == 202
    assert s.emitted[0].cluster == expected
    assert WebhookNormaliser()(s.emitted[0]).events[0].canary.cluster == expected


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.x+json"],
)
async def test_json_content_types_are_accepted(content_type: str) -> None:
    async with serve() as s:
        status, _ = await s.post(
            fixture_bytes("event-webhook-advance.json"), headers={"Content-Type": content_type}
        )
    assert status == 202


async def test_server_token_does_not_guard_the_webhook_route() -> None:
    """Flagger cannot send headers: ``server.token`` guards ``/api/`` only."""
    async with serve(server_token=Secret("api-token")) as s:
        status, _ = await s.post(fixture_bytes("event-webhook-advance.json"))
        async with s.http.get(s.base + "/api/v1/anything") as api:
            api_status = api.status
    assert status == 202
    assert api_status == 401


# -- refused ------------------------------------------------------------------------------------


MALFORMED = [
    (b"not json at all", "invalid_json", "body is not valid JSON"),
    (b'{"name": "podinfo",', "invalid_json", "body is not valid JSON"),
    (b"\xff\xfe\x00garbage", "invalid_json", "body is not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, "invalid_json", "body is not valid JSON"),
    (b"", "invalid_json", "body is not valid JSON"),
    (b'["podinfo", "test"]', "not_object", "body is not a JSON object"),
    (b'"podinfo"', "not_object", "body is not a JSON object"),
    (
        b'{"namespace":"test","metadata":{"eventMessage":"Starting canary analysis"}}',
        "missing_field",
        "body lacks name or namespace",
    ),
    (
        b'{"name":"podinfo","namespace":"","metadata":{"eventMessage":"x"}}',
        "missing_field",
        "body lacks name or namespace",
    ),
    (b'{"name":"podinfo","namespace":"test"}', "missing_field", "body lacks metadata"),
    (
        b'{"name":"podinfo","namespace":"test","metadata":{"eventType":"Normal"}}',
        "missing_field",
        "body lacks metadata.eventMessage",
    ),
    (
        b'{"name":"podinfo","namespace":"test","metadata":{"eventMessage":42}}',
        "missing_field",
        "body lacks metadata.eventMessage",
    ),
]


@pytest.mark.parametrize(("body", "reason", "error"), MALFORMED)
async def test_malformed_bodies_get_400_and_are_counted_and_logged(
    body: bytes, reason: str, error: str
) -> None:
    async with serve() as s:
        with capture_logs() as logs:
            status, answer = await s.post(body)
    assert (status, answer) == (400, {"error": error})
    assert s.emitted == []
    assert s.rejected(reason) == 1
    assert sum(s.rejected(r) for r in REJECT_REASONS) == 1
    rejected = [e for e in logs if e["event"] == "webhook_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["reason"] == reason
    assert rejected[0]["status_code"] == 400
    assert rejected[0]["log_level"] == "warning"


async def test_a_body_over_the_limit_is_413_with_or_without_content_length() -> None:
    settings = WebhookIntakeSettings(enabled=True, max_body_bytes=1024)
    message = "x" * 2000
    body = json.dumps(
        {"name": "podinfo", "namespace": "test", "metadata": {"eventMessage": message}}
    ).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    async with serve(settings) as s:
        declared = await s.post(body)
        async with s.http.post(s.url, data=chunked(), headers=JSON) as response:
            streamed = (response.status, await response.json())
        small = await s.post(fixture_bytes("event-webhook-advance.json"))
    assert declared == (413, {"error": "body larger than 1024 bytes"})
    assert streamed == (413, {"error": "body larger than 1024 bytes"})
    assert small[0] == 202
    assert s.rejected("too_large") == 2
    assert len(s.emitted) == 1


async def test_the_default_limit_is_256_kib() -> None:
    assert WebhookIntakeSettings().max_body_bytes == DEFAULT_MAX_BODY_BYTES == 256 * 1024
    padding = "y" * (DEFAULT_MAX_BODY_BYTES - 200)
    fits = {"name": "p", "namespace": "t", "metadata": {"eventMessage": "Starting", "x": padding}}
    over = {"name": "p", "namespace": "t", "metadata": {"eventMessage": "S", "x": padding * 2}}
    async with serve() as s:
        assert (await s.post(json.dumps(fits).encode()))[0] == 202
        assert (await s.post(json.dumps(over).encode()))[0] == 413


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
async def test_non_json_content_types_get_415(content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with serve() as s:
        # aiohttp adds application/octet-stream to a bytes body without a Content-Type.
        status, answer = await s.post(fixture_bytes("event-webhook-advance.json"), headers=headers)
    assert (status, answer) == (415, {"error": "Content-Type must be application/json"})
    assert s.rejected("unsupported_media_type") == 1
    assert s.emitted == []


async def test_a_configured_secret_is_required_as_bearer_or_query_token() -> None:
    settings = WebhookIntakeSettings.model_validate({"enabled": True, "secret": {"value": SECRET}})
    body = fixture_bytes("event-webhook-advance.json")
    async with serve(settings) as s:
        with capture_logs() as logs:
            missing = await s.post(body)
            wrong_bearer = await s.post(body, headers={**JSON, "Authorization": "Bearer nope"})
            wrong_scheme = await s.post(body, headers={**JSON, "Authorization": f"Basic {SECRET}"})
            wrong_query = await s.post(body, params={"token": SECRET + "x"})
            bearer = await s.post(body, headers={**JSON, "Authorization": f"Bearer {SECRET}"})
            query = await s.post(body, params={"token": SECRET})
    for refused in (missing, wrong_bearer, wrong_scheme, wrong_query):
        assert refused == (401, {"error": "missing or wrong token"})
    assert bearer == (202, {"status": "accepted"})
    assert query == (202, {"status": "accepted"})
    assert len(s.emitted) == 2
    assert s.rejected("unauthorized") == 4
    assert [e["reason"] for e in logs if e["event"] == "webhook_rejected"] == ["unauthorized"] * 4
    assert SECRET not in repr(logs)
    assert SECRET not in repr(settings)


async def test_the_secret_is_checked_before_the_body_is_read() -> None:
    settings = WebhookIntakeSettings.model_validate(
        {"enabled": True, "secret": {"value": SECRET}, "max_body_bytes": 1024}
    )
    async with serve(settings) as s:
        status, _ = await s.post(b"x" * 4096, headers={"Content-Type": "text/plain"})
    assert status == 401
    assert s.rejected("unauthorized") == 1
    assert s.rejected("too_large") == s.rejected("unsupported_media_type") == 0


async def test_a_full_intake_answers_503_instead_of_holding_flagger() -> None:
    never = asyncio.Event()

    async def stuck(_: Observation) -> None:
        await never.wait()

    async with serve(emit=stuck, emit_timeout_s=0.05) as s:
        status, answer = await s.post(fixture_bytes("event-webhook-advance.json"))
    assert (status, answer) == (503, {"error": "intake full, try again later"})
    assert s.rejected("overloaded") == 1


async def test_a_callback_can_count_instead_of_a_counter() -> None:
    reasons: list[str] = []

    async def emit(_: Observation) -> None:
        return None

    routes = webhook_routes(
        emit,
        WebhookIntakeSettings(enabled=True),
        clock=VirtualClock(NOW),
        rejected=reasons.append,
        log=get_logger("source.flagger_webhook"),
    )
    app = build_app(registry=CollectorRegistry(), readiness=Readiness(), extra_routes=routes)
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}{WEBHOOK_PATH}"
            async with http.post(url, data=b"[]", headers=JSON) as response:
                assert response.status == 400
            async with http.get(url) as response:
                assert response.status == 405  # POST only
    finally:
        await server.close()
    assert reasons == ["not_object"]


# -- settings -------------------------------------------------------------------------------------


def test_settings_defaults_and_validation() -> None:
    default = WebhookIntakeSettings()
    assert (default.enabled, default.secret, default.cluster) == (False, None, None)
    parsed = WebhookIntakeSettings.model_validate(
        {"enabled": True, "secret": {"value": "abc"}, "max_body_bytes": 4096, "cluster": "prod"}
    )
    assert parsed.secret is not None
    assert parsed.secret.reveal() == "abc"
    assert "abc" not in repr(parsed)
    for bad in (
        {"secret": "inline-string"},
        {"max_body_bytes": 10},
        {"max_body_bytes": 1 << 30},
        {"cluster": "has space"},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            WebhookIntakeSettings.model_validate(bad)


# -- end to end: one transition, two sources, one notification ------------------------------


async def test_same_transition_via_webhook_and_watch_is_notified_once() -> None:
    """The rollback as the Event watch saw it (tests/recordings/rollback.jsonl) plus Flagger's
    webhook POSTs of the same moments, through the real pipeline: every transition once."""
    watch = recording.read(RECORDINGS / "rollback.jsonl")
    hooks = [
        "event-webhook-halt-success-rate.json",
        "event-webhook-rollback-threshold.json",
        "event-webhook-canary-failed.json",
    ]
    pipeline = policy.build_pipeline(None)
    notified: list[tuple[str, str, tuple[SourceName, ...]]] = []

    def feed(obs: Observation) -> None:
        pipeline.observe(obs, obs.at)
        for n in pipeline.due(obs.at):
            notified.extend((str(e.canary), e.transition.value, e.sources) for e in n.events)

    async with serve() as s:
        timeline: list[tuple[datetime, Observation | str]] = [(o.at, o) for o in watch]
        for name in hooks:
            millis = int(json.loads(fixture_bytes(name))["metadata"]["timestamp"])
            timeline.append((datetime.fromtimestamp(millis / 1000, UTC), name))
        timeline.sort(key=lambda item: item[0])
        for at, item in timeline:
            s.clock.advance_to(at)
            if isinstance(item, str):
                status, _ = await s.post(fixture_bytes(item))
                assert status == 202
                feed(s.emitted[-1])
            else:
                feed(item)
    assert len(s.emitted) == len(hooks)
    transitions = [t for _, t, _ in notified]
    assert transitions == [
        "revision-detected",
        "analysis-started",
        "weight-advanced",
        "weight-advanced",
        "halted",
        "rolled-back",
    ]
    assert transitions.count("rolled-back") == 1
    # The watch saw each first; the webhook's copies were folded into them.
    assert all(sources == (SourceName.KUBERNETES_EVENTS,) for _, _, sources in notified)
    assert pipeline.stats.suppressed.get("duplicate", 0) >= len(hooks)
    assert pipeline.stats.outcomes.get("transition", 0) >= len(hooks)


async def test_webhook_first_then_watch_is_also_notified_once() -> None:
    """Flagger calls the webhook inside recordEvent, so it can beat the watch: same result."""
    watch = [
        o
        for o in recording.read(RECORDINGS / "rollback.jsonl")
        if "Rolling back" in json.dumps(o.data) or "Canary failed" in json.dumps(o.data)
    ]
    assert len(watch) == 2
    pipeline = policy.build_pipeline(None)
    async with serve() as s:
        s.clock.advance_to(watch[0].at)
        status, _ = await s.post(fixture_bytes("event-webhook-rollback-threshold.json"))
        assert status == 202
        first = pipeline.observe(s.emitted[0], s.clock.now())
        later = [e for o in watch for e in pipeline.observe(o, o.at)]
    assert [e.transition for e in first] == [Transition.ROLLED_BACK]
    assert first[0].sources == (SourceName.FLAGGER_WEBHOOK,)
    assert later == []
    notifications = pipeline.due(s.clock.now())
    assert [e.transition for n in notifications for e in n.events] == [Transition.ROLLED_BACK]
