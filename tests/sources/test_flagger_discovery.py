"""Finding Flagger's /metrics from its Service, through the real client and the simulator."""

from __future__ import annotations

from kubernetes_asyncio import client

from canarywatch.simulator import SimulatedApiServer
from canarywatch.sources.flagger_discovery import discover_flagger_targets


def service(
    namespace: str, name: str, labels: dict[str, str], ports: list[dict[str, object]]
) -> dict[str, object]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"ports": ports},
    }


async def test_flaggers_service_becomes_a_scrape_target() -> None:
    async with SimulatedApiServer() as api:
        api.store.create(
            "services",
            service(
                "flagger-system",
                "flagger",
                {"app.kubernetes.io/name": "flagger"},
                [{"name": "http", "port": 8080, "protocol": "TCP"}],
            ),
        )
        api.store.create(
            "services",
            service("shop", "checkout", {"app": "checkout"}, [{"name": "http", "port": 80}]),
        )
        api.store.create(
            "services",
            service(
                "mesh",
                "flagger-linkerd",
                {"app.kubernetes.io/name": "flagger"},
                [{"name": "metrics", "port": 9090}],
            ),
        )
        targets = await discover_flagger_targets(client.Configuration(host=api.url), cluster="prod")
    assert sorted((t.name, t.url, t.cluster) for t in targets) == [
        ("prod/flagger-system/flagger", "http://flagger.flagger-system.svc:8080/metrics", "prod"),
        ("prod/mesh/flagger-linkerd", "http://flagger-linkerd.mesh.svc:9090/metrics", "prod"),
    ]


async def test_no_flagger_no_targets() -> None:
    async with SimulatedApiServer() as api:
        targets = await discover_flagger_targets(client.Configuration(host=api.url), cluster="prod")
    assert targets == []
