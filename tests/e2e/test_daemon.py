"""The real daemon against the simulated cluster, over HTTP, with the real kubernetes_asyncio.

Each test starts a ``SimulatedApiServer`` and a simulated Flagger, runs ``canarywatch.app.App``
against them with a ``jsonl`` receiver, plays scenarios at an accelerated pace and reads back
what the receiver got. Cross-source order can vary run to run (the Events and Canary watches
are two streams), so notifications are compared as multisets; each must appear exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.config import Config, parse_config
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator
from canarywatch.simulator.metrics_server import FlaggerMetricsServer
from canarywatch.simulator.scenarios import SCENARIOS, play_all, realtime_pace

SPEED = 600.0
"""Flagger time runs this much faster than wall time (one Flagger minute = 0.1 s)."""

Seen = Counter[tuple[str, str, str]]


@dataclass
class Cluster:
    api: SimulatedApiServer
    sim: FlaggerSimulator
    metrics_url: str


@asynccontextmanager
async def simulated_cluster() -> AsyncIterator[Cluster]:
    clock = SystemClock()
    store = Store(clock=clock)
    async with SimulatedApiServer(store) as api:
        sim = FlaggerSimulator(store, clock, cluster_name="sim")
        async with FlaggerMetricsServer(sim) as flagger:
            yield Cluster(api, sim, flagger.metrics_url)


def daemon_config(
    cluster: Cluster,
    out: Path,
    state: Path,
    *,
    metrics: bool = True,
    leader_identity: str | None = None,
    extra: str = "",
) -> Config:
    clusters = f"""clusters:
  - name: sim
    connection: host
    host: "{cluster.api.url}"
"""
    return config_with(
        clusters,
        out,
        state,
        metrics_url=cluster.metrics_url if metrics else None,
        leader_identity=leader_identity,
        extra=extra,
    )


def config_with(
    clusters_yaml: str,
    out: Path,
    state: Path,
    *,
    metrics_url: str | None = None,
    leader_identity: str | None = None,
    extra: str = "",
) -> Config:
    """A daemon config delivering everything to a ``jsonl`` receiver at ``out``."""
    text = f"""
cluster: sim
receivers:
  - name: capture
    sink: jsonl
    options: {{path: "{out}"}}
route:
  receiver: capture
  group_by: ["..."]
{clusters_yaml}
state: {{dir: "{state}"}}
server: {{listen: "127.0.0.1:0"}}
"""
    if metrics_url:
        text += f"""
metrics_source:
  mode: scrape
  interval: 1s
  timeout: 1s
  targets: [{{name: flagger, url: "{metrics_url}", cluster: sim}}]
"""
    if leader_identity:
        text += f"""
leader_election:
  enabled: true
  lease_namespace: ops
  identity: {leader_identity}
  lease_duration: 3s
  renew_deadline: 2s
  retry_period: 1s
"""
    return parse_config(text + extra)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[App]:
    app = App(config, listen=("127.0.0.1", 0))
    task = asyncio.create_task(app.run(), name="daemon")
    try:
        async with asyncio.timeout(20):
            while not app.ready.is_set():
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
        yield app
    finally:
        app.stop()
        async with asyncio.timeout(30):
            await task


def notified(path: Path) -> Seen:
    seen: Seen = Counter()
    if not path.exists():
        return seen
    for line in path.read_text(encoding="utf-8").splitlines():
        for event in json.loads(line)["events"]:
            seen[(event["canary"], event["transition"], event["detail"])] += 1
    return seen


def expected(names: Iterable[str]) -> Seen:
    want: Seen = Counter()
    for name in names:
        for canary, transitions in SCENARIOS[name].expected.items():
            for transition, detail in transitions:
                want[(canary, transition, detail)] += 1
    return want


async def settle(path: Path, want: Seen, *, timeout_s: float = 10.0) -> Seen:
    """Wait until the receiver has at least what is expected (or time runs out)."""
    async with asyncio.timeout(timeout_s):
        while True:
            got = notified(path)
            if not (want - got):
                await asyncio.sleep(1.5)  # and a little longer, so a duplicate would show
                return notified(path)
            await asyncio.sleep(0.1)


async def test_every_scenario_is_notified_exactly_once_through_all_sources(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, out, tmp_path / "state")
        async with running(config) as app:
            await play_all(cluster.sim, realtime_pace(SPEED))
            want = expected(SCENARIOS)
            got = await settle(out, want)
            stats = app.runner.pipeline.stats if app.runner else None
    assert got == want
    assert stats is not None
    assert stats.suppressed.get("duplicate", 0) > 0  # three sources, one notification each


async def test_readyz_turns_ready_only_after_every_source_listed(tmp_path: Path) -> None:
    async with simulated_cluster() as cluster:
        cluster.api.faults.delay(1.5, verb="list", times=2)
        config = daemon_config(cluster, tmp_path / "out.jsonl", tmp_path / "state", metrics=False)
        app = App(config, listen=("127.0.0.1", 0))
        task = asyncio.create_task(app.run())
        try:
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(10):
                    while app.web is None or not app.port:  # bound, not only built
                        await asyncio.sleep(0.01)
                url = f"http://127.0.0.1:{app.port}"
                async with http.get(f"{url}/readyz") as resp:
                    early = (resp.status, await resp.json())
                async with http.get(f"{url}/healthz") as resp:
                    assert resp.status == 200
                async with asyncio.timeout(10):
                    await app.ready.wait()
                async with http.get(f"{url}/readyz") as resp:
                    late = (resp.status, await resp.json())
                async with http.get(f"{url}/metrics") as resp:
                    metrics_text = await resp.text()
        finally:
            app.stop()
            await task
    assert early[0] == 503
    assert early[1]["checks"]["source:sim:kube_events"]["ready"] is False
    assert late[0] == 200
    assert all(check["ready"] for check in late[1]["checks"].values())
    assert "canarywatch_events_total" in metrics_text


async def test_a_restart_mid_rollout_repeats_nothing_and_misses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, out, state)
        c = cluster.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
        async with running(config):
            c.new_revision("aaa111")
            c.start_analysis()  # includes the first step: weight 10
            await settle(out, Counter({("test/podinfo", "weight-advanced", "10"): 1}))
        # Down: Flagger goes on without canarywatch.
        c.advance()
        c.halt_metric("request-success-rate", 96.12)
        async with running(config):
            for value in (93.0, 92.0, 91.0, 90.0):
                c.halt_metric("request-success-rate", value)
            c.rollback("failed-checks")
            want = Counter(
                {
                    ("test/podinfo", "revision-detected", ""): 1,
                    ("test/podinfo", "analysis-started", ""): 1,
                    ("test/podinfo", "weight-advanced", "10"): 1,
                    ("test/podinfo", "weight-advanced", "20"): 1,
                    ("test/podinfo", "halted", ""): 1,
                    ("test/podinfo", "rolled-back", ""): 1,
                }
            )
            got = await settle(out, want)
    assert got == want


async def test_leader_failover_no_gap_no_duplicate(tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    async with simulated_cluster() as cluster:
        a = daemon_config(cluster, out_a, tmp_path / "state-a", leader_identity="replica-a")
        b = daemon_config(cluster, out_b, tmp_path / "state-b", leader_identity="replica-b")
        c = cluster.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
        async with running(a) as leader_app:
            async with asyncio.timeout(10):
                while not (leader_app.leader and leader_app.leader.is_leader):
                    await asyncio.sleep(0.05)
            async with running(b) as standby_app:
                c.new_revision("bbb222")
                c.start_analysis()  # includes the first step: weight 10
                await settle(
                    out_a, Counter({("test/podinfo", "weight-advanced", "10"): 1}), timeout_s=10
                )
                assert standby_app.leader is not None
                assert not standby_app.leader.is_leader
                leader_app.stop()  # the leader goes away; the standby must take over
                await asyncio.sleep(0.5)
                c.advance()
                c.halt_metric("request-success-rate", 91.0)
                async with asyncio.timeout(15):
                    while not standby_app.leader.is_leader:
                        await asyncio.sleep(0.05)
                for value in (90.0, 89.0, 88.0, 87.0):
                    c.halt_metric("request-success-rate", value)
                c.rollback("failed-checks")
                want = Counter(
                    {
                        ("test/podinfo", "revision-detected", ""): 1,
                        ("test/podinfo", "analysis-started", ""): 1,
                        ("test/podinfo", "weight-advanced", "10"): 1,
                        ("test/podinfo", "weight-advanced", "20"): 1,
                        ("test/podinfo", "halted", ""): 1,
                        ("test/podinfo", "rolled-back", ""): 1,
                    }
                )
                try:
                    async with asyncio.timeout(15):
                        while want - (notified(out_a) + notified(out_b)):
                            await asyncio.sleep(0.1)
                except TimeoutError:
                    pytest.fail(f"a={notified(out_a)} b={notified(out_b)} want={want}")
                await asyncio.sleep(1.5)
    assert notified(out_a) + notified(out_b) == want
    assert notified(out_b)[("test/podinfo", "rolled-back", "")] == 1


@pytest.mark.parametrize("bad", ["route: {receiver: nobody}\n", "route: [\n"])
async def test_sighup_reload_rejects_a_bad_config_and_keeps_the_old(
    tmp_path: Path, bad: str
) -> None:
    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, tmp_path / "out.jsonl", tmp_path / "state", metrics=False)
        path = tmp_path / "config.yaml"
        path.write_text(bad, encoding="utf-8")
        app = App(config, config_path=path, listen=("127.0.0.1", 0))
        task = asyncio.create_task(app.run())
        try:
            async with asyncio.timeout(10):
                await app.ready.wait()
            assert app.runner is not None
            router = app.runner.pipeline.router
            assert await app.reload() is False
            assert app.runner.pipeline.router is router
        finally:
            app.stop()
            await task


async def test_an_unreachable_cluster_is_one_self_event_and_blocks_no_other(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    async with simulated_cluster() as cluster:
        dead = daemon_config(
            cluster,
            out,
            tmp_path / "state",
            metrics=False,
            extra="",
        )
        # A second cluster whose API server does not answer (nothing listens on the port).
        clusters = (
            *dead.clusters,
            type(dead.clusters[0])(name="gone", connection="host", host="http://127.0.0.1:9"),
        )
        config = dataclasses.replace(dead, clusters=clusters)
        app = App(config, listen=("127.0.0.1", 0))
        task = asyncio.create_task(app.run())
        try:
            c = cluster.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
            async with asyncio.timeout(20):
                while app.runner is None:
                    await asyncio.sleep(0.02)
            c.new_revision("ccc333")
            want = Counter(
                {
                    ("test/podinfo", "revision-detected", ""): 1,
                    ("canarywatch/cluster-gone", "cluster-unreachable", ""): 1,
                }
            )
            got = await settle(out, want, timeout_s=20)
        finally:
            app.stop()
            await task
    assert got == want


async def test_record_then_replay_gives_what_the_daemon_sent(tmp_path: Path) -> None:
    from canarywatch.cli.record import record
    from canarywatch.formats import recording
    from canarywatch.pipeline import policy
    from canarywatch.pipeline.replay import replay

    rec = tmp_path / "bug.jsonl"
    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, tmp_path / "out.jsonl", tmp_path / "state")
        stop = asyncio.Event()
        recorder = asyncio.create_task(record(config, rec, stop=stop))
        await asyncio.sleep(1.0)  # the sources list and start watching
        await play_all(cluster.sim, realtime_pace(SPEED), names=["rollback_failed_checks"])
        await asyncio.sleep(1.5)
        stop.set()
        count = await recorder
    observations = recording.read(rec)
    assert count == len(observations) > 0
    assert {o.source.value for o in observations} >= {"kubernetes-events", "canaries"}
    replayed: Seen = Counter()
    for n in replay(observations, policy.build_pipeline(config)):
        for e in n.events:
            replayed[(str(e.canary), e.transition.value, e.detail)] += 1
    assert replayed == expected(["rollback_failed_checks"])


async def test_tail_once_shows_the_running_daemons_canaries(tmp_path: Path) -> None:
    import subprocess
    import sys

    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, tmp_path / "out.jsonl", tmp_path / "state")
        async with running(config) as app:
            await play_all(cluster.sim, realtime_pace(SPEED), names=["rollback_failed_checks"])
            await settle(tmp_path / "out.jsonl", expected(["rollback_failed_checks"]))
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "canarywatch", "tail", "--once",
                 "--url", f"http://127.0.0.1:{app.port}"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "test/podinfo" in done.stdout
    assert "rolled-back" in done.stdout
    assert "Failed" in done.stdout
    assert "\x1b[" not in done.stdout  # not a terminal: plain text


async def test_a_namespace_selector_limits_what_is_watched(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    async with simulated_cluster() as cluster:
        cluster.api.store.create(
            "namespaces", {"metadata": {"name": "test", "labels": {"canarywatch": "on"}}}
        )
        cluster.api.store.create("namespaces", {"metadata": {"name": "shop", "labels": {}}})
        base = daemon_config(cluster, out, tmp_path / "state", metrics=False)
        selected = dataclasses.replace(
            base,
            clusters=(
                base.clusters[0].model_copy(update={"namespace_selector": "canarywatch=on"}),
            ),
        )
        watched = cluster.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
        ignored = cluster.sim.create_canary("shop", "checkout", analysis=PODINFO_ANALYSIS)
        async with running(selected):
            watched.new_revision("ddd444")
            ignored.new_revision("eee555")
            got = await settle(out, Counter({("test/podinfo", "revision-detected", ""): 1}))
    assert got == Counter({("test/podinfo", "revision-detected", ""): 1})
