"""The Flagger metrics source against a local "Flagger" (and a real Prometheus).

The source runs its real loop on a ``VirtualClock``; the test advances time one interval at a
time and waits until the source is asleep again, so every round is deterministic. What it emits
goes through the real ``FlaggerMetricsNormaliser``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.testing import capture_logs
from tests.support.http_server import LocalServer, Reply, local_server
from tests.support.prometheus import run_prometheus

from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.errors import ConfigError
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Observation,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.flagger_metrics import FlaggerMetricsNormaliser
from canarywatch.secrets import Secret
from canarywatch.sources.base import Source
from canarywatch.sources.flagger_exposition import flagger_query
from canarywatch.sources.flagger_metrics import (
    FlaggerMetricsSettings,
    FlaggerMetricsSource,
    MetricsMode,
    MetricsTarget,
)
from canarywatch.sources.prometheus import (
    BasicAuth,
    BearerAuth,
    RequestOptions,
    query_instant,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flagger"
T0 = datetime(2026, 8, 4, 14, 4, 30, tzinfo=UTC)
INTERVAL_S = 5.0
NO_FLAGGER = "# TYPE go_goroutines gauge\ngo_goroutines 120\n"


def fixture(name: str) -> str:
    return (FIXTURES / f"metrics-{name}.prom").read_text(encoding="utf-8")


def ok(name: str) -> Reply:
    return Reply(body=fixture(name))


class Collected:
    """What the source handed over: observations (normalised on arrival) and self-events."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.self_events: list[CanaryEvent] = []
        self.normaliser = FlaggerMetricsNormaliser()
        self.events: list[CanaryEvent] = []

    async def emit(self, obs: Observation) -> None:
        self.observations.append(obs)
        self.events.extend(self.normaliser(obs).events)

    async def emit_event(self, event: CanaryEvent) -> None:
        self.self_events.append(event)

    def transitions(self) -> list[tuple[Transition, str]]:
        return [(e.transition, str(e.canary)) for e in self.events]

    def self_transitions(self) -> list[Transition]:
        return [e.transition for e in self.self_events]


class Driver:
    """Runs ``source.run`` on a ``VirtualClock``; ``tick()`` is one more round."""

    def __init__(
        self, source: FlaggerMetricsSource, clock: VirtualClock, collected: Collected
    ) -> None:
        self.source = source
        self.clock = clock
        self.collected = collected
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Driver:
        self._task = asyncio.create_task(self.source.run(self.collected.emit))
        await self.settled()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def settled(self) -> None:
        """Wait (real time, bounded) until the source sleeps on the clock again."""
        assert self._task is not None
        async with asyncio.timeout(5):
            while self.clock.next_wakeup() is None:
                if self._task.done():
                    self._task.result()
                    raise AssertionError("run() returned")
                await asyncio.sleep(0.002)

    async def tick(self, reply: Reply | None = None, server: LocalServer | None = None) -> None:
        if reply is not None:
            assert server is not None
            server.reply = reply
        self.clock.advance_by(self.source.settings.interval_s)
        await self.settled()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with local_server() as s:
        yield s


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured


def make_source(
    http: aiohttp.ClientSession, clock: VirtualClock | SystemClock, url: str, **settings: Any
) -> tuple[FlaggerMetricsSource, Collected]:
    collected = Collected()
    settings.setdefault("interval_s", INTERVAL_S)
    settings.setdefault("timeout_s", 1.0)
    targets = settings.pop("targets", (MetricsTarget(name="flagger", url=url, cluster="prod"),))
    source = FlaggerMetricsSource(
        FlaggerMetricsSettings(targets=targets, **settings),
        http=http,
        clock=clock,
        log=structlog.get_logger(),
        emit_event=collected.emit_event,
    )
    as_protocol: Source = source  # mypy checks the structural fit
    assert as_protocol.name == "flagger_metrics"
    return source, collected


async def drive(
    http: aiohttp.ClientSession, clock: VirtualClock, url: str, **settings: Any
) -> Driver:
    source, collected = make_source(http, clock, url, **settings)
    return Driver(source, clock, collected)


# -- transitions through the normaliser ------------------------------------------------------


async def test_scrape_progressing_then_succeeded_promotes_podinfo(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = ok("rollout-progressing")
    async with await drive(http, clock, server.url()) as d:
        assert d.source.listed.is_set()
        await d.tick(ok("rollout-succeeded"), server)
    got = d.collected
    assert got.transitions() == [(Transition.PROMOTED, "test/podinfo")]
    assert got.events[0].canary == CanaryRef("test", "podinfo", "prod")
    assert [(o.at, o.source, o.cluster) for o in got.observations] == [
        (T0, SourceName.FLAGGER_METRICS, "prod"),
        (T0 + timedelta(seconds=INTERVAL_S), SourceName.FLAGGER_METRICS, "prod"),
    ]
    assert got.observations[1].data == fixture("rollout-succeeded")
    assert got.self_events == []
    assert server.requests[0].headers["Accept"].startswith("text/plain;version=0.0.4")


async def test_scrape_halting_then_failed_rolls_back_podinfo_and_checkout(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = ok("rollback-halting")
    async with await drive(http, clock, server.url()) as d:
        await d.tick(ok("rollback-failed"), server)
        assert d.collected.transitions() == [(Transition.ROLLED_BACK, "test/podinfo")]
        await d.tick(ok("no-traffic-halting"), server)
        await d.tick(ok("no-traffic-failed"), server)
    got = d.collected
    assert got.transitions() == [
        (Transition.ROLLED_BACK, "test/podinfo"),
        (Transition.REVISION_DETECTED, "shop/checkout"),  # its status 1 -> 0
        (Transition.ROLLED_BACK, "shop/checkout"),
    ]
    assert [e.phase for e in got.events] == [Phase.FAILED, Phase.PROGRESSING, Phase.FAILED]
    assert len(got.observations) == 4


async def test_unchanged_text_is_emitted_once(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = ok("rollback-halting")
    async with await drive(http, clock, server.url()) as d:
        for _ in range(3):
            await d.tick()
    assert len(server.requests) == 4
    assert len(d.collected.observations) == 1


# -- staleness with hysteresis ---------------------------------------------------------------


async def test_down_after_three_failures_then_recovered_once(
    http: aiohttp.ClientSession,
    server: LocalServer,
    clock: VirtualClock,
    logs: list[MutableMapping[str, Any]],
) -> None:
    server.reply = ok("rollback-halting")
    async with await drive(http, clock, server.url()) as d:
        await d.tick(Reply(status=500, body="boom"), server)
        await d.tick()
        assert d.collected.self_events == []
        await d.tick()
        assert d.collected.self_transitions() == [Transition.METRICS_SOURCE_DOWN]
        assert d.source.is_down("flagger")
        for _ in range(3):
            await d.tick()
        await d.tick(ok("rollback-halting"), server)
        await d.tick()
    got = d.collected
    assert got.self_transitions() == [
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
    ]
    down, recovered = got.self_events
    assert down.canary == CanaryRef("canarywatch", "flagger", "prod")
    assert down.severity is Severity.WARNING
    assert down.sources == (SourceName.SELF,)
    assert down.reason == "http_status 500"
    assert down.observed_at == T0 + timedelta(seconds=3 * INTERVAL_S)
    assert recovered.severity is Severity.INFO
    assert recovered.observed_at == T0 + timedelta(seconds=7 * INTERVAL_S)
    # The text came back unchanged: nothing new for the normaliser.
    assert len(got.observations) == 1
    warnings = [(e["event"], e["log_level"]) for e in logs if e["log_level"] == "warning"]
    assert warnings == [("metrics_fetch_failed", "warning"), ("metrics_source_down", "warning")]
    assert [e["event"] for e in logs if e["log_level"] == "info"][-1] == "metrics_source_recovered"
    assert all(e.get("target") == "flagger" for e in logs if e["event"].startswith("metrics_f"))


async def test_flapping_emits_no_self_event(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = Reply(status=503)
    async with await drive(http, clock, server.url()) as d:  # fail
        await d.tick(ok("rollback-halting"), server)  # ok
        await d.tick(Reply(status=503), server)  # fail
        await d.tick(ok("rollback-halting"), server)  # ok
        await d.tick(Reply(status=503), server)  # fail
        await d.tick()  # fail
        await d.tick(ok("rollback-halting"), server)  # ok
    assert d.collected.self_events == []
    assert not d.source.is_down("flagger")
    assert len(d.collected.observations) == 1


async def test_up_after_needs_consecutive_successes(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = Reply(status=500)
    async with await drive(http, clock, server.url(), down_after=2, up_after=2) as d:
        await d.tick()
        assert d.collected.self_transitions() == [Transition.METRICS_SOURCE_DOWN]
        await d.tick(ok("rollback-halting"), server)
        await d.tick(Reply(status=500), server)
        await d.tick(ok("rollback-halting"), server)
        assert d.collected.self_transitions() == [Transition.METRICS_SOURCE_DOWN]
        await d.tick()
    assert d.collected.self_transitions() == [
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
    ]


async def test_vanished_flagger_series_count_as_failure(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = Reply(body=NO_FLAGGER)
    async with await drive(http, clock, server.url()) as d:
        assert d.source.listed.is_set()
        await d.tick()
        await d.tick()
        await d.tick(ok("rollout-progressing"), server)
    assert d.collected.self_transitions() == [
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
    ]
    assert d.collected.self_events[0].reason == "no_series"
    assert len(d.collected.observations) == 1


async def test_connection_refused_then_back(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = ok("rollback-halting")
    async with await drive(http, clock, server.url()) as d:
        await server.stop()
        for _ in range(3):
            await d.tick()
        assert d.collected.self_transitions() == [Transition.METRICS_SOURCE_DOWN]
        assert d.collected.self_events[0].reason == "connection"
        await server.start()  # same port
        server.reply = ok("rollback-failed")
        await d.tick()
    assert d.collected.self_transitions()[-1] is Transition.METRICS_SOURCE_RECOVERED
    assert d.collected.transitions() == [(Transition.ROLLED_BACK, "test/podinfo")]


async def test_slow_target_times_out(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    server.reply = Reply(body=fixture("rollback-halting"), delay_s=0.4)
    async with await drive(http, clock, server.url(), timeout_s=0.1) as d:
        await d.tick()
        await d.tick()
    assert d.collected.self_transitions() == [Transition.METRICS_SOURCE_DOWN]
    assert d.collected.self_events[0].reason == "timeout"
    assert d.collected.observations == []


async def test_targets_are_independent(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    async with local_server() as dead:
        dead.reply = Reply(status=502)
        targets = (
            MetricsTarget(name="eu", url=server.url(), cluster="prod-eu"),
            MetricsTarget(name="us", url=dead.url(), cluster="prod-us"),
        )
        server.reply = ok("rollback-halting")
        async with await drive(http, clock, "", targets=targets) as d:
            await d.tick(ok("rollback-failed"), server)
            await d.tick()
    assert [e.canary for e in d.collected.self_events] == [
        CanaryRef("canarywatch", "us", "prod-us")
    ]
    assert {o.cluster for o in d.collected.observations} == {"prod-eu"}
    assert d.collected.events[0].canary == CanaryRef("test", "podinfo", "prod-eu")


# -- health: canarywatch_source_up and /readyz ------------------------------------------------


async def test_target_health_says_in_plain_words_why_it_is_not_up(
    http: aiohttp.ClientSession, server: LocalServer, clock: VirtualClock
) -> None:
    url = server.url("/hidden-k3y/metrics?token=query-s3cret").replace("://", "://me:pw-s3cret@")
    source, collected = make_source(http, clock, url, down_after=3, up_after=2)
    (target,) = source.settings.targets
    seen = [source.health("flagger")]
    await server.stop()
    async with Driver(source, clock, collected) as d:
        seen.append(source.health("flagger"))
        await server.start()  # same port
        for reply in (Reply(status=500), ok("rollback-halting"), Reply(status=503), None, None):
            await d.tick(reply, server if reply else None)
            seen.append(source.health("flagger"))
        for reply in (ok("rollback-halting"), None):
            await d.tick(reply, server if reply else None)
            seen.append(source.health("flagger"))
    assert [(h.up, h.detail) for h in seen] == [
        (False, "first fetch not done yet"),
        (False, "never answered (connection refused)"),
        (False, "no usable answer yet (answered HTTP 500)"),
        (True, "ok, last fetched 2026-08-04T14:04:40Z"),
        (True, "ok, but the last 1 fetch(es) failed (answered HTTP 503); down after 3 in a row"),
        (True, "ok, but the last 2 fetch(es) failed (answered HTTP 503); down after 3 in a row"),
        (False, "down: 3 fetches in a row failed, the last: answered HTTP 503"),
        (False, "down, recovering: 1 of 2 fetches in a row succeeded (before: answered HTTP 503)"),
        (True, "ok, last fetched 2026-08-04T14:05:05Z"),
    ]
    where = source.where(target)
    assert where == f"flagger metrics target flagger (http://127.0.0.1:{server.port})"


def test_a_prometheus_target_is_named_with_the_prometheus_it_is_read_from() -> None:
    settings = FlaggerMetricsSettings(
        targets=(MetricsTarget(name="eu", match='job="flagger"', cluster="eu"),),
        mode=MetricsMode.PROMETHEUS,
        prometheus_url="https://u:p@prom.example:9090/prefix?x=1",
    )
    source = FlaggerMetricsSource(
        settings,
        http=None,  # type: ignore[arg-type]  # not used before run()
        clock=VirtualClock(T0),
        log=structlog.get_logger(),
        emit_event=Collected().emit_event,
    )
    assert source.where(settings.targets[0]) == (
        "flagger metrics target eu (via Prometheus https://prom.example:9090)"
    )


# -- secrets, settings ----------------------------------------------------------------------


async def test_credentials_and_url_never_reach_logs_or_events(
    http: aiohttp.ClientSession,
    server: LocalServer,
    clock: VirtualClock,
    logs: list[MutableMapping[str, Any]],
) -> None:
    server.reply = Reply(status=401)
    url = server.url("/hidden-path-k3y/metrics?token=query-s3cret")
    async with await drive(
        http, clock, url, auth=BearerAuth(Secret("bearer-s3cret")), down_after=1
    ) as d:
        await d.tick(Reply(status=200, body=NO_FLAGGER), server)
        await d.tick(ok("rollback-halting"), server)
    # The credential did go over the wire, where it belongs.
    assert server.requests[0].headers["Authorization"] == "Bearer bearer-s3cret"
    assert server.requests[0].query == {"token": "query-s3cret"}
    assert d.collected.self_transitions() == [
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
    ]
    dumped = repr(logs) + repr(d.collected.self_events)
    for leak in ("bearer-s3cret", "query-s3cret", "hidden-path-k3y", str(server.port)):
        assert leak not in dumped
    assert any(e["event"] == "metrics_source_down" for e in logs)


async def test_basic_auth_in_prometheus_mode_not_logged(
    http: aiohttp.ClientSession,
    server: LocalServer,
    clock: VirtualClock,
    logs: list[MutableMapping[str, Any]],
) -> None:
    server.reply = Reply(status=503, body="unavailable")
    async with await drive(
        http,
        clock,
        "",
        mode=MetricsMode.PROMETHEUS,
        prometheus_url=server.url("/prom-k3y"),
        auth=BasicAuth("canarywatch", Secret("basic-s3cret")),
        down_after=2,
    ) as d:
        await d.tick()
    seen = server.requests[0]
    assert seen.path == "/prom-k3y/api/v1/query"
    assert seen.query == {"query": '{__name__=~"flagger_.+"}'}
    expected = base64.b64encode(b"canarywatch:basic-s3cret").decode()
    assert seen.headers["Authorization"] == f"Basic {expected}"
    assert d.collected.self_events[0].reason == "http_status 503"
    dumped = repr(logs) + repr(d.collected.self_events)
    assert "basic-s3cret" not in dumped
    assert "prom-k3y" not in dumped


def test_settings_are_validated() -> None:
    target = MetricsTarget(name="a", url="http://flagger:8080/metrics")
    with pytest.raises(ConfigError, match=r"targets\[1\]\.cluster"):
        FlaggerMetricsSettings(targets=(target, MetricsTarget(name="b", url="http://x/")))
    with pytest.raises(ConfigError, match=r"targets\[1\]\.name"):
        FlaggerMetricsSettings(targets=(target, MetricsTarget(name="a", url="x", cluster="c")))
    with pytest.raises(ConfigError, match="prometheus_url"):
        FlaggerMetricsSettings(targets=(target,), mode=MetricsMode.PROMETHEUS)
    with pytest.raises(ConfigError, match="down_after"):
        FlaggerMetricsSettings(targets=(target,), down_after=0)
    with pytest.raises(ConfigError, match=r"targets\[0\]\.url"):
        FlaggerMetricsSettings(targets=(MetricsTarget(name="a"),))
    assert FlaggerMetricsSettings(targets=(target,)).interval_s == 5.0


# -- prometheus mode against a real Prometheus ------------------------------------------------


def scrape_config(hostport: str) -> str:
    return f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: flagger
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: ["{hostport}"]
"""


async def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.needs_binaries
async def test_prometheus_mode_matches_scrape_mode(
    http: aiohttp.ClientSession, server: LocalServer, tmp_path: Path
) -> None:
    server.reply = ok("rollback-halting")
    async with run_prometheus(scrape_config(server.hostport), tmp_path / "prom") as prom:
        options = RequestOptions(timeout_s=2.0)
        query = flagger_query('job="flagger"')
        for _ in range(75):  # Prometheus' first scrape of the "Flagger" (15 s at most)
            if await query_instant(http, prom.url, query, options):
                break
            await asyncio.sleep(0.2)

        clock = SystemClock()
        direct, direct_got = make_source(http, clock, server.url(), interval_s=0.2, timeout_s=1.0)
        via_prom, prom_got = make_source(
            http,
            clock,
            "",
            interval_s=0.2,
            timeout_s=1.0,
            mode=MetricsMode.PROMETHEUS,
            prometheus_url=prom.url,
            targets=(MetricsTarget(name="prom", match='job="flagger"', cluster="prod"),),
        )
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(direct.run(direct_got.emit)),
                group.create_task(via_prom.run(prom_got.emit)),
            ]
            try:
                await wait_for(
                    lambda: direct_got.observations and prom_got.observations, 5, "baselines"
                )
                server.reply = ok("rollback-failed")
                await wait_for(
                    lambda: direct_got.events and prom_got.events, 10, "both rolled-back"
                )
            finally:
                for task in tasks:
                    task.cancel()

    def shape(events: list[CanaryEvent]) -> list[tuple[object, ...]]:
        return [
            (e.transition, e.canary, e.phase, e.reason, e.target, e.severity, e.sources)
            for e in events
        ]

    assert shape(prom_got.events) == shape(direct_got.events)
    assert shape(prom_got.events) == [
        (
            Transition.ROLLED_BACK,
            CanaryRef("test", "podinfo", "prod"),
            Phase.FAILED,
            "flagger_canary_status=2",
            "podinfo",
            Severity.CRITICAL,
            (SourceName.FLAGGER_METRICS,),
        )
    ]
    assert prom_got.self_events == direct_got.self_events == []
    assert direct.listed.is_set()
    assert via_prom.listed.is_set()
    rendered = prom_got.observations[0].data
    assert 'flagger_canary_status{name="podinfo",namespace="test"} 0\n' in rendered
    assert "job=" not in rendered
