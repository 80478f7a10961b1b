"""Replay what the simulated Flagger writes into an API server, through its REST API.

``FlaggerSimulator`` and its client-go-like Event recorder write into an in-memory ``Store``.
``StoreMirror`` subscribes to that store and performs every write again against a real (or
simulated) API server over HTTP, in revision order, the way Flagger's client does it: POST a new
object, PATCH an Event's count bump, PUT a Canary's status through the status subresource,
DELETE. So the scripted scenarios that drive the simulator also drive the real kube-apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.kube_rest import KubeApiError, KubeRest

from canarywatch.simulator.store import Change, Store, WatchType

_SERVER_OWNED = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields")
_RESOURCES = ("canaries", "events")


def _for_create(obj: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj["metadata"].items() if k not in _SERVER_OWNED}
    return body


def _path(resource: str, namespace: str, name: str | None = None) -> str:
    base = (
        f"/apis/flagger.app/v1beta1/namespaces/{namespace}/canaries"
        if resource == "canaries"
        else f"/api/v1/namespaces/{namespace}/events"
    )
    return base if name is None else f"{base}/{name}"


class StoreMirror:
    """Apply each change of ``store`` (Events and Canaries) to ``api``, in order."""

    def __init__(self, store: Store, api: KubeRest) -> None:
        self.store = store
        self.api = api
        self.applied = 0
        self.errors: list[str] = []
        self._queue: asyncio.Queue[Change] = asyncio.Queue()
        self._namespaces: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[StoreMirror]:
        subscriptions = [self.store.subscribe(resource) for resource in _RESOURCES]
        pumps = [asyncio.create_task(self._pump(s.queue)) for s in subscriptions]
        worker = asyncio.create_task(self._work())
        try:
            yield self
        finally:
            for task in (*pumps, worker):
                task.cancel()
            for task in (*pumps, worker):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for subscription in subscriptions:
                subscription.close()

    async def drained(self, timeout_s: float = 30.0) -> None:
        """Until every change made so far has been applied."""
        async with asyncio.timeout(timeout_s):
            await asyncio.sleep(0)
            while not (self._queue.empty() and self._idle.is_set()):
                await asyncio.sleep(0.01)

    async def _pump(self, queue: asyncio.Queue[object]) -> None:
        while True:
            item = await queue.get()
            if isinstance(item, Change):
                self._idle.clear()
                self._queue.put_nowait(item)

    async def _work(self) -> None:
        pending: list[Change] = []
        while True:
            pending.append(await self._queue.get())
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            # Two subscriptions feed the queue: put their changes back in revision order.
            pending.sort(key=lambda change: change.rv)
            for change in pending:
                try:
                    await self._apply(change)
                    self.applied += 1
                except KubeApiError as error:
                    self.errors.append(f"{change.type} {change.resource} rv={change.rv}: {error}")
            pending.clear()
            if self._queue.empty():
                self._idle.set()

    async def _apply(self, change: Change) -> None:
        obj = change.object
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if namespace not in self._namespaces:
            await self.api.ensure_namespace(namespace)
            self._namespaces.add(namespace)
        path = _path(change.resource, namespace, name)
        if change.type is WatchType.DELETED:
            with contextlib.suppress(KubeApiError):  # the server's own TTL may have been first
                await self.api.delete(path)
            return
        if change.type is WatchType.ADDED:
            await self.api.post(_path(change.resource, namespace), _for_create(obj))
            if change.resource == "canaries" and obj.get("status") is not None:
                await self.api.set_canary_status(namespace, name, obj["status"])
            return
        previous = change.previous or {}
        if change.resource == "events":
            patch = {
                key: value
                for key, value in obj.items()
                if key not in ("metadata", "kind", "apiVersion") and previous.get(key) != value
            }
            if patch:
                await self.api.merge_patch(path, patch)
            return
        if obj.get("spec") != previous.get("spec"):
            await self.api.merge_patch(path, {"spec": obj.get("spec")})
        if obj.get("status") != previous.get("status"):
            await self.api.set_canary_status(namespace, name, obj.get("status") or {})
