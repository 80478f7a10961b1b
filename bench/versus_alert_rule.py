"""The same rollback, two ways: canarywatch vs the classic Prometheus alert-rule chain.

(a) canarywatch (``App``) watches the simulated cluster's Events and Canaries over HTTP and
    delivers ``rolled-back`` through the ``webhook`` sink to a local receiver;
(b) the classic chain: the simulated Flagger's ``/metrics`` (``FlaggerMetricsServer``) ->
    a REAL Prometheus (``scrape_interval: 15s``, ``evaluation_interval: 30s``, rule
    ``flagger_canary_status > 1``) -> a REAL Alertmanager (``group_wait: 10s``, webhook to a
    local receiver).

One rollback of ``test/podinfo``; both latencies are measured from the moment the simulated
Flagger rolls back (status ``Failed``, ``flagger_canary_status`` 2, the ``Rolling back`` Event)
to the request at each receiver. The chain's figure depends on where the rollback falls in the
scrape and evaluation cycles (between about 10 s and 55 s); this is one sample of it. Takes
about one to two minutes by nature; bench only, never in the tests. Skipped with a message
when ``prometheus``/``promtool``/``alertmanager`` are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.latency import bench_config, running, sink_server
from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator
from canarywatch.simulator.metrics_server import FlaggerMetricsServer

_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
CHAIN_TIMEOUT_S = 150.0


def binaries() -> dict[str, str] | None:
    found = {
        "prometheus": shutil.which("prometheus"),
        "promtool": shutil.which("promtool"),
        "alertmanager": shutil.which("alertmanager") or shutil.which("prometheus-alertmanager"),
    }
    if any(v is None for v in found.values()):
        return None
    return {k: v for k, v in found.items() if v is not None}


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


@contextlib.asynccontextmanager
async def process(args: list[str], log_path: Path) -> AsyncIterator[int]:
    """Run a binary that logs ``Listening on 127.0.0.1:<port>``; yield the port; SIGTERM it."""
    proc = await asyncio.to_thread(_spawn, args, log_path)
    try:
        port = 0
        deadline = time.perf_counter() + 30
        while not port and time.perf_counter() < deadline:
            text = await asyncio.to_thread(log_path.read_text, errors="replace")
            if proc.poll() is not None:
                raise RuntimeError(f"{args[0]} exited:\n{text[-2000:]}")
            for match in _LISTENING.finditer(text):
                if match.group(1) != "0":
                    port = int(match.group(1))
            await asyncio.sleep(0.1)
        if not port:
            raise TimeoutError(f"{args[0]} did not report its port")
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


@contextlib.asynccontextmanager
async def capture() -> AsyncIterator[tuple[str, list[float]]]:
    """A local receiver for Alertmanager's webhook: arrival times of firing alerts."""
    arrivals: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("status") == "firing":
            arrivals.append(time.perf_counter())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/", arrivals
    finally:
        await runner.cleanup()


async def wait_until(predicate: object, timeout_s: float, what: str) -> None:
    """Poll ``predicate`` every 0.25 s; ``TimeoutError`` naming ``what`` after ``timeout_s``."""
    assert callable(predicate)
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.25)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


async def run(bins: dict[str, str]) -> dict[str, float]:
    clock = SystemClock()
    store = Store(clock=clock)
    with tempfile.TemporaryDirectory(prefix="canarywatch-versus-") as tmp:
        work = Path(tmp)
        async with (
            SimulatedApiServer(store) as api,
            sink_server() as sink,
            capture() as (am_hook, am_arrivals),
        ):
            sim = FlaggerSimulator(store, clock, cluster_name="sim")
            podinfo = sim.create_canary(
                "test", "podinfo", analysis=PODINFO_ANALYSIS, revision="5d8f7c9b6"
            )
            async with FlaggerMetricsServer(sim) as flagger:
                am_config = {
                    "route": {
                        "receiver": "hook",
                        "group_by": ["alertname", "namespace", "name"],
                        "group_wait": "10s",
                        "group_interval": "5m",
                        "repeat_interval": "4h",
                    },
                    "receivers": [
                        {"name": "hook", "webhook_configs": [{"url": am_hook}]},
                    ],
                }
                (work / "am.yml").write_text(json.dumps(am_config), encoding="utf-8")
                am_args = [
                    bins["alertmanager"],
                    f"--config.file={work / 'am.yml'}",
                    f"--storage.path={work / 'am-data'}",
                    "--web.listen-address=127.0.0.1:0",
                    "--cluster.listen-address=",
                ]
                async with process(am_args, work / "am.log") as am_port:
                    (work / "rules.yml").write_text(
                        "groups:\n- name: flagger\n  rules:\n"
                        "  - alert: CanaryRolledBack\n    expr: flagger_canary_status > 1\n",
                        encoding="utf-8",
                    )
                    target = flagger.url.removeprefix("http://")
                    (work / "prometheus.yml").write_text(
                        "global: {scrape_interval: 15s, evaluation_interval: 30s}\n"
                        "rule_files: [rules.yml]\n"
                        "alerting: {alertmanagers: [{static_configs: "
                        f'[{{targets: ["127.0.0.1:{am_port}"]}}]}}]}}\n'
                        "scrape_configs:\n"
                        f'- {{job_name: flagger, static_configs: [{{targets: ["{target}"]}}]}}\n',
                        encoding="utf-8",
                    )
                    await asyncio.to_thread(
                        subprocess.run,
                        [bins["promtool"], "check", "config", str(work / "prometheus.yml")],
                        check=True,
                        capture_output=True,
                        timeout=30,
                    )
                    prom_args = [
                        bins["prometheus"],
                        f"--config.file={work / 'prometheus.yml'}",
                        f"--storage.tsdb.path={work / 'prom-data'}",
                        "--web.listen-address=127.0.0.1:0",
                    ]
                    async with process(prom_args, work / "prom.log") as prom_port:
                        return await rollback(api.url, sink, prom_port, am_arrivals, podinfo, work)


async def rollback(
    api_url: str,
    sink: object,
    prom_port: int,
    am_arrivals: list[float],
    podinfo: object,
    work: Path,
) -> dict[str, float]:
    from bench.latency import SinkServer
    from canarywatch.simulator.flagger import SimulatedCanary

    assert isinstance(sink, SinkServer)
    assert isinstance(podinfo, SimulatedCanary)
    config = bench_config(api_url=api_url, sink_url=sink.url, state_dir=work / "state")
    async with running(App(config, listen=("127.0.0.1", 0))), aiohttp.ClientSession() as http:

        async def scraped() -> bool:
            url = f"http://127.0.0.1:{prom_port}/api/v1/query"
            async with http.get(url, params={"query": 'up{job="flagger"}'}) as r:
                result = (await r.json())["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1"

        await wait_until(scraped, 60, "the first scrape")
        podinfo.new_revision("b7d2e914")
        podinfo.start_analysis()
        podinfo.advance(20)
        for value in (96.12, 93.87, 91.4, 89.96, 88.1):
            podinfo.halt_metric("request-success-rate", value)
            await asyncio.sleep(0.2)
        started = time.perf_counter()
        podinfo.rollback("failed-checks")
        ours = await sink.wait(("test/podinfo", "rolled-back"), timeout_s=30)

        async def alerted() -> bool:
            return bool(am_arrivals)

        await wait_until(alerted, CHAIN_TIMEOUT_S, "the Alertmanager webhook")
        return {"canarywatch_s": ours - started, "chain_s": am_arrivals[0] - started}


def main() -> str:
    bins = binaries()
    if bins is None:
        message = "versus_alert_rule: skipped: prometheus, promtool or alertmanager not on PATH"
        print(message)
        return message
    f = asyncio.run(run(bins))
    ratio = f["chain_s"] / max(f["canarywatch_s"], 1e-6)
    print(
        "versus_alert_rule: rollback announced by canarywatch after "
        f"{f['canarywatch_s'] * 1000:.1f} ms; by Prometheus (15 s scrape, 30 s evaluation) + "
        "Alertmanager (10 s group_wait) "
        f"after {f['chain_s']:.1f} s"
    )
    return (
        f"versus_alert_rule: canarywatch {f['canarywatch_s'] * 1000:.1f} ms vs alert-rule chain "
        f"{f['chain_s']:.1f} s for the same rollback: {ratio:,.0f}x sooner (one sample; the chain "
        "varies with scrape/evaluation phase, ~10-55 s)"
    )
