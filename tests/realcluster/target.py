"""One API server under test, real or simulated, seen the same way by every test."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.kube_apiserver import RealControlPlane
from tests.support.kube_rest import KubeRest

from canarywatch.simulator import SimulatedApiServer, Store

SIMULATOR_TOKEN = "simulator-accepts-any-token"


def simulated_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "sim", "cluster": {"server": url}}],
                "users": [{"name": "tester", "user": {"token": SIMULATOR_TOKEN}}],
                "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "tester"}}],
                "current-context": "sim",
            }
        )
    )
    return path


@dataclass
class KubeTarget:
    """``kind`` is ``real`` or ``simulated``; ``namespace`` is this test's own (created)."""

    kind: str
    url: str
    kubeconfig: Path
    namespace: str
    rest: KubeRest
    plane: RealControlPlane | None = None
    simulator: SimulatedApiServer | None = None

    @classmethod
    @asynccontextmanager
    async def real(cls, plane: RealControlPlane, namespace: str) -> AsyncIterator[KubeTarget]:
        async with KubeRest(plane.url, plane.token, plane.ca_file) as rest:
            await rest.ensure_namespace(namespace)
            yield cls("real", plane.url, plane.kubeconfig, namespace, rest, plane=plane)

    @classmethod
    @asynccontextmanager
    async def simulated(
        cls, api: SimulatedApiServer, kubeconfig: Path, namespace: str
    ) -> AsyncIterator[KubeTarget]:
        async with KubeRest(api.url, SIMULATOR_TOKEN) as rest:
            await rest.ensure_namespace(namespace)
            yield cls("simulated", api.url, kubeconfig, namespace, rest, simulator=api)

    def cluster_yaml(self, name: str = "test", *, own_namespace: bool = True) -> str:
        """The ``clusters:`` list of a canarywatch config reaching this server as a user would:
        through a kubeconfig; only this test's namespace, or (``own_namespace=False``) all."""
        text = (
            f"clusters:\n  - name: {name}\n    connection: kubeconfig\n"
            f'    kubeconfig: "{self.kubeconfig}"\n'
        )
        if own_namespace:
            text += f"    namespaces: [{self.namespace}]\n"
        return text

    async def compact(self, *, rebuild_watch_cache: bool = False) -> None:
        """Make every resourceVersion seen so far too old.

        Real server: etcd compaction at the current revision; kube-apiserver's watch cache
        still serves watches from its own window, so ``rebuild_watch_cache`` also restarts the
        API server (as a control-plane upgrade does), after which old RVs get 410. Simulator:
        its ``compact()``, which has the same effect on both lists and watches.
        """
        if self.plane is not None:
            plane = self.plane
            await asyncio.to_thread(plane.compact_etcd)
            if rebuild_watch_cache:
                await asyncio.to_thread(plane.stop_apiserver)
                await asyncio.to_thread(plane.start_apiserver)
        elif self.simulator is not None:
            self.simulator.compact()


@asynccontextmanager
async def open_target(
    kind: str, tmp_path: Path, real_plane: Callable[[], RealControlPlane]
) -> AsyncIterator[KubeTarget]:
    """A ``KubeTarget`` of ``kind`` (``simulated`` or ``real``) with a fresh namespace of its
    own; ``real_plane()`` gives the running control plane (only asked for when ``real``)."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"
    if kind == "real":
        async with KubeTarget.real(real_plane(), namespace) as real:
            yield real
        return
    async with SimulatedApiServer(Store()) as api:
        kubeconfig = simulated_kubeconfig(tmp_path / "kubeconfig", api.url)
        async with KubeTarget.simulated(api, kubeconfig, namespace) as simulated:
            yield simulated
