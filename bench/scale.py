"""Scale: a fleet-sized day through the pipeline, and a daemon start-up on a big cluster.

1. **A simulated day**: 10,000 canaries in 500 namespaces, each promoting one new revision
   (10 transitions) whose Events are delivered ten times each (relists, reconnects and
   ``MODIFIED`` re-deliveries that are *not* news): 1,000,000 observations through normalise ->
   correlate -> inhibit -> route -> group on virtual time (replay-style, generated lazily, in
   memory). Each notification is recorded in a REAL ``SqliteStateStore`` (notification log) and
   the changed canaries' correlator snapshots are written through once per virtual minute, as
   the daemon does. Reported: observations/s, peak RSS (``ru_maxrss``, whole process), state
   size on disk.
2. **Start-up**: the real daemon (``App``) against a ``SimulatedApiServer`` already holding
   50,000 Events (about 5,000 canaries' past rollouts, last seen two hours ago). Reported: time
   to ready (every source listed), time until the 50,000 listed Events were all processed, and
   how many were announced: must be 0 (``catch_up_window: 10m``: state, not news).

Targets: peak RSS < 150 MB, ready < 5 s. ``BENCH_QUICK=1`` divides every size by 10.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import resource
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.latency import bench_config, running, sink_server
from canarywatch.app import App
from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.identity import fingerprint
from canarywatch.model import CanaryRef, Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.pipeline.correlate import Correlator
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.store import format_time
from canarywatch.state import DB_FILENAME, SqliteStateStore

QUICK = os.environ.get("BENCH_QUICK") == "1"
DIVISOR = 10 if QUICK else 1
CANARIES = 10_000 // DIVISOR
NAMESPACES = 500 // DIVISOR
DELIVERIES = 10
"""How often each Event reaches the daemon (the first time is news, the rest are not)."""
STARTUP_EVENTS = 50_000 // DIVISOR
TARGET_RSS_MB = 150.0
TARGET_READY_S = 5.0
DAY = datetime(2026, 8, 4, tzinfo=UTC)


def rollout_messages(name: str, ns: str) -> list[str]:
    ref = f"{name}.{ns}"
    return [
        f"New revision detected! Scaling up {ref}",
        f"Starting canary analysis for {ref}",
        *(f"Advance {ref} canary weight {w}" for w in (10, 20, 30, 40, 50)),
        f"Copying {ref} template spec to {name}-primary.{ns}",
        "Routing all traffic to primary",
        f"Promotion completed! Scaling down {ref}",
    ]


def event_object(ns: str, name: str, step: int, message: str, at: datetime) -> dict[str, Any]:
    stamp = format_time(at)
    return {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {
            "name": f"{name}.{step:04x}",
            "namespace": ns,
            "uid": f"ev-{ns}-{name}-{step}",
            "resourceVersion": str(step + 1),
        },
        "involvedObject": {
            "kind": "Canary",
            "apiVersion": "flagger.app/v1beta1",
            "namespace": ns,
            "name": name,
            "uid": f"canary-{ns}-{name}",
        },
        "reason": "Synced",
        "message": message,
        "source": {"component": "flagger"},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": "Normal",
        "eventTime": None,
        "reportingComponent": "flagger",
        "reportingInstance": "",
    }


def day(canaries: int = CANARIES) -> Iterator[Observation]:
    """The day's observations in time order, generated lazily (never all in memory)."""
    minutes = 24 * 60
    starts: dict[int, list[int]] = {}
    for i in range(canaries):
        starts.setdefault((i * minutes) // canaries, []).append(i)
    active: list[tuple[int, int]] = []  # (canary, start minute)
    for minute in range(minutes + 12):
        active = [(i, s) for i, s in active if minute - s < 10]
        active += [(i, minute) for i in starts.get(minute, [])]
        base = DAY + timedelta(minutes=minute)
        for slot, (i, start) in enumerate(active):
            ns, name = f"ns-{i % NAMESPACES}", f"app-{i}"
            step = minute - start
            message = rollout_messages(name, ns)[step]
            at = base + timedelta(milliseconds=slot)
            obj = event_object(ns, name, step, message, at)
            for repeat in range(DELIVERIES):
                yield Observation(
                    at=at + timedelta(microseconds=repeat),
                    source=SourceName.KUBERNETES_EVENTS,
                    data={"type": "ADDED" if repeat == 0 else "MODIFIED", "object": obj},
                )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def simulated_day(state_dir: Path) -> dict[str, float]:
    correlator = Correlator()
    pipeline = policy.build_pipeline(None, correlator=correlator)
    clock: VirtualClock | None = None
    observations = notifications = 0
    with SqliteStateStore(state_dir / DB_FILENAME, clock=SystemClock()) as store:
        changed: set[CanaryRef] = set()
        minute: datetime | None = None

        def snapshot() -> None:
            states = {}
            for ref in changed:
                snap = correlator.snapshot_canary(ref)
                if snap is not None:
                    states[snap[0]] = snap[1]
            if states:
                store.save_canary_states(states)
            changed.clear()

        started = time.perf_counter()
        for obs in day():
            if clock is None:
                clock = VirtualClock(obs.at)
            clock.advance_to(obs.at)
            now = clock.now()
            observations += 1
            for event in pipeline.observe(obs, now):
                changed.add(event.canary)
            for n in pipeline.due(now):
                notifications += 1
                store.record_notification(
                    n.receiver,
                    n.group_key,
                    n.status,
                    [fingerprint(e) for e in n.events],
                    now,
                )
            this_minute = now.replace(second=0, microsecond=0)
            if this_minute != minute:
                snapshot()
                minute = this_minute
        snapshot()
        elapsed = time.perf_counter() - started
        db_bytes = sum(
            p.stat().st_size for p in state_dir.iterdir() if p.name.startswith(DB_FILENAME)
        )
        live_bytes = store.size_bytes()
    return {
        "observations": observations,
        "transitions": pipeline.stats.transitions,
        "notifications": notifications,
        "seconds": elapsed,
        "per_s": observations / elapsed,
        "db_mb": db_bytes / 1e6,
        "live_mb": live_bytes / 1e6,
        "rss_mb": peak_rss_mb(),
    }


async def wait_observed(app: App, count: int, timeout_s: float = 300.0) -> None:
    """Poll the daemon's own counter until ``count`` Events were normalised (bounded)."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        seen = app.registry.get_sample_value(
            "canarywatch_observations_total", {"source": "kubernetes-events"}
        )
        if (seen or 0) >= count:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"the daemon did not process {count} Events in {timeout_s} s")


async def simulator_list_s(api_url: str) -> float:
    """How long the simulator alone takes to serve a paged list of every Event (500 a page,
    as the daemon asks): its share of the start-up time, not the daemon's."""
    started = time.perf_counter()
    token = ""
    async with aiohttp.ClientSession() as http:
        while True:
            query = {"limit": "500", "fieldSelector": "involvedObject.kind=Canary"}
            if token:
                query["continue"] = token
            async with http.get(f"{api_url}/api/v1/events", params=query) as r:
                body = await r.json()
            token = body["metadata"].get("continue") or ""
            if not token:
                return time.perf_counter() - started


async def startup(profiler: cProfile.Profile | None = None) -> dict[str, float]:
    """``profiler`` (``python -m bench --profile startup``) is enabled from the daemon's start
    until every listed Event was processed: not while the simulator's store is filled, nor while
    the simulator alone serves the list once."""
    clock = SystemClock()
    store = Store(clock=clock, history_limit=STARTUP_EVENTS + 1_000, event_ttl=None)
    past = clock.now() - timedelta(hours=2)
    per_canary = len(rollout_messages("x", "y"))
    loaded = 0
    i = 0
    while loaded < STARTUP_EVENTS:
        ns, name = f"ns-{i % NAMESPACES}", f"app-{i}"
        messages = rollout_messages(name, ns)[: min(per_canary, STARTUP_EVENTS - loaded)]
        objs = [
            event_object(ns, name, step, m, past + timedelta(minutes=step))
            for step, m in enumerate(messages)
        ]
        for obj in objs:
            del obj["metadata"]["uid"], obj["metadata"]["resourceVersion"]
        store.load("events", objs)
        loaded += len(objs)
        i += 1
    with tempfile.TemporaryDirectory(prefix="canarywatch-scale-") as state_dir:
        async with SimulatedApiServer(store) as api, sink_server() as sink:
            config = bench_config(
                api_url=api.url,
                sink_url=sink.url,
                state_dir=Path(state_dir),
                extra="catch_up_window: 10m\n",
            )
            list_s = await simulator_list_s(api.url)
            if profiler is not None:
                profiler.enable()
            app = App(config, listen=("127.0.0.1", 0))
            started = time.perf_counter()
            # The simulator copies its whole store for each page of the initial list: at 50,000
            # Events that alone takes minutes, so the bound here is generous.
            async with running(app, ready_timeout_s=1800.0):
                ready_s = time.perf_counter() - started
                await wait_observed(app, STARTUP_EVENTS)
                processed_s = time.perf_counter() - started
                if profiler is not None:
                    profiler.disable()
                await asyncio.sleep(1.0)  # anything wrongly announced would arrive now
                catch_up = app.registry.get_sample_value(
                    "canarywatch_events_suppressed_total", {"reason": "catch_up"}
                )
            announced = sink.requests
    return {
        "events": STARTUP_EVENTS,
        "canaries": i,
        "ready_s": ready_s,
        "list_s": list_s,
        "processed_s": processed_s,
        "announced": announced,
        "catch_up": catch_up or 0.0,
    }


def main() -> str:
    with tempfile.TemporaryDirectory(prefix="canarywatch-scale-") as state_dir:
        d = simulated_day(Path(state_dir))
    print(
        f"scale: simulated day, {CANARIES:,} canaries in {NAMESPACES} namespaces: "
        f"{d['observations']:,.0f} observations -> {d['transitions']:,.0f} transitions -> "
        f"{d['notifications']:,.0f} notifications in {d['seconds']:.1f} s "
        f"({d['per_s']:,.0f} observations/s, SQLite writes included)"
    )
    print(
        f"scale: peak RSS {d['rss_mb']:.0f} MB (target {TARGET_RSS_MB:.0f}: "
        f"{d['rss_mb'] / TARGET_RSS_MB:.2f}x of budget); state store {d['db_mb']:.1f} MB on disk "
        f"(db + WAL), {d['live_mb']:.1f} MB of live pages"
    )
    s = asyncio.run(startup())
    print(
        f"scale: start-up against {s['events']:,.0f} existing Events ({s['canaries']:,.0f} "
        f"canaries): ready in {s['ready_s']:.2f} s (target {TARGET_READY_S:.0f} s: "
        f"{s['ready_s'] / TARGET_READY_S:.2f}x; of which the simulator serving the paged list "
        f"alone takes {s['list_s']:.2f} s), all listed Events processed in "
        f"{s['processed_s']:.2f} s; re-announced: {s['announced']:.0f} "
        f"(recorded as state: {s['catch_up']:,.0f})"
    )
    quick = " (BENCH_QUICK)" if QUICK else ""
    return (
        f"scale{quick}: {d['observations']:,.0f} observations of {CANARIES:,} canaries at "
        f"{d['per_s']:,.0f}/s, peak RSS {d['rss_mb']:.0f} MB "
        f"({d['rss_mb'] / TARGET_RSS_MB:.2f}x of {TARGET_RSS_MB:.0f}), state {d['db_mb']:.1f} MB; "
        f"ready in {s['ready_s']:.2f} s on {s['events']:,.0f} Events "
        f"({s['ready_s'] / TARGET_READY_S:.2f}x of {TARGET_READY_S:.0f} s), "
        f"{s['announced']:.0f} re-announced"
    )
