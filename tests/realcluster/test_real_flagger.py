"""Real Flagger end to end: its controller, built from github.com/fluxcd/flagger at two
releases, runs against the real kube-apiserver with ``-mesh-provider=kubernetes`` (blue/green),
its event webhook pointed at canarywatch, its ``/metrics`` scraped by canarywatch, and metric
checks answered by the real Prometheus scraping an exporter the test controls.

Flagger analyses at most every 10 s (it raises shorter intervals to 10 s), so one rollout takes
about a minute and a half; all scenarios therefore run at the same time, one canary each, in
one cluster per Flagger version (which is also the "canaries in parallel" scenario).

Each scenario writes down, before it runs, the transitions it must produce. Two kinds depend on
timing and are checked against what Flagger itself recorded instead: ``iteration-advanced`` (one
per "Advance … canary iteration n/m" Event occurrence) and ``not-ready`` (Flagger reports it when
it reads a Deployment before the stand-in updated its status: at most once per rollout).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_daemon import config_with, notified
from tests.resilience import announced, wait_for_count
from tests.resilience.test_crash_restart import Daemon, unique_by_idempotency_key
from tests.support.flagger_rig import (
    FLAGGER_VERSIONS,
    DeploymentStandIn,
    GateServer,
    MetricExporter,
    RealFlagger,
    flagger_crds,
)
from tests.support.kube_apiserver import RealControlPlane
from tests.support.kube_rest import KubeRest
from tests.support.ports import free_port
from tests.support.prometheus import run_prometheus
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.app import App
from canarywatch.cli.record import record
from canarywatch.config import Config

NS = "test"
RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"
SECRET = "flagger-intake-secret"
OPTIONAL = {"not-ready"}
"""Transitions whose presence depends on timing (Flagger's read vs the stand-in's write)."""

pytestmark = pytest.mark.needs_binaries


@dataclass
class FlaggerCluster:
    version: str
    plane: RealControlPlane
    rest: KubeRest
    standin: DeploymentStandIn
    exporter: MetricExporter
    gates: GateServer
    flagger: RealFlagger
    out: Path
    recording: Path

    async def deploy(self, name: str, revision: str) -> None:
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": {"revision": revision}},
                    "spec": {
                        "containers": [
                            {
                                "name": "app",
                                "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                                "ports": [{"containerPort": 9898}],
                            }
                        ]
                    },
                },
            },
        }
        await self.rest.post(f"/apis/apps/v1/namespaces/{NS}/deployments", body)

    async def new_revision(self, name: str, revision: str) -> None:
        await self.rest.merge_patch(
            f"/apis/apps/v1/namespaces/{NS}/deployments/{name}",
            {"spec": {"template": {"metadata": {"annotations": {"revision": revision}}}}},
        )

    async def create_canary(
        self, name: str, *, iterations: int = 3, threshold: int = 2,
        webhooks: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        analysis: dict[str, Any] = {
            "interval": "2s",
            "threshold": threshold,
            "iterations": iterations,
            "metrics": [
                {
                    "name": "success-rate",
                    "templateRef": {"name": "success-rate", "namespace": NS},
                    "thresholdRange": {"min": 99},
                    "interval": "30s",
                }
            ],
        }
        if webhooks:
            analysis["webhooks"] = webhooks
        canary = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "provider": "kubernetes",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "progressDeadlineSeconds": 30,
                "service": {"port": 9898},
                "analysis": analysis,
            },
        }
        await self.rest.post(f"/apis/flagger.app/v1beta1/namespaces/{NS}/canaries", canary)

    async def rollout(
        self, name: str, *, webhooks: list[dict[str, Any]] | None = None, iterations: int = 3,
        before_revision: Callable[[], Awaitable[None]] | None = None,
    ) -> None:  # fmt: skip
        """Create the Canary, wait for Flagger to initialise it, then ship revision 2."""
        await self.create_canary(name, webhooks=webhooks, iterations=iterations)
        await self.wait_phase(name, "Initialized")
        if before_revision is not None:
            await before_revision()
        await self.new_revision(name, "2")

    async def wait_iterations(self, name: str, at_least: int) -> None:
        async with asyncio.timeout(90):
            while True:
                canary = await self.rest.get(
                    f"/apis/flagger.app/v1beta1/namespaces/{NS}/canaries/{name}"
                )
                if int(canary.get("status", {}).get("iterations", 0)) >= at_least:
                    return
                await asyncio.sleep(0.2)

    async def events(self) -> list[dict[str, Any]]:
        listed = await self.rest.get(f"/api/v1/namespaces/{NS}/events")
        return [
            item
            for item in sorted(listed["items"], key=lambda i: i["metadata"]["creationTimestamp"])
            if item["involvedObject"].get("kind") == "Canary"
        ]

    async def phase(self, name: str) -> str:
        canary = await self.rest.get(f"/apis/flagger.app/v1beta1/namespaces/{NS}/canaries/{name}")
        return str(canary.get("status", {}).get("phase", ""))

    async def wait_phase(self, name: str, *phases: str, timeout_s: float = 90.0) -> str:
        try:
            async with asyncio.timeout(timeout_s):
                while (current := await self.phase(name)) not in phases:
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pytest.fail(
                f"{name} never reached {phases} (now {await self.phase(name)!r}); "
                f"flagger log:\n{self.flagger.log_text()[-3000:]}"
            )
        return current

    async def flagger_messages(self) -> list[str]:
        listed = await self.rest.get(f"/api/v1/namespaces/{NS}/events")
        return [
            item["message"]
            for item in sorted(listed["items"], key=lambda i: i["metadata"]["creationTimestamp"])
            if item["involvedObject"].get("kind") == "Canary"
        ]


@asynccontextmanager
async def flagger_cluster(
    version: str, tmp_path: Path, *, daemon: ProcessDaemon | None = None
) -> AsyncIterator[FlaggerCluster]:
    """``daemon``: runs canarywatch on the port Flagger's event webhook is given (default:
    the ``App`` in this process, plus ``canarywatch record`` beside it)."""
    flagger = RealFlagger(version, tmp_path)  # skips (fails under CI) when not built
    (tmp_path / "kube").mkdir()
    plane = RealControlPlane(tmp_path / "kube", crds=flagger_crds(version))
    await asyncio.to_thread(plane.start)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(asyncio.to_thread, plane.stop)
        rest = await stack.enter_async_context(KubeRest(plane.url, plane.token, plane.ca_file))
        await rest.ensure_namespace(NS)
        exporter = await stack.enter_async_context(MetricExporter().serving())
        gates = await stack.enter_async_context(GateServer().serving())
        prometheus = await stack.enter_async_context(
            run_prometheus(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: app\n"
                f"    static_configs: [{{targets: ['{exporter.url.removeprefix('http://')}']}}]\n",
                tmp_path / "prometheus",
            )
        )
        await rest.post(
            f"/apis/flagger.app/v1beta1/namespaces/{NS}/metrictemplates",
            {
                "apiVersion": "flagger.app/v1beta1",
                "kind": "MetricTemplate",
                "metadata": {"name": "success-rate", "namespace": NS},
                "spec": {
                    "provider": {"type": "prometheus", "address": prometheus.url},
                    "query": 'max(canary_success_rate{namespace="{{ namespace }}",'
                    'deployment="{{ target }}"})',
                },
            },
        )
        standin = await stack.enter_async_context(DeploymentStandIn(rest, NS).running())
        port = free_port()
        out = tmp_path / "out.jsonl"
        config = config_with(
            "clusters:\n  - name: sim\n    connection: kubeconfig\n"
            f'    kubeconfig: "{plane.kubeconfig}"\n',
            out,
            tmp_path / "state",
            metrics_url=flagger.metrics_url,
            extra=f"webhook_intake: {{enabled: true, secret: {{value: {SECRET}}}}}\n",
        )
        recording = tmp_path / "recording.jsonl"
        if daemon is None:
            await stack.enter_async_context(running_on(config, port))
            await stack.enter_async_context(recording_to(config, recording))
        else:
            await stack.enter_async_context(daemon(plane, flagger.metrics_url, port))
        await stack.enter_async_context(
            flagger.running(
                kubeconfig=plane.kubeconfig,
                namespace=NS,
                event_webhook=f"http://127.0.0.1:{port}/v1/flagger/events?token={SECRET}",
                prometheus_url=prometheus.url,
            )
        )
        yield FlaggerCluster(
            version, plane, rest, standin, exporter, gates, flagger, out, recording
        )


def transitions(out: Path, canary: str) -> Counter[tuple[str, str]]:
    return Counter({(t, d): n for (c, t, d), n in notified(out).items() if c == f"{NS}/{canary}"})


Seen = Counter[tuple[str, str]]


@asynccontextmanager
async def recording_to(config: Config, path: Path) -> AsyncIterator[None]:
    """``canarywatch record`` beside the daemon: what real Flagger produced, for replay."""
    stop = asyncio.Event()
    task = asyncio.create_task(record(config, path, stop=stop))
    try:
        yield
    finally:
        stop.set()
        await task


@asynccontextmanager
async def running_on(config: Config, port: int) -> AsyncIterator[App]:
    """The daemon listening on ``port`` (Flagger is told its webhook URL before it starts)."""
    app = App(config, listen=("127.0.0.1", port))
    task = asyncio.create_task(app.run(), name="daemon")
    try:
        async with asyncio.timeout(30):
            while not app.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.05)
        yield app
    finally:
        app.stop()
        async with asyncio.timeout(30):
            await task


async def settled(out: Path, canary: str, want: Seen) -> Seen:
    """Until everything expected arrived (bounded), and 2 s more so a duplicate would show."""
    try:
        async with asyncio.timeout(20):
            while want - transitions(out, canary):
                await asyncio.sleep(0.2)
    except TimeoutError:
        pass
    await asyncio.sleep(2.0)
    return transitions(out, canary)


def without_optional(got: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    return Counter({k: n for k, n in got.items() if k[0] not in OPTIONAL})


def assert_once_each(got: Seen, want: Seen, messages: list[str]) -> None:
    optional = {k: n for k, n in got.items() if k[0] in OPTIONAL}
    assert without_optional(got) == want, f"optional seen: {optional}\nflagger said: {messages}"
    assert all(n == 1 for n in optional.values()) or optional == {}, optional


Scenario = Callable[[FlaggerCluster, str], Awaitable[Seen]]


def core(*items: tuple[str, str]) -> Seen:
    return Counter(items)


PROMOTION = core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                 ("promoting", ""), ("finalising", ""), ("promoted", ""))  # fmt: skip


async def successful_promotion(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0
    await fc.rollout(name)
    await fc.wait_phase(name, "Succeeded")
    return PROMOTION.copy()


async def failed_metric_checks(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 50.0
    await fc.rollout(name)
    await fc.wait_phase(name, "Failed")
    return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                ("halted", ""), ("rolled-back", ""))  # fmt: skip


async def no_values(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = None
    await fc.rollout(name)
    await fc.wait_phase(name, "Failed")
    return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                ("no-traffic", ""), ("rolled-back", ""))  # fmt: skip


async def confirm_promotion_gate(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0
    hook = {"name": "gate", "type": "confirm-promotion", "url": f"{fc.gates.url}/gate/{name}"}
    await fc.rollout(name, webhooks=[hook], before_revision=None)
    await fc.wait_phase(name, "WaitingPromotion")
    await asyncio.sleep(12)  # a closed gate stays closed for a tick: no repeat
    fc.gates.open[name] = True
    await fc.wait_phase(name, "Succeeded")
    return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                ("awaiting-approval", "promotion"), ("approved", "promotion"),
                ("promoting", ""), ("finalising", ""), ("promoted", ""))  # fmt: skip


async def rollback_webhook(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0
    hook = {"name": "rollback", "type": "rollback", "url": f"{fc.gates.url}/gate/{name}"}
    await fc.rollout(name, webhooks=[hook], iterations=10)
    await fc.wait_iterations(name, 1)
    fc.gates.open[name] = True
    await fc.wait_phase(name, "Failed")
    return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                ("rolled-back", ""))  # fmt: skip


async def canary_progress_deadline(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0

    async def stall() -> None:
        fc.standin.hold[name] = "deadline"

    await fc.rollout(name, before_revision=stall)
    await fc.wait_phase(name, "Failed")
    return core(("initialized", ""), ("revision-detected", ""), ("rolled-back", ""))


async def primary_not_ready_in_promotion(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0

    async def freeze_primary() -> None:
        primary = await fc.rest.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-primary")
        fc.standin.freeze[f"{name}-primary"] = (primary["metadata"]["generation"], "deadline")

    await fc.rollout(name, before_revision=freeze_primary)
    await fc.wait_phase(name, "Failed")
    if fc.version == "v1.37.0":
        # Before v1.44 Flagger has no "promotion failed": it rolls back (to the unhealthy
        # primary) with "Canary failed!".
        return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                    ("promoting", ""), ("rolled-back", ""))  # fmt: skip
    return core(("initialized", ""), ("revision-detected", ""), ("analysis-started", ""),
                ("promoting", ""), ("promotion-failed", ""))  # fmt: skip


async def new_revision_during_analysis(fc: FlaggerCluster, name: str) -> Seen:
    fc.exporter.values[(NS, name)] = 100.0
    await fc.rollout(name)
    await fc.wait_iterations(name, 1)
    await fc.new_revision(name, "3")
    await fc.wait_phase(name, "Succeeded", timeout_s=180)
    return core(("initialized", ""), ("revision-detected", ""), ("revision-detected", ""),
                ("analysis-started", ""), ("analysis-started", ""),
                ("iteration-advanced", "1"),  # the first rollout's; the second passes 1 too
                ("promoting", ""), ("finalising", ""), ("promoted", ""))  # fmt: skip


SCENARIOS: dict[str, Scenario] = {
    "ok": successful_promotion,
    "bad": failed_metric_checks,
    "nodata": no_values,
    "gate": confirm_promotion_gate,
    "rbhook": rollback_webhook,
    "deadline": canary_progress_deadline,
    "primary": primary_not_ready_in_promotion,
    "rev": new_revision_during_analysis,
}


def iteration_oracle(events: list[dict[str, Any]], name: str) -> Seen:
    """``iteration-advanced n`` once for every n that Flagger recorded "Advance … canary
    iteration n/m" for (it repeats that Event while a gate holds the last iteration; a scenario
    whose second rollout passes the same n again adds that itself)."""
    pattern = re.compile(rf"^Advance {re.escape(name)}\.{NS} canary iteration (\d+)/\d+$")
    found = {
        match.group(1)
        for event in events
        if event["involvedObject"]["name"] == name
        and (match := pattern.match(event["message"])) is not None
    }
    return Counter({("iteration-advanced", n): 1 for n in found})


@pytest.mark.timeout(600)
@pytest.mark.parametrize("version", FLAGGER_VERSIONS)
async def test_every_scenario_against_real_flagger(version: str, tmp_path: Path) -> None:
    async with flagger_cluster(version, tmp_path) as fc:
        for name in SCENARIOS:
            await fc.deploy(name, "1")
        results = await asyncio.gather(
            *(scenario(fc, name) for name, scenario in SCENARIOS.items()),
            return_exceptions=True,
        )
        await asyncio.sleep(5)  # the last notifications, and a late duplicate would show
        events = await fc.events()
    expectations: dict[str, dict[str, int]] = {}
    failures = []
    for (name, _), result in zip(SCENARIOS.items(), results, strict=True):
        if isinstance(result, BaseException):
            failures.append(f"{name}: scenario failed: {result!r}")
            continue
        want = result + iteration_oracle(events, name)
        expectations[name] = {f"{t}|{d}": n for (t, d), n in sorted(want.items())}
        got = transitions(fc.out, name)
        not_ready = got.pop(("not-ready", ""), 0)
        said = [e["message"] for e in events if e["involvedObject"]["name"] == name]
        said += [f"[sent] {line}" for line in sent(fc.out, name)]
        if got != want or not_ready > got_rollouts(want):
            failures.append(
                f"{name}: got {dict(got)} (+{not_ready} not-ready)\n  want {dict(want)}"
                f"\n  flagger said {said}"
            )
    assert not failures, f"flagger {version}:\n" + "\n".join(failures)
    if os.environ.get("CANARYWATCH_RERECORD") == "1":
        save_recording(version, fc.recording, expectations)


def save_recording(version: str, recording: Path, expectations: dict[str, dict[str, int]]) -> None:
    """Keep what real Flagger produced under tests/recordings/flagger-<version>/ (replayed by
    tests/pipeline/test_real_flagger_recordings.py on machines without Go); see
    ``compact_recording``."""
    target = RECORDINGS / f"flagger-{version}"
    target.mkdir(parents=True, exist_ok=True)
    lines = recording.read_text(encoding="utf-8").splitlines()
    (target / "scenarios.jsonl").write_text(
        "\n".join(compact_recording(lines)) + "\n", encoding="utf-8"
    )
    (target / "expected.json").write_text(
        json.dumps({"namespace": NS, "canaries": expectations}, indent=2, sort_keys=True) + "\n",
        encoding="utf-8",
    )


def compact_recording(lines: list[str]) -> list[str]:
    """What canarywatch reads, without what it never looks at: ``/metrics`` scrapes keep only
    the ``flagger_*`` families (Go runtime and process metrics change every scrape), and a
    scrape equal to the one before is dropped (the metrics normaliser acts on changes only);
    objects lose ``metadata.managedFields``."""
    kept, previous = [], None
    for line in lines:
        if not line.startswith("{"):
            kept.append(line)
            continue
        obs = json.loads(line)
        if obs.get("source") == "flagger-metrics" and isinstance(obs.get("data"), str):
            families = [
                row for row in obs["data"].splitlines()
                if row.startswith(("flagger_", "# HELP flagger_", "# TYPE flagger_"))
            ]  # fmt: skip
            obs["data"] = "\n".join(families) + "\n"
            if obs["data"] == previous:
                continue
            previous = obs["data"]
        data = obs.get("data")
        if isinstance(data, dict) and isinstance(data.get("object"), dict):
            data["object"].get("metadata", {}).pop("managedFields", None)
        kept.append(json.dumps(obs, separators=(",", ":")))
    return kept


def sent(out: Path, name: str) -> list[str]:
    """Every notification about ``name``: what a failure message needs to be debugged."""
    lines = []
    for line in out.read_text().splitlines() if out.exists() else []:
        for event in json.loads(line)["events"]:
            if event["canary"] == f"{NS}/{name}":
                lines.append(
                    f"{event['transition']} {event['detail']} rollout {event['rollout']} "
                    f"{event['sources']} {event['message']}"
                )
    return lines


def got_rollouts(want: Seen) -> int:
    """At most one ``not-ready`` per rollout (readiness opens a condition), and one before."""
    return want[("revision-detected", "")] + 1


# -- kill -9 canarywatch in the middle of a real rollout ---------------------------------------

ProcessDaemon = Callable[[RealControlPlane, str, int], AbstractAsyncContextManager[None]]


def process_config_text(
    plane: RealControlPlane, hook_url: str, metrics_url: str, state: Path, port: int
) -> str:
    return (
        "receivers:\n"
        "  - name: hook\n"
        "    sink: webhook\n"
        f'    options: {{url: {{value: "{hook_url}"}}, timeout_s: 5}}\n'
        'route: {receiver: hook, group_by: ["..."], group_wait: 0s, group_interval: 0s}\n'
        f"state: {{dir: {str(state)!r}}}\n"
        f'clusters: [{{name: sim, connection: kubeconfig, kubeconfig: "{plane.kubeconfig}"}}]\n'
        "metrics_source: {mode: scrape, interval: 1s, timeout: 1s, targets: "
        f'[{{name: flagger, url: "{metrics_url}", cluster: sim}}]}}\n'
        f"webhook_intake: {{enabled: true, secret: {{value: {SECRET}}}}}\n"
        "dispatch: {attempt_timeout: 5s, retry_budget: 60s, drain_timeout: 5s}\n"
        f'server: {{listen: "127.0.0.1:{port}"}}\n'
        "log: {level: info, format: json}\n"
    )


@pytest.mark.timeout(600)
async def test_kill_9_canarywatch_mid_rollout_of_real_flagger(tmp_path: Path) -> None:
    """SIGKILL the daemon after the first iteration; Flagger goes on (its webhook calls fail
    meanwhile); the restarted daemon catches up from the Events, the Canary status and
    /metrics: every transition of the promotion announced once. (A delivery acknowledged but
    not yet recorded may be resent as the identical request, same idempotency key, which the
    receiver drops: at-least-once by design, never a second, different announcement.)"""
    version = FLAGGER_VERSIONS[0]
    daemons: list[Daemon] = []
    async with run_webhook_receiver(path="/") as receiver:

        @asynccontextmanager
        async def as_process(
            plane: RealControlPlane, metrics_url: str, port: int
        ) -> AsyncIterator[None]:
            path = tmp_path / "canarywatch.yaml"
            text = process_config_text(plane, receiver.url, metrics_url, tmp_path / "state", port)
            path.write_text(text, encoding="utf-8")
            daemon = Daemon(path, tmp_path)
            daemons.append(daemon)
            daemon.start()
            await daemon.wait_listed()
            try:
                yield
            finally:
                await daemon.stop()

        async with flagger_cluster(version, tmp_path, daemon=as_process) as fc:
            name = "ok"
            fc.exporter.values[(NS, name)] = 100.0
            await fc.deploy(name, "1")
            await fc.rollout(name)
            await fc.wait_iterations(name, 1)
            (daemon,) = daemons
            daemon.kill()
            await asyncio.sleep(12)  # at least one Flagger tick happens while nobody listens
            daemon.start()
            await daemon.wait_listed()
            await fc.wait_phase(name, "Succeeded")
            want = PROMOTION + iteration_oracle(await fc.events(), name)
            await wait_for_count(receiver.requests, sum(want.values()), timeout_s=30, settle_s=3)
    unique, resent = unique_by_idempotency_key(receiver.requests)
    got = Counter(
        {
            (t, d): n
            for (c, t, d), n in announced(r.json() for r in unique).items()
            if c == f"{NS}/ok"
        }
    )
    got.pop(("not-ready", ""), None)
    assert got == want, f"{resent} idempotent resends; got {dict(got)}, want {dict(want)}"
