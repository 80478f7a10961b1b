"""The daemon end to end against the real kube-apiserver and the simulator (``fresh_kube_target``).

The simulated Flagger plays the scripted scenarios into an in-memory store; ``StoreMirror``
performs each write again through the API server's REST API (as Flagger's client does), and the
real ``App`` follows it through a kubeconfig, with the Events, Canaries and Flagger-metrics
sources, delivering into a ``jsonl`` receiver. Expected transitions are the scenarios' own,
written down with them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.test_daemon import Seen, config_with, expected, notified, running, settle
from tests.realcluster.target import KubeTarget
from tests.support.kube_mirror import StoreMirror

from canarywatch.clock import SystemClock
from canarywatch.config import Config
from canarywatch.simulator import Store
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator
from canarywatch.simulator.metrics_server import FlaggerMetricsServer
from canarywatch.simulator.scenarios import SCENARIOS, play_all, realtime_pace

SPEED = 300.0
"""Flagger time runs this much faster than wall time; a little slower than the simulator-only
e2e tests, since every write now crosses a real API server."""


@dataclass
class Rig:
    target: KubeTarget
    sim: FlaggerSimulator
    mirror: StoreMirror
    metrics_url: str


@asynccontextmanager
async def rig(target: KubeTarget) -> AsyncIterator[Rig]:
    clock = SystemClock()
    store = Store(clock=clock, event_ttl=None)  # the API server applies its own Event TTL
    sim = FlaggerSimulator(store, clock, cluster_name="sim")
    async with (
        FlaggerMetricsServer(sim) as metrics,
        StoreMirror(store, target.rest).running() as mirror,
    ):
        yield Rig(target, sim, mirror, metrics.metrics_url)
    assert mirror.errors == [], mirror.errors


def config_for(
    rig: Rig,
    out: Path,
    state: Path,
    *,
    metrics: bool = True,
    leader_identity: str | None = None,
    extra: str = "",
) -> Config:
    return config_with(
        rig.target.cluster_yaml("sim", own_namespace=False),
        out,
        state,
        metrics_url=rig.metrics_url if metrics else None,
        leader_identity=leader_identity,
        extra=extra,
    )


async def test_every_scenario_is_notified_exactly_once(
    fresh_kube_target: KubeTarget, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with rig(fresh_kube_target) as r, running(config_for(r, out, tmp_path / "state")):
        await play_all(r.sim, realtime_pace(SPEED))
        await r.mirror.drained()
        want = expected(SCENARIOS)
        got = await settle(out, want, timeout_s=30)
    assert got == want


async def test_start_up_on_existing_objects_is_state_not_news(
    fresh_kube_target: KubeTarget, tmp_path: Path
) -> None:
    """A rollout that ended before canarywatch started is not re-announced; what happens next is
    notified once; a restart with the same state dir repeats nothing."""
    out = tmp_path / "out.jsonl"
    async with rig(fresh_kube_target) as r:
        await play_all(r.sim, realtime_pace(SPEED), names=["rollback_failed_checks"])
        await r.mirror.drained()
        await asyncio.sleep(1.2)  # older than the catch-up window below
        config = config_for(r, out, tmp_path / "state", extra="catch_up_window: 1s\n")
        c = r.sim.create_canary("test", "fresh", analysis=PODINFO_ANALYSIS)
        async with running(config):
            await asyncio.sleep(1.0)
            assert notified(out) == Counter()  # the old rollback is state, not news
            c.new_revision("abc123")
            await r.mirror.drained()
            want: Seen = Counter({("test/fresh", "revision-detected", ""): 1})
            assert await settle(out, want, timeout_s=15) == want
        async with running(config):
            await asyncio.sleep(2.0)
            assert notified(out) == want  # restarted with the same state: nothing repeated
            c.start_analysis()
            await r.mirror.drained()
            want += Counter(
                {
                    ("test/fresh", "analysis-started", ""): 1,
                    ("test/fresh", "weight-advanced", "10"): 1,
                }
            )
            got = await settle(out, want, timeout_s=15)
    assert got == want


async def test_a_restart_mid_rollout_repeats_nothing_and_misses_nothing(
    fresh_kube_target: KubeTarget, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    async with rig(fresh_kube_target) as r:
        config = config_for(r, out, tmp_path / "state")
        c = r.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
        async with running(config):
            c.new_revision("aaa111")
            c.start_analysis()
            await r.mirror.drained()
            await settle(out, Counter({("test/podinfo", "weight-advanced", "10"): 1}), timeout_s=15)
        # Down: Flagger goes on without canarywatch.
        c.advance()
        c.halt_metric("request-success-rate", 96.12)
        await r.mirror.drained()
        async with running(config):
            for value in (93.0, 92.0, 91.0, 90.0):
                c.halt_metric("request-success-rate", value)
            c.rollback("failed-checks")
            await r.mirror.drained()
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
            got = await settle(out, want, timeout_s=20)
    assert got == want
