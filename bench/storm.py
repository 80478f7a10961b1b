"""An Event storm through the real daemon: 100,000 Events in 10 s against the simulated cluster.

Two storms, each against a fresh daemon (``App`` over HTTP to ``SimulatedApiServer``):

- **unrelated**: 99 % of the Events are about Pods (the server-side field selector
  ``involvedObject.kind=Canary`` keeps them from the daemon) and 1 % are informational Canary
  Events (``all the metrics providers are available!``) spread over 100 canaries;
- **halt-repeat**: one canary's ``Halt … advancement success rate …`` Warning repeated 100,000
  times, as client-go would write it: one Event whose ``count`` is bumped (a MODIFIED each time,
  each a new occurrence of the same open ``halted`` condition: one notification at most).

Reported: wall time to write the storm and for the daemon to have normalised all of it, peak RSS
growth, the largest intake and dispatch queue depths seen (sampled every 10 ms; both queues are
bounded), and drops/suppressions by reason read from the daemon's own registry
(``canarywatch_events_dropped_total``, ``canarywatch_events_suppressed_total``).
"""

from __future__ import annotations

import asyncio
import resource
import tempfile
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from bench.latency import bench_config, running, sink_server, unrelated_event
from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.pipeline.runner import INTAKE_SIZE
from canarywatch.simulator import FlaggerEventRecorder, SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.store import format_time

EVENTS = 100_000
SECONDS = 10.0


def samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    """``{label values joined: value}`` for one counter (``_total`` samples only)."""
    out: dict[str, float] = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name == name and s.value:
                out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def storm(kind: str) -> dict[str, object]:
    clock = SystemClock()
    store = Store(clock=clock, history_limit=EVENTS + 10_000, event_ttl=None)
    with tempfile.TemporaryDirectory(prefix="canarywatch-storm-") as state_dir:
        async with SimulatedApiServer(store) as api, sink_server() as sink:
            sim = FlaggerSimulator(store, clock, cluster_name="sim")
            canaries = [sim.create_canary("storm", f"app-{i}") for i in range(100)]
            config = bench_config(api_url=api.url, sink_url=sink.url, state_dir=Path(state_dir))
            app = App(config, listen=("127.0.0.1", 0))
            async with running(app):
                rss_before = rss_mb()
                peaks = {"intake": 0, "dispatch": 0}
                done = asyncio.Event()

                async def sample() -> None:
                    while not done.is_set():
                        if app.runner is not None:
                            peaks["intake"] = max(peaks["intake"], app.runner.intake.qsize())
                        pending = app.registry.get_sample_value(
                            "canarywatch_outbox_depth", {"sink": "bench"}
                        )
                        peaks["dispatch"] = max(peaks["dispatch"], int(pending or 0))
                        await asyncio.sleep(0.01)

                sampler = asyncio.create_task(sample())
                started = time.perf_counter()
                if kind == "unrelated":
                    expected_obs = await write_unrelated(store, [c.name for c in canaries])
                else:
                    expected_obs = await write_halts(store, clock, canaries[0].obj)
                written_s = time.perf_counter() - started
                async with asyncio.timeout(300):
                    while True:
                        seen = app.registry.get_sample_value(
                            "canarywatch_observations_total", {"source": "kubernetes-events"}
                        )
                        if (seen or 0) >= expected_obs:
                            break
                        await asyncio.sleep(0.02)
                caught_up_s = time.perf_counter() - started
                await asyncio.sleep(0.5)
                done.set()
                await sampler
                figures: dict[str, object] = {
                    "written_s": written_s,
                    "caught_up_s": caught_up_s,
                    "observed": expected_obs,
                    "rss_growth_mb": rss_mb() - rss_before,
                    "rss_peak_mb": rss_mb(),
                    "peak_intake": peaks["intake"],
                    "peak_outbox": peaks["dispatch"],
                    "dropped": samples(app.registry, "canarywatch_events_dropped_total"),
                    "suppressed": samples(app.registry, "canarywatch_events_suppressed_total"),
                    "notifications": sink.requests,
                }
    return figures


async def write_unrelated(store: Store, canaries: list[str]) -> int:
    """99 % Pod Events, 1 % informational Canary Events; returns how many the daemon sees."""
    per_batch = 1_000
    started = time.perf_counter()
    canary_events = 0
    for start in range(0, EVENTS, per_batch):
        now = format_time(store.clock.now())
        for i in range(start, start + per_batch):
            canary = canaries[(i // 100) % len(canaries)] if i % 100 == 0 else None
            canary_events += canary is not None
            store.create("events", unrelated_event(i, "storm", now, canary))
        due = started + (start + per_batch) / EVENTS * SECONDS
        await asyncio.sleep(max(due - time.perf_counter(), 0.0))
    return canary_events


async def write_halts(store: Store, clock: SystemClock, canary: dict[str, object]) -> int:
    """One Halt Warning, then its count bumped until 100,000 occurrences."""
    recorder = FlaggerEventRecorder(store, clock, expire_ttl=False)
    message = "Halt app-0.storm advancement success rate 96.12% < 99%"
    first = recorder.record(canary, "Warning", message)
    assert first.event is not None
    name = first.event["metadata"]["name"]
    per_batch = 1_000
    started = time.perf_counter()
    for start in range(1, EVENTS, per_batch):
        stamp = format_time(clock.now())
        for count in range(start + 1, min(start + per_batch, EVENTS) + 1):
            store.patch("events", "storm", name, {"count": count, "lastTimestamp": stamp})
        due = started + (start + per_batch) / EVENTS * SECONDS
        await asyncio.sleep(max(due - time.perf_counter(), 0.0))
    return EVENTS


def main() -> str:
    summaries = []
    for kind in ("unrelated", "halt-repeat"):
        f = asyncio.run(storm(kind))
        dropped = f["dropped"] or {}
        suppressed = f["suppressed"] or {}
        print(
            f"storm[{kind}]: {EVENTS:,} Events written in {f['written_s']:.1f} s; the daemon "
            f"normalised its {f['observed']:,} in {f['caught_up_s']:.1f} s; "
            f"{f['notifications']} notification(s)"
        )
        print(
            f"storm[{kind}]: peak intake queue {f['peak_intake']} of {INTAKE_SIZE:,}, peak outbox "
            f"{f['peak_outbox']}, RSS +{f['rss_growth_mb']:.1f} MB (peak {f['rss_peak_mb']:.0f} MB)"
        )
        print(f"storm[{kind}]: dropped {dropped or 'none'}; suppressed {suppressed or 'none'}")
        summaries.append(
            f"{kind}: caught up {f['caught_up_s']:.1f} s, peak intake {f['peak_intake']}, "
            f"RSS +{f['rss_growth_mb']:.0f} MB, dropped {sum(dropped.values()):.0f}, "
            f"{f['notifications']} notification(s)"
        )
    return f"storm: {EVENTS:,} Events in {SECONDS:.0f} s — " + "; ".join(summaries)
