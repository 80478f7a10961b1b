"""``sources.build``: config -> unstarted sources, shared by ``run`` and ``record``.

Nothing here reaches a cluster: host-mode clusters without a namespace selector are built
without a request, nothing is started, and discovery asks a port where nothing listens.
"""

from __future__ import annotations

import aiohttp
import pytest

from canarywatch.clock import VirtualClock
from canarywatch.config import parse_config
from canarywatch.model import CanaryEvent, Transition
from canarywatch.sources.build import (
    Sources,
    build_leader,
    build_sources,
    cluster_access,
    lease_configuration,
)
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.kube_events import KubeEventsSource
from canarywatch.testing import T0

TWO_CLUSTERS = (
    "clusters:\n"
    "  - {name: prod, connection: host, host: 'http://127.0.0.1:1/'}\n"
    "  - {name: lab, connection: host, host: 'http://127.0.0.1:2', watch_events: false}\n"
)


async def build(text: str) -> tuple[Sources, list[CanaryEvent]]:
    said: list[CanaryEvent] = []

    async def emit_event(event: CanaryEvent) -> None:
        said.append(event)

    sources = Sources()
    async with aiohttp.ClientSession() as http:
        await build_sources(
            parse_config(text), sources, clock=VirtualClock(T0), http=http, emit_event=emit_event
        )
    return sources, said


async def test_nothing_configured_builds_nothing() -> None:
    sources, _ = await build("")
    assert (sources.kube, sources.canaries, sources.metrics) == ([], [], None)
    assert sources.listed_by_cluster() == {}
    assert sources.canary_for_workload("test", "podinfo") is None


async def test_each_cluster_gets_the_watches_it_asks_for() -> None:
    sources, _ = await build(TWO_CLUSTERS)
    kinds = [(cluster, type(source)) for cluster, source in sources.kube]
    assert kinds == [
        ("prod", KubeEventsSource),
        ("prod", CanariesSource),
        ("lab", CanariesSource),
    ]
    assert len(sources.canaries) == 2
    listed = sources.listed_by_cluster()
    assert {cluster: len(events) for cluster, events in listed.items()} == {"prod": 2, "lab": 1}
    assert listed["lab"] == [sources.canaries[1].listed]


async def test_a_cluster_is_announced_unreachable_once_for_all_its_watches() -> None:
    sources, said = await build(TWO_CLUSTERS)
    prod = [source for cluster, source in sources.kube if cluster == "prod"]
    for source in prod:  # what each watch reports (``SourceHealth`` forwards it)
        await source._health.changed(False, "connection refused")
    assert [(str(e.canary), e.transition) for e in said] == [
        ("canarywatch/cluster-prod", Transition.CLUSTER_UNREACHABLE)
    ]
    for source in prod:
        await source._health.changed(True, "")
    assert [e.transition for e in said][1:] == [Transition.CLUSTER_REACHABLE]


async def test_the_metrics_source_has_its_targets_on_the_first_cluster_by_default() -> None:
    sources, _ = await build(
        TWO_CLUSTERS + "metrics_source:\n  mode: scrape\n  targets:\n"
        "    - {name: flagger, url: 'http://127.0.0.1:3/metrics'}\n"
        "    - {name: lab-flagger, url: 'http://127.0.0.1:4/metrics', cluster: lab}\n"
    )
    assert sources.metrics is not None
    targets = sources.metrics.settings.targets
    assert [(t.name, t.cluster) for t in targets] == [("flagger", "prod"), ("lab-flagger", "lab")]


async def test_a_metrics_source_that_discovers_no_target_is_not_built() -> None:
    sources, _ = await build(TWO_CLUSTERS + "metrics_source: {mode: scrape, discover: true}\n")
    assert sources.metrics is None


async def test_the_lease_lives_on_the_configured_cluster() -> None:
    config = parse_config(TWO_CLUSTERS + "leader_election: {enabled: true, cluster: lab}\n")
    assert cluster_access(config.clusters[1]).host == "http://127.0.0.1:2"
    assert (await lease_configuration(config)).host == "http://127.0.0.1:2"

    async def nothing() -> None:
        return None

    leader = await build_leader(
        config, clock=VirtualClock(T0), on_started_leading=nothing, on_stopped_leading=nothing
    )
    assert leader is not None
    disabled = await build_leader(
        parse_config(TWO_CLUSTERS),
        clock=VirtualClock(T0),
        on_started_leading=nothing,
        on_stopped_leading=nothing,
    )
    assert disabled is None


@pytest.mark.parametrize("pod_name", ["canarywatch-0", ""])
def test_the_replica_is_named_after_its_pod_else_its_host(
    pod_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from canarywatch.sources.build import default_identity

    monkeypatch.setenv("POD_NAME", pod_name)
    assert default_identity() == (pod_name or socket.gethostname())


async def test_a_clusters_watches_wake_each_other_and_report_their_currency() -> None:
    """After an outage the runner regroups a cluster (``currency_by_cluster``) and a source
    that gets an answer wakes its own cluster's other sources, never another cluster's."""
    sources, _ = await build(TWO_CLUSTERS)
    currency = sources.currency_by_cluster()
    assert {c: [name for name, _, _ in entries] for c, entries in currency.items()} == {
        "prod": ["kube_events", "canaries"],
        "lab": ["canaries"],
    }
    events, prod_canaries = (source for cluster, source in sources.kube if cluster == "prod")
    lab_canaries = sources.canaries[1]
    assert currency["prod"][0][1] is events.current
    assert currency["prod"][0][2]() is False  # never listed: the start-up hold covers it
    events.listed.set()
    assert currency["prod"][0][2]() is True  # listed, not current: behind
    prod_canaries._recovered()
    assert events.wake.is_set()
    assert not lab_canaries.wake.is_set()
