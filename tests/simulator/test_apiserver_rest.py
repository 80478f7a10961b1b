"""Routing, encoding, CRUD and LIST (§1.1-§1.3) through the real kubernetes_asyncio client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock

from canarywatch.simulator.apiserver import SimulatedApiServer

CANARY = ("flagger.app", "v1beta1")


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


@pytest.fixture
async def kube(api: SimulatedApiServer) -> AsyncIterator[client.ApiClient]:
    async with client.ApiClient(client.Configuration(host=api.url)) as api_client:
        yield api_client


def flagger_event(name: str, ns: str = "test", **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": extra.pop("labels", {})},
        "involvedObject": {
            "kind": "Canary",
            "namespace": ns,
            "name": extra.pop("canary", "podinfo"),
            "apiVersion": "flagger.app/v1beta1",
        },
        "reason": "Synced",
        "message": extra.pop("message", f"message of {name}"),
        "source": {"component": "flagger"},
        "type": extra.pop("type", "Normal"),
        "count": 1,
        "eventTime": None,
        "reportingComponent": "flagger",
        **extra,
    }


async def raw_get(url: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        text = await resp.text()
        return resp.status, resp.headers.get("Content-Type", ""), text


# -- §1.1 routing and encoding ---------------------------------------------------------------


async def test_collection_and_item_paths_for_every_resource(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.store.create("events", flagger_event("a"))
    api.store.create("events", flagger_event("b", ns="shop"))
    api.store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    coordination = client.CoordinationV1Api(kube)
    assert [e.metadata.name for e in (await core.list_namespaced_event("test")).items] == ["a"]
    assert len((await core.list_event_for_all_namespaces()).items) == 2
    assert (await core.read_namespaced_event("a", "test")).message == "message of a"
    resp = await client.EventsV1Api(kube).list_event_for_all_namespaces(_preload_content=False)
    assert [i["note"] for i in json.loads(await resp.read())["items"]] == [
        "message of b",  # namespace "shop" sorts before "test"
        "message of a",
    ]
    assert len((await custom.list_cluster_custom_object(*CANARY, "canaries"))["items"]) == 1
    got = await custom.get_namespaced_custom_object(*CANARY, "test", "canaries", "podinfo")
    assert got["metadata"]["name"] == "podinfo"
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="cw"), spec=client.V1LeaseSpec())
    await coordination.create_namespaced_lease("ops", lease)
    assert (await coordination.read_namespaced_lease("cw", "ops")).metadata.name == "cw"
    deleted = await core.delete_namespaced_event("a", "test")
    assert deleted is not None
    assert (await core.list_namespaced_event("test")).items == []


async def test_unserved_resource_is_a_404_status(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    api.settings.unserved.add("flagger.app/canaries")
    with pytest.raises(ApiException) as info:
        await client.CustomObjectsApi(kube).list_cluster_custom_object(*CANARY, "canaries")
    assert info.value.status == 404
    body = json.loads(info.value.body)
    assert body["kind"] == "Status"
    assert body["reason"] == "NotFound"
    status, content_type, text = await raw_get(f"{api.url}/apis/nope.io/v1/things")
    assert (status, content_type) == (404, "application/json")
    assert json.loads(text)["code"] == 404


async def test_missing_item_404_has_a_json_status_body(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    with pytest.raises(ApiException) as info:
        await client.CoordinationV1Api(kube).read_namespaced_lease("cw", "ops")
    body = json.loads(info.value.body)
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'leases.coordination.k8s.io "cw" not found',
        "reason": "NotFound",
        "code": 404,
        "details": {"name": "cw", "kind": "leases", "group": "coordination.k8s.io"},
    }


@pytest.mark.parametrize(
    ("value", "is_watch"),
    [("True", True), ("true", True), ("1", True), ("", True), ("yes", True),
     ("0", False), ("false", False), ("FALSE", False), (None, False)],
)  # fmt: skip
async def test_boolean_query_params_parse_like_the_apiserver(
    api: SimulatedApiServer, value: str | None, is_watch: bool
) -> None:
    api.store.create("events", flagger_event("a"))
    query = "timeoutSeconds=5" + ("" if value is None else f"&watch={value}")
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}/api/v1/events?{query}") as resp,
    ):
        assert (resp.status, resp.headers["Content-Type"]) == (200, "application/json")
        first = json.loads(await resp.content.readline())
    assert (first.get("type") == "ADDED") is is_watch
    assert (first.get("kind") == "EventList") is not is_watch


# -- §1.2 store semantics over HTTP ----------------------------------------------------------


async def test_create_conflicts_and_patch(api: SimulatedApiServer, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    created = await core.create_namespaced_event("test", flagger_event("a"))
    assert isinstance(created.metadata.resource_version, str)
    assert created.metadata.uid
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_event("test", flagger_event("a"))
    assert info.value.status == 409
    assert json.loads(info.value.body)["reason"] == "AlreadyExists"
    patched = await core.patch_namespaced_event("a", "test", {"count": 2})
    assert patched.count == 2
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    canary = await client.CustomObjectsApi(kube).create_namespaced_custom_object(
        *CANARY, "test", "canaries", {"metadata": {"name": "c"}, "spec": {"x": 1}}
    )
    assert (canary["kind"], canary["metadata"]["generation"]) == ("Canary", 1)


async def test_lease_put_with_stale_rv_is_a_conflict(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    coordination = client.CoordinationV1Api(kube)
    lease = client.V1Lease(metadata=client.V1ObjectMeta(name="cw"), spec=client.V1LeaseSpec())
    first = await coordination.create_namespaced_lease("ops", lease)
    first.spec.holder_identity = "a"
    await coordination.replace_namespaced_lease("cw", "ops", first)
    first.spec.holder_identity = "b"
    with pytest.raises(ApiException) as info:
        await coordination.replace_namespaced_lease("cw", "ops", first)
    body = json.loads(info.value.body)
    assert (info.value.status, body["reason"]) == (409, "Conflict")
    assert "please apply your changes to the latest version" in body["message"]
    with pytest.raises(ApiException) as exists:
        await coordination.create_namespaced_lease("ops", lease)
    assert json.loads(exists.value.body)["reason"] == "AlreadyExists"


async def test_lease_lock_leader_election_acquires_and_renews(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    leading = asyncio.Event()

    async def on_started() -> None:
        leading.set()

    async def on_stopped() -> None:
        return None

    def config(identity: str) -> electionconfig.Config:
        lock = LeaseLock("canarywatch", "ops", identity, kube)
        return electionconfig.Config(lock, 3, 2, 1, on_started, on_stopped)

    election = asyncio.create_task(leaderelection.LeaderElection(config("pod-a")).run())
    try:
        async with asyncio.timeout(5):
            await leading.wait()
            lease = api.store.get("leases", "ops", "canarywatch")
            assert lease["spec"]["holderIdentity"] == "pod-a"
            # A second candidate sees a live lease held by someone else.
            rival = leaderelection.LeaderElection(config("pod-b"))
            assert await rival.try_acquire_or_renew() is False
            while api.store.get("leases", "ops", "canarywatch") == lease:
                await asyncio.sleep(0.1)  # polling the store: the leader renews through PUT
    finally:
        election.cancel()
        with pytest.raises(asyncio.CancelledError):
            await election
    assert ("PUT", "/apis/coordination.k8s.io/v1/namespaces/ops/leases/canarywatch") in [
        (m, p.split("?")[0]) for m, p in api.requests
    ]


# -- §1.3 LIST -------------------------------------------------------------------------------


async def test_list_body_shape(api: SimulatedApiServer, kube: client.ApiClient) -> None:
    status, _, text = await raw_get(f"{api.url}/api/v1/namespaces/test/events")
    assert status == 200
    empty = json.loads(text)
    assert empty == {
        "kind": "EventList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": str(api.store.resource_version)},
        "items": [],
    }
    api.store.create("events", flagger_event("b"))
    api.store.create("events", flagger_event("a"))
    api.store.create("events", flagger_event("c", ns="alpha"))
    api.store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
    _, _, text = await raw_get(f"{api.url}/api/v1/events")
    listed = json.loads(text)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("alpha", "c"),
        ("test", "a"),
        ("test", "b"),
    ]
    assert all("kind" not in i and "apiVersion" not in i for i in listed["items"])
    assert int(listed["metadata"]["resourceVersion"]) > max(
        int(i["metadata"]["resourceVersion"]) for i in listed["items"]
    )
    canaries = await client.CustomObjectsApi(kube).list_cluster_custom_object(*CANARY, "canaries")
    assert canaries["kind"] == "CanaryList"
    assert canaries["items"][0]["kind"] == "Canary"


async def test_pagination_serves_one_snapshot(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    for i in range(5):
        api.store.create("events", flagger_event(f"e{i}"))
    core = client.CoreV1Api(kube)
    page = await core.list_namespaced_event("test", limit=2)
    names = [e.metadata.name for e in page.items]
    assert page.metadata.remaining_item_count == 3
    snapshot_rv = page.metadata.resource_version
    api.store.delete("events", "test", "e3")
    api.store.create("events", flagger_event("e9"))
    while page.metadata._continue:
        page = await core.list_namespaced_event("test", limit=2, _continue=page.metadata._continue)
        assert page.metadata.resource_version == snapshot_rv
        names += [e.metadata.name for e in page.items]
    assert names == ["e0", "e1", "e2", "e3", "e4"]
    assert page.metadata._continue is None


async def test_expired_continue_token_is_410_with_an_inconsistent_token(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    for i in range(3):
        api.store.create("events", flagger_event(f"e{i}"))
    core = client.CoreV1Api(kube)
    page = await core.list_namespaced_event("test", limit=1)
    api.store.create("events", flagger_event("late"))
    api.compact()  # history up to now is gone: the page's snapshot can no longer be served
    with pytest.raises(ApiException) as info:
        await core.list_namespaced_event("test", limit=1, _continue=page.metadata._continue)
    body = json.loads(info.value.body)
    assert (info.value.status, body["reason"]) == (410, "Expired")
    assert "continue parameter is too old" in body["message"]
    rest = await core.list_namespaced_event("test", _continue=body["metadata"]["continue"])
    assert [e.metadata.name for e in rest.items] == ["e1", "e2", "late"]
    api.settings.expire_continue_tokens = True
    fresh = await core.list_namespaced_event("test", limit=1)
    with pytest.raises(ApiException) as again:
        await core.list_namespaced_event("test", _continue=fresh.metadata._continue)
    assert again.value.status == 410


async def test_list_resource_version_semantics(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    api.store.create("events", flagger_event("a"))
    then = str(api.store.resource_version)
    api.store.create("events", flagger_event("b"))
    exact = await core.list_namespaced_event(
        "test", resource_version=then, resource_version_match="Exact"
    )
    assert [e.metadata.name for e in exact.items] == ["a"]
    assert exact.metadata.resource_version == then
    for rv in ("0", then):
        latest = await core.list_namespaced_event("test", resource_version=rv)
        assert [e.metadata.name for e in latest.items] == ["a", "b"]
    api.compact()
    with pytest.raises(ApiException) as info:
        await core.list_namespaced_event(
            "test", resource_version=then, resource_version_match="Exact"
        )
    assert info.value.status == 410
    api.settings.future_rv_wait_s = 0.1
    future = str(api.store.resource_version + 100)
    with pytest.raises(ApiException) as too_large:
        await core.list_namespaced_event("test", resource_version=future)
    body = json.loads(too_large.value.body)
    assert (too_large.value.status, body["reason"]) == (504, "Timeout")
    assert "Too large resource version" in body["message"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resource_version_match": "NotOlderThan"}, "resourceVersionMatch"),
        ({"resource_version": "0", "resource_version_match": "Exact"}, "resourceVersionMatch"),
        ({"resource_version": "5", "resource_version_match": "Exact", "_continue": "x"},
         "resourceVersionMatch"),
        ({"send_initial_events": True}, "sendInitialEvents"),
    ],
)  # fmt: skip
async def test_invalid_list_options_are_422(
    kube: client.ApiClient, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ApiException) as info:
        await client.CoreV1Api(kube).list_namespaced_event("test", **kwargs)
    body = json.loads(info.value.body)
    assert (info.value.status, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == field


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=podinfo", ["a", "c"]),
        ("app==podinfo,tier=web", ["a"]),
        ("app!=podinfo", ["b", "d"]),
        ("tier in (web,api)", ["a", "b", "c"]),
        ("tier notin (web)", ["b", "c", "d"]),
        ("tier", ["a", "b", "c"]),
        ("!tier", ["d"]),
    ],
)
async def test_label_selectors(
    api: SimulatedApiServer, kube: client.ApiClient, selector: str, expected: list[str]
) -> None:
    labels = {
        "a": {"app": "podinfo", "tier": "web"},
        "b": {"app": "frontend", "tier": "api"},
        "c": {"app": "podinfo", "tier": "api"},
        "d": {},
    }
    for name, value in labels.items():
        api.store.create("events", flagger_event(name, labels=value))
    found = await client.CoreV1Api(kube).list_namespaced_event("test", label_selector=selector)
    assert [e.metadata.name for e in found.items] == expected


async def test_field_selectors_per_view(api: SimulatedApiServer, kube: client.ApiClient) -> None:
    api.store.create("events", flagger_event("a", canary="podinfo"))
    api.store.create("events", flagger_event("b", canary="frontend", type="Warning"))
    core = client.CoreV1Api(kube)
    found = await core.list_namespaced_event(
        "test", field_selector="involvedObject.kind=Canary,involvedObject.name=podinfo"
    )
    assert [e.metadata.name for e in found.items] == ["a"]
    found = await core.list_namespaced_event("test", field_selector="type!=Normal,source=flagger")
    assert [e.metadata.name for e in found.items] == ["b"]
    resp = await client.EventsV1Api(kube).list_namespaced_event(
        "test",
        field_selector="regarding.name=frontend,reportingController=flagger",
        _preload_content=False,
    )
    assert [i["metadata"]["name"] for i in json.loads(await resp.read())["items"]] == ["b"]
    with pytest.raises(ApiException) as core_bad:
        await core.list_namespaced_event("test", field_selector="regarding.name=x")
    body = json.loads(core_bad.value.body)
    assert (core_bad.value.status, body["message"]) == (
        400,
        "field label not supported: regarding.name",
    )
    with pytest.raises(ApiException) as cr_bad:
        await client.CustomObjectsApi(kube).list_cluster_custom_object(
            *CANARY, "canaries", field_selector="status.phase=Failed"
        )
    assert cr_bad.value.status == 400
    assert json.loads(cr_bad.value.body)["message"] == "field label not supported: status.phase"


async def test_events_v1_view_renames_fields_of_the_same_object(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    stored = api.store.create("events", flagger_event("a", count=3))
    resp = await client.EventsV1Api(kube).read_namespaced_event("a", "test", _preload_content=False)
    v1 = json.loads(await resp.read())
    assert v1["apiVersion"] == "events.k8s.io/v1"
    assert v1["regarding"]["name"] == "podinfo"
    assert v1["note"] == "message of a"
    assert v1["deprecatedCount"] == 3
    assert v1["deprecatedSource"] == {"component": "flagger"}
    assert v1["reportingController"] == "flagger"
    assert v1["eventTime"] is None
    assert "message" not in v1
    assert "involvedObject" not in v1
    assert v1["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]


async def test_canary_status_changes_only_through_the_status_subresource(
    api: SimulatedApiServer, kube: client.ApiClient
) -> None:
    custom = client.CustomObjectsApi(kube)
    api.store.create("canaries", {"metadata": {"name": "c", "namespace": "test"}, "spec": {}})
    body = {"status": {"phase": "Progressing"}}
    ignored = await custom.patch_namespaced_custom_object(*CANARY, "test", "canaries", "c", body)
    assert "status" not in ignored
    patched = await custom.patch_namespaced_custom_object_status(
        *CANARY, "test", "canaries", "c", body
    )
    assert patched["status"] == {"phase": "Progressing"}
    assert patched["metadata"]["generation"] == 1  # status writes do not bump generation
