"""``canarywatch demo``: the real daemon against the built-in simulated cluster.

It starts the simulated Kubernetes API server and a simulated Flagger (Events, Canary status and
a Flagger-style ``/metrics``), runs the real daemon against them over HTTP with the real
kubernetes_asyncio client, and plays the scenarios at an accelerated pace. Notifications go to
the terminal (``console`` sink) unless a config file names other receivers. The daemon's
``/metrics``, ``/healthz``, ``/readyz`` and its status page (``/``) are served while it
runs (with ``--keep-running``, until Ctrl-C after the last scenario).

Ctrl-C or SIGTERM is how a demo is cut short: the daemon shuts down gracefully, one line says
how far the demo got, and that is a success (exit 0), not an error. SIGHUP reloads ``--config``
exactly as it does for ``canarywatch run`` (the reloaded file is pointed at the simulator too).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TextIO

from canarywatch.app import App
from canarywatch.cli.common import while_stdout_read
from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.config import Config, load_config, parse_config
from canarywatch.config.clusters import ClusterSettings
from canarywatch.config.sources import MetricsSourceSettings
from canarywatch.errors import CanarywatchError
from canarywatch.logs import configure_logging
from canarywatch.pipeline import policy
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.metrics_server import FlaggerMetricsServer
from canarywatch.simulator.scenarios import SCENARIOS, play_all, realtime_pace, virtual_pace

DEMO_CLUSTER = "sim"
TARGET_DURATION_S = 40.0
"""How long the whole demo should take in wall time: the pace is derived from it."""
READY_TIMEOUT_S = 30.0
"""How long the daemon may take to list the simulated cluster before the demo gives up."""


async def flagger_seconds(names: Sequence[str]) -> float:
    """How much Flagger time the chosen scenarios take (measured on a virtual clock)."""
    clock = VirtualClock(SystemClock().now())
    start = clock.now()
    sim = FlaggerSimulator(Store(clock=clock), clock)
    await play_all(sim, virtual_pace(clock), names=names)
    return (clock.now() - start).total_seconds()


def demo_config(base: Config | None, *, api_url: str, metrics_url: str, state_dir: Path) -> Config:
    """The user's config (or the default policy) pointed at the simulated cluster."""
    config = base if base is not None else parse_config("")
    return dataclasses.replace(
        config,
        clusters=(ClusterSettings(name=DEMO_CLUSTER, connection="host", host=api_url),),
        metrics_source=MetricsSourceSettings.model_validate(
            {
                "mode": "scrape",
                "targets": [{"name": "flagger", "url": metrics_url, "cluster": DEMO_CLUSTER}],
                "interval": "1s",
                "timeout": "1s",
            }
        ),
        state=config.state.model_copy(update={"dir": state_dir}),
        catch_up_window_s=0.0,
    )


class DemoApp(App):
    """The demo's daemon: SIGHUP reloads ``--config`` as ``run`` does. The demo logs warnings
    and errors only (a rejected file is ``config_reload_rejected``), so an applied reload is
    said on the terminal too."""

    def __init__(
        self,
        config: Config,
        *,
        out: TextIO,
        listen: tuple[str, int],
        config_path: Path | None,
        adapt_config: Callable[[Config], Config],
    ) -> None:
        super().__init__(config, listen=listen, config_path=config_path, adapt_config=adapt_config)
        self._out = out

    async def reload(self) -> bool:
        applied = await super().reload()
        if applied:
            receivers = ", ".join(name for name, _, _ in policy.receivers(self.config))
            print(
                f"canarywatch demo: configuration reloaded (receivers: {receivers})",
                file=self._out,
            )
        return applied


async def run_demo(
    *,
    config_path: Path | None = None,
    scenarios: Sequence[str] | None = None,
    duration_s: float = TARGET_DURATION_S,
    listen_port: int = 9797,
    out: TextIO = sys.stderr,
    keep_running: bool = False,
) -> int:
    """``keep_running``: after the last scenario the daemon (and its status page) stays up
    until Ctrl-C/SIGTERM, so what happened can still be looked at."""
    names = list(scenarios) if scenarios else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(
            f"canarywatch demo: unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}",
            file=out,
        )
        return 2
    base = load_config(config_path) if config_path is not None else None
    speed = max(await flagger_seconds(names) / max(duration_s, 1.0), 1.0)
    clock = SystemClock()
    store = Store(clock=clock)
    with tempfile.TemporaryDirectory(prefix="canarywatch-demo-") as state_dir:
        async with SimulatedApiServer(store) as api:
            sim = FlaggerSimulator(store, clock, cluster_name=DEMO_CLUSTER)
            async with FlaggerMetricsServer(sim) as flagger:
                point = functools.partial(
                    demo_config,
                    api_url=api.url,
                    metrics_url=flagger.metrics_url,
                    state_dir=Path(state_dir),
                )
                app = DemoApp(
                    point(base),
                    listen=("127.0.0.1", listen_port),
                    config_path=config_path,
                    adapt_config=point,  # a reloaded file is pointed at the simulator too
                    out=out,
                )
                daemon = asyncio.create_task(app.run(), name="daemon")
                started = time.monotonic()
                finished = False
                try:
                    try:
                        async with asyncio.timeout(READY_TIMEOUT_S):
                            ready = await _first(app.ready.wait(), daemon)
                    except TimeoutError:
                        raise CanarywatchError(
                            f"the daemon was not ready after {READY_TIMEOUT_S:g} s"
                        ) from None
                    if ready:
                        print(
                            f"canarywatch demo: simulated cluster at {api.url}, daemon at "
                            f"http://127.0.0.1:{app.port}/metrics (/healthz, /readyz)\n"
                            f"status page: http://127.0.0.1:{app.port}/\n"
                            f"playing {len(names)} Flagger scenario(s) at {speed:.0f}x: "
                            f"{', '.join(names)}\n",
                            file=out,
                        )
                        started = time.monotonic()
                        finished = await _first(
                            play_all(sim, realtime_pace(speed), names=names), daemon
                        ) and await _first(asyncio.sleep(2.0), daemon)  # last scrape, deliveries
                        if finished and keep_running:
                            print(
                                f"canarywatch demo: all {len(names)} scenario(s) played; the "
                                f"status page stays at http://127.0.0.1:{app.port}/ until Ctrl-C",
                                file=out,
                            )
                            await _first(asyncio.Event().wait(), daemon)
                finally:
                    app.stop()
                    await daemon
                elapsed = time.monotonic() - started
                stats = app.runner.pipeline.stats if app.runner is not None else None
                counts = (
                    f"{stats.observations} observations -> {stats.transitions} transitions -> "
                    f"{stats.notifications} notifications"
                    if stats is not None
                    else "nothing played"
                )
                if not finished:  # SIGINT/SIGTERM: the daemon stopped gracefully, so does the demo
                    print(f"\ncanarywatch demo: stopped after {elapsed:.1f} s ({counts})", file=out)
                    return 0
                if stats is not None:
                    suppressed = ", ".join(f"{k}={v}" for k, v in sorted(stats.suppressed.items()))
                    print(
                        f"\n{counts} in {elapsed:.1f} s (suppressed: {suppressed or 'none'})",
                        file=out,
                    )
    return 0


async def _first(aw: Awaitable[object], daemon: asyncio.Task[None]) -> bool:
    """Await ``aw`` unless the daemon ends first: ``False`` when it stopped as asked (a signal),
    its error when it failed."""
    task = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({task, daemon}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
    if daemon.done() and not task.done():
        daemon.result()  # its error, if it failed
        return False
    await task
    return True


async def demo_command(
    *,
    config_path: Path | None,
    scenarios: list[str] | None,
    duration_s: float,
    port: int,
    keep_running: bool = False,
) -> int:
    """``canarywatch demo``: the daemon against the built-in simulated cluster.

    While the daemon runs it handles SIGINT/SIGTERM (a graceful stop the demo reports); before
    it starts and after it ends, a signal cancels the demo, which cleans up on the way out
    (``Interrupted``: one line, exit 0). When stdout's reader goes away (``| head``) the demo
    stops the same way and ends quietly.
    """
    configure_logging(level="warning", stream=sys.stderr)
    demo = asyncio.ensure_future(
        run_demo(
            config_path=config_path,
            scenarios=scenarios,
            duration_s=duration_s,
            listen_port=port,
            keep_running=keep_running,
        )
    )
    return await while_stdout_read(demo, stop_signals=(signal.SIGINT, signal.SIGTERM))
