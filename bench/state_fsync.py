"""fsyncs per delivered notification through the real ``DurableDelivery`` + ``SqliteStateStore``.

Every notification costs the state store at least two durable writes: the outbox row before it
is queued, and "done" (with the notification log record) once the sink acknowledged it. Each
durable write ends in an ``fsync`` of SQLite's WAL. This benchmark delivers ``N`` notifications
to ``RECEIVERS`` receivers whose sinks take ``SINK_LATENCY_S`` to acknowledge (a network round
trip) and counts the process's ``fsync``/``fdatasync`` system calls, in two scenarios:

- ``load``: notifications arrive at ``ARRIVALS_PER_S``; the acceptor takes what has arrived
  since its last write as one batch (``accept_batch``), as the pipeline's runner does;
- ``single``: one ``accept`` per notification, each awaited before the next (the worst case).

Each runs twice: with the store as it is (writes off the event loop, group commit) and with
``BlockingStore``, whose ``*_async`` writes call the blocking ones on the event loop: one
transaction per write, as every write was before group commit.

How they are counted: SQLite calls ``fsync`` from C, out of Python's sight, so the benchmark
runs its workload in a child process under ``strace -f -c -e trace=fsync,fdatasync`` and reads
the call counts from strace's summary. That includes the few syncs of creating the database
(a handful, next to thousands). Without ``strace`` the benchmark says so and reports no figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry

from canarywatch.clock import SystemClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.logs import configure_logging
from canarywatch.metrics import Metrics
from canarywatch.model import JSONValue, Notification, Transition
from canarywatch.sinks import Payload
from canarywatch.state import SqliteStateStore
from canarywatch.state.base import DB_FILENAME
from canarywatch.testing import RecordingSink, make_event, make_notification

NOTIFICATIONS = int(os.environ.get("BENCH_FSYNC_N", "2000"))
RECEIVERS = 8
ARRIVALS_PER_S = 4000
SINK_LATENCY_S = 0.002
TARGET_FSYNCS_PER_NOTIFICATION = 1.0
_SYNC_CALLS = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)\s*$")


class _NetworkSink(RecordingSink):
    """A sink that acknowledges after a short round trip, so deliveries overlap."""

    async def deliver(self, payload: Payload) -> None:
        await asyncio.sleep(SINK_LATENCY_S)
        await super().deliver(payload)


class BlockingStore(SqliteStateStore):
    """Every write blocks the event loop until committed alone: how the store wrote before."""

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        return self.outbox_put_many(items, at, canary_states=canary_states)

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        self.outbox_done(id, at)

    async def outbox_attempted_async(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        self.outbox_attempted(id, error_reason, next_attempt_at=next_attempt_at)

    async def outbox_dead_async(self, id: int, reason: str) -> None:
        self.outbox_dead(id, reason)


async def _arrive(notifications: list[Notification], inbox: asyncio.Queue[Notification]) -> None:
    """Feed ``notifications`` at ``ARRIVALS_PER_S`` (in steps of about a millisecond)."""
    started = time.perf_counter()
    for i, n in enumerate(notifications):
        due = started + i / ARRIVALS_PER_S
        wait = due - time.perf_counter()
        if wait > 0.001:
            await asyncio.sleep(wait)
        inbox.put_nowait(n)


async def _accept_arrivals(
    delivery: DurableDelivery, count: int, inbox: asyncio.Queue[Notification]
) -> None:
    """Accept what has arrived since the last write as one batch, like the runner."""
    accepted = 0
    while accepted < count:
        batch = [await inbox.get()]
        while not inbox.empty():
            batch.append(inbox.get_nowait())
        await delivery.accept_batch(batch)
        accepted += len(batch)


async def _workload(directory: Path, count: int, scenario: str, blocking: bool) -> dict[str, float]:
    clock = SystemClock()
    metrics = Metrics(CollectorRegistry())
    log = structlog.get_logger()
    kind = BlockingStore if blocking else SqliteStateStore
    store = kind(directory / DB_FILENAME, clock=clock)
    sinks = {f"team-{r}": _NetworkSink(f"team-{r}") for r in range(RECEIVERS)}
    delivery = DurableDelivery(store, clock=clock, metrics=metrics, log=log)
    dispatcher = Dispatcher(
        sinks,
        clock=clock,
        metrics=metrics,
        log=log,
        on_delivered=delivery.on_delivered,
        refill=delivery.refill,
        on_retrying=delivery.retrying,
    )
    delivery.attach(dispatcher)
    notifications = [
        make_notification(
            make_event(Transition.ROLLED_BACK, canary=f"ns/app-{i}"),
            receiver=f"team-{i % RECEIVERS}",
        )
        for i in range(count)
    ]
    started = time.perf_counter()
    dispatcher.start()
    try:
        if scenario == "single":
            for n in notifications:
                await delivery.accept(n)
        else:
            inbox: asyncio.Queue[Notification] = asyncio.Queue()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_arrive(notifications, inbox))
                tg.create_task(_accept_arrivals(delivery, count, inbox))
        for r, sink in enumerate(sinks.values()):
            await sink.wait_for(len(range(r, count, RECEIVERS)))
        await dispatcher.drain(60.0)
        if any(store.outbox_depths().values()):
            raise RuntimeError("notifications left pending in the outbox")
    finally:
        await dispatcher.aclose()
    elapsed = time.perf_counter() - started
    commits = float(store.commits)
    store.close()
    return {"delivered": float(count), "seconds": elapsed, "commits": commits}


def child(count: int, scenario: str, blocking: bool) -> None:
    """The measured process: run the workload, print its figures as one JSON line."""
    configure_logging(level="warning", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="canarywatch-bench-fsync-") as tmp:
        figures = asyncio.run(_workload(Path(tmp), count, scenario, blocking))
    print(json.dumps(figures), flush=True)


def count_syncs(strace_summary: str) -> int:
    """``fsync`` + ``fdatasync`` calls from ``strace -c`` output."""
    total = 0
    for line in strace_summary.splitlines():
        found = _SYNC_CALLS.match(line)
        if found is not None:
            total += int(found.group(1))
    return total


def run(scenario: str, *, blocking: bool, count: int = NOTIFICATIONS) -> dict[str, float] | None:
    strace = shutil.which("strace")
    if strace is None:
        return None
    with tempfile.TemporaryDirectory(prefix="canarywatch-bench-strace-") as tmp:
        summary = Path(tmp) / "strace.txt"
        done = subprocess.run(
            [
                strace,
                "-f",
                "--seccomp-bpf",
                "-c",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
                str(summary),
                sys.executable,
                "-m",
                "bench.state_fsync",
                "--child",
                str(count),
                scenario,
                "blocking" if blocking else "grouped",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        syncs = count_syncs(summary.read_text())
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["fsyncs"] = float(syncs)
    figures["per_notification"] = syncs / max(figures["delivered"], 1.0)
    return figures


def main() -> str:
    results: dict[tuple[str, bool], dict[str, float]] = {}
    for scenario in ("load", "single"):
        for blocking in (True, False):
            figures = run(scenario, blocking=blocking)
            if figures is None:
                return "state_fsync: strace not found, no figure (install strace to count fsyncs)"
            results[scenario, blocking] = figures
            print(
                f"state_fsync {scenario:6} {'blocking' if blocking else 'grouped':8}: "
                f"{figures['delivered']:.0f} notifications to {RECEIVERS} receivers "
                f"({SINK_LATENCY_S * 1000:.0f} ms sinks) in {figures['seconds']:.2f} s; "
                f"{figures['fsyncs']:.0f} fsync/fdatasync calls, {figures['commits']:.0f} "
                f"commits: {figures['per_notification']:.2f} fsyncs per notification",
                flush=True,
            )
    after = results["load", False]["per_notification"]
    before = results["load", True]["per_notification"]
    ratio = after / TARGET_FSYNCS_PER_NOTIFICATION
    return (
        f"state_fsync: {after:.2f} fsyncs per delivered notification under load, was {before:.2f} "
        f"(target <= {TARGET_FSYNCS_PER_NOTIFICATION:.0f}: {ratio:.2f}x)"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4] == "blocking")
    else:
        configure_logging(level="warning", stream=sys.stderr)
        print(main())
