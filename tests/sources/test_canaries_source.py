"""CanariesSource against the simulated API server with the real client: status changes are
emitted, metadata-only writes are not, relists emit only what changed, the workload index."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from kubernetes_asyncio import client
from structlog.testing import LogCapture

from canarywatch.model import Observation, Outcome, SourceName, Transition
from canarywatch.normalise.status import CanaryStatusNormaliser
from canarywatch.simulator import SimulatedApiServer, StreamAction
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.watch import WatchSettings

FAST = WatchSettings(
    timeout_seconds=2,
    read_slack_s=0.5,
    connect_timeout_s=1.0,
    request_timeout_s=3.0,
    backoff_initial_s=0.02,
    backoff_max_s=0.1,
    slow_retry_s=0.2,
)


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def status(phase: str, weight: int = 0, failed: int = 0) -> dict[str, Any]:
    return {
        "phase": phase,
        "canaryWeight": weight,
        "failedChecks": failed,
        "iterations": 0,
        "lastAppliedSpec": "abc",
        "lastTransitionTime": "2026-08-04T09:00:00Z",
        "conditions": [
            {
                "type": "Promoted",
                "status": "Unknown" if phase == "Progressing" else "True",
                "reason": phase,
                "message": "",
                "lastTransitionTime": "2026-08-04T09:00:00Z",
                "lastUpdateTime": "2026-08-04T09:00:00Z",
            }
        ],
    }


def create(
    api: SimulatedApiServer, name: str, target: str | None = None, ns: str = "test"
) -> dict[str, Any]:
    return api.store.create(
        "canaries",
        {
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"kind": "Deployment", "name": target or name}},
            "status": status("Initialized"),
        },
    )


@asynccontextmanager
async def running(source: CanariesSource) -> AsyncIterator[list[Observation]]:
    seen: list[Observation] = []

    async def emit(observation: Observation) -> None:
        seen.append(observation)

    task = asyncio.create_task(source.run(emit))
    try:
        async with asyncio.timeout(20):
            yield seen
    finally:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


def summary(seen: list[Observation]) -> list[tuple[str, str, bool]]:
    return [
        (o.data["type"], o.data["object"]["metadata"]["name"], bool(o.data.get("initial")))
        for o in seen
    ]


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


async def test_status_changes_are_emitted_and_metadata_only_writes_skipped(
    api: SimulatedApiServer,
) -> None:
    create(api, "podinfo")
    source = CanariesSource(client.Configuration(host=api.url), cluster="prod", settings=FAST)
    normaliser = CanaryStatusNormaliser()
    async with running(source) as seen:
        await until(source.listed.is_set)
        api.store.patch("canaries", "test", "podinfo", {"metadata": {"labels": {"team": "a"}}})
        api.store.patch("canaries", "test", "podinfo", {"spec": {"analysis": {"interval": "1m"}}})
        api.store.patch("canaries", "test", "podinfo", {"status": status("Progressing", 10)})
        api.store.patch("canaries", "test", "podinfo", {"metadata": {"annotations": {"x": "y"}}})
        api.store.patch("canaries", "test", "podinfo", {"status": status("Succeeded")})
        create(api, "other")
        api.store.delete("canaries", "test", "other")
        await until(lambda: len(seen) == 5)
        await asyncio.sleep(0.1)
    assert summary(seen) == [
        ("ADDED", "podinfo", True),
        ("MODIFIED", "podinfo", False),
        ("MODIFIED", "podinfo", False),
        ("ADDED", "other", False),
        ("DELETED", "other", False),
    ]
    assert source.skipped == 3
    assert all(o.source is SourceName.CANARIES and o.cluster == "prod" for o in seen)
    transitions = [e.transition for o in seen for e in normaliser(o).events]
    assert Transition.ANALYSIS_STARTED in transitions or Transition.WEIGHT_ADVANCED in transitions
    assert normaliser(seen[0]).outcome is not Outcome.MALFORMED


async def test_workload_index(api: SimulatedApiServer) -> None:
    create(api, "podinfo")
    create(api, "web", target="frontend", ns="shop")
    source = CanariesSource(client.Configuration(host=api.url), settings=FAST)
    assert source.workload_to_canary("test", "podinfo") is None
    async with running(source) as seen:
        await until(source.listed.is_set)
        assert source.workload_to_canary("test", "podinfo") == "podinfo"
        assert source.workload_to_canary("test", "podinfo-primary") == "podinfo"
        assert source.workload_to_canary("shop", "frontend") == "web"
        assert source.workload_to_canary("test", "frontend") is None
        # a retarget is indexed even though it is not emitted (status unchanged)
        api.store.patch("canaries", "shop", "web", {"spec": {"targetRef": {"name": "shopfront"}}})
        await until(lambda: source.workload_to_canary("shop", "shopfront") == "web")
        assert source.workload_to_canary("shop", "frontend") is None
        api.store.delete("canaries", "test", "podinfo")
        await until(lambda: source.workload_to_canary("test", "podinfo") is None)
    assert [t for t, _, _ in summary(seen)] == ["ADDED", "ADDED", "DELETED"]


async def test_relist_emits_only_what_changed_while_away(api: SimulatedApiServer) -> None:
    for name in ("same", "changed", "vanished"):
        create(api, name)
    settings = dataclasses.replace(FAST, timeout_seconds=1)
    source = CanariesSource(client.Configuration(host=api.url), settings=settings)
    async with running(source) as seen:
        await until(source.listed.is_set)
        # While the watch is away (every watch fails), the cluster moves on...
        rule = api.faults.status(503, verb="watch", times=None)
        await until(lambda: rule.fired > 0)
        api.store.patch("canaries", "test", "changed", {"status": status("Progressing", 5)})
        api.store.delete("canaries", "test", "vanished")
        create(api, "new")
        # ...and its history is compacted, so coming back means a relist.
        api.compact()
        api.faults.clear()
        await until(lambda: len(seen) == 6)
        await asyncio.sleep(0.1)
    assert sorted(summary(seen)[3:]) == [
        ("ADDED", "new", False),
        ("DELETED", "vanished", False),
        ("MODIFIED", "changed", False),
    ]
    assert source.workload_to_canary("test", "vanished") is None
    assert source.workload_to_canary("test", "new") == "new"


async def test_missing_crd_warns_and_retries_slowly(api: SimulatedApiServer) -> None:
    capture = LogCapture()
    log = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[capture],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    api.settings.unserved.add("flagger.app/canaries")
    create(api, "podinfo")
    source = CanariesSource(client.Configuration(host=api.url), settings=FAST, log=log)
    async with running(source) as seen:
        await until(lambda: any(e["event"] == "watch_resource_missing" for e in capture.entries))
        await asyncio.sleep(0.3)
        assert not source.listed.is_set()
        attempts = sum("canaries" in path for _, path in api.requests)
        assert attempts <= 3  # slow retries, not a hot loop
        api.settings.unserved.clear()
        await until(source.listed.is_set)
    assert summary(seen) == [("ADDED", "podinfo", True)]
    missing = [e for e in capture.entries if e["event"] == "watch_resource_missing"]
    assert missing[0]["log_level"] == "warning"
    assert missing[0]["status_code"] == 404
    assert "CRD" in missing[0]["hint"]


async def test_namespaced_list_and_stream_error_recovery(api: SimulatedApiServer) -> None:
    create(api, "podinfo")
    create(api, "elsewhere", ns="other")
    api.faults.stream(StreamAction.DROP, after_events=0)
    source = CanariesSource(client.Configuration(host=api.url), namespaces=["test"], settings=FAST)
    async with running(source) as seen:
        await until(source.listed.is_set)
        api.store.patch("canaries", "test", "podinfo", {"status": status("Progressing", 10)})
        await until(lambda: len(seen) == 2)
    assert summary(seen) == [("ADDED", "podinfo", True), ("MODIFIED", "podinfo", False)]
    assert all("/namespaces/test/canaries" in path for _, path in api.requests)
