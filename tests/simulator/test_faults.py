"""Fault injection (§1.5) as the real kubernetes_asyncio client experiences it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from canarywatch.simulator.apiserver import SimulatedApiServer
from canarywatch.simulator.faults import StreamAction


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        for i in range(3):
            server.store.create(
                "events",
                {
                    "metadata": {"name": f"e{i}", "namespace": "test"},
                    "involvedObject": {"kind": "Canary", "name": "podinfo"},
                    "message": f"m{i}",
                },
            )
        yield server


@pytest.fixture
async def core(api: SimulatedApiServer) -> AsyncIterator[client.CoreV1Api]:
    async with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        yield client.CoreV1Api(api_client)


async def watch_all(core: client.CoreV1Api, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    kwargs.setdefault("timeout_seconds", 2)
    async with asyncio.timeout(5), watch.Watch(return_type="object") as w:
        async for item in w.stream(core.list_namespaced_event, "test", **kwargs):
            out.append(item)
    return out


@pytest.mark.parametrize("code", [401, 403, 404, 409, 422, 429, 500, 503, 504])
async def test_http_errors_carry_status_bodies(
    api: SimulatedApiServer, core: client.CoreV1Api, code: int
) -> None:
    rule = api.faults.status(code, verb="list", retry_after=3 if code == 429 else None)
    with pytest.raises(ApiException) as info:
        await core.list_namespaced_event("test")
    body = json.loads(info.value.body)
    assert (info.value.status, body["kind"], body["code"]) == (code, "Status", code)
    assert info.value.headers["Content-Type"] == "application/json"
    if code == 429:
        assert info.value.headers["Retry-After"] == "3"
    assert rule.fired == 1
    assert len((await core.list_namespaced_event("test")).items) == 3  # times=1: then healthy


async def test_status_fault_on_a_watch_raises_its_code(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    api.faults.status(503, verb="watch")
    with pytest.raises(ApiException) as info:
        await watch_all(core)
    assert info.value.status == 503


async def test_non_json_5xx_body(api: SimulatedApiServer, core: client.CoreV1Api) -> None:
    api.faults.raw(502, "<html>bad gateway</html>", verb="list")
    with pytest.raises(ApiException) as info:
        await core.list_namespaced_event("test")
    assert (info.value.status, info.value.body) == (502, "<html>bad gateway</html>")
    api.faults.raw(500, "upstream error\n", content_type="text/plain", verb="watch")
    events = await watch_all(core, resource_version="1", timeout_seconds=1)
    assert events[0] == "upstream error\n"  # the client yields the line as a plain str


async def test_in_stream_error_event(api: SimulatedApiServer, core: client.CoreV1Api) -> None:
    api.faults.stream(StreamAction.ERROR, after_events=2, code=500)
    seen: list[Any] = []

    async def consume() -> None:
        async with asyncio.timeout(5), watch.Watch(return_type="object") as w:
            async for item in w.stream(core.list_namespaced_event, "test", timeout_seconds=2):
                seen.append(item["type"])

    with pytest.raises(ApiException) as info:
        await consume()
    assert info.value.status == 500
    assert seen == ["ADDED", "ADDED"]


async def test_connection_dropped_mid_stream(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    api.faults.stream(StreamAction.DROP, after_events=1)
    with pytest.raises(aiohttp.ClientPayloadError):
        await watch_all(core)


async def test_truncated_json_line(api: SimulatedApiServer, core: client.CoreV1Api) -> None:
    api.faults.stream(StreamAction.TRUNCATE, after_events=1)
    events = await watch_all(core)
    assert events[0]["type"] == "ADDED"
    assert isinstance(events[1], str)
    assert events[1].startswith('{"type":"ADDED"')
    assert len(events) == 2


async def test_silent_stream_trips_the_client_read_timeout(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    api.faults.stream(StreamAction.SILENT, after_events=3)
    with pytest.raises(TimeoutError):
        await watch_all(core, timeout_seconds=30, _request_timeout=(1, 0.5))


async def test_a_silent_stream_is_half_open_not_even_timeout_seconds_ends_it(
    api: SimulatedApiServer,
) -> None:
    """What a half-open connection looks like to the client: 200 and headers, then not one
    byte, and no end when ``timeoutSeconds`` passes (the server's FIN would never arrive)."""
    api.faults.stream(StreamAction.SILENT)
    rv = api.store.resource_version
    url = (
        f"{api.url}/api/v1/namespaces/test/events?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    )
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.8):
                await resp.content.readany()
        assert not resp.content.at_eof()


async def test_accept_then_close_is_visible_as_empty_streams(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    api.faults.stream(StreamAction.CLOSE, times=None)
    started = time.monotonic()
    for _ in range(3):
        assert await watch_all(core, timeout_seconds=30) == []
    assert time.monotonic() - started < 2
    watches = [p for m, p in api.requests if "watch=" in p]
    assert len(watches) == 3


async def test_disconnect_before_any_response(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    api.faults.disconnect(verb="list", times=2)  # aiohttp retries an idempotent GET once
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await core.list_namespaced_event("test")


async def test_slow_response(api: SimulatedApiServer, core: client.CoreV1Api) -> None:
    api.faults.delay(0.4, verb="list")
    started = time.monotonic()
    assert len((await core.list_namespaced_event("test")).items) == 3
    assert time.monotonic() - started >= 0.4
    api.faults.delay(2, verb="list")
    with pytest.raises(TimeoutError):
        await core.list_namespaced_event("test", _request_timeout=(1, 0.3))


async def test_seeded_random_faults_replay(api: SimulatedApiServer, core: client.CoreV1Api) -> None:
    async def outcomes() -> list[int]:
        api.faults.clear()
        api.faults.random(0.5, codes=(500, 503), verb="list", seed=42)
        result = []
        for _ in range(12):
            try:
                await core.list_namespaced_event("test")
                result.append(200)
            except ApiException as error:
                result.append(error.status)
        return result

    first = await outcomes()
    assert set(first) == {200, 500, 503}
    assert await outcomes() == first


async def test_compaction_makes_the_client_watch_fail_with_410(
    api: SimulatedApiServer, core: client.CoreV1Api
) -> None:
    listed = await core.list_namespaced_event("test")
    api.store.patch("events", "test", "e0", {"count": 2})
    api.compact()
    with pytest.raises(ApiException) as info:
        await watch_all(core, resource_version=listed.metadata.resource_version)
    assert info.value.status == 410
    latest = str(api.store.resource_version)  # compaction keeps the latest revision itself
    asyncio.get_running_loop().call_later(0.1, api.store.delete, "events", "test", "e1")
    async with asyncio.timeout(5), watch.Watch(return_type="object") as w:
        async for item in w.stream(
            core.list_namespaced_event, "test", resource_version=latest, timeout_seconds=5
        ):
            assert item["type"] == "DELETED"
            break
