"""Kubernetes Events about Flagger Canaries, list-then-watch, as raw observations.

Watches core/v1 Events with the server-side field selector ``involvedObject.kind=Canary``
(or the events.k8s.io/v1 view with ``regarding.kind=Canary``), in all namespaces or in a list of
them, through :class:`~canarywatch.sources.watch.ListWatch`. Each object is emitted as
``Observation(source=kubernetes-events, data={"type", "object"})`` with the Kubernetes JSON
exactly as on the wire (camelCase; ``normalise.kube_events`` reads it).

Duplicates: a relist after 410 Gone re-delivers every existing Event, and a reconnect could
replay; neither must reach the pipeline twice. (A watch that stays silent for
``WatchSettings.silent_stream_s`` is replaced from its last resourceVersion, which replays
nothing; on a busy cluster that resourceVersion may have left the watch cache, and the relist
that follows is absorbed here.) The key is ``(uid, resourceVersion)``: a write
gets a fresh resourceVersion, a re-delivery does not. The memory of keys is bounded (least
recently seen dropped first), which at worst lets a very old re-delivery through; the
normaliser's own repeat check absorbs that.

Start-up policy, "the initial list is state, not news": items of the *first* list are emitted
with ``"initial": true`` in ``data``. The app applies ``catch_up_window``: an initial Event whose
``lastTimestamp`` is newer than the window and that is not in the notification log is still
notified (it happened while canarywatch was down); older ones only seed state. Relisted items
that are new or changed are emitted as ordinary events (no marker).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final, Literal, Never

from kubernetes_asyncio import client
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock
from canarywatch.lru import BoundedLru
from canarywatch.model import Observation, SourceName
from canarywatch.sources.base import Emit
from canarywatch.sources.watch import (
    ListCall,
    OnCatchUp,
    OnReachability,
    WatchedSource,
    WatchEvent,
    WatchSettings,
)

EventsApi = Literal["core/v1", "events.k8s.io/v1"]
DEFAULT_MEMORY: Final = 16384
"""Remembered ``(uid, resourceVersion)`` keys: enough for every Event a busy cluster keeps
within the 1 h Event TTL for the canaries of one Flagger."""

_FIELD_SELECTORS: Final[dict[str, str]] = {
    "core/v1": "involvedObject.kind=Canary",
    "events.k8s.io/v1": "regarding.kind=Canary",
}


class SeenKeys:
    """A bounded set of ``(uid, resourceVersion)``; ``add`` says whether the key was new.

    Seeing a key again refreshes it (a key re-delivered often stays remembered).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("memory must be at least 1")
        self._keys: BoundedLru[tuple[str, str], None] = BoundedLru(size)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: tuple[str, str]) -> bool:
        if self._keys.touch(key):
            return False
        self._keys.put(key, None)
        return True


def event_key(obj: dict[str, Any]) -> tuple[str, str] | None:
    """``(uid, resourceVersion)`` of an object; ``None`` when either is missing."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    uid, rv = meta.get("uid"), meta.get("resourceVersion")
    if not isinstance(uid, str) or not uid or not isinstance(rv, str) or not rv:
        return None
    return (uid, rv)


class KubeEventsSource(WatchedSource):
    """Source ``kubernetes-events``: run it as task ``source:kube_events``.

        source = KubeEventsSource(configuration, cluster="prod", namespaces=["test"])
        await source.run(emit)        # never returns; source.listed is set after the first list

    ``configuration`` is a kubernetes_asyncio ``client.Configuration``
    (``sources.kubeconfig.build_configuration``); the ``ApiClient`` is built and closed inside
    ``run``.
    """

    name = "kube_events"

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        cluster: str = "",
        namespaces: Sequence[str] | None = None,
        api: EventsApi = "core/v1",
        label_selector: str | None = None,
        clock: Clock | None = None,
        settings: WatchSettings | None = None,
        log: FilteringBoundLogger | None = None,
        on_reachability: OnReachability | None = None,
        on_catch_up: OnCatchUp | None = None,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        if api not in _FIELD_SELECTORS:
            raise ValueError(f"api must be one of {sorted(_FIELD_SELECTORS)}")
        super().__init__(
            cluster=cluster,
            namespaces=namespaces,
            label_selector=label_selector,
            clock=clock,
            settings=settings,
            log=log,
            on_reachability=on_reachability,
            on_catch_up=on_catch_up,
        )
        self._configuration = configuration
        self.api: EventsApi = api
        self._seen = SeenKeys(memory)
        self.emitted = 0
        self.duplicates = 0

    async def run(self, emit: Emit) -> Never:
        async with client.ApiClient(self._configuration) as api_client:
            watcher = self._list_watch(
                self._call_for(api_client),
                resource="events" if self.api == "core/v1" else "events.events.k8s.io",
                field_selector=_FIELD_SELECTORS[self.api],
            )

            async def on_event(event: WatchEvent) -> None:
                await self._on_event(event, emit)

            self._log.info("watch_started", api=self.api, namespaces=self._namespaces or "*")
            await watcher.run(on_event)

    def _call_for(self, api_client: client.ApiClient) -> Any:
        api: Any = (
            client.CoreV1Api(api_client)
            if self.api == "core/v1"
            else client.EventsV1Api(api_client)
        )

        def call_for(namespace: str | None) -> ListCall:
            if namespace is None:
                fn: ListCall = api.list_event_for_all_namespaces
                return fn
            return functools.partial(api.list_namespaced_event, namespace)

        return call_for

    async def _on_event(self, event: WatchEvent, emit: Emit) -> None:
        key = event_key(event.object)
        if key is not None and not self._seen.add(key):
            self.duplicates += 1
            return
        data: dict[str, Any] = {"type": event.type, "object": event.object}
        if event.initial:
            data["initial"] = True
        self.emitted += 1
        await emit(
            Observation(
                at=self._clock.now(),
                source=SourceName.KUBERNETES_EVENTS,
                data=data,
                cluster=self.cluster,
            )
        )
