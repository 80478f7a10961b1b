"""Flagger's ``:8080/metrics`` for the simulator: an aiohttp server on 127.0.0.1 serving
``FlaggerSimulator.exposition()``, with fault knobs for the scraping source's tests.

    async with FlaggerMetricsServer(sim) as srv:
        text = await (await http.get(srv.metrics_url)).text()
        srv.fail_next(2)        # the next two scrapes answer 500
        srv.stop_answering()    # scrapes hang until resume() (the client's timeout fires)
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from canarywatch.simulator.flagger import FlaggerSimulator

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""What client_golang's promhttp answers for the text format."""


class FlaggerMetricsServer:
    """``GET /metrics`` from ``sim``; ``url`` is ``http://127.0.0.1:<port>`` once started."""

    def __init__(self, sim: FlaggerSimulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._failures_left = 0
        self._failure_status = 500
        self._answering = asyncio.Event()
        self._answering.set()
        self.requests = 0
        """Every ``/metrics`` request received, answered or not."""

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("the metrics server is not started")
        return self._url

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    # -- fault knobs ------------------------------------------------------------------------

    def fail_next(self, count: int = 1, *, status: int = 500) -> None:
        """Answer the next ``count`` scrapes with ``status`` (an error body, no metrics)."""
        self._failures_left = max(0, count)
        self._failure_status = status

    def stop_answering(self) -> None:
        """Accept scrapes but never answer them until ``resume()`` (a hung Flagger)."""
        self._answering.clear()

    def resume(self) -> None:
        self._answering.set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        await site.start()
        self._runner = runner
        self._url = f"http://{self._host}:{runner.addresses[0][1]}"

    async def close(self) -> None:
        self._answering.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._url = ""

    async def __aenter__(self) -> FlaggerMetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handler ----------------------------------------------------------------------------

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await self._answering.wait()
        if self._failures_left > 0:
            self._failures_left -= 1
            self.sim.record_scrape(self._failure_status)
            return web.Response(
                status=self._failure_status,
                text="An error has occurred while serving metrics: simulated failure\n",
                content_type="text/plain",
            )
        self.sim.record_scrape(200)
        body = self.sim.exposition()
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPE})
