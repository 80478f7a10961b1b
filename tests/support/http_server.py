"""A scriptable local HTTP server standing in for Flagger's ``/metrics`` or Prometheus' API.

The test sets ``server.reply`` (status, body, delay) between requests; every request is kept in
``server.requests`` so tests can check what actually went over the wire (headers, query).
``stop()``/``start()`` take the listener down and up again on the same port, for "connection
refused" streaks.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

PROM_TEXT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: str = ""
    content_type: str = PROM_TEXT
    delay_s: float = 0.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SeenRequest:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]


class LocalServer:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.reply = Reply()
        self.requests: list[SeenRequest] = []
        self.port = 0
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/metrics") -> str:
        return self.base_url + path

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            SeenRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
            )
        )
        reply = self.reply
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(
            status=reply.status,
            body=reply.body.encode(),
            headers={"Content-Type": reply.content_type, **reply.headers},
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._ssl)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@asynccontextmanager
async def local_server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[LocalServer]:
    server = LocalServer(ssl_context)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
