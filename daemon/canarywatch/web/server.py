"""The daemon's HTTP server: ``/metrics``, ``/healthz``, ``/readyz`` (and routes others add).

``/healthz`` answers while the event loop runs (systemd/kubelet restart a wedged process).
``/readyz`` is 200 only when every readiness check passes (all sources listed, sinks loaded,
state store writable); its JSON body says which check is failing and why, so an operator can
see "sink slack: credentials revoked" without reading logs.
"""

from __future__ import annotations

import errno
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from canarywatch.errors import CanarywatchError
from canarywatch.secrets import Secret

ReadinessCheck = Callable[[], tuple[bool, str]]
"""Returns ``(ready, detail)``; ``detail`` is shown in ``/readyz`` (no secrets)."""

MAX_BODY_BYTES = 1 << 20
"""Inbound request bodies above this are refused (413) by every route."""


@dataclass(slots=True)
class Readiness:
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)

    def add(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def evaluate(self) -> tuple[bool, Mapping[str, Mapping[str, object]]]:
        results: dict[str, Mapping[str, object]] = {}
        ready = True
        for name, check in sorted(self.checks.items()):
            ok, detail = check()
            ready = ready and ok
            results[name] = {"ready": ok, "detail": detail}
        return ready, results


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    *,
    registry: CollectorRegistry,
    readiness: Readiness,
    token: Secret | None = None,
    extra_routes: list[web.RouteDef] | None = None,
    protected_prefixes: tuple[str, ...] = ("/api/",),
) -> web.Application:
    """The aiohttp application; ``token`` guards ``protected_prefixes`` when set."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and request.path.startswith(protected_prefixes):
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {token.reveal()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        return await handler(request)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready, results = readiness.evaluate()
        return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)

    app = web.Application(middlewares=[require_token], client_max_size=MAX_BODY_BYTES)
    app.add_routes(
        [
            web.get("/metrics", metrics),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            *(extra_routes or []),
        ]
    )
    return app


class ListenError(CanarywatchError):
    """The HTTP listener cannot bind its address: in use, not permitted, not a local address.

    One line for the user (``cannot listen on 127.0.0.1:9797: address already in use``)
    instead of the event loop's ``OSError``."""

    def __init__(self, host: str, port: int, error: OSError) -> None:
        self.host = host
        self.port = port
        self.errno = error.errno
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            reason = "address already in use"
        else:
            reason = (error.strerror or type(error).__name__).lower()
        super().__init__(f"cannot listen on {address}: {reason}")


class WebServer:
    """Runs an application on ``host:port`` (port 0 picks a free one; see ``port``)."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        self.port = port

    async def start(self) -> None:
        """Bind and serve; ``ListenError`` (nothing left running) when the address is refused."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ListenError(self._host, self._port, exc) from None
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    async def close(self) -> None:
        await self._runner.cleanup()


async def read_body_limited(request: web.Request, limit: int) -> bytes | None:
    """The request body, or ``None`` once it is known to exceed ``limit`` bytes (a declared
    ``Content-Length`` over it, or more bytes than that arriving): read no further than that."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
