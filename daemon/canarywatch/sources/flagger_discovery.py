"""Find Flagger's ``/metrics`` endpoints from its Service, in-cluster.

With ``metrics_source.discover: true`` canarywatch lists the Services labelled like Flagger's
(``app.kubernetes.io/name=flagger``, as the Helm chart and the kustomize base label it) in each
configured cluster once at start-up and scrapes ``http://<service>.<namespace>.svc:<port>/metrics``
(the port named ``http``, else the first port, else Flagger's default 8080). The cluster DNS name
only resolves from inside that cluster, so discovery is for canarywatch running in-cluster;
from an ops host, list the URLs in ``targets``. A Flagger installed later is picked up at the
next start.
"""

from __future__ import annotations

from typing import Any

import structlog
from kubernetes_asyncio import client

from canarywatch.sources.flagger_metrics import MetricsTarget

DEFAULT_SELECTOR = "app.kubernetes.io/name=flagger"
FLAGGER_PORT = 8080


async def discover_flagger_targets(
    configuration: client.Configuration,
    *,
    cluster: str,
    label_selector: str = DEFAULT_SELECTOR,
    timeout_s: float = 10.0,
    log: structlog.typing.FilteringBoundLogger | None = None,
) -> list[MetricsTarget]:
    """One scrape target per matching Service in ``cluster`` (empty when none is found)."""
    log = log or structlog.get_logger().bind(component="source.flagger_discovery")
    async with client.ApiClient(configuration) as api_client:
        core = client.CoreV1Api(api_client)
        services = await core.list_service_for_all_namespaces(
            label_selector=label_selector, _request_timeout=timeout_s
        )
    targets = [_target(svc, cluster) for svc in services.items]
    log.info(
        "flagger_discovered",
        cluster=cluster,
        targets=[t.name for t in targets],
        selector=label_selector,
    )
    return targets


def _target(service: Any, cluster: str) -> MetricsTarget:
    name = service.metadata.name
    namespace = service.metadata.namespace
    ports = list(service.spec.ports or []) if service.spec is not None else []
    named = [p for p in ports if p.name == "http"]
    port = (named or ports)[0].port if (named or ports) else FLAGGER_PORT
    return MetricsTarget(
        name=f"{cluster}/{namespace}/{name}",
        url=f"http://{name}.{namespace}.svc:{port}/metrics",
        cluster=cluster,
    )
