"""The control API's writes wait off the event loop (issue 14: state writes off the loop).

A silence created, or expired, through the API is durable before the response says so, but a
slow ``fsync`` delays only that request: the daemon's event loop keeps running meanwhile (before,
the handler committed on the loop, which stalled for the whole fsync).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.slow_disk import SlowDisk

from canarywatch.state import DB_FILENAME

DELAY_MS = 300

_CHILD = """
import asyncio, json, sys, time
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from canarywatch.clock import SystemClock
from canarywatch.pipeline.silence import Silencer
from canarywatch.state import SqliteStateStore
from canarywatch.web.control import control_routes
from canarywatch.web.server import Readiness, WebServer, build_app


async def main() -> None:
    clock = SystemClock()
    path = Path(sys.argv[1])
    store = SqliteStateStore(path, clock=clock)
    silencer = Silencer(store)
    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        extra_routes=control_routes(store, silencer, clock=clock),
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    base = f"http://127.0.0.1:{server.port}/api/v1/silences"
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.001)
            ticks.append(time.monotonic())

    async def measured(method: str, url: str, **kwargs: object) -> dict[str, object]:
        async with aiohttp.ClientSession() as http:
            ticks.clear()
            started = time.monotonic()
            async with http.request(method, url, **kwargs) as response:
                body = await response.json()
                status = response.status
            ended = time.monotonic()
        during = [t for t in ticks if started <= t <= ended]
        edges = [started, *during, ended]
        stall = max(b - a for a, b in zip(edges, edges[1:]))
        return {
            "status": status,
            "body": body,
            "duration_s": ended - started,
            "ticks": len(during),
            "max_stall_s": stall,
        }

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    added = await measured(
        "POST",
        base,
        json={
            "matchers": ['namespace="payments"'],
            "duration": "1h",
            "created_by": "ops",
            "comment": "slow disk",
        },
    )
    sid = added["body"]["id"]
    # Durable before the answer: another connection (a fresh store) sees it at once.
    with SqliteStateStore(path, clock=clock) as other:
        durable = [s.id for s in other.silences()] == [sid]
    expired = await measured("DELETE", f"{base}/{sid}")
    with SqliteStateStore(path, clock=clock) as other:
        expired_durable = other.silences() == []
    ticker.cancel()
    await server.close()
    store.close()
    print(json.dumps({
        "add": {k: v for k, v in added.items() if k != "body"},
        "expire": {k: v for k, v in expired.items() if k != "body"},
        "added_durable": durable,
        "expired_durable": expired_durable,
    }))

asyncio.run(main())
"""


def test_the_event_loop_keeps_running_while_a_silence_waits_for_a_slow_fsync(
    tmp_path: Path,
) -> None:
    """With every fsync 300 ms slow, creating and expiring a silence through the control API
    each take at least one slow commit, yet the loop ticks on throughout and never stalls for
    the commit; each change is durable when the response arrives."""
    disk = SlowDisk(tmp_path / "shim", delay_ms=DELAY_MS).build()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / DB_FILENAME)],
        env={**os.environ, **disk.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert disk.syncs() > 0  # the delay applied in the child
    assert figures["added_durable"]
    assert figures["expired_durable"]
    for change, status in (("add", 201), ("expire", 200)):
        f = figures[change]
        assert f["status"] == status, figures
        assert f["duration_s"] >= DELAY_MS / 1000 * 0.9, figures  # it did wait for an fsync
        # ...and the loop ran meanwhile: a blocking commit lets it tick only before and after
        # (2 ticks, one stall as long as the request); off the loop it ticks every millisecond.
        assert f["ticks"] >= 10, figures
        assert f["max_stall_s"] < f["duration_s"] / 2, figures
