"""``kill -9`` the real daemon process mid-rollout, start it again: nothing lost, nothing repeated.

The daemon runs as a subprocess (``python -m canarywatch run --config <tmp>``) with a real SQLite
state directory; the simulated cluster (``SimulatedApiServer`` + ``FlaggerSimulator``) and a
webhook receiver run in the test process. At seeded random moments of the rollout the process
gets SIGKILL (no drain, no snapshot) and is started again at once with the same config.

What "nothing repeated" means across a crash: a delivery that the receiver acknowledged but the
daemon had no time to record may be sent again (at-least-once, by design); such a resend is the
*same* request (same body, same ``X-Canarywatch-Idempotency-Key``), so a receiver drops it. What
must never happen is a second, different announcement of a transition: after dropping
idempotent resends, the multiset of announced transitions equals the scenario's.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.resilience import SOAK, announced, config_text, diff, expected, seeds, wait_for_count
from tests.support.webhook_receiver import Captured, run_webhook_receiver

from canarywatch.clock import SystemClock
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import play_all, realtime_pace

SPEED = 200.0
"""One Flagger minute is 0.3 s: a rollout lasts a few seconds, long enough to kill it twice."""
KILLS = 3 if SOAK else 2
SCENARIO_NAMES = ("rollback_failed_checks", "manual_approval_gate")


class Daemon:
    """The daemon subprocess; its JSON log lines go to one file per run."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "daemon-0.log"

    def start(self) -> None:
        self.runs += 1
        self.log_path = self.workdir / f"daemon-{self.runs}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "canarywatch", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def log_events(self) -> list[dict[str, object]]:
        lines = []
        for path in sorted(self.workdir.glob("daemon-*.log")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("{"):
                    lines.append(json.loads(line))
        return lines

    async def wait_listed(self, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while '"sources_listed"' not in self.log_path.read_text(errors="replace"):
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"daemon exited: {self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL our own child (by its pid) and reap it."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    async def stop(self) -> int:
        """SIGTERM (graceful drain); SIGKILL only if it does not exit within 20 s."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 20)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.process.returncode)


def unique_by_idempotency_key(requests: list[Captured]) -> tuple[list[Captured], int]:
    seen: set[str] = set()
    unique = []
    for r in requests:
        key = r.headers.get("X-Canarywatch-Idempotency-Key", "")
        assert key, "the webhook sink always sets an idempotency key"
        if key in seen:
            continue
        seen.add(key)
        unique.append(r)
    return unique, len(requests) - len(unique)


@pytest.mark.parametrize("seed", seeds(default=2, soak=8))
async def test_kill_9_mid_rollout_loses_and_repeats_nothing(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    names = [rng.choice(SCENARIO_NAMES)]
    want = expected(names)
    clock = SystemClock()
    store = Store(clock=clock, seed=seed)
    async with SimulatedApiServer(store) as api, run_webhook_receiver(path="/") as receiver:
        config = tmp_path / "canarywatch.yaml"
        config.write_text(
            config_text(
                api_url=api.url,
                hook_url=receiver.url,
                state_dir=tmp_path / "state",
                extra='server: {listen: "127.0.0.1:0"}\nlog: {level: info, format: json}\n',
            ),
            encoding="utf-8",
        )
        daemon = Daemon(config, tmp_path)
        daemon.start()
        try:
            await daemon.wait_listed()
            sim = FlaggerSimulator(store, clock, cluster_name="sim")
            play = asyncio.create_task(play_all(sim, realtime_pace(SPEED), names=names))
            kills = 0
            while kills < KILLS and not play.done():
                await asyncio.wait({play}, timeout=rng.uniform(0.3, 2.0))
                daemon.kill()
                kills += 1
                daemon.start()
                await daemon.wait_listed()
            await play
            await wait_for_count(receiver.requests, sum(want.values()), timeout_s=20.0)
            await asyncio.sleep(1.0)  # a late duplicate would show up now
        finally:
            code = await daemon.stop()
    unique, resent = unique_by_idempotency_key(receiver.requests)
    got = announced(r.json() for r in unique)
    assert got == want, f"seed {seed}, {names}, {kills} kills, {resent} resends: {diff(got, want)}"
    assert kills >= 1
    assert code == 0
    events = daemon.log_events()
    assert sum(1 for e in events if e.get("event") == "daemon_started") == kills + 1
    # Every request that reached the receiver was a confirmed delivery or its exact resend.
    assert len(receiver.requests) == len(unique) + resent
