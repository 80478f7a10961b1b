"""Flagger Canaries (``flagger.app/v1beta1``), list-then-watch, as raw observations.

Same discipline as ``sources.kube_events`` through the shared
:class:`~canarywatch.sources.watch.ListWatch`, over ``CustomObjectsApi`` (which returns plain
dicts). The Canary ``status`` is the lifecycle's source of truth, so what reaches the pipeline
is status changes:

- ``ADDED`` / ``DELETED`` are always emitted; ``MODIFIED`` only when ``status`` differs from the
  last one seen (metadata-only writes, spec edits Flagger has not acted on yet, and
  re-deliveries are dropped here);
- the first list is emitted with ``"initial": true`` (state, not news; ``normalise.status``
  only remembers a first sight anyway);
- a relist after 410 Gone emits what changed while the watch was away: an unchanged canary is
  skipped, a changed one is a ``MODIFIED``, an unknown one an ``ADDED``, and one that vanished a
  synthetic ``DELETED`` carrying its last known state.

It also keeps the index "target workload -> canary" per namespace that the Flagger-metrics
normaliser needs (:meth:`CanariesSource.workload_to_canary`). A 404 means the Canary CRD is not
installed: the watch loop warns and retries slowly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final, Never

from kubernetes_asyncio import client
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock
from canarywatch.model import Observation, SourceName
from canarywatch.sources.base import Emit
from canarywatch.sources.watch import (
    Listed,
    OnCatchUp,
    OnReachability,
    WatchedSource,
    WatchEvent,
    WatchSettings,
)

GROUP: Final = "flagger.app"
VERSION: Final = "v1beta1"
PLURAL: Final = "canaries"
PRIMARY_SUFFIX: Final = "-primary"

Key = tuple[str, str]


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _key(obj: dict[str, Any]) -> Key:
    meta = _meta(obj)
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))


def target_of(obj: dict[str, Any]) -> str | None:
    """``spec.targetRef.name``, the workload Flagger manages for this canary."""
    spec = obj.get("spec")
    ref = spec.get("targetRef") if isinstance(spec, dict) else None
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


class CanariesSource(WatchedSource):
    """Source ``canaries``: run it as task ``source:canaries``.

    source = CanariesSource(configuration, cluster="prod")
    await source.run(emit)                     # never returns
    source.workload_to_canary("test", "podinfo")  # -> "podinfo" once listed
    """

    name = "canaries"

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        cluster: str = "",
        namespaces: Sequence[str] | None = None,
        label_selector: str | None = None,
        clock: Clock | None = None,
        settings: WatchSettings | None = None,
        log: FilteringBoundLogger | None = None,
        on_reachability: OnReachability | None = None,
        on_catch_up: OnCatchUp | None = None,
    ) -> None:
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
        self._known: dict[Key, dict[str, Any]] = {}
        self._targets: dict[Key, str] = {}
        """``(namespace, workload) -> canary name``."""
        self.skipped = 0

    # -- the workload index ------------------------------------------------------------------

    def workload_to_canary(self, namespace: str, workload: str) -> str | None:
        """The canary whose ``spec.targetRef`` is ``workload`` (or whose target's primary,
        ``<target>-primary``, it is) in ``namespace``; ``None`` if unknown."""
        name = self._targets.get((namespace, workload))
        if name is None and workload.endswith(PRIMARY_SUFFIX):
            name = self._targets.get((namespace, workload[: -len(PRIMARY_SUFFIX)]))
        return name

    def _index(self, obj: dict[str, Any]) -> None:
        key = _key(obj)
        previous = self._known.get(key)
        if previous is not None:
            self._unindex(previous)
        self._known[key] = obj
        target = target_of(obj)
        if target is not None:
            self._targets[(key[0], target)] = key[1]

    def _unindex(self, obj: dict[str, Any]) -> None:
        namespace, name = _key(obj)
        target = target_of(obj)
        if target is not None and self._targets.get((namespace, target)) == name:
            del self._targets[(namespace, target)]

    def _forget(self, obj: dict[str, Any]) -> None:
        self._unindex(obj)
        self._known.pop(_key(obj), None)

    # -- running -----------------------------------------------------------------------------

    async def run(self, emit: Emit) -> Never:
        async with client.ApiClient(self._configuration) as api_client:
            api: Any = client.CustomObjectsApi(api_client)

            def call_for(namespace: str | None) -> Any:
                if namespace is None:
                    return functools.partial(api.list_cluster_custom_object, GROUP, VERSION, PLURAL)
                return functools.partial(
                    api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL
                )

            watcher = self._list_watch(call_for, resource="canaries.flagger.app")

            async def on_event(event: WatchEvent) -> None:
                await self._on_event(event, emit)

            async def on_listed(listed: Listed) -> None:
                await self._on_listed(listed, emit)

            self._log.info("watch_started", namespaces=self._namespaces or "*")
            await watcher.run(on_event, on_listed)

    async def _on_event(self, event: WatchEvent, emit: Emit) -> None:
        obj = event.object
        key = _key(obj)
        previous = self._known.get(key)
        kind = event.type
        if kind == "DELETED":
            self._forget(obj)
            await self._emit(emit, "DELETED", obj)
            return
        self._index(obj)
        if event.initial:
            await self._emit(emit, "ADDED", obj, initial=True)
            return
        if previous is not None and _uid(previous) == _uid(obj):
            if previous.get("status") == obj.get("status"):
                self.skipped += 1
                return
            if event.relisted:
                kind = "MODIFIED"
        elif event.relisted:
            kind = "ADDED"
        await self._emit(emit, kind, obj)

    async def _on_listed(self, listed: Listed, emit: Emit) -> None:
        """After a relist: canaries that vanished while the watch was away are DELETED."""
        if not listed.relist:
            return
        gone = [
            obj
            for key, obj in self._known.items()
            if key not in listed.keys and (listed.scope is None or key[0] == listed.scope)
        ]
        for obj in gone:
            self._forget(obj)
            await self._emit(emit, "DELETED", obj)

    async def _emit(
        self, emit: Emit, kind: str, obj: dict[str, Any], *, initial: bool = False
    ) -> None:
        data: dict[str, Any] = {"type": kind, "object": obj}
        if initial:
            data["initial"] = True
        await emit(
            Observation(
                at=self._clock.now(), source=SourceName.CANARIES, data=data, cluster=self.cluster
            )
        )


def _uid(obj: dict[str, Any]) -> str:
    return str(_meta(obj).get("uid", ""))
