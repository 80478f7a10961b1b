"""A small async REST writer for Kubernetes API servers, real or simulated.

Tests play the other actors of a cluster (Flagger writing Events and Canary status, a user
applying a Canary) through the API, exactly as those actors do, so that the same test runs
against the real kube-apiserver and the simulator. It is deliberately not kubernetes_asyncio:
canarywatch's own client is the thing under test.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp


class KubeApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        reason = body.get("reason", "") if isinstance(body, dict) else ""
        message = body.get("message", body) if isinstance(body, dict) else body
        super().__init__(f"{status} {reason}: {message}")


class KubeRest:
    """``async with KubeRest(url, token, ca_file) as api: await api.post(path, obj)``."""

    def __init__(self, url: str, token: str, ca_file: Path | None = None) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ssl: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
        )
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeRest:
        self._session = aiohttp.ClientSession(headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self, method: str, path: str, body: Any = None, *,
        content_type: str = "application/json", params: dict[str, str] | None = None,
    ) -> Any:  # fmt: skip
        assert self._session is not None, "use KubeRest in an async with block"
        async with self._session.request(
            method, self.url + path, json=body, params=params, ssl=self._ssl,
            headers={"Content-Type": content_type},
        ) as reply:  # fmt: skip
            payload = await reply.json(content_type=None) if reply.content_length != 0 else None
            if reply.status >= 400:
                raise KubeApiError(reply.status, payload)
            return payload

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming GET (a watch); the caller reads ``content``.

        Left before the server ended the stream (the test stopped reading, or timed out), the
        connection is aborted, not closed: a graceful TLS close needs more turns of the event loop
        than the test has left, and its socket would then surface as an "unclosed transport"
        warning in whichever later test the garbage collector happens to run in.
        """
        assert self._session is not None, "use KubeRest in an async with block"
        reply = await self._session.get(
            self.url + path, ssl=self._ssl, timeout=aiohttp.ClientTimeout(total=None)
        )
        try:
            yield reply
        finally:
            connection = reply.connection
            if not reply.content.at_eof() and connection and connection.transport:
                connection.transport.abort()
            reply.release()
            await asyncio.sleep(0)  # let the aborted transport finish closing

    async def get(self, path: str, **params: str) -> Any:
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, obj: Any) -> Any:
        return await self.call("POST", path, obj)

    async def put(self, path: str, obj: Any) -> Any:
        return await self.call("PUT", path, obj)

    async def merge_patch(self, path: str, patch: Any) -> Any:
        return await self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    async def delete(self, path: str) -> Any:
        return await self.call("DELETE", path)

    # -- what the tests write ------------------------------------------------------------

    async def ensure_namespace(self, name: str) -> None:
        try:
            await self.post(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        except KubeApiError as error:
            if error.status != 409:
                raise

    async def create_canary(
        self, namespace: str, name: str, *, spec: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec
            or {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
        }
        created: dict[str, Any] = await self.post(
            f"/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries", body
        )
        return created

    async def set_canary_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace the status through the status subresource, as Flagger does (retrying on a
        conflict with a fresh read)."""
        path = f"/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries/{name}"
        for _ in range(5):
            current = await self.get(path)
            current["status"] = status
            try:
                updated: dict[str, Any] = await self.put(f"{path}/status", current)
            except KubeApiError as error:
                if error.status != 409:
                    raise
            else:
                return updated
        raise RuntimeError(f"status update of {namespace}/{name} kept conflicting")

    async def create_event(self, namespace: str, event: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = await self.post(f"/api/v1/namespaces/{namespace}/events", event)
        return created

    async def update_event(self, namespace: str, event: dict[str, Any]) -> dict[str, Any]:
        name = event["metadata"]["name"]
        updated: dict[str, Any] = await self.put(
            f"/api/v1/namespaces/{namespace}/events/{name}", event
        )
        return updated
