"""WATCH (§1.4) through the real kubernetes_asyncio Watch."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from canarywatch.simulator.apiserver import SimulatedApiServer


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


@pytest.fixture
async def kube(api: SimulatedApiServer) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        yield api_client


def event(name: str, ns: str = "test", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": extra.pop("labels", {})},
        "involvedObject": {"kind": "Canary", "namespace": ns, "name": "podinfo"},
        "reason": "Synced",
        "message": extra.pop("message", name),
        "type": extra.pop("type", "Normal"),
        "count": 1,
        **extra,
    }


async def collect(
    func: Callable[..., Any],
    *args: Any,
    until: int | None = None,
    on_open: Callable[[], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Watch with ``return_type="object"`` (raw dicts) until the server ends the stream or
    ``until`` events arrived; ``on_open`` runs after the first event (or never)."""
    out: list[dict[str, Any]] = []
    kwargs.setdefault("timeout_seconds", 2)
    async with asyncio.timeout(5), watch.Watch(return_type="object") as w:
        async for item in w.stream(func, *args, **kwargs):
            out.append(item)
            if on_open is not None and len(out) == 1:
                on_open()
            if until is not None and len(out) >= until:
                break
    return out


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"].get("name", "")) for e in events]


async def test_headers_arrive_before_any_event(api: SimulatedApiServer) -> None:
    rv = api.store.resource_version
    url = f"{api.url}/api/v1/namespaces/test/events?watch=1&resourceVersion={rv}&timeoutSeconds=5"
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(1), http.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "application/json"
            assert resp.headers["Transfer-Encoding"] == "chunked"
            api.store.create("events", event("a"))
            line = await resp.content.readline()
        decoded = json.loads(line)
        assert decoded["type"] == "ADDED"
        assert decoded["object"]["kind"] == "Event"  # watch objects carry kind/apiVersion
        assert decoded["object"]["apiVersion"] == "v1"
        assert line.endswith(b"}\n")


async def test_rv_unset_sends_synthetic_added_then_end_bookmark(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", event("a"))
    api.store.create("events", event("b"))
    core = client.CoreV1Api(kube)
    for rv in (None, "0"):
        kwargs = {"resource_version": rv} if rv else {}
        events = await collect(
            core.list_namespaced_event, "test", allow_watch_bookmarks=True, until=3, **kwargs
        )
        assert summary(events) == [("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", "")]
        bookmark = events[2]["raw_object"]
        assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert bookmark["metadata"]["resourceVersion"] == str(api.store.resource_version)
    api.settings.watch_list_default = False
    events = await collect(
        core.list_namespaced_event,
        "test",
        allow_watch_bookmarks=True,
        until=3,
        on_open=lambda: api.store.create("events", event("c")),
    )
    assert summary(events) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]  # no bookmark


async def test_rv_n_replays_history_without_synthetic_added(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", event("a"))
    start = str(api.store.resource_version)
    api.store.patch("events", "test", "a", {"count": 2})
    api.store.create("events", event("b"))
    api.store.delete("events", "test", "a")
    events = await collect(
        client.CoreV1Api(kube).list_namespaced_event,
        "test",
        resource_version=start,
        until=4,
        on_open=lambda: api.store.create("events", event("c")),
    )
    assert summary(events) == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a"), ("ADDED", "c")]
    rvs = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert events[0]["raw_object"]["count"] == 2


async def test_send_initial_events_needs_not_older_than(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", event("a"))
    core = client.CoreV1Api(kube)
    events = await collect(
        core.list_namespaced_event,
        "test",
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        until=2,
    )
    assert summary(events) == [("ADDED", "a"), ("BOOKMARK", "")]
    without_bookmarks = await collect(
        core.list_namespaced_event,
        "test",
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        until=2,
        on_open=lambda: api.store.create("events", event("b")),
    )
    assert summary(without_bookmarks) == [("ADDED", "a"), ("ADDED", "b")]  # no end marker
    for kwargs in (
        {"send_initial_events": True},
        {"resource_version_match": "NotOlderThan"},
    ):
        with pytest.raises(ApiException) as info:
            await collect(core.list_namespaced_event, "test", **kwargs)
        assert info.value.status == 422


async def test_too_old_rv_is_200_then_error_410_or_http_410(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", event("a"))
    old = str(api.store.resource_version)
    api.store.create("events", event("b"))
    api.compact()
    core = client.CoreV1Api(kube)
    url = f"{api.url}/api/v1/namespaces/test/events?watch=true&resourceVersion={old}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        lines = (await resp.read()).splitlines()
    assert len(lines) == 1
    error = json.loads(lines[0])
    assert error["type"] == "ERROR"
    assert error["object"]["code"] == 410
    assert error["object"]["reason"] == "Expired"
    assert error["object"]["message"].startswith(f"too old resource version: {old} (")
    with pytest.raises(ApiException) as info:
        await collect(core.list_namespaced_event, "test", resource_version=old)
    assert info.value.status == 410
    api.settings.too_old_as_http_410 = True
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 410
        assert (await resp.json())["reason"] == "Expired"


async def test_future_rv_waits_then_504(api: SimulatedApiServer, kube: client.ApiClient) -> None:
    api.settings.future_rv_wait_s = 0.2
    with pytest.raises(ApiException) as info:
        await collect(
            client.CoreV1Api(kube).list_namespaced_event,
            "test",
            resource_version=str(api.store.resource_version + 50),
        )
    assert info.value.status == 504


async def test_selectors_filter_and_translate_transitions(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", event("a", labels={"app": "x"}))
    api.store.create("events", event("b", type="Warning"))
    start = str(api.store.resource_version)

    def changes() -> None:
        api.store.patch("events", "test", "b", {"metadata": {"labels": {"app": "x"}}})
        api.store.patch("events", "test", "a", {"metadata": {"labels": {"app": "y"}}})
        api.store.create("events", event("c", labels={"app": "x"}, type="Warning"))

    changes()
    events = await collect(
        client.CoreV1Api(kube).list_namespaced_event,
        "test",
        resource_version=start,
        label_selector="app=x",
        until=3,
    )
    assert summary(events) == [("ADDED", "b"), ("DELETED", "a"), ("ADDED", "c")]
    deleted = events[1]["raw_object"]
    assert deleted["metadata"]["labels"] == {"app": "x"}  # the last state that matched
    assert int(deleted["metadata"]["resourceVersion"]) > int(start)
    warnings = await collect(
        client.CoreV1Api(kube).list_namespaced_event,
        "test",
        resource_version=start,
        field_selector="type=Warning",
        until=2,
    )
    assert summary(warnings) == [("MODIFIED", "b"), ("ADDED", "c")]


async def test_bookmarks_on_interval_and_on_demand_only_when_allowed(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    rv = str(api.store.resource_version)
    api.settings.bookmark_interval_s = 0.2
    api.settings.bookmark_before_timeout_s = 0.0
    events = await collect(
        core.list_namespaced_event,
        "test",
        resource_version=rv,
        allow_watch_bookmarks=True,
        until=2,
    )
    assert [e["type"] for e in events] == ["BOOKMARK", "BOOKMARK"]
    assert events[0]["raw_object"] == {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv},
    }
    none = await collect(core.list_namespaced_event, "test", resource_version=rv, timeout_seconds=1)
    assert none == []
    api.settings.bookmark_interval_s = 60
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, lambda: api.store.create("events", event("a")))
    loop.call_later(0.3, api.send_bookmarks)
    got = await collect(
        core.list_namespaced_event,
        "test",
        resource_version=rv,
        allow_watch_bookmarks=True,
        until=2,
    )
    assert [e["type"] for e in got] == ["ADDED", "BOOKMARK"]
    assert got[1]["raw_object"]["metadata"]["resourceVersion"] == str(api.store.resource_version)


async def test_timeout_seconds_ends_the_stream_cleanly(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    rv = str(api.store.resource_version)
    started = time.monotonic()
    events = await collect(
        client.CoreV1Api(kube).list_namespaced_event,
        "test",
        resource_version=rv,
        timeout_seconds=1,
        allow_watch_bookmarks=True,
    )
    assert events == []  # no final event, not even a bookmark that would not fit
    assert 0.9 <= time.monotonic() - started < 2.5


async def test_every_watch_gets_every_change_in_order(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    rv = str(api.store.resource_version)
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)

    async def writer() -> None:
        await asyncio.sleep(0.2)
        for i in range(5):
            api.store.create("events", event(f"e{i}", ns="test" if i % 2 else "shop"))
            api.store.create("canaries", {"metadata": {"name": f"c{i}", "namespace": "test"}})
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        group.create_task(writer())
        everywhere = group.create_task(
            collect(core.list_event_for_all_namespaces, resource_version=rv, until=5)
        )
        test_only = group.create_task(
            collect(core.list_namespaced_event, "test", resource_version=rv, until=2)
        )
        canaries = group.create_task(
            collect(
                custom.list_cluster_custom_object,
                "flagger.app",
                "v1beta1",
                "canaries",
                resource_version=rv,
                until=5,
            )
        )
    assert summary(everywhere.result()) == [("ADDED", f"e{i}") for i in range(5)]
    assert summary(test_only.result()) == [("ADDED", "e1"), ("ADDED", "e3")]
    assert summary(canaries.result()) == [("ADDED", f"c{i}") for i in range(5)]
    assert canaries.result()[0]["raw_object"]["kind"] == "Canary"


async def test_events_v1_watch_shows_the_same_changes(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    rv = str(api.store.resource_version)
    api.store.create("events", event("a", message="hello"))
    events = await collect(
        client.EventsV1Api(kube).list_namespaced_event,
        "test",
        resource_version=rv,
        until=1,
        field_selector="regarding.name=podinfo",
    )
    assert events[0]["raw_object"]["note"] == "hello"
    assert events[0]["raw_object"]["apiVersion"] == "events.k8s.io/v1"
