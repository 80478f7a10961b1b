"""canarywatch's Events and Canaries sources, through the real kubernetes_asyncio client and a
kubeconfig, against the real kube-apiserver and the simulator (``kube_target``)."""

from __future__ import annotations

import asyncio

from kubernetes_asyncio import client
from tests.realcluster.target import KubeTarget
from tests.realcluster.test_protocol import canary_event
from tests.sources.test_kube_events_source import running, until

from canarywatch.model import Observation
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.kube_events import KubeEventsSource
from canarywatch.sources.kubeconfig import ClusterAccess, build_configuration
from canarywatch.sources.watch import WatchSettings

FAST = WatchSettings(
    timeout_seconds=2,
    read_slack_s=1.0,
    connect_timeout_s=2.0,
    request_timeout_s=5.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.5,
    slow_retry_s=0.5,
)


async def configuration(target: KubeTarget) -> client.Configuration:
    return await build_configuration(
        ClusterAccess(mode="kubeconfig", kubeconfig=str(target.kubeconfig)), environ={}
    )


def event_names(seen: list[Observation]) -> list[tuple[str, str, int]]:
    return [
        (o.data["type"], o.data["object"]["metadata"]["name"], o.data["object"].get("count", 0))
        for o in seen
    ]


async def test_events_existing_then_live_each_once(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_event(ns, canary_event(ns, "old"))
    await kube_target.rest.create_event(ns, canary_event(ns, "deploy", kind="Deployment"))
    source = KubeEventsSource(
        await configuration(kube_target), cluster="c", namespaces=[ns], settings=FAST
    )
    async with running(source) as seen:
        await until(source.listed.is_set)
        await kube_target.rest.create_event(ns, canary_event(ns, "new"))
        await kube_target.rest.merge_patch(f"/api/v1/namespaces/{ns}/events/old", {"count": 2})
        await until(lambda: len(seen) >= 3)
        await asyncio.sleep(2.5)  # across a server-side timeout and a resumed watch
    assert event_names(seen) == [("ADDED", "old", 1), ("ADDED", "new", 1), ("MODIFIED", "old", 2)]
    assert seen[0].data["initial"] is True
    assert "initial" not in seen[1].data
    assert seen[0].data["object"]["involvedObject"]["kind"] == "Canary"


async def test_events_k8s_io_view(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_event(ns, canary_event(ns, "a"))
    source = KubeEventsSource(
        await configuration(kube_target), api="events.k8s.io/v1", namespaces=[ns], settings=FAST
    )
    async with running(source) as seen:
        await until(source.listed.is_set)
        await kube_target.rest.create_event(ns, canary_event(ns, "b"))
        await until(lambda: len(seen) >= 2)
    objects = [o.data["object"] for o in seen]
    assert [o["metadata"]["name"] for o in objects] == ["a", "b"]
    for obj in objects:
        assert obj["apiVersion"] == "events.k8s.io/v1"
        assert obj["regarding"]["kind"] == "Canary"
        assert obj["note"].startswith("New revision detected!")
        assert obj["deprecatedCount"] == 1


async def test_relist_after_410_emits_nothing_twice(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_event(ns, canary_event(ns, "a"))
    source = KubeEventsSource(await configuration(kube_target), namespaces=[ns], settings=FAST)
    async with running(source) as seen:
        await until(source.listed.is_set)
        await kube_target.rest.create_event(ns, canary_event(ns, "b"))
        await until(lambda: len(seen) >= 2)
        # Writes the source does not see move the revision past its last RV, then compaction
        # makes that RV too old: its next watch gets 410 and it lists again. (etcd keeps the
        # revision it compacts at, so a watch from one below it still works: two writes.)
        for name in ("x", "y"):
            await kube_target.rest.create_event(ns, canary_event(ns, name, kind="Deployment"))
        await kube_target.compact(rebuild_watch_cache=True)
        await until(lambda: source.duplicates >= 2, within=20)
        await kube_target.rest.create_event(ns, canary_event(ns, "c"))
        await until(lambda: len(seen) >= 3)
        await asyncio.sleep(0.5)
    assert event_names(seen) == [("ADDED", "a", 1), ("ADDED", "b", 1), ("ADDED", "c", 1)]
    assert source.duplicates == 2  # a and b came again with the relist and were dropped


async def test_canary_crd_watch_emits_status_changes_only(kube_target: KubeTarget) -> None:
    ns = kube_target.namespace
    await kube_target.rest.create_canary(ns, "existing")
    await kube_target.rest.set_canary_status(ns, "existing", {"phase": "Succeeded"})
    source = CanariesSource(
        await configuration(kube_target), cluster="c", namespaces=[ns], settings=FAST
    )
    async with running(source) as seen:
        await until(source.listed.is_set)
        await kube_target.rest.create_canary(ns, "podinfo")
        await kube_target.rest.set_canary_status(
            ns, "podinfo", {"phase": "Progressing", "canaryWeight": 10}
        )
        await kube_target.rest.merge_patch(
            f"/apis/flagger.app/v1beta1/namespaces/{ns}/canaries/podinfo",
            {"metadata": {"labels": {"team": "shop"}}},
        )
        await kube_target.rest.set_canary_status(
            ns, "podinfo", {"phase": "Progressing", "canaryWeight": 20}
        )
        await until(lambda: len(seen) >= 4)
        await asyncio.sleep(0.5)
    summary = [
        (o.data["type"], o.data["object"]["metadata"]["name"], o.data["object"].get("status"))
        for o in seen
    ]
    assert summary == [
        ("ADDED", "existing", {"phase": "Succeeded"}),
        ("ADDED", "podinfo", None),
        ("MODIFIED", "podinfo", {"phase": "Progressing", "canaryWeight": 10}),
        ("MODIFIED", "podinfo", {"phase": "Progressing", "canaryWeight": 20}),
    ]
    assert seen[0].data["initial"] is True
    assert source.skipped == 1  # the label-only write
