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

3. **Memory per canary**: the Python heap the pipeline holds per canary after its day
   (``tracemalloc``, the slope between 1,000 and 1,500 canaries, so fixed costs cancel), and the
   import floor (peak RSS of a process that only imports the daemon) the peak RSS sits on.

Targets (issue 17): peak RSS <= 100 MB at 10,000 canaries, the daemon's own share of the
start-up < 2 s, 0 re-announced. ``BENCH_QUICK=1`` divides every size by 10.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
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
TARGET_RSS_MB = 100.0
TARGET_STARTUP_S = 2.0
"""The daemon's own share of the start-up: all listed Events processed, minus the time the
simulator (same process) alone needs to serve the paged list."""
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


def heap_bytes_per_canary(small: int = 1_000, large: int = 1_500) -> float:
    """Python heap the pipeline keeps per canary after each canary's day (``tracemalloc``):
    the slope between two fleet sizes, so the fixed costs cancel (no state store: its pages
    are SQLite's, outside the Python heap). Both sizes are past the Events normaliser's bounded
    memory of Event objects (8,192), a fixed cost at fleet size, not one per canary."""

    def held(canaries: int) -> int:
        tracemalloc.start()
        pipeline = policy.build_pipeline(None, correlator=Correlator())
        baseline = tracemalloc.get_traced_memory()[0]
        clock: VirtualClock | None = None
        for obs in day(canaries):
            clock = clock or VirtualClock(obs.at)
            clock.advance_to(obs.at)
            pipeline.observe(obs, clock.now())
            pipeline.due(clock.now())
        size = tracemalloc.get_traced_memory()[0] - baseline
        tracemalloc.stop()
        del pipeline
        return size

    return (held(large) - held(small)) / (large - small)


def import_floor_mb() -> float:
    """Peak RSS of a fresh process that imports the daemon and its command line, nothing else.

    Read as ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` of a child carries its parent's
    peak across fork and exec on Linux, so it would report this benchmark's own.
    """
    code = (
        "import canarywatch.app, canarywatch.cli.entry; "
        "print(next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


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
    floor = import_floor_mb()
    print(
        f"scale: simulated day, {CANARIES:,} canaries in {NAMESPACES} namespaces: "
        f"{d['observations']:,.0f} observations -> {d['transitions']:,.0f} transitions -> "
        f"{d['notifications']:,.0f} notifications in {d['seconds']:.1f} s "
        f"({d['per_s']:,.0f} observations/s, SQLite writes included)"
    )
    print(
        f"scale: peak RSS {d['rss_mb']:.0f} MB (target {TARGET_RSS_MB:.0f}: "
        f"{d['rss_mb'] / TARGET_RSS_MB:.2f}x); import floor {floor:.0f} MB (a process that only "
        f"imports the daemon), so {d['rss_mb'] - floor:.0f} MB above it; state store "
        f"{d['db_mb']:.1f} MB on disk (db + WAL), {d['live_mb']:.1f} MB of live pages"
    )
    per_canary = heap_bytes_per_canary()
    print(
        f"scale: Python heap held per canary after its day: {per_canary:,.0f} bytes "
        f"(tracemalloc, slope between 1,000 and 1,500 canaries); x {CANARIES:,} canaries = "
        f"{per_canary * CANARIES / 1e6:.0f} MB"
    )
    s = asyncio.run(startup())
    own_s = s["processed_s"] - s["list_s"]
    print(
        f"scale: start-up against {s['events']:,.0f} existing Events ({s['canaries']:,.0f} "
        f"canaries): ready in {s['ready_s']:.2f} s, all listed Events processed in "
        f"{s['processed_s']:.2f} s, of which the simulator serving the paged list alone takes "
        f"{s['list_s']:.2f} s: the daemon's own share {own_s:.2f} s (target "
        f"{TARGET_STARTUP_S:.0f} s: {own_s / TARGET_STARTUP_S:.1f}x); re-announced: "
        f"{s['announced']:.0f} (recorded as state: {s['catch_up']:,.0f})"
    )
    quick = " (BENCH_QUICK)" if QUICK else ""
    return (
        f"scale{quick}: {d['observations']:,.0f} observations of {CANARIES:,} canaries at "
        f"{d['per_s']:,.0f}/s, peak RSS {d['rss_mb']:.0f} MB "
        f"({d['rss_mb'] / TARGET_RSS_MB:.2f}x of {TARGET_RSS_MB:.0f}; import floor "
        f"{floor:.0f} MB), {per_canary:,.0f} B/canary; start-up {own_s:.1f} s of the daemon's "
        f"own on {s['events']:,.0f} Events ({own_s / TARGET_STARTUP_S:.1f}x of "
        f"{TARGET_STARTUP_S:.0f} s), {s['announced']:.0f} re-announced"
    )
