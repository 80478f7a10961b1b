"""The watch protocol as kube-apiserver speaks it, and the simulator must too.

Raw HTTP against both servers (``kube_target``): what a client such as canarywatch's watch loop
relies on. Each difference found here was a simulator bug (see CHANGELOG, "simulator").
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from tests.realcluster.target import KubeTarget
from tests.support.kube_rest import KubeApiError


def canary_event(namespace: str, name: str, *, kind: str = "Canary") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "involvedObject": {
            "kind": kind,
            "namespace": namespace,
            "name": "podinfo",
            "apiVersion": "flagger.app/v1beta1" if kind == "Canary" else "apps/v1",
        },
        "reason": "Synced",
        "message": f"New revision detected! Scaling up podinfo.{namespace}",
        "type": "Normal",
        "count": 1,
        "source": {"component": "flagger"},
        "firstTimestamp": "2026-08-04T09:00:00Z",
        "lastTimestamp": "2026-08-04T09:00:00Z",
    }


async def watch_lines(
    target: KubeTarget, path: str, *, within: float, stop_after: int | None = None
) -> tuple[int, list[dict[str, Any]], float]:
    """``(status, events, seconds until the server ended the stream)``; ``-1`` seconds when the
    client stopped waiting first."""
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    status = 0
    try:
        async with asyncio.timeout(within):
            async with target.rest.stream(path) as reply:
                status = reply.status
                async for line in reply.content:
                    if line.strip():
                        events.append(json.loads(line))
                    if stop_after is not None and len(events) >= stop_after:
                        return status, events, -1.0
    except TimeoutError:
        return status, events, -1.0
    return status, events, time.monotonic() - started


def names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_cluster_scoped_create_and_crd_status_on_create(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    namespace = await kube_target.rest.get(f"/api/v1/namespaces/{ns}")
    assert namespace["metadata"]["name"] == ns
    created = await kube_target.rest.post(
        f"/apis/flagger.app/v1beta1/namespaces/{ns}/canaries",
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}},
            "status": {"phase": "Succeeded"},
        },
    )
    # The status subresource: .status in a create body is dropped.
    assert "status" not in created
    assert created["metadata"]["generation"] == 1
    updated = await kube_target.rest.set_canary_status(ns, "podinfo", {"phase": "Progressing"})
    assert updated["status"] == {"phase": "Progressing"}
    assert updated["metadata"]["generation"] == 1  # status writes do not bump generation


async def test_event_defaults_and_list_shape(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    created = await kube_target.rest.create_event(ns, canary_event(ns, "e1"))
    for name, default in (
        ("eventTime", None),
        ("reportingComponent", ""),
        ("reportingInstance", ""),
    ):
        assert name in created
        assert created[name] == default
    listed = await kube_target.rest.get(f"/api/v1/namespaces/{ns}/events")
    assert listed["kind"] == "EventList"
    assert isinstance(listed["metadata"]["resourceVersion"], str)
    item = listed["items"][0]
    assert "kind" not in item
    assert "apiVersion" not in item  # built-in list items carry neither
    canaries = await kube_target.rest.get(f"/apis/flagger.app/v1beta1/namespaces/{ns}/canaries")
    assert canaries["kind"] == "CanaryList"
    assert canaries["items"] == []


async def test_unsupported_field_selectors_are_400_with_the_server_wording(
    kube_target: KubeTarget,
) -> None:
    ns = kube_target.namespace
    for path, field in (
        (f"/api/v1/namespaces/{ns}/events", "spec.x"),
        (f"/apis/events.k8s.io/v1/namespaces/{ns}/events", "involvedObject.kind"),
        (f"/apis/flagger.app/v1beta1/namespaces/{ns}/canaries", "status.phase"),
    ):
        with pytest.raises(KubeApiError) as refused:
            await kube_target.rest.get(path, fieldSelector=f"{field}=x")
        assert refused.value.status == 400
        assert refused.value.body["message"] == f"field label not supported: {field}"


async def test_field_selector_involved_object_kind_filters_list_and_watch(
    kube_target: KubeTarget,
) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_event(ns, canary_event(ns, "canary-1"))
    await kube_target.rest.create_event(ns, canary_event(ns, "deploy-1", kind="Deployment"))
    listed = await kube_target.rest.get(
        f"/api/v1/namespaces/{ns}/events", fieldSelector="involvedObject.kind=Canary"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["canary-1"]
    rv = listed["metadata"]["resourceVersion"]
    watch = asyncio.create_task(
        watch_lines(
            kube_target,
            f"/api/v1/namespaces/{ns}/events?watch=true&resourceVersion={rv}"
            "&fieldSelector=involvedObject.kind%3DCanary&timeoutSeconds=5",
            within=10,
            stop_after=1,
        )
    )
    await asyncio.sleep(0.3)
    await kube_target.rest.create_event(ns, canary_event(ns, "deploy-2", kind="Deployment"))
    await kube_target.rest.create_event(ns, canary_event(ns, "canary-2"))
    status, events, _ = await watch
    assert status == 200
    assert names(events) == [("ADDED", "canary-2")]
    assert events[0]["object"]["kind"] == "Event"  # watch objects do carry kind/apiVersion


async def test_watch_start_points(kube_target: KubeTarget) -> None:
    """No RV: synthetic ADDED, then the initial-events-end bookmark (WatchList defaulting, on
    in 1.34); RV from a list: only what changed after it."""
    ns = kube_target.namespace
    created = await kube_target.rest.create_event(ns, canary_event(ns, "e1"))
    await kube_target.rest.merge_patch(f"/api/v1/namespaces/{ns}/events/e1", {"count": 2})
    base = f"/api/v1/namespaces/{ns}/events?watch=true&allowWatchBookmarks=true&timeoutSeconds=2"
    _, fresh, _ = await watch_lines(kube_target, base, within=6, stop_after=2)
    assert names(fresh) == [("ADDED", "e1"), ("BOOKMARK", "")]
    bookmark = fresh[1]["object"]
    assert bookmark["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert (
        bookmark["metadata"]["resourceVersion"] == fresh[0]["object"]["metadata"]["resourceVersion"]
    )
    rv = created["metadata"]["resourceVersion"]
    _, resumed, _ = await watch_lines(
        kube_target, f"{base}&resourceVersion={rv}", within=6, stop_after=1
    )
    assert names(resumed) == [("MODIFIED", "e1")]
    assert resumed[0]["object"]["count"] == 2


async def test_timeout_seconds_ends_the_stream_cleanly(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    listed = await kube_target.rest.get(f"/api/v1/namespaces/{ns}/events")
    rv = listed["metadata"]["resourceVersion"]
    status, events, lasted = await watch_lines(
        kube_target,
        f"/api/v1/namespaces/{ns}/events?watch=true&resourceVersion={rv}&timeoutSeconds=2",
        within=8,
    )
    assert status == 200
    assert events == []  # no final event of any kind
    assert 1.5 <= lasted <= 4.0


async def test_no_timed_bookmark_on_an_idle_watch(kube_target: KubeTarget) -> None:
    """Bookmarks are not guaranteed: kube-apiserver 1.34 sends none to an idle namespaced watch
    before its timeout (nor, measured by hand, within 75 s while other namespaces were being
    written), so nothing in canarywatch may wait for one. The simulator does the same unless a
    test asks it for bookmarks."""
    ns = kube_target.namespace
    listed = await kube_target.rest.get(f"/api/v1/namespaces/{ns}/events")
    rv = listed["metadata"]["resourceVersion"]
    await kube_target.rest.create_event(ns, canary_event(ns, "other", kind="Deployment"))
    _, events, lasted = await watch_lines(
        kube_target,
        f"/api/v1/namespaces/{ns}/events?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
        "&fieldSelector=involvedObject.kind%3DCanary&timeoutSeconds=4",
        within=10,
    )
    assert events == []
    assert lasted > 3.5


async def test_conflict_and_not_found_are_status_objects(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_event(ns, canary_event(ns, "e1"))
    stale = canary_event(ns, "e1") | {"metadata": {"name": "e1", "resourceVersion": "1"}}
    for method, path, body, code, reason in (
        ("PUT", f"/api/v1/namespaces/{ns}/events/e1", stale, 409, "Conflict"),
        ("GET", f"/api/v1/namespaces/{ns}/events/nope", None, 404, "NotFound"),
        ("POST", f"/api/v1/namespaces/{ns}/events", canary_event(ns, "e1"), 409, "AlreadyExists"),
    ):
        with pytest.raises(KubeApiError) as refused:
            await kube_target.rest.call(method, path, body)
        status_body = refused.value.body
        assert status_body["kind"] == "Status"
        assert (status_body["code"], status_body["reason"]) == (code, reason)


async def test_too_old_resource_version_is_an_error_event_410(kube_target: KubeTarget) -> None:
    """After compaction (and, on the real server, a restart that rebuilds its watch cache), a
    watch from an old RV gets HTTP 200 and one ERROR event with a 410 Status."""
    ns = kube_target.namespace
    created = await kube_target.rest.create_event(ns, canary_event(ns, "e1"))
    old_rv = created["metadata"]["resourceVersion"]
    for i in range(3):
        await kube_target.rest.create_event(ns, canary_event(ns, f"later-{i}"))
    await kube_target.compact(rebuild_watch_cache=True)
    status, events, _ = await watch_lines(
        kube_target,
        f"/api/v1/namespaces/{ns}/events?watch=true&resourceVersion={old_rv}&timeoutSeconds=3",
        within=8,
    )
    assert status == 200
    assert [e["type"] for e in events] == ["ERROR"]
    error = events[0]["object"]
    assert (error["kind"], error["code"], error["reason"]) == ("Status", 410, "Expired")
    # The watch cache says "too old resource version: N (M)"; after a restart the request goes
    # to etcd, which says "The resourceVersion for the provided watch is too old." Both occur.
    assert "too old" in error["message"].lower()
