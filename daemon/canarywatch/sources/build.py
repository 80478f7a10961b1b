"""Config -> unstarted sources: what ``run`` and ``record`` watch, built the same way.

``build_sources`` makes one Events and one Canaries source per cluster (as configured), and the
Flagger metrics source (its targets configured and, in scrape mode, discovered); nothing runs
until the caller starts them (``app.start_sources``). Each watch source reports its cluster's
reachability to a shared ``ClusterReachability``, whose self-events go to ``emit_event`` like
the metrics source's own (``record`` ignores them: they are not observations).

``build_leader`` is the leader elector of ``leader_election``, on the lease's cluster.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from kubernetes_asyncio import client as kube_client

from canarywatch.clock import Clock
from canarywatch.config import Config
from canarywatch.config.clusters import ClusterSettings
from canarywatch.logs import get_logger
from canarywatch.normalise.self_events import ClusterReachability
from canarywatch.sources.base import EmitEvent
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.flagger_discovery import discover_flagger_targets
from canarywatch.sources.flagger_metrics import (
    FlaggerMetricsSettings,
    FlaggerMetricsSource,
    MetricsMode,
    MetricsTarget,
)
from canarywatch.sources.kube_events import KubeEventsSource
from canarywatch.sources.kubeconfig import ClusterAccess, build_configuration
from canarywatch.sources.leader import LeaderElector
from canarywatch.sources.prometheus import TLSOptions, http_auth
from canarywatch.sources.watch import OnCatchUp, OnReachability, WatchSettings, link_peers

KubeSource = KubeEventsSource | CanariesSource
CatchUpMarker = Callable[[str, str], Awaitable[None]]
"""``(cluster, source name)``: awaited by a watch source before it passes on a backlog
(the daemon's is ``Runner.catching_up``)."""


@dataclass(slots=True)
class Sources:
    """What ``build_sources`` made: the Kubernetes watch sources with their cluster's name,
    the Canaries ones among them again (they know which Canary targets which workload), the
    Flagger metrics source if any."""

    kube: list[tuple[str, KubeSource]] = field(default_factory=list)
    canaries: list[CanariesSource] = field(default_factory=list)
    metrics: FlaggerMetricsSource | None = None

    def canary_for_workload(self, namespace: str, workload: str) -> str | None:
        """Flagger's metrics name the target workload; the Canary that targets it, if known."""
        for source in self.canaries:
            name = source.workload_to_canary(namespace, workload)
            if name is not None:
                return name
        return None

    def currency_by_cluster(self) -> dict[str, list[tuple[str, asyncio.Event, Callable[[], bool]]]]:
        """Each cluster's Kubernetes sources as ``(name, current, behind)``: after an outage,
        a relist (or a resumed watch) by one while another is behind holds the cluster until
        they are all current again (``Runner.regroup_after_gaps``; see ``WatchedSource``)."""
        currency: dict[str, list[tuple[str, asyncio.Event, Callable[[], bool]]]] = {}
        for cluster, source in self.kube:
            currency.setdefault(cluster, []).append((source.name, source.current, source.is_behind))
        return currency

    def listed_by_cluster(self) -> dict[str, list[asyncio.Event]]:
        """Each cluster's Kubernetes sources' "listed" markers: the start-up backlog of a
        cluster is replayed once they are all set (``Runner.hold_until_listed``)."""
        listed: dict[str, list[asyncio.Event]] = {}
        for cluster, source in self.kube:
            listed.setdefault(cluster, []).append(source.listed)
        return listed


async def build_sources(
    config: Config,
    sources: Sources,
    *,
    clock: Clock,
    http: aiohttp.ClientSession,
    emit_event: EmitEvent,
    on_catch_up: CatchUpMarker | None = None,
) -> None:
    """Every configured source, unstarted, into ``sources``; self-events to ``emit_event``.

    ``sources`` is filled in place so that what the caller wired to it before (the
    normaliser's ``canary_for_workload``) sees the sources once they exist. The Kubernetes
    sources of one cluster are linked as peers (an answer to one ends the others' backoff), and
    each awaits ``on_catch_up(cluster, source name)`` before passing on a backlog (a relist,
    or what a watch resumed after a failure replays)."""
    reachability = ClusterReachability()
    for cluster in config.clusters:
        first = len(sources.kube)
        configuration = await build_configuration(cluster_access(cluster))
        namespaces = await _namespaces(cluster, configuration)
        if namespaces == []:
            get_logger("app").warning(
                "cluster_without_namespaces",
                cluster=cluster.name,
                selector=cluster.namespace_selector,
                detail="the namespace selector matches no namespace: nothing is watched there",
            )
            continue
        if cluster.watch_events:
            sources.kube.append(
                (
                    cluster.name,
                    KubeEventsSource(
                        configuration,
                        cluster=cluster.name,
                        namespaces=namespaces,
                        api=cluster.events_api,
                        clock=clock,
                        settings=watch_settings(cluster),
                        log=get_logger("source.kube_events").bind(cluster=cluster.name),
                        on_reachability=_reporter(reachability, cluster.name, clock, emit_event),
                        on_catch_up=_catch_up_marker(
                            on_catch_up, cluster.name, KubeEventsSource.name
                        ),
                    ),
                )
            )
        if cluster.watch_canaries:
            canaries = CanariesSource(
                configuration,
                cluster=cluster.name,
                namespaces=namespaces,
                label_selector=cluster.canary_label_selector or None,
                clock=clock,
                settings=watch_settings(cluster),
                log=get_logger("source.canaries").bind(cluster=cluster.name),
                on_reachability=_reporter(reachability, cluster.name, clock, emit_event),
                on_catch_up=_catch_up_marker(on_catch_up, cluster.name, CanariesSource.name),
            )
            sources.kube.append((cluster.name, canaries))
            sources.canaries.append(canaries)
        link_peers([source for _, source in sources.kube[first:]])
    sources.metrics = await _metrics_source(config, clock=clock, http=http, emit_event=emit_event)


async def _metrics_source(
    config: Config, *, clock: Clock, http: aiohttp.ClientSession, emit_event: EmitEvent
) -> FlaggerMetricsSource | None:
    """The Flagger metrics source of ``metrics_source``: ``None`` when off or without targets."""
    metrics = config.metrics_source
    if metrics.mode == "off":
        return None
    default_cluster = config.clusters[0].name if config.clusters else config.cluster
    targets = [
        MetricsTarget(name=t.name, url=t.url, match=t.match, cluster=t.cluster or default_cluster)
        for t in metrics.targets
    ]
    if metrics.mode == "scrape" and metrics.discover:
        for cluster in config.clusters:
            try:
                targets += await discover_flagger_targets(
                    await build_configuration(cluster_access(cluster)),
                    cluster=cluster.name,
                    label_selector=metrics.discover_selector,
                    log=get_logger("source.flagger_discovery"),
                )
            except (kube_client.ApiException, aiohttp.ClientError, TimeoutError) as exc:
                get_logger("source.flagger_discovery").warning(
                    "flagger_discovery_failed", cluster=cluster.name, error=type(exc).__name__
                )
    if not targets:
        get_logger("source.flagger_metrics").warning(
            "metrics_source_without_targets", detail="nothing discovered, nothing configured"
        )
        return None
    settings = FlaggerMetricsSettings(
        targets=tuple(targets),
        mode=MetricsMode(metrics.mode),
        prometheus_url=metrics.prometheus_url,
        auth=http_auth(metrics.bearer_token, metrics.basic_auth),
        tls=TLSOptions.from_config(metrics.tls),
        interval_s=metrics.interval,
        timeout_s=metrics.timeout,
        down_after=metrics.down_after,
        up_after=metrics.up_after,
    )
    return FlaggerMetricsSource(
        settings,
        http=http,
        clock=clock,
        log=get_logger("source.flagger_metrics"),
        emit_event=emit_event,
    )


def _catch_up_marker(marker: CatchUpMarker | None, cluster: str, source: str) -> OnCatchUp | None:
    """The ``on_catch_up`` of one watch source: ``marker`` with its cluster and name bound."""
    if marker is None:
        return None

    async def catching_up() -> None:
        await marker(cluster, source)

    return catching_up


def _reporter(
    reachability: ClusterReachability, cluster: str, clock: Clock, emit_event: EmitEvent
) -> OnReachability:
    """The ``on_reachability`` of one watch source of ``cluster`` (each source gets its own)."""
    me = object()

    async def changed(reachable: bool, reason: str) -> None:
        event = reachability.changed(
            cluster, me, reachable=reachable, reason=reason, at=clock.now()
        )
        if event is not None:
            await emit_event(event)

    return changed


def watch_settings(cluster: ClusterSettings) -> WatchSettings:
    """The cluster's watch timings from the configuration (the rest: ``WatchSettings``' own)."""
    return WatchSettings(
        silent_stream_s=cluster.silent_stream, watch_start_timeout_s=cluster.watch_start_timeout
    )


def cluster_access(cluster: ClusterSettings) -> ClusterAccess:
    """How to reach ``cluster``'s API server, as ``build_configuration`` takes it."""
    return ClusterAccess(
        mode=cluster.connection,
        kubeconfig=str(cluster.kubeconfig) if cluster.kubeconfig else None,
        context=cluster.context,
        host=cluster.host,
    )


async def _namespaces(
    cluster: ClusterSettings, configuration: kube_client.Configuration
) -> list[str] | None:
    """The namespaces to watch: ``None`` for all; the list plus what the selector matches."""
    if not cluster.namespace_selector:
        return list(cluster.namespaces) or None
    async with kube_client.ApiClient(configuration) as api_client:
        found = await kube_client.CoreV1Api(api_client).list_namespace(
            label_selector=cluster.namespace_selector, _request_timeout=10
        )
    selected = {ns.metadata.name for ns in found.items}
    return sorted(selected | set(cluster.namespaces))


async def lease_configuration(config: Config) -> kube_client.Configuration:
    """The API client configuration of the cluster holding the leader-election Lease
    (``leader_election.cluster``, the first cluster by default)."""
    wanted = config.leader_election.cluster or config.clusters[0].name
    cluster = next(c for c in config.clusters if c.name == wanted)
    return await build_configuration(cluster_access(cluster))


async def build_leader(
    config: Config,
    *,
    clock: Clock,
    on_started_leading: Callable[[], Awaitable[None]],
    on_stopped_leading: Callable[[], Awaitable[None]],
) -> LeaderElector | None:
    """The leader elector of ``leader_election``, unstarted; ``None`` when it is disabled."""
    le = config.leader_election
    if not le.enabled:
        return None
    return LeaderElector(
        await lease_configuration(config),
        name=le.lease_name,
        namespace=le.lease_namespace,
        identity=le.identity or default_identity(),
        lease_duration_s=le.lease_duration,
        renew_deadline_s=le.renew_deadline,
        retry_period_s=le.retry_period,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
        clock=clock,
        log=get_logger("leader"),
    )


def default_identity() -> str:
    """This replica's name in the Lease: the pod's name (``POD_NAME``), else the host's."""
    return os.environ.get("POD_NAME") or socket.gethostname()
