"""Resilience tests: the real daemon against the simulated cluster while things go wrong.

Shared helpers: a config pointing the daemon at a ``SimulatedApiServer`` and a local webhook
receiver, a running-daemon context manager, and the "what was notified" multiset the tests
compare with the scenarios' expected transitions.

Short by default (a few seeds); ``CANARYWATCH_SOAK=1`` runs more seeds and iterations.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from canarywatch.app import App
from canarywatch.clock import Clock
from canarywatch.config import Config, parse_config
from canarywatch.model import SELF_NAMESPACE
from canarywatch.simulator.scenarios import SCENARIOS, Pace
from canarywatch.state import StateStore

SOAK = os.environ.get("CANARYWATCH_SOAK") == "1"

Key = tuple[str, str, str]
"""``(canary, transition, detail)``: what a notification announced, as the scenarios name it."""


class ScaledClock:
    """Wall time running ``factor`` times faster, for the daemon *and* the simulated cluster.

    A test gives the same clock to ``Store``, ``FlaggerSimulator`` and ``App``, so one Flagger
    minute, one watch backoff step and one ``Retry-After`` keep their real proportions while
    the whole run takes ``1/factor`` of the time. Unlike a virtual clock it needs nobody to
    drive it (I/O and real timeouts still take real time), and unlike shortening sleeps it
    keeps the ``Clock`` contract: ``sleep_until`` returns only once ``now() >= deadline``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._start = datetime.now(UTC)
        self._mono = time.monotonic()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._mono) * self.factor)

    async def sleep_until(self, deadline: datetime) -> None:
        while (delay := (deadline - self.now()).total_seconds()) > 0:
            await asyncio.sleep(delay / self.factor)

    def pace(self) -> Pace:
        """A scenario ``pace`` on this clock: Flagger time passes as the daemon's does."""

        async def pace(seconds: float) -> None:
            await self.sleep_until(self.now() + timedelta(seconds=seconds))

        return pace


def seeds(default: int = 3, soak: int = 12) -> list[int]:
    """The seeds a parametrised test runs: a few by default, more under ``CANARYWATCH_SOAK``."""
    return list(range(soak if SOAK else default))


def config_text(
    *,
    api_url: str,
    hook_url: str,
    state_dir: Path,
    extra: str = "",
) -> str:
    """A daemon config: one cluster (the simulator), one ``webhook`` receiver, no batching.

    ``group_by: ["..."]`` gives one notification per transition, so each request the receiver
    captures is exactly one announced event."""
    return (
        "receivers:\n"
        "  - name: hook\n"
        "    sink: webhook\n"
        f'    options: {{url: {{value: "{hook_url}"}}, timeout_s: 5}}\n'
        'route: {receiver: hook, group_by: ["..."], group_wait: 0s, group_interval: 0s}\n'
        f"state: {{dir: {str(state_dir)!r}}}\n"
        f'clusters: [{{name: sim, connection: host, host: "{api_url}"}}]\n'
        "dispatch: {attempt_timeout: 5s, retry_budget: 60s, drain_timeout: 5s}\n" + extra
    )


def daemon_config(*, api_url: str, hook_url: str, state_dir: Path, extra: str = "") -> Config:
    return parse_config(
        config_text(api_url=api_url, hook_url=hook_url, state_dir=state_dir, extra=extra)
    )


@asynccontextmanager
async def running_daemon(
    config: Config,
    *,
    state: StateStore | None = None,
    clock: Clock | None = None,
    ready_timeout_s: float = 20.0,
) -> AsyncIterator[App]:
    """Run ``App`` on 127.0.0.1 (free port) until the block exits; then stop it gracefully."""
    app = App(config, listen=("127.0.0.1", 0), state=state, clock=clock)
    task = asyncio.create_task(app.run(), name="daemon")
    try:
        async with asyncio.timeout(ready_timeout_s):
            ready = asyncio.ensure_future(app.ready.wait())
            done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                ready.cancel()
                task.result()
                raise RuntimeError("the daemon stopped before it was ready")
        yield app
    finally:
        app.stop()
        async with asyncio.timeout(30):
            await task


def announced(bodies: Iterable[Any]) -> Counter[Key]:
    """The multiset of ``(canary, transition, detail)`` in webhook envelopes (firing only)."""
    seen: Counter[Key] = Counter()
    for body in bodies:
        notification = body["notification"]
        if notification["status"] != "firing":
            continue
        for event in notification["events"]:
            if event["namespace"] == SELF_NAMESPACE:
                continue  # self-events (cluster-unreachable/-reachable) are not the scenario's
            seen[(event["canary"], event["transition"], event["detail"] or "")] += 1
    return seen


def expected(names: Iterable[str]) -> Counter[Key]:
    """What the scenarios ``names`` (played one after another) must announce."""
    want: Counter[Key] = Counter()
    for name in names:
        for canary, transitions in SCENARIOS[name].expected.items():
            for transition, detail in transitions:
                want[(canary, transition, detail)] += 1
    return want


def diff(got: Counter[Key], want: Counter[Key]) -> str:
    """A readable account of what was lost and what was duplicated (empty when equal)."""
    lost = want - got
    extra = got - want
    parts = []
    if lost:
        parts.append(f"lost: {sorted(lost.elements())}")
    if extra:
        parts.append(f"duplicated/unexpected: {sorted(extra.elements())}")
    return "; ".join(parts)


async def wait_for_count(
    receiver_requests: list[Any], count: int, *, timeout_s: float, settle_s: float = 0.5
) -> None:
    """Wait (bounded) until ``count`` items arrived, then a little longer for stragglers."""
    try:
        async with asyncio.timeout(timeout_s):
            while len(receiver_requests) < count:
                await asyncio.sleep(0.05)
    except TimeoutError:
        return  # the caller's assertion reports what is missing
    await asyncio.sleep(settle_s)
