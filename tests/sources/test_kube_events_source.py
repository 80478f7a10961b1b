"""KubeEventsSource against the simulated API server with the real client: observation shape,
server-side selection, the "initial" marker, no duplicates through relists and random faults;
and ``sources.kubeconfig`` building per-cluster configurations."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from canarywatch.clock import SystemClock
from canarywatch.errors import ConfigError
from canarywatch.model import Observation, SourceName
from canarywatch.normalise.kube_events import KubeEventNormaliser
from canarywatch.simulator import FlaggerEventRecorder, SimulatedApiServer, StreamAction
from canarywatch.simulator.faults import FaultRule, StatusFault, StreamFault
from canarywatch.sources.kube_events import KubeEventsSource, SeenKeys
from canarywatch.sources.kubeconfig import ClusterAccess, build_configuration, resolve_mode
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
AT = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)


class FixedClock(SystemClock):
    def now(self) -> datetime:
        return AT


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def canary(api: SimulatedApiServer, name: str = "podinfo", ns: str = "test") -> dict[str, Any]:
    return api.store.create(
        "canaries",
        {
            "metadata": {"name": name, "namespace": ns},
            "spec": {"targetRef": {"kind": "Deployment", "name": name}},
        },
    )


def plain_event(name: str, kind: str = "Canary", ns: str = "test") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {
            "kind": kind,
            "namespace": ns,
            "name": "podinfo",
            "apiVersion": "flagger.app/v1beta1",
        },
        "reason": "Synced",
        "message": "New revision detected! Scaling up podinfo.test",
        "type": "Normal",
        "count": 1,
        "source": {"component": "flagger"},
    }


@asynccontextmanager
async def running(source: KubeEventsSource) -> AsyncIterator[list[Observation]]:
    seen: list[Observation] = []

    async def emit(observation: Observation) -> None:
        seen.append(observation)

    task = asyncio.create_task(source.run(emit))
    try:
        async with asyncio.timeout(25):
            yield seen
    finally:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


def conf(api: SimulatedApiServer) -> client.Configuration:
    return client.Configuration(host=api.url)


async def test_emits_raw_wire_json_with_the_initial_marker(api: SimulatedApiServer) -> None:
    api.store.create("events", plain_event("old"))
    api.store.create("events", plain_event("pod-event", kind="Pod"))
    source = KubeEventsSource(conf(api), cluster="prod", clock=FixedClock(), settings=FAST)
    async with running(source) as seen:
        await until(source.listed.is_set)
        api.store.create("events", plain_event("new"))
        await until(lambda: len(seen) == 2)
    first, second = seen
    assert (first.source, first.cluster, first.at) == (SourceName.KUBERNETES_EVENTS, "prod", AT)
    assert first.data["initial"] is True
    assert first.data["type"] == "ADDED"
    assert first.data["object"]["metadata"]["name"] == "old"
    assert first.data["object"]["involvedObject"]["kind"] == "Canary"  # camelCase, as on the wire
    assert first.data["object"]["kind"] == "Event"
    assert "initial" not in second.data
    assert second.data["object"]["metadata"]["name"] == "new"
    assert all(
        "fieldSelector=involvedObject.kind%3DCanary" in path for _, path in api.requests
    )  # the Pod event was filtered by the server
    result = KubeEventNormaliser()(second)
    assert result.outcome.value == "transition"


async def test_events_k8s_io_view_uses_regarding(api: SimulatedApiServer) -> None:
    api.store.create("events", plain_event("a"))
    source = KubeEventsSource(conf(api), api="events.k8s.io/v1", namespaces=["test"], settings=FAST)
    async with running(source) as seen:
        await until(lambda: len(seen) == 1)
    obj = seen[0].data["object"]
    assert obj["apiVersion"] == "events.k8s.io/v1"
    assert obj["regarding"]["kind"] == "Canary"
    assert obj["note"].startswith("New revision")
    assert all("regarding.kind%3DCanary" in path for _, path in api.requests)


async def test_relist_after_410_emits_nothing_twice(api: SimulatedApiServer) -> None:
    for name in ("a", "b"):
        api.store.create("events", plain_event(name))
    source = KubeEventsSource(conf(api), settings=FAST)
    async with running(source) as seen:
        await until(source.listed.is_set)
        api.store.create("events", plain_event("c"))
        await until(lambda: len(seen) == 3)
        api.faults.stream(StreamAction.ERROR, code=410)  # the next watch: relist
        lists_before = sum("watch=" not in path for _, path in api.requests)
        await until(lambda: sum("watch=" not in p for _, p in api.requests) > lists_before)
        api.store.patch("events", "test", "a", {"count": 2})
        await until(lambda: len(seen) == 4)
        await asyncio.sleep(0.1)
    names = [(o.data["type"], o.data["object"]["metadata"]["name"]) for o in seen]
    assert names == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("MODIFIED", "a")]
    assert source.duplicates == 3  # a, b, c re-delivered by the relist, dropped here


async def test_random_faults_lose_nothing_and_duplicate_nothing(api: SimulatedApiServer) -> None:
    """A seeded fault plan over a Flagger-driven Event stream: every write to an Event reaches
    the pipeline exactly once, whatever the stream does."""
    clock = SystemClock()
    recorder = FlaggerEventRecorder(api.store, clock)
    canaries = [canary(api, f"app{i}") for i in range(3)]
    start_rv = api.store.resource_version
    recorder.record(canaries[0], "Normal", "Initialization done! app0.test")
    api.faults.add(
        FaultRule(
            StreamFault(StreamAction.DROP),
            verb="watch",
            resource="events",
            times=None,
            probability=0.5,
            choices=(
                StreamFault(StreamAction.DROP, after_events=2),
                StreamFault(StreamAction.TRUNCATE, after_events=1),
                StreamFault(StreamAction.CLOSE, after_events=0),
                StreamFault(StreamAction.ERROR, after_events=1, code=500),
            ),
        )
    )
    api.faults.add(
        FaultRule(
            StatusFault(429, "TooManyRequests", "slow down", retry_after=0),
            resource="events",
            times=3,
            probability=0.2,
        )
    )
    api.faults.random(0.15, codes=(500, 503, 504), resource="events", seed=7)
    api.faults.disconnect(verb="watch", resource="events", times=2)
    source = KubeEventsSource(conf(api), settings=FAST)
    async with running(source) as seen:
        await until(source.listed.is_set)
        for i in range(60):
            target = canaries[i % 3]
            kind = "Warning" if i % 4 == 0 else "Normal"
            message = f"Advance {target['metadata']['name']}.test canary weight {10 * (i % 5)}"
            recorder.record(target, kind, message)
            await asyncio.sleep(0.01)
        expected = {
            (c.object["metadata"]["uid"], c.object["count"])
            for c in api.store.changes_since("events", start_rv)
        }

        def emitted() -> list[tuple[str, int]]:
            return [(o.data["object"]["metadata"]["uid"], o.data["object"]["count"]) for o in seen]

        await until(lambda: set(emitted()) >= expected, within=15)
        await asyncio.sleep(0.2)
    fired = sum(rule.fired for rule in api.faults.rules)
    assert fired >= 5, "the plan should actually have injected faults"
    assert len(emitted()) == len(set(emitted()))
    assert set(emitted()) == expected
    assert any(count > 1 for _, count in expected)  # PATCHed repeats were part of the stream


def test_seen_keys_are_bounded() -> None:
    seen = SeenKeys(2)
    assert seen.add(("u1", "1"))
    assert not seen.add(("u1", "1"))
    assert seen.add(("u2", "2"))
    assert seen.add(("u3", "3"))
    assert len(seen) == 2
    assert seen.add(("u1", "1"))  # forgotten: least recently seen goes first
    with pytest.raises(ValueError, match="memory"):
        SeenKeys(0)


def test_seen_keys_refresh_a_key_seen_again() -> None:
    seen = SeenKeys(2)
    assert seen.add(("u1", "1"))
    assert seen.add(("u2", "2"))
    assert not seen.add(("u1", "1"))  # seen again: now the most recent
    assert seen.add(("u3", "3"))  # so u2 goes
    assert not seen.add(("u1", "1"))
    assert seen.add(("u2", "2"))


# -- sources.kubeconfig ------------------------------------------------------------------------


def test_auto_mode_follows_the_environment() -> None:
    assert resolve_mode(ClusterAccess(), {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == "in-cluster"
    assert resolve_mode(ClusterAccess(), {}) == "kubeconfig"
    assert resolve_mode(ClusterAccess(host="http://x"), {}) == "host"
    assert resolve_mode(ClusterAccess(mode="kubeconfig"), {"KUBERNETES_SERVICE_HOST": "x"}) == (
        "kubeconfig"
    )


async def test_kubeconfig_context_reaches_the_simulator(
    api: SimulatedApiServer, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "elsewhere",
                "clusters": [
                    {"name": "sim", "cluster": {"server": api.url}},
                    {"name": "far", "cluster": {"server": "https://far.invalid:6443"}},
                ],
                "users": [{"name": "me", "user": {"token": "t0ken"}}],
                "contexts": [
                    {"name": "sim", "context": {"cluster": "sim", "user": "me"}},
                    {"name": "elsewhere", "context": {"cluster": "far", "user": "me"}},
                ],
            }
        )
    )
    default_host = client.Configuration.get_default_copy().host
    configuration = await build_configuration(
        ClusterAccess(mode="kubeconfig", kubeconfig=str(kubeconfig), context="sim"), environ={}
    )
    assert configuration.host == api.url
    assert configuration.verify_ssl is True
    assert client.Configuration.get_default_copy().host == default_host  # global untouched
    api.store.create("events", plain_event("a"))
    source = KubeEventsSource(configuration, settings=FAST)
    async with running(source) as seen:
        await until(lambda: len(seen) == 1)
    with pytest.raises(ConfigError, match="kubeconfig"):
        await build_configuration(
            ClusterAccess(mode="kubeconfig", kubeconfig=str(kubeconfig), context="nope")
        )


async def test_in_cluster_and_host_modes(tmp_path: Path) -> None:
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    access = ClusterAccess(token_file=str(token), cert_file=str(ca))
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    configuration = await build_configuration(access, environ=env)
    assert configuration.host == "https://10.96.0.1:443"
    assert configuration.ssl_ca_cert == str(ca)
    assert configuration.verify_ssl is True
    with pytest.raises(ConfigError, match="in-cluster"):
        await build_configuration(
            ClusterAccess(mode="in-cluster", token_file=str(token)), environ={}
        )
    host = await build_configuration(ClusterAccess(mode="host", host="http://127.0.0.1:1/"))
    assert host.host == "http://127.0.0.1:1"
