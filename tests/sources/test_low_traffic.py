"""The passed-with-no-traffic check: settings, window, templates, a fake and a REAL Prometheus."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from structlog.testing import capture_logs
from tests.support.http_server import LocalServer, Reply, local_server
from tests.support.prometheus import run_prometheus

from canarywatch.clock import Clock, SystemClock, VirtualClock
from canarywatch.config.sources import MESH_QUERIES, LowTrafficSettings
from canarywatch.logs import get_logger
from canarywatch.model import CanaryEvent, CanaryRef, Severity, SourceName, Transition
from canarywatch.sources.low_traffic import (
    CheckOutcome,
    LowTrafficChecker,
    PendingCheck,
    render_query,
    window_seconds,
)

T0 = datetime(2026, 8, 4, 10, 31, 2, tzinfo=UTC)
PODINFO = CanaryRef("test", "podinfo", "prod")
JSON = "application/json"


def settings(**overrides: Any) -> LowTrafficSettings:
    base: dict[str, Any] = {
        "enabled": True,
        "prometheus_url": "http://127.0.0.1:1",
        "delay": "0s",
        "timeout": "2s",
    }
    return LowTrafficSettings.model_validate({**base, **overrides})


def event(
    transition: Transition,
    at: datetime,
    *,
    reason: str = "",
    target: str = "podinfo",
    rollout: str = "1",
) -> CanaryEvent:
    return CanaryEvent(
        canary=PODINFO,
        transition=transition,
        observed_at=at,
        occurred_at=at,
        sources=(SourceName.KUBERNETES_EVENTS,),
        reason=reason,
        target=target,
        rollout=rollout,
    )


def vector(*values: str) -> str:
    result = [
        {"metric": {"i": str(i)}, "value": [1785833712.5, v]}  # sum(...) has no __name__
        for i, v in enumerate(values)
    ]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


class Harness:
    """A checker, its own registry, and the events it emitted."""

    def __init__(
        self, http: aiohttp.ClientSession, config: LowTrafficSettings, clock: Clock
    ) -> None:
        self.registry = CollectorRegistry()
        self.emitted: list[CanaryEvent] = []
        self.clock = clock
        self.checker = LowTrafficChecker(
            config,
            http=http,
            clock=clock,
            log=get_logger("low_traffic"),
            emit_event=self._emit,
            registry=self.registry,
        )

    async def _emit(self, e: CanaryEvent) -> None:
        self.emitted.append(e)

    def count(self, outcome: CheckOutcome) -> float:
        got = self.registry.get_sample_value(
            "canarywatch_low_traffic_checks_total", {"outcome": outcome.value}
        )
        return got if got is not None else -1

    def failures(self, reason: str) -> float:
        got = self.registry.get_sample_value(
            "canarywatch_low_traffic_query_failures_total", {"reason": reason}
        )
        return got if got is not None else -1

    def pending(self, start: datetime, end: datetime) -> PendingCheck:
        return PendingCheck(
            promoted=event(Transition.PROMOTED, end),
            started_at=start,
            ended_at=end,
            target="podinfo",
            due=end,
        )


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``predicate`` (the checker's task runs on the same loop) until true."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with local_server() as s:
        yield s


# -- pure parts ----------------------------------------------------------------------------------


def test_window_is_the_rollout_rounded_up_at_least_a_minute() -> None:
    assert window_seconds(T0, T0 + timedelta(seconds=30)) == 60
    assert window_seconds(T0, T0 + timedelta(seconds=754, milliseconds=200)) == 755
    assert window_seconds(T0, T0 + timedelta(minutes=10)) == 600
    assert window_seconds(T0, T0) == 60


def test_default_templates_render() -> None:
    values = {
        "namespace": "test",
        "target": "podinfo",
        "canary": "podinfo",
        "cluster": "prod",
        "window": "600s",
    }
    assert render_query(MESH_QUERIES["istio"], values) == (
        'sum(increase(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="test",destination_workload="podinfo"}[600s]))'
    )
    assert render_query(MESH_QUERIES["linkerd"], values) == (
        'sum(increase(response_total{namespace="test",deployment="podinfo",'
        'direction="inbound"}[600s]))'
    )
    assert render_query(MESH_QUERIES["nginx"], values) == (
        'sum(increase(nginx_ingress_controller_requests{namespace="test",'
        'canary=~"test-podinfo-canary-.+"}[600s]))'
    )
    # Label values land inside PromQL strings; PromQL's own braces are untouched.
    odd = {**values, "target": 'a"b\\c'}
    assert render_query('x{w="{target}",c="{cluster}"}[{window}]', odd) == (
        'x{w="a\\"b\\\\c",c="prod"}[600s]'
    )


def test_settings() -> None:
    defaults = LowTrafficSettings()
    assert (defaults.enabled, defaults.mesh, defaults.min_requests) == (False, "istio", 100)
    assert defaults.template() == MESH_QUERIES["istio"]
    assert settings(mesh="linkerd").template() == MESH_QUERIES["linkerd"]
    assert settings(mesh="nginx", query=" my_query[{window}] ").template() == "my_query[{window}]"
    assert settings(timeout="3s", delay="1m").delay == 60
    for bad in (
        {"prometheus_url": ""},
        {"mesh": "custom"},
        {"mesh": "consul"},
        {"min_requests": 0},
        {
            "bearer_token": {"value": "t"},
            "basic_auth": {"username": "u", "password": {"value": "p"}},
        },
        {"surprise": True},
    ):
        with pytest.raises(ValidationError):
            settings(**bad)
    with pytest.raises(ValidationError):
        LowTrafficSettings(enabled=False, mesh="custom")
    for described in LowTrafficSettings.model_fields.values():
        assert described.description


# -- bookkeeping: which promotions are checked -----------------------------------------------


async def test_promotions_without_a_known_window_are_skipped(http: aiohttp.ClientSession) -> None:
    clock = VirtualClock(T0)
    h = Harness(http, settings(), clock)
    with capture_logs() as logs:
        h.checker.observe(event(Transition.PROMOTED, T0))  # start never seen
        h.checker.observe(event(Transition.REVISION_DETECTED, T0))
        h.checker.observe(event(Transition.PROMOTED, T0, reason="analysis-skipped"))
        h.checker.observe(event(Transition.REVISION_DETECTED, T0))
        h.checker.observe(event(Transition.ROLLED_BACK, T0))
        h.checker.observe(event(Transition.PROMOTED, T0))  # belongs to no tracked rollout
        h.checker.observe(event(Transition.REVISION_DETECTED, T0 - timedelta(hours=2)))
        h.checker.observe(event(Transition.PROMOTED, T0 - timedelta(hours=1)))  # catch-up
    assert h.count(CheckOutcome.SKIPPED) == 4
    reasons = [e["reason"] for e in logs if e["event"] == "low_traffic_check_skipped"]
    assert reasons == [
        "rollout start not seen",
        "analysis skipped",
        "rollout start not seen",
        "promotion too old",
    ]


async def test_disabled_checker_does_nothing(http: aiohttp.ClientSession) -> None:
    h = Harness(http, settings(enabled=False, prometheus_url=""), VirtualClock(T0))
    h.checker.observe(event(Transition.PROMOTED, T0))
    assert h.count(CheckOutcome.SKIPPED) == 0


# -- against a fake Prometheus API -----------------------------------------------------------


async def test_low_count_emits_one_warning(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    config = settings(
        prometheus_url=server.base_url, bearer_token={"value": "s3cret"}, min_requests=100
    )
    h = Harness(http, config, VirtualClock(T0 + timedelta(minutes=11)))
    server.reply = Reply(body=vector("7.4", "4.9"), content_type=JSON)
    start, end = T0, T0 + timedelta(minutes=10, seconds=1, milliseconds=500)
    with capture_logs() as logs:
        result = await h.checker.check(h.pending(start, end))
    assert result.outcome is CheckOutcome.LOW
    assert result.requests == 12
    assert result.window_s == 602
    [sent] = server.requests
    assert sent.path == "/api/v1/query"
    assert sent.query["query"] == (
        'sum(increase(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="test",destination_workload="podinfo"}[602s]))'
    )
    assert float(sent.query["time"]) == pytest.approx(end.timestamp())  # evaluated at promotion
    assert sent.headers["Authorization"] == "Bearer s3cret"

    [warning] = h.emitted
    assert warning == result.event
    assert warning.transition is Transition.LOW_TRAFFIC_PROMOTION
    assert warning.severity is Severity.WARNING
    assert (warning.canary, warning.rollout, warning.target) == (PODINFO, "1", "podinfo")
    assert warning.sources == (SourceName.FLAGGER_METRICS,)
    assert warning.reason == "served 12 requests during analysis, minimum 100"
    assert dict(warning.hints) == {"requests": "12", "minimum": "100"}
    assert warning.phase is None  # the canary may already be in its next rollout
    assert warning.occurred_at == end
    assert h.count(CheckOutcome.LOW) == 1
    [line] = [e for e in logs if e["event"] == "low_traffic_checked"]
    assert (line["requests"], line["minimum"], line["log_level"]) == (12, 100, "info")
    assert "s3cret" not in repr(logs)


async def test_enough_requests_emit_nothing_but_a_debug_line(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    h = Harness(http, settings(prometheus_url=server.base_url, min_requests=5), VirtualClock(T0))
    server.reply = Reply(body=vector("12"), content_type=JSON)
    with capture_logs() as logs:
        result = await h.checker.check(h.pending(T0, T0 + timedelta(minutes=5)))
    assert (result.outcome, result.requests, result.event) == (CheckOutcome.SUFFICIENT, 12, None)
    assert h.emitted == []
    assert [(e["event"], e["log_level"]) for e in logs] == [("low_traffic_checked", "debug")]
    assert h.count(CheckOutcome.SUFFICIENT) == 1


async def test_no_matching_series_is_zero_requests(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    h = Harness(http, settings(prometheus_url=server.base_url), VirtualClock(T0))
    server.reply = Reply(body=vector(), content_type=JSON)
    result = await h.checker.check(h.pending(T0, T0 + timedelta(minutes=5)))
    assert (result.outcome, result.requests, result.matched_series) == (CheckOutcome.LOW, 0, 0)
    [warning] = h.emitted
    assert warning.reason == "served 0 requests during analysis, minimum 100"
    assert "matched no series" in warning.message


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(status=400, body='{"status":"error","error":"bad"}', content_type=JSON),
            "query_error",
        ),
        (Reply(status=503, body="down"), "http_status"),
        (Reply(body="not json", content_type=JSON), "bad_response"),
        (Reply(body=vector("NaN"), content_type=JSON), "bad_response"),
        (Reply(body=vector("+Inf"), content_type=JSON), "bad_response"),
        (Reply(body=vector("1"), content_type=JSON, delay_s=2.0), "timeout"),
    ],
)
async def test_query_failures_are_counted_never_guessed(
    http: aiohttp.ClientSession, server: LocalServer, reply: Reply, reason: str
) -> None:
    config = settings(prometheus_url=server.base_url, timeout="500ms")
    h = Harness(http, config, VirtualClock(T0))
    server.reply = reply
    with capture_logs() as logs:
        result = await h.checker.check(h.pending(T0, T0 + timedelta(minutes=5)))
    assert result.outcome is CheckOutcome.FAILED
    assert result.requests is None
    assert h.emitted == []
    assert h.count(CheckOutcome.FAILED) == 1
    assert h.failures(reason) == 1
    [line] = [e for e in logs if e["event"] == "low_traffic_check_failed"]
    assert line["reason"].startswith(reason)
    assert str(server.port) not in repr(logs)  # never the URL


async def test_run_checks_queued_promotions_after_the_delay(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    clock = VirtualClock(T0)
    h = Harness(http, settings(prometheus_url=server.base_url, delay="30s"), clock)
    server.reply = Reply(body=vector("3"), content_type=JSON)
    task = asyncio.create_task(h.checker.run())
    try:
        h.checker.on_transitions([event(Transition.REVISION_DETECTED, T0)])
        clock.advance_to(T0 + timedelta(minutes=4))
        h.checker.on_transitions(
            [
                event(Transition.WEIGHT_ADVANCED, clock.now()),
                event(Transition.PROMOTED, clock.now()),
            ]
        )
        for _ in range(20):
            await asyncio.sleep(0)
        assert server.requests == []  # waiting for the delay
        clock.advance_to(T0 + timedelta(minutes=4, seconds=30))
        await until(lambda: bool(h.emitted))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [warning] = h.emitted
    assert dict(warning.hints) == {"requests": "3", "minimum": "100"}
    assert server.requests[0].query["query"].endswith("[240s]))")


async def test_unreachable_prometheus_is_logged_and_counted(http: aiohttp.ClientSession) -> None:
    closed = LocalServer()
    await closed.start()
    await closed.stop()  # the port is now refused
    h = Harness(http, settings(prometheus_url=closed.base_url), SystemClock())
    now = datetime.now(UTC)
    h.checker.observe(event(Transition.REVISION_DETECTED, now - timedelta(minutes=3)))
    h.checker.observe(event(Transition.PROMOTED, now))
    task = asyncio.create_task(h.checker.run())
    try:
        with capture_logs() as logs:
            await until(lambda: h.count(CheckOutcome.FAILED) >= 1)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert h.emitted == []
    assert h.failures("connection") == 1
    [line] = [e for e in logs if e["event"] == "low_traffic_check_failed"]
    assert line["reason"] == "connection"
    assert line["log_level"] == "warning"


# -- against a real Prometheus -----------------------------------------------------------------


def istio_counter(value: int) -> str:
    return (
        "# TYPE istio_requests_total counter\n"
        'istio_requests_total{reporter="destination",destination_workload_namespace="test",'
        f'destination_workload="podinfo",response_code="200"}} {value}\n'
    )


async def wait_for(
    http: aiohttp.ClientSession,
    url: str,
    promql: str,
    predicate: Callable[[float], bool],
    timeout_s: float = 10.0,
) -> None:
    """Poll Prometheus until ``promql``'s first value satisfies ``predicate``."""
    async with asyncio.timeout(timeout_s):
        while True:
            async with http.get(f"{url}/api/v1/query", params={"query": promql}) as response:
                body = await response.json()
            result = body["data"]["result"]
            if result and predicate(float(result[0]["value"][1])):
                return
            await asyncio.sleep(0.2)


@pytest.mark.needs_binaries
async def test_against_a_real_prometheus(
    http: aiohttp.ClientSession, server: LocalServer, tmp_path: Path
) -> None:
    server.reply = Reply(body=istio_counter(0))
    config = textwrap.dedent(
        f"""\
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
        scrape_configs:
          - job_name: mesh
            static_configs:
              - targets: ["{server.hostport}"]
        """
    )
    async with run_prometheus(config, tmp_path / "prometheus") as prometheus:
        series = 'istio_requests_total{destination_workload="podinfo"}'
        await wait_for(http, prometheus.url, series, lambda v: v == 0)
        revision_detected = datetime.now(UTC)
        server.reply = Reply(body=istio_counter(12))  # the canary serves 12 requests
        await wait_for(http, prometheus.url, series, lambda v: v == 12)
        await wait_for(http, prometheus.url, f"count_over_time({series}[1m])", lambda v: v >= 5)
        promoted = datetime.now(UTC)

        strict = Harness(
            http, settings(prometheus_url=prometheus.url, min_requests=100), SystemClock()
        )
        lenient = Harness(
            http, settings(prometheus_url=prometheus.url, min_requests=5), SystemClock()
        )
        for h in (strict, lenient):
            h.checker.observe(event(Transition.REVISION_DETECTED, revision_detected))
            h.checker.observe(event(Transition.PROMOTED, promoted))
        tasks = [asyncio.create_task(h.checker.run()) for h in (strict, lenient)]
        try:
            await until(
                lambda: strict.count(CheckOutcome.LOW) + lenient.count(CheckOutcome.SUFFICIENT) == 2
            )
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with pytest.raises(asyncio.CancelledError):
                    await task

    [warning] = strict.emitted
    requests = int(warning.hints["requests"])
    # increase() extrapolates to the end of the window by at most one scrape interval.
    assert 12 <= requests <= 16
    assert warning.reason == f"served {requests} requests during analysis, minimum 100"
    assert warning.hints["minimum"] == "100"
    assert lenient.emitted == []
    assert strict.failures("connection") == lenient.failures("connection") == 0
