"""The real daemon against a misbehaving API server: nothing lost, nothing repeated.

Each seed plays two Flagger scenarios (one after the other, at 600x: one Flagger minute is
0.1 s) against ``SimulatedApiServer`` while a seeded chaos task programs faults at random
moments: 5xx/429 bursts on list and watch, streams that are dropped, truncated mid-line, ended
with an ``ERROR`` 410 or closed early, an etcd compaction (the next watch from an old RV gets
410 and relists), connections closed before any answer, slow answers. The daemon reaches the
simulator over HTTP with the real client and announces to a local webhook receiver.

Invariant: the multiset of announced ``(canary, transition, detail)`` equals the scenarios'
expected transitions. A relist re-delivers every Event and Canary; the correlator must treat
that as the same news, and nothing the scenario did while the daemon was disconnected may be
missed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest
from tests.resilience import (
    SOAK,
    Key,
    ScaledClock,
    announced,
    daemon_config,
    diff,
    expected,
    running_daemon,
    seeds,
    wait_for_count,
)
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.clock import SystemClock
from canarywatch.simulator import FaultPlan, SimulatedApiServer, Store, StreamAction
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import SCENARIOS, play_all, realtime_pace

SPEED = 600.0
"""The test's clock runs 600x: one Flagger minute (and a 60 s backoff) is 0.1 s of wall time."""
KICKS_PER_RUN = 6 if SOAK else 3
RESOURCES = ("events", "canaries")


class Cluster:
    """The simulated API server, restartable on the same port with the same store and plan."""

    def __init__(self, store: Store, plan: FaultPlan) -> None:
        self.store = store
        self.plan = plan
        self.api = SimulatedApiServer(store, faults=plan)
        self.port = 0
        self.requests: list[tuple[str, str]] = []

    async def start(self) -> None:
        self.api = SimulatedApiServer(self.store, faults=self.plan, port=self.port)
        await self.api.start()
        self.port = int(self.api.url.rsplit(":", 1)[1])

    async def stop(self) -> None:
        self.requests.extend(self.api.requests)
        await self.api.close()

    async def restart(self, down_s: float) -> None:
        """Every open watch ends; reconnects are refused for ``down_s``."""
        await self.stop()
        await asyncio.sleep(down_s)
        await self.start()


def program_fault(cluster: Cluster, rng: random.Random) -> str:
    """Program one random fault for the next requests; returns its description."""
    faults = cluster.plan
    resource = rng.choice(RESOURCES)
    kind = rng.choice(
        ["5xx", "429", "drop", "truncate", "error410", "close", "compact", "disconnect", "slow"]
    )
    if kind == "5xx":
        code = rng.choice((500, 503, 504))
        faults.status(code, verb=rng.choice(("list", "watch")), resource=resource, times=2)
    elif kind == "429":
        faults.status(429, retry_after=1, resource=resource, times=rng.randint(1, 3))
    elif kind == "drop":
        faults.stream(StreamAction.DROP, after_events=rng.randint(0, 3), resource=resource)
    elif kind == "truncate":
        faults.stream(StreamAction.TRUNCATE, after_events=rng.randint(0, 3), resource=resource)
    elif kind == "error410":
        faults.stream(StreamAction.ERROR, code=410, after_events=rng.randint(0, 3))
    elif kind == "close":
        faults.stream(StreamAction.CLOSE, after_events=rng.randint(1, 3), resource=resource)
    elif kind == "compact":
        # History gone: whoever reconnects from an older RV must relist (410 Gone).
        cluster.store.compact()
    elif kind == "disconnect":
        faults.disconnect(resource=resource, times=1)
    else:
        faults.delay(rng.uniform(0.05, 0.3), resource=resource, times=2)
    return f"{kind}:{resource}"


async def chaos(cluster: Cluster, rng: random.Random, log: list[str]) -> None:
    """A few kicks at random moments: faults programmed, then the API server restarted (open
    watches only meet a fault when they reconnect), sometimes with a random-5xx spell."""
    for _ in range(KICKS_PER_RUN):
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        for _ in range(rng.randint(1, 2)):
            log.append(program_fault(cluster, rng))
        if rng.random() < 0.3:
            cluster.plan.random(0.3, times=4, codes=(500, 503))
            log.append("random-5xx")
        await cluster.restart(down_s=rng.uniform(0.0, 0.2))
        log.append("restart")


def named_from_the_status(got: Counter[Key], want: Counter[Key]) -> bool:
    """The documented outcome of an Events watch that is down longer than ``NAME_WAIT`` (README,
    *Run the event webhook too*): each missing ``no-traffic`` was announced once as ``halted``,
    the Canary status's name for the same episode, and nothing else differs. Every kick here
    restarts the API server, so the Events watch reconnects with backoff each time (in soak runs
    for minutes of the daemon's scaled clock)."""
    lost, extra = want - got, got - want
    if not lost or any(t != "no-traffic" for _, t, _ in lost):
        return False
    return extra == Counter({(c, "halted", d): n for (c, _, d), n in lost.items()})


@pytest.mark.parametrize("seed", seeds())
async def test_faults_lose_and_repeat_nothing(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    names = rng.sample(sorted(SCENARIOS), 2)
    want = expected(names)
    clock = ScaledClock(SPEED)
    store = Store(clock=clock, seed=seed)
    cluster = Cluster(store, FaultPlan(seed))
    injected: list[str] = []
    async with run_webhook_receiver(path="/") as receiver:
        await cluster.start()
        try:
            config = daemon_config(
                api_url=cluster.api.url, hook_url=receiver.url, state_dir=tmp_path
            )
            async with running_daemon(config, clock=clock) as app:
                sim = FlaggerSimulator(store, clock, cluster_name="sim")
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(chaos(cluster, rng, injected))
                    tg.create_task(play_all(sim, clock.pace(), names=names))
                fired = sum(rule.fired for rule in cluster.plan.rules)
                cluster.plan.clear()
                await wait_for_count(receiver.requests, sum(want.values()), timeout_s=20.0)
                registry = app.registry
        finally:
            await cluster.stop()
        got = announced(r.json() for r in receiver.requests)

    if got != want and named_from_the_status(got, want):
        print(f"seed {seed}: no-traffic named by the Canary status (halted): {diff(got, want)}")
    else:
        assert got == want, f"seed {seed}, scenarios {names}, faults {injected}: {diff(got, want)}"
    assert fired > 0, f"no programmed fault was ever hit: {injected}"
    observed = registry.get_sample_value(
        "canarywatch_observations_total", {"source": "kubernetes-events"}
    )
    assert observed is not None
    assert observed > 0
    # Each restart made every watch reconnect; at least one list or watch per restart.
    assert sum(1 for verb, _ in cluster.requests if verb == "GET") > KICKS_PER_RUN


async def test_apiserver_restart_with_compaction_is_not_news(tmp_path: Path) -> None:
    """After a finished rollout the API server restarts and etcd compacts: the daemon's watches
    resume from a revision that is gone (410), so it relists and is re-delivered every Event and
    Canary. None of that is news: no notification comes of it."""
    clock = SystemClock()
    store = Store(clock=clock)
    names = ["rollback_failed_checks"]
    want = expected(names)
    async with run_webhook_receiver(path="/") as receiver:
        api = SimulatedApiServer(store)
        await api.start()
        port = int(api.url.rsplit(":", 1)[1])
        config = daemon_config(api_url=api.url, hook_url=receiver.url, state_dir=tmp_path)
        try:
            async with running_daemon(config):
                sim = FlaggerSimulator(store, clock, cluster_name="sim")
                await SCENARIOS[names[0]].run(sim, realtime_pace(SPEED))
                await wait_for_count(receiver.requests, sum(want.values()), timeout_s=15.0)
                before = len(receiver.requests)
                await api.close()  # ends every watch; the daemon's reconnects are refused
                store.compact()
                api = SimulatedApiServer(store, port=port)
                await api.start()
                # Both sources come back, and whoever's RV was compacted away relists.
                async with asyncio.timeout(20):
                    while not (
                        sum(1 for _, path in api.requests if "watch=" in path) >= 2
                        and any("watch=" not in path for _, path in api.requests)
                    ):
                        await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)
        finally:
            await api.close()
        got = announced(r.json() for r in receiver.requests)
    assert len(receiver.requests) == before
    assert got == want, diff(got, want)
