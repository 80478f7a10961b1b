"""The shared list-then-watch loop, driving the real kubernetes_asyncio client over HTTP against
the simulated API server (``reference/kubernetes-watch.md`` §2)."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from kubernetes_asyncio import client
from structlog.testing import LogCapture
from structlog.typing import FilteringBoundLogger

from canarywatch.simulator import SimulatedApiServer, StreamAction
from canarywatch.sources.watch import (
    Backoff,
    Listed,
    ListWatch,
    WatchEvent,
    WatchSettings,
)

FAST = WatchSettings(
    timeout_seconds=5,
    read_slack_s=0.5,
    connect_timeout_s=1.0,
    request_timeout_s=3.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.2,
    slow_retry_s=0.2,
    unreachable_after=2,
)


def event(name: str, ns: str = "test", message: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": "Canary", "namespace": ns, "name": "podinfo"},
        "reason": "Synced",
        "message": message or name,
        "type": "Normal",
        "count": 1,
    }


def capturing() -> tuple[FilteringBoundLogger, LogCapture]:
    """A debug-level logger whose entries land in a ``LogCapture`` (what ``capture_logs``
    uses), independent of any global structlog configuration."""
    capture = LogCapture()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    return log, capture


class Collector:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.listed: list[Listed] = []
        self.reachability: list[tuple[bool, str]] = []

    async def on_event(self, item: WatchEvent) -> None:
        self.events.append(item)

    async def on_listed(self, item: Listed) -> None:
        self.listed.append(item)

    async def on_reachability(self, reachable: bool, reason: str) -> None:
        self.reachability.append((reachable, reason))

    def names(self, **flags: bool) -> list[str]:
        return [
            e.object["metadata"]["name"]
            for e in self.events
            if all(getattr(e, k) == v for k, v in flags.items())
        ]

    def keys(self) -> list[tuple[str, str]]:
        return [
            (e.object["metadata"]["uid"], e.object["metadata"]["resourceVersion"])
            for e in self.events
        ]


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Poll ``predicate`` (state lives in the server and the collector; no event to await)."""
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def watch_requests(api: SimulatedApiServer) -> list[str]:
    return [path for _, path in api.requests if "watch=" in path]


@asynccontextmanager
async def running(
    api: SimulatedApiServer,
    collector: Collector,
    *,
    settings: WatchSettings = FAST,
    log: FilteringBoundLogger | None = None,
    **kwargs: Any,
) -> AsyncIterator[ListWatch]:
    async with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        core = client.CoreV1Api(api_client)

        def call_for(namespace: str | None) -> Any:
            if namespace is None:
                return core.list_event_for_all_namespaces
            return functools.partial(core.list_namespaced_event, namespace)

        watcher = ListWatch(
            call_for,
            resource="events",
            settings=settings,
            log=log,
            on_reachability=collector.on_reachability,
            rng=random.Random(1),
            **kwargs,
        )
        task = asyncio.create_task(watcher.run(collector.on_event, collector.on_listed))
        try:
            async with asyncio.timeout(20):
                yield watcher
        finally:
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


async def test_list_then_watch_delivers_existing_then_live(api: SimulatedApiServer) -> None:
    for name in ("a", "b", "c"):
        api.store.create("events", event(name))
    api.store.create("events", event("other", ns="elsewhere"))
    collector = Collector()
    async with running(api, collector, namespaces=["test"]) as watcher:
        await until(watcher.listed.is_set)
        assert collector.names(initial=True) == ["a", "b", "c"]
        assert all(e.type == "ADDED" and e.scope == "test" for e in collector.events)
        # list items carry kind/apiVersion like watch objects do
        assert {(e.object["kind"], e.object["apiVersion"]) for e in collector.events} == {
            ("Event", "v1")
        }
        api.store.create("events", event("d"))
        api.store.patch("events", "test", "a", {"count": 2})
        api.store.delete("events", "test", "b")
        await until(lambda: len(collector.events) == 6)
    live = [(e.type, e.object["metadata"]["name"], e.initial) for e in collector.events[3:]]
    assert live == [("ADDED", "d", False), ("MODIFIED", "a", False), ("DELETED", "b", False)]
    assert collector.listed == [
        Listed("test", collector.listed[0].resource_version, collector.listed[0].keys, False)
    ]
    assert collector.listed[0].keys == {("test", "a"), ("test", "b"), ("test", "c")}
    (first_watch, *_) = watch_requests(api)
    assert "timeoutSeconds=5" in first_watch
    assert "allowWatchBookmarks=True" in first_watch
    assert f"resourceVersion={collector.listed[0].resource_version}" in first_watch


async def test_several_namespaces_run_one_loop_each(api: SimulatedApiServer) -> None:
    api.store.create("events", event("a", ns="one"))
    api.store.create("events", event("b", ns="two"))
    api.store.create("events", event("c", ns="three"))
    collector = Collector()
    async with running(api, collector, namespaces=["one", "two"]) as watcher:
        await until(watcher.listed.is_set)
        api.store.create("events", event("d", ns="two"))
        api.store.create("events", event("e", ns="three"))
        await until(lambda: "d" in collector.names())
    assert sorted(collector.names(initial=True)) == ["a", "b"]
    assert "e" not in collector.names()
    assert {listed.scope for listed in collector.listed} == {"one", "two"}


async def test_pagination_follows_continue(api: SimulatedApiServer) -> None:
    for i in range(7):
        api.store.create("events", event(f"e{i}"))
    collector = Collector()
    settings = _with(FAST, page_size=3)
    async with running(api, collector, settings=settings) as watcher:
        await until(watcher.listed.is_set)
    lists = [path for _, path in api.requests if "watch=" not in path]
    assert len(lists) == 3
    assert all("limit=3" in path for path in lists)
    assert ["continue=" in path for path in lists] == [False, True, True]
    assert collector.names(initial=True) == [f"e{i}" for i in range(7)]
    assert len(collector.listed[0].keys) == 7


async def test_bookmarks_advance_the_resource_version(api: SimulatedApiServer) -> None:
    api.store.create("events", event("a"))
    collector = Collector()
    async with running(api, collector, settings=_with(FAST, timeout_seconds=1)) as watcher:
        await until(watcher.listed.is_set)
        # Other resources move the global revision; only a bookmark tells this watch about it.
        api.store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
        target = f"resourceVersion={api.store.resource_version}&"

        def rewatched() -> bool:
            api.send_bookmarks()
            return any(target in path + "&" for path in watch_requests(api))

        await until(rewatched)
    assert collector.names() == ["a"]  # bookmarks are not events


@pytest.mark.parametrize("form", ["error-event", "http-410", "stream-error"])
async def test_410_relists_quietly_and_marks_relisted(api: SimulatedApiServer, form: str) -> None:
    for name in ("a", "b"):
        api.store.create("events", event(name))
    log, capture = capturing()
    collector = Collector()
    settings = _with(FAST, timeout_seconds=1)
    async with running(api, collector, settings=settings, log=log) as watcher:
        await until(watcher.listed.is_set)
        api.store.create("events", event("c"))
        await until(lambda: "c" in collector.names())
        if form == "stream-error":
            api.faults.stream(StreamAction.ERROR, code=410)
        else:
            api.settings.too_old_as_http_410 = form == "http-410"
            # Move the revision past the watch's RV (another resource), then compact it away.
            api.store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
            api.compact()
        await until(lambda: len(collector.listed) == 2)
    assert collector.names(initial=True) == ["a", "b"]
    assert collector.names(relisted=True) == ["a", "b", "c"]
    assert collector.listed[1].relist
    relisted = [e for e in capture.entries if e["event"] == "watch_relisted"]
    assert relisted
    assert {e["log_level"] for e in relisted} == {"debug"}
    assert not [e for e in capture.entries if e["log_level"] in ("warning", "error")]


@pytest.mark.parametrize(
    "fault",
    ["drop", "truncate", "close-early", "stream-500", "http-500", "raw-502", "disconnect"],
)
async def test_faults_reconnect_without_loss_or_duplicates(
    api: SimulatedApiServer, fault: str
) -> None:
    api.store.create("events", event("a"))
    # The first watch (right after the list) misbehaves.
    if fault == "drop":
        api.faults.stream(StreamAction.DROP, after_events=1)
    elif fault == "truncate":
        api.faults.stream(StreamAction.TRUNCATE, after_events=1)
    elif fault == "close-early":
        api.faults.stream(StreamAction.CLOSE, after_events=1)
    elif fault == "stream-500":
        api.faults.stream(StreamAction.ERROR, after_events=1, code=500)
    elif fault == "http-500":
        api.faults.status(500, verb="watch")
    elif fault == "raw-502":
        api.faults.raw(502, verb="watch")
    else:
        api.faults.disconnect(verb="watch")
    collector = Collector()
    async with running(api, collector) as watcher:
        await until(watcher.listed.is_set)
        for name in ("b", "c", "d0", "d1", "d2", "d3"):
            api.store.create("events", event(name))
            await asyncio.sleep(0.03)
        await until(lambda: len(set(collector.names())) == 7)
        await asyncio.sleep(0.1)
        assert len(watch_requests(api)) >= 2
    assert sorted(collector.names()) == ["a", "b", "c", "d0", "d1", "d2", "d3"]
    assert len(collector.keys()) == len(set(collector.keys()))
    assert all(rule.fired for rule in api.faults.rules)


async def test_a_silent_stream_is_replaced_from_the_same_rv_without_a_failure(
    api: SimulatedApiServer,
) -> None:
    api.faults.stream(StreamAction.SILENT)  # the first watch opens and then says nothing
    api.store.create("events", event("a"))
    log, capture = capturing()
    collector = Collector()
    settings = _with(FAST, timeout_seconds=300, silent_stream_s=0.5)
    async with running(api, collector, settings=settings, log=log) as watcher:
        await until(watcher.listed.is_set)
        api.store.create("events", event("b"))
        await until(lambda: "b" in collector.names(), within=2)
    assert collector.names() == ["a", "b"]
    (stalled,) = [e for e in capture.entries if e["event"] == "watch_stalled"]
    assert (stalled["log_level"], stalled["silent_s"]) == ("debug", 0.5)
    assert not [e for e in capture.entries if e["event"] == "watch_failed"]
    first, second = watch_requests(api)[:2]
    assert first == second  # the same resourceVersion, selectors and timeout
    assert collector.reachability == []


async def test_an_idle_stream_is_replaced_every_silent_period(api: SimulatedApiServer) -> None:
    log, capture = capturing()
    collector = Collector()
    settings = _with(FAST, timeout_seconds=300, silent_stream_s=0.3)
    async with running(api, collector, settings=settings, log=log) as watcher:
        await until(watcher.listed.is_set)
        await asyncio.sleep(1.1)
    assert 3 <= len(watch_requests(api)) <= 5
    assert len([path for _, path in api.requests if "watch=" not in path]) == 1
    assert collector.events == []
    assert collector.reachability == []
    assert not [e for e in capture.entries if e["log_level"] in ("warning", "error")]


async def test_bytes_reset_the_silence_clock(api: SimulatedApiServer) -> None:
    collector = Collector()
    settings = _with(FAST, timeout_seconds=300, silent_stream_s=1.0)
    async with running(api, collector, settings=settings, namespaces=["test"]) as watcher:
        await until(watcher.listed.is_set)
        for i in range(8):  # 1.6 s in all, never 1 s without a byte
            api.store.create("events", event(f"e{i}"))
            await asyncio.sleep(0.2)
        await until(lambda: len(collector.events) == 8)
    assert len(watch_requests(api)) == 1


async def test_one_scope_that_cannot_rewatch_makes_the_watch_unreachable(
    api: SimulatedApiServer,
) -> None:
    """Per-scope failure counts: a quiet healthy namespace re-watching often must not hide
    one whose watch keeps failing."""
    collector = Collector()
    settings = _with(FAST, timeout_seconds=300, silent_stream_s=0.1, unreachable_after=3)
    async with running(api, collector, settings=settings, namespaces=["one", "two"]) as watcher:
        await until(watcher.listed.is_set)
        rule = api.faults.status(503, verb="watch", namespace="two", times=None)
        await until(lambda: not watcher.reachable)
        assert watcher.unreachable_reason == "http"
        api.faults.rules.remove(rule)
        await until(lambda: watcher.reachable)
    assert collector.reachability == [(False, "http"), (True, "ok")]


async def test_429_honours_retry_after(api: SimulatedApiServer) -> None:
    log, capture = capturing()
    api.faults.status(429, retry_after=1, verb="list")
    collector = Collector()
    started = time.monotonic()
    async with running(api, collector, log=log) as watcher:
        await until(watcher.listed.is_set)
    assert time.monotonic() - started >= 1.0
    (failed,) = [e for e in capture.entries if e["event"] == "watch_failed"]
    assert (failed["status_code"], failed["delay_s"]) == (429, 1.0)


async def test_forbidden_logs_an_rbac_error_and_retries_slowly(api: SimulatedApiServer) -> None:
    log, capture = capturing()
    api.faults.status(403, verb="list", times=2)
    collector = Collector()
    started = time.monotonic()
    async with running(api, collector, log=log) as watcher:
        await until(watcher.listed.is_set)
    assert time.monotonic() - started >= 2 * FAST.slow_retry_s
    forbidden = [e for e in capture.entries if e["event"] == "watch_forbidden"]
    assert len(forbidden) == 1  # once per streak
    assert forbidden[0]["log_level"] == "error"
    assert "RBAC" in forbidden[0]["hint"]
    assert forbidden[0]["status_code"] == 403
    assert collector.reachability == []  # an answer, even a "no", means reachable


async def test_each_failure_is_described_for_readyz_until_a_request_succeeds(
    api: SimulatedApiServer,
) -> None:
    api.faults.status(403, verb="list", times=1)
    api.faults.status(503, verb="list", times=1)
    described: list[str] = []
    async with running(api, Collector(), on_failure=described.append) as watcher:
        await until(watcher.listed.is_set)
    assert described == [
        "forbidden (HTTP 403): check RBAC (get/list/watch on events)",
        "the API server failed (HTTP 503)",
        "",  # listed: nothing to say any more
    ]


async def test_warns_once_per_streak_then_recovers(api: SimulatedApiServer) -> None:
    log, capture = capturing()
    api.faults.status(503, verb="list", times=3)
    collector = Collector()
    async with running(api, collector, log=log) as watcher:
        await until(watcher.listed.is_set)
    failed = [e for e in capture.entries if e["event"] == "watch_failed"]
    assert [e["log_level"] for e in failed] == ["warning", "debug", "debug"]
    assert [e["attempt"] for e in failed] == [1, 2, 3]
    assert [e["event"] for e in capture.entries if e["log_level"] == "info"] == ["watch_recovered"]
    # unreachable after 2 consecutive connectivity failures, reachable again on success
    assert collector.reachability == [(False, "http"), (True, "ok")]


async def test_accept_then_close_is_not_a_hot_loop(api: SimulatedApiServer) -> None:
    collector = Collector()
    async with running(api, collector, settings=_with(FAST, timeout_seconds=1)) as watcher:
        await until(watcher.listed.is_set)
        rule = api.faults.stream(StreamAction.CLOSE, times=None)
        await until(lambda: rule.fired > 0)
        before = rule.fired
        await asyncio.sleep(1.0)
        during = rule.fired - before
        api.faults.clear()
        api.store.create("events", event("late"))
        await until(lambda: "late" in collector.names(), within=3)
    # backoff 0.05 doubling to 0.2 s: about 7 attempts in a second, never hundreds
    assert 2 <= during <= 12


def test_backoff_doubles_to_the_cap_and_resets_after_a_quiet_period() -> None:
    settings = _with(FAST, backoff_initial_s=0.8, backoff_max_s=30, backoff_jitter=0.0)
    backoff = Backoff(settings, random.Random(0))
    delays = [backoff.next(float(t))[0] for t in range(8)]
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]
    delay, new_streak = backoff.next(7 + settings.backoff_reset_s)
    assert (delay, new_streak) == (0.8, True)
    jittery = Backoff(_with(settings, backoff_jitter=0.2), random.Random(0))
    first = jittery.next(0)[0]
    assert 0.8 <= first <= 0.96


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="page_size"):
        WatchSettings(page_size=0)
    with pytest.raises(ValueError, match="timeout_seconds"):
        WatchSettings(timeout_seconds=0)
    with pytest.raises(ValueError, match="silent_stream_s"):
        WatchSettings(silent_stream_s=0)
    with pytest.raises(ValueError, match="watch_start_timeout_s"):
        WatchSettings(watch_start_timeout_s=0)
    with pytest.raises(ValueError, match="unreachable_after"):
        WatchSettings(unreachable_after=0)
    with pytest.raises(ValueError, match="namespaces"):
        ListWatch(lambda ns: None, resource="events", namespaces=[])  # type: ignore[arg-type,return-value]


def _with(settings: WatchSettings, **changes: Any) -> WatchSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)
