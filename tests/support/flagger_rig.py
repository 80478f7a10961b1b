"""Real Flagger against the real API server, and the parts of a cluster it needs around it.

Nothing runs pods here, so ``DeploymentStandIn`` does what the Deployment controller and the
kubelet would: it sets each Deployment's status (observedGeneration, replicas, updated, ready and
available replicas, the Available and Progressing conditions) once its spec is seen, and can hold
one back as not ready or past its progress deadline. ``MetricExporter`` serves the metric that
a ``MetricTemplate`` asks the real Prometheus about (good, bad or no values); ``GateServer``
answers Flagger's webhooks (confirm-rollout, confirm-promotion, pre-rollout, rollback).

``RealFlagger`` runs ``cmd/flagger`` as built by ``tests/realcluster/build.sh`` with
``-mesh-provider=kubernetes`` (blue/green, no mesh), its event webhook pointed at canarywatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from tests.support.kube_apiserver import built_binary
from tests.support.kube_rest import KubeApiError, KubeRest
from tests.support.ports import free_port

FLAGGER_VERSIONS = ("v1.44.0", "v1.37.0")


def flagger_crds(version: str) -> list[dict[str, Any]]:
    """Flagger's own CRDs (Canary, MetricTemplate, AlertProvider) from its module, which the
    build left in the Go module cache; read at test time, never committed."""
    gomodcache = subprocess.run(
        ["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(gomodcache) / f"github.com/fluxcd/flagger@{version}/artifacts/flagger/crd.yaml"
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class DeploymentStandIn:
    """The Deployment controller and kubelet for one namespace, as far as Flagger can tell."""

    rest: KubeRest
    namespace: str
    hold: dict[str, str] = field(default_factory=dict)
    """Deployment name -> ``not-ready`` (no replica becomes available) or ``deadline``
    (Progressing=False, ProgressDeadlineExceeded)."""
    freeze: dict[str, tuple[int, str]] = field(default_factory=dict)
    """Deployment name -> ``(generation, mode)``: a later generation (a new template, e.g.
    Flagger's promotion copying the canary's spec to the primary) gets ``mode``."""
    writes: int = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[DeploymentStandIn]:
        task = asyncio.create_task(self._loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            listed = await self.rest.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments")
            for deployment in listed["items"]:
                with contextlib.suppress(KubeApiError):  # a conflict: next round
                    await self._reconcile(deployment)
            await asyncio.sleep(0.2)

    def _desired(self, deployment: dict[str, Any]) -> dict[str, Any]:
        spec, meta = deployment["spec"], deployment["metadata"]
        replicas = int(spec.get("replicas", 1))
        mode = self.hold.get(meta["name"])
        frozen = self.freeze.get(meta["name"])
        if frozen is not None and int(meta["generation"]) > frozen[0]:
            mode = frozen[1]
        old = {c["type"]: c for c in deployment.get("status", {}).get("conditions", [])}

        def condition(kind: str, status: str, reason: str, message: str) -> dict[str, Any]:
            previous = old.get(kind)
            same = previous is not None and (previous["status"], previous["reason"]) == (
                status,
                reason,
            )
            now = _now()
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": previous["lastUpdateTime"] if same else now,
                "lastTransitionTime": previous["lastTransitionTime"] if same else now,
            }

        available = 0 if mode in ("not-ready", "deadline") else replicas
        progressing = (
            condition("Progressing", "False", "ProgressDeadlineExceeded", "progress deadline")
            if mode == "deadline"
            else condition("Progressing", "True", "NewReplicaSetAvailable", "rolled out")
        )
        available_condition = (
            condition("Available", "True", "MinimumReplicasAvailable", "has minimum")
            if available >= replicas
            else condition("Available", "False", "MinimumReplicasUnavailable", "no minimum")
        )
        status: dict[str, Any] = {
            "observedGeneration": meta["generation"],
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": [available_condition, progressing],
        }
        if available < replicas:
            status["unavailableReplicas"] = replicas - available
        return {k: v for k, v in status.items() if v != 0}

    async def _reconcile(self, deployment: dict[str, Any]) -> None:
        desired = self._desired(deployment)
        current = deployment.get("status", {})
        if {k: v for k, v in current.items() if k != "conditions"} == {
            k: v for k, v in desired.items() if k != "conditions"
        } and [(c["type"], c["status"], c["reason"]) for c in current.get("conditions", [])] == [
            (c["type"], c["status"], c["reason"]) for c in desired["conditions"]
        ]:
            return
        deployment["status"] = desired
        name = deployment["metadata"]["name"]
        await self.rest.put(
            f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{name}/status", deployment
        )
        self.writes += 1


@asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block exits; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


class MetricExporter:
    """``/metrics`` with ``canary_success_rate{namespace,deployment}`` at ``value`` (``None``:
    the series is absent, so Prometheus has no values)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float | None] = {}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _metrics(self, _: web.Request) -> web.Response:
        lines = ["# TYPE canary_success_rate gauge"]
        for (namespace, deployment), value in sorted(self.values.items()):
            if value is not None:
                lines.append(
                    f'canary_success_rate{{namespace="{namespace}",deployment="{deployment}"}} '
                    f"{value}"
                )
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[MetricExporter]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        async with _serving(app) as self.url:
            yield self


class GateServer:
    """Flagger's webhooks: ``/gate/<name>`` answers 200 while ``open[name]``, else 403; every
    call is recorded with its payload."""

    def __init__(self) -> None:
        self.open: dict[str, bool] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.url = ""

    async def _gate(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        with contextlib.suppress(ValueError):
            self.calls.append((name, await request.json()))
        return web.Response(status=200 if self.open.get(name, False) else 403, text=name)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[GateServer]:
        app = web.Application()
        app.router.add_post("/gate/{name}", self._gate)
        async with _serving(app) as self.url:
            yield self


class RealFlagger:
    """``flagger`` (one built version) as a subprocess; its log goes to ``workdir``."""

    def __init__(self, version: str, workdir: Path) -> None:
        self.version = version
        self.binary = built_binary(f"flagger-{version}")
        self.workdir = workdir
        self.port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self.log = workdir / f"flagger-{version}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @asynccontextmanager
    async def running(
        self, *, kubeconfig: Path, namespace: str, event_webhook: str, prometheus_url: str
    ) -> AsyncIterator[RealFlagger]:
        argv = [
            str(self.binary),
            f"-kubeconfig={kubeconfig}",
            "-mesh-provider=kubernetes",
            f"-namespace={namespace}",
            f"-port={self.port}",
            f"-event-webhook={event_webhook}",
            f"-metrics-server={prometheus_url}",
            "-control-loop-interval=1s",
            "-log-level=info",
            "-cluster-name=real",
        ]
        self.process = await asyncio.to_thread(self._spawn, argv)
        try:
            await self._wait_healthy()
            yield self
        finally:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(self.process.wait, 10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    await asyncio.to_thread(self.process.wait)

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(  # our own build, fixed arguments
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")},
            )  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def _wait_healthy(self) -> None:
        assert self.process is not None
        async with aiohttp.ClientSession() as http, asyncio.timeout(60):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"flagger exited:\n{self.log_text()[-3000:]}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/healthz") as reply:
                        if reply.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
