"""A watch that goes silent: normal on a quiet cluster, fatal when the connection is half-open.

The real kube-apiserver sends no timed BOOKMARKs (``tests/realcluster/test_protocol.py``), so a
watch that says nothing cannot be told from one whose connection died without a FIN. The
client therefore bounds how long any one stream may be silent (``silent_stream_s``), replaces it
from the same resourceVersion, and counts only a replacement that cannot be established against
health. Here, with bounds of about a second:

- the simulator's ``SILENT`` stream fault: the stall is noticed within the bound and an Event
  written meanwhile arrives exactly once;
- a real half-open connection, made by a TCP proxy in front of the API server (simulated and
  real) that stops forwarding in both directions without closing: same;
- the proxy black-holing every connection: the source turns unreachable within the bound and
  reachable again after, losing and repeating nothing; through the daemon, ``/readyz`` names
  the sources, ``canarywatch_source_up`` is 0 and one ``cluster-unreachable`` is sent;
- a watch that is idle but healthy for several bounds: it only re-watches, stays reachable and
  emits nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from kubernetes_asyncio import client
from structlog.testing import LogCapture
from tests.realcluster.target import KubeTarget, open_target
from tests.realcluster.test_protocol import canary_event
from tests.resilience import daemon_config, running_daemon
from tests.sources.test_kube_events_source import plain_event, running, until
from tests.sources.test_watch import capturing
from tests.support.kube_apiserver import RealControlPlane
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.model import SELF_NAMESPACE, Observation
from canarywatch.simulator import SimulatedApiServer, Store, StreamAction
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.kube_events import KubeEventsSource
from canarywatch.sources.kubeconfig import ClusterAccess, build_configuration
from canarywatch.sources.watch import WatchSettings

BOUND = WatchSettings(
    timeout_seconds=300,  # as in production: only minutes from now would the server end it
    silent_stream_s=1.0,
    watch_start_timeout_s=1.0,
    read_slack_s=1.0,
    connect_timeout_s=1.0,
    request_timeout_s=5.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    unreachable_after=2,
)
UNREACHABLE_WITHIN = BOUND.silent_stream_s + BOUND.unreachable_after * (
    BOUND.watch_start_timeout_s + BOUND.backoff_max_s * (1 + BOUND.backoff_jitter)
)
"""The documented bound: the stall is noticed after ``silent_stream_s``, then every failed
replacement costs at most its start timeout plus a backoff."""
SLACK_S = 1.5
"""Scheduling slack on a shared 2-core machine."""


# -- a TCP proxy that can make a connection half-open -----------------------------------------


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    open: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class HalfOpenProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream`` (``http(s)://host:port``).

    ``freeze()`` stops forwarding on every open connection, in both directions, without
    closing anything: to both ends the peer just went quiet (a dropped NAT entry, a dead load
    balancer). ``partition()`` also freezes every new connection (connects still succeed,
    nothing gets through); ``cut()`` resets every connection, open and new; ``heal()`` undoes
    all three. TLS passes through untouched, so it works in front of the real API server."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname is not None
        assert parts.port is not None
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._links: set[_Link] = set()
        self._partitioned = False
        self._cut = False
        self._closed = False
        self._server: asyncio.Server | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"{self._scheme}://127.0.0.1:{port}"

    async def __aenter__(self) -> HalfOpenProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._closed = True
        self._server.close()
        for link in list(self._links):
            link.abort()
            for task in link.tasks:
                task.cancel()
        tasks = [task for link in self._links for task in link.tasks]
        if tasks:
            await asyncio.wait(tasks)
        await self._server.wait_closed()

    def freeze(self) -> None:
        for link in self._links:
            link.open.clear()

    def partition(self) -> None:
        self._partitioned = True
        self.freeze()

    def cut(self) -> None:
        self._cut = True
        for link in list(self._links):
            link.abort()

    def heal(self) -> None:
        self._partitioned = self._cut = False
        for link in self._links:
            link.open.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        if self._cut:
            link.abort()
            return
        if not self._partitioned:
            link.open.set()
        self._links.add(link)
        try:
            up_reader, link.upstream = await asyncio.open_connection(self._host, self._port)
        except OSError:
            link.abort()
            self._links.discard(link)
            return
        if self._closed:  # the test ended while this connection was being set up
            link.abort()
            return
        link.tasks = [
            asyncio.create_task(self._pump(reader, link.upstream, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while True:
                await link.open.wait()
                data = await source.read(65536)
                if not data:
                    break
                await link.open.wait()  # frozen meanwhile: hold the bytes, forward nothing
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.abort()
            self._links.discard(link)


# -- the API server under test: the simulator, or the real one --------------------------------


@pytest.fixture(scope="module")
def real_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealControlPlane]:
    """A control plane of this module's own (skips when the binaries are not built)."""
    with RealControlPlane(tmp_path_factory.mktemp("kube")) as plane:
        yield plane


@pytest.fixture(params=["simulated", "real"])
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KubeTarget]:
    def plane() -> RealControlPlane:
        return request.getfixturevalue("real_plane")  # type: ignore[no-any-return]

    async with open_target(request.param, tmp_path, plane) as kube:
        yield kube


async def through(target: KubeTarget, proxy: HalfOpenProxy) -> client.Configuration:
    """The target's kubeconfig, with the server address replaced by the proxy's."""
    configuration = await build_configuration(
        ClusterAccess(mode="kubeconfig", kubeconfig=str(target.kubeconfig)), environ={}
    )
    configuration.host = proxy.url
    return configuration


class Reachability:
    def __init__(self) -> None:
        self.changes: list[tuple[float, bool, str]] = []

    async def __call__(self, reachable: bool, reason: str) -> None:
        self.changes.append((time.monotonic(), reachable, reason))

    def states(self) -> list[tuple[bool, str]]:
        return [(reachable, reason) for _, reachable, reason in self.changes]


def streams(capture: LogCapture) -> list[MutableMapping[str, Any]]:
    """Each watch stream the loop established (its debug ``watch_started``)."""
    return [
        e for e in capture.entries if e["event"] == "watch_started" and e["log_level"] == "debug"
    ]


def stalls(capture: LogCapture) -> list[MutableMapping[str, Any]]:
    return [e for e in capture.entries if e["event"] == "watch_stalled"]


def names(seen: list[Observation]) -> list[str]:
    return [o.data["object"]["metadata"]["name"] for o in seen]


def loud(capture: LogCapture) -> list[MutableMapping[str, Any]]:
    return [e for e in capture.entries if e["log_level"] in ("warning", "error")]


# -- (a) the simulator's silent stream ---------------------------------------------------------


async def test_a_silent_stream_is_replaced_within_the_bound_and_loses_nothing() -> None:
    async with SimulatedApiServer(Store()) as api:
        api.store.create("events", plain_event("before"))
        api.faults.stream(StreamAction.SILENT)  # the first watch opens, then says nothing, ever
        log, capture = capturing()
        reach = Reachability()
        source = KubeEventsSource(
            client.Configuration(host=api.url),
            namespaces=["test"],
            settings=BOUND,
            log=log,
            on_reachability=reach,
        )
        async with running(source) as seen:
            await until(lambda: len(streams(capture)) == 1)
            stalled_at = time.monotonic()
            api.store.create("events", plain_event("during"))
            await until(lambda: "during" in names(seen), within=BOUND.silent_stream_s + SLACK_S)
            noticed = time.monotonic() - stalled_at
            await asyncio.sleep(0.3)  # anything repeated would arrive now
    assert names(seen) == ["before", "during"]
    assert noticed <= BOUND.silent_stream_s + SLACK_S
    stall = stalls(capture)[0]
    assert stall["log_level"] == "debug"
    assert stall["silent_s"] == BOUND.silent_stream_s
    first, second = streams(capture)[:2]
    assert first["resource_version"] == second["resource_version"]  # resumed, not relisted
    assert len([path for _, path in api.requests if "watch=" not in path]) == 1
    assert reach.changes == []  # the replacement worked: healthy throughout
    assert loud(capture) == []
    assert api.faults.rules[0].fired == 1


# -- (b) a real half-open connection -----------------------------------------------------------


async def test_b_a_half_open_connection_is_detected_by_the_client(target: KubeTarget) -> None:
    ns = target.namespace
    await target.rest.create_event(ns, canary_event(ns, "before"))
    log, capture = capturing()
    reach = Reachability()
    async with HalfOpenProxy(target.url) as proxy:
        source = KubeEventsSource(
            await through(target, proxy),
            namespaces=[ns],
            settings=BOUND,
            log=log,
            on_reachability=reach,
        )
        async with running(source) as seen:
            await until(lambda: len(streams(capture)) >= 1)
            proxy.freeze()  # the stream's connection: open at both ends, nothing gets through
            frozen_at = time.monotonic()
            await target.rest.create_event(ns, canary_event(ns, "during"))
            await until(lambda: "during" in names(seen), within=BOUND.silent_stream_s + SLACK_S)
            noticed = time.monotonic() - frozen_at
            await asyncio.sleep(0.3)
    assert names(seen) == ["before", "during"]
    assert noticed <= BOUND.silent_stream_s + SLACK_S
    assert stalls(capture)
    assert len({e["resource_version"] for e in streams(capture)[:2]}) == 1
    assert reach.changes == []
    assert loud(capture) == []


# -- (c) health while nothing gets through -----------------------------------------------------


async def test_c_a_black_hole_makes_the_source_unreachable_within_the_bound(
    target: KubeTarget,
) -> None:
    ns = target.namespace
    log, capture = capturing()
    reach = Reachability()
    async with HalfOpenProxy(target.url) as proxy:
        source = KubeEventsSource(
            await through(target, proxy),
            namespaces=[ns],
            settings=BOUND,
            log=log,
            on_reachability=reach,
        )
        async with running(source) as seen:
            await until(lambda: len(streams(capture)) >= 1)
            proxy.partition()  # open connections and new ones alike: connects, then nothing
            partitioned_at = time.monotonic()
            await target.rest.create_event(ns, canary_event(ns, "during"))
            await until(lambda: bool(reach.changes), within=UNREACHABLE_WITHIN + SLACK_S)
            assert time.monotonic() - partitioned_at <= UNREACHABLE_WITHIN + SLACK_S
            assert (source.reachable, source.unreachable_reason) == (False, "timeout")
            assert seen == []
            await asyncio.sleep(BOUND.silent_stream_s)  # still down: no flapping meanwhile
            assert reach.states() == [(False, "timeout")]
            proxy.heal()
            healed_at = time.monotonic()
            await until(lambda: source.reachable, within=BOUND.watch_start_timeout_s + SLACK_S)
            assert time.monotonic() - healed_at <= BOUND.watch_start_timeout_s + SLACK_S
            await until(lambda: "during" in names(seen), within=SLACK_S)
            await asyncio.sleep(0.3)
    assert reach.states() == [(False, "timeout"), (True, "ok")]
    assert names(seen) == ["during"]  # exactly once, from the resumed watch
    failed = [e for e in capture.entries if e["event"] == "watch_failed"]
    assert {e["reason"] for e in failed} == {"timeout"}
    assert any(e["event"] == "watch_recovered" for e in capture.entries)


# -- (d) idle but healthy ----------------------------------------------------------------------


async def test_d_an_idle_watch_only_rewatches_and_stays_healthy(target: KubeTarget) -> None:
    ns = target.namespace
    log, capture = capturing()
    reach = Reachability()
    configuration = await build_configuration(
        ClusterAccess(mode="kubeconfig", kubeconfig=str(target.kubeconfig)), environ={}
    )
    events = KubeEventsSource(
        configuration, namespaces=[ns], settings=BOUND, log=log, on_reachability=reach
    )
    canaries = CanariesSource(
        configuration, namespaces=[ns], settings=BOUND, log=log, on_reachability=reach
    )
    async with running(events) as seen_events, _running(canaries) as seen_canaries:
        await until(lambda: events.listed.is_set() and canaries.listed.is_set())
        await asyncio.sleep(3.5 * BOUND.silent_stream_s)  # no Event, no Canary, nothing at all
        assert seen_events == []
        assert seen_canaries == []
        assert events.reachable
        assert canaries.reachable
        # then the (replaced) watch still delivers
        await target.rest.create_event(ns, canary_event(ns, "after"))
        await until(lambda: bool(seen_events))
        await asyncio.sleep(0.3)
    assert names(seen_events) == ["after"]
    assert reach.changes == []
    assert loud(capture) == []
    for resource in ("events", "canaries.flagger.app"):
        started = [e for e in streams(capture) if e["resource"] == resource]
        stalled = [e for e in stalls(capture) if e["resource"] == resource]
        assert len(stalled) >= 3, resource
        assert len(started) >= len(stalled)
        # every replacement resumed where the list left off: no relist, nothing re-delivered
        listed = [e for e in capture.entries if e["event"] == "watch_listed"]
        assert len([e for e in listed if e["resource"] == resource]) == 1


@asynccontextmanager
async def _running(source: CanariesSource) -> AsyncIterator[list[Observation]]:
    seen: list[Observation] = []

    async def emit(observation: Observation) -> None:
        seen.append(observation)

    task = asyncio.create_task(source.run(emit))
    try:
        yield seen
    finally:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


# -- the daemon: /readyz, canarywatch_source_up, cluster-unreachable ---------------------------


async def test_the_daemon_reports_an_unreachable_cluster_and_its_return(tmp_path: Path) -> None:
    """Through the daemon, with its default timings: the proxy resets every connection (a
    failed re-watch is quick then), so the sources are down after ``unreachable_after`` tries."""
    async with (
        SimulatedApiServer(Store()) as api,
        HalfOpenProxy(api.url) as proxy,
        run_webhook_receiver(path="/") as receiver,
    ):
        config = daemon_config(api_url=proxy.url, hook_url=receiver.url, state_dir=tmp_path)
        async with running_daemon(config) as app, aiohttp.ClientSession() as http:
            readyz = f"http://127.0.0.1:{app.port}/readyz"

            async def ready() -> tuple[bool, dict[str, Any]]:
                async with http.get(readyz) as resp:
                    body = await resp.json()
                    assert (resp.status == 200) == body["ready"]
                    return body["ready"], body["checks"]

            def source_up() -> float | None:
                """Both watch sources of the cluster, each with its own series."""
                values = {
                    app.registry.get_sample_value(
                        "canarywatch_source_up", {"source": kind, "cluster": "sim"}
                    )
                    for kind in ("kube_events", "canaries")
                }
                assert len(values) == 1, values
                return values.pop()

            assert (await ready())[0]
            proxy.cut()
            both = {"source:sim:kube_events", "source:sim:canaries"}
            async with asyncio.timeout(15):
                while {n for n, c in (await ready())[1].items() if not c["ready"]} != both:
                    await asyncio.sleep(0.1)
            ok, checks = await ready()
            assert not ok
            assert "API server out of reach" in checks["source:sim:kube_events"]["detail"]
            assert source_up() == 0
            await _until_async(lambda: _self_events(receiver.requests) == ["cluster-unreachable"])
            proxy.heal()
            async with asyncio.timeout(15):
                while not (await ready())[0]:
                    await asyncio.sleep(0.1)
            assert source_up() == 1
            await _until_async(
                lambda: (
                    _self_events(receiver.requests) == ["cluster-unreachable", "cluster-reachable"]
                )
            )
            await asyncio.sleep(0.5)
    # one announcement each way although both sources of the cluster went down and came back
    assert _self_events(receiver.requests) == ["cluster-unreachable", "cluster-reachable"]


def _self_events(requests: list[Any]) -> list[str]:
    out = []
    for request in requests:
        notification = request.json()["notification"]
        if notification["status"] != "firing":
            continue
        out += [e["transition"] for e in notification["events"] if e["namespace"] == SELF_NAMESPACE]
    return out


async def _until_async(predicate: Callable[[], bool], within: float = 15.0) -> None:
    with contextlib.suppress(TimeoutError):
        await until(predicate, within=within)
    assert predicate()
