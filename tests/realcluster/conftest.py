"""Fixtures for tests that run against a Kubernetes API server: the real one and the simulator.

``real_control_plane`` starts etcd and kube-apiserver once per session (skipped with a one-line
reason when the binaries are not built, failing under ``CI=true``). ``kube_target`` is
parametrised over ``simulated`` and ``real``: the same test runs against both, and where they
disagree the real server is right.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.realcluster.target import KubeTarget, open_target, simulated_kubeconfig
from tests.support.kube_apiserver import RealControlPlane

from canarywatch.simulator import SimulatedApiServer, Store


@pytest.fixture(scope="session")
def real_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealControlPlane]:
    with RealControlPlane(tmp_path_factory.mktemp("kube")) as plane:
        yield plane


@pytest.fixture(params=["simulated", "real"])
async def kube_target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KubeTarget]:
    def plane() -> RealControlPlane:
        return request.getfixturevalue("real_control_plane")  # type: ignore[no-any-return]

    async with open_target(request.param, tmp_path, plane) as target:
        yield target


@pytest.fixture(params=["simulated", "real"])
async def fresh_kube_target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[KubeTarget]:
    """Like ``kube_target``, but a control plane of this test's own (a few seconds more on the
    real side): for tests that watch every namespace or restart the daemon."""
    if request.param == "real":
        (tmp_path / "kube").mkdir()
        plane = RealControlPlane(tmp_path / "kube")
        await asyncio.to_thread(plane.start)
        try:
            async with KubeTarget.real(plane, "canarywatch") as target:
                yield target
        finally:
            await asyncio.to_thread(plane.stop)
        return
    async with SimulatedApiServer(Store()) as api:
        kubeconfig = simulated_kubeconfig(tmp_path / "kubeconfig", api.url)
        async with KubeTarget.simulated(api, kubeconfig, "canarywatch") as target:
            yield target
