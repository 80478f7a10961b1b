"""A faithful simulated Kubernetes API server on 127.0.0.1, for the demo and end-to-end tests.

It serves core/v1 Events, the events.k8s.io/v1 view of the same stored Events, Flagger Canaries
and coordination.k8s.io Leases with the apiserver's list/watch protocol
(``reference/kubernetes-watch.md`` §1): string resourceVersions from one global revision,
paginated consistent lists, watches that replay history or send synthetic ADDED, bookmarks,
``timeoutSeconds``, 410 after compaction, selectors, Status bodies for every non-2xx, and
the faults of ``faults.FaultPlan``. The real kubernetes_asyncio client talks to it over HTTP.

    async with SimulatedApiServer() as api:
        api.store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
        conf = client.Configuration(host=api.url)
        ...
        api.faults.status(503, verb="list")   # next list fails
        api.compact()                        # older watches now get 410
        api.send_bookmarks()                 # every bookmark-enabled watch gets one now
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from canarywatch.simulator.faults import (
    DelayFault,
    DisconnectFault,
    FaultPlan,
    RawFault,
    RequestInfo,
    StatusFault,
    StreamAction,
    StreamFault,
    reason_for,
)
from canarywatch.simulator.selectors import (
    CORE_EVENT_FIELDS,
    CUSTOM_RESOURCE_FIELDS,
    EVENTS_V1_FIELDS,
    METADATA_FIELDS,
    FieldSet,
    Selection,
    parse_selection,
)
from canarywatch.simulator.store import (
    CLUSTER_SCOPED,
    ApiError,
    Change,
    Obj,
    Store,
    WatchType,
    apply_patch,
    expired,
    status_body,
)

_EVENT_DEFAULTS: Final = (
    ("eventTime", None),
    ("reportingComponent", ""),
    ("reportingInstance", ""),
)
"""What kube-apiserver fills in on a core/v1 Event created without them (as Flagger's are)."""

# -- API views of the stored resources ------------------------------------------------------

_EVENTS_V1_RENAMES: Final = (
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("reportingComponent", "reportingController"),
)


def _identity(obj: Obj) -> Obj:
    return obj


def core_to_events_v1(obj: Obj) -> Obj:
    """A stored core/v1 Event as events.k8s.io/v1 shows it (``pkg/apis/events/v1/conversion``)."""
    out = {k: v for k, v in obj.items() if k not in dict(_EVENTS_V1_RENAMES)}
    for core, v1 in _EVENTS_V1_RENAMES:
        if core in obj:
            out[v1] = obj[core]
    out["kind"], out["apiVersion"] = "Event", "events.k8s.io/v1"
    out.setdefault("eventTime", None)
    return out


def events_v1_to_core(obj: Obj) -> Obj:
    """The reverse of ``core_to_events_v1``: how a write through events.k8s.io/v1 is stored."""
    v1_names = {v1: core for core, v1 in _EVENTS_V1_RENAMES}
    out = {k: v for k, v in obj.items() if k not in v1_names}
    for v1, core in v1_names.items():
        if v1 in obj:
            out[core] = obj[v1]
    out["kind"], out["apiVersion"] = "Event", "v1"
    return out


@dataclass(frozen=True, slots=True)
class View:
    """One served API resource: a URL group/version/plural over a storage resource."""

    group: str
    version: str
    plural: str
    kind: str
    storage: str
    fields: FieldSet
    custom: bool = False
    to_view: Callable[[Obj], Obj] = _identity
    from_view: Callable[[Obj], Obj] = _identity

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def render(self, stored: Obj, *, in_list: bool = False) -> Obj:
        """The object as this view serves it; built-in list items carry no kind/apiVersion."""
        obj = self.to_view(copy.deepcopy(stored))
        obj["kind"], obj["apiVersion"] = self.kind, self.api_version
        if in_list and not self.custom:
            del obj["kind"], obj["apiVersion"]
        return obj


VIEWS: Final[tuple[View, ...]] = (
    View("", "v1", "events", "Event", "events", CORE_EVENT_FIELDS),
    View(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        "events",
        EVENTS_V1_FIELDS,
        to_view=core_to_events_v1,
        from_view=events_v1_to_core,
    ),
    View("flagger.app", "v1beta1", "canaries", "Canary", "canaries", CUSTOM_RESOURCE_FIELDS, True),
    View("coordination.k8s.io", "v1", "leases", "Lease", "leases", METADATA_FIELDS),
    View("", "v1", "configmaps", "ConfigMap", "configmaps", METADATA_FIELDS),
    View("", "v1", "services", "Service", "services", METADATA_FIELDS),
    View("", "v1", "namespaces", "Namespace", "namespaces", METADATA_FIELDS),
)
_BY_PATH: Final = {(v.group, v.version, v.plural): v for v in VIEWS}

# -- settings and small helpers -------------------------------------------------------------


@dataclass(slots=True)
class ServerSettings:
    """Knobs a test or the scenario driver may change at any time."""

    bookmark_interval_s: float | None = None
    """Periodic BOOKMARK cadence; ``None``: none. client-go's comments promise one about every
    minute, but the real kube-apiserver 1.34 sent none to a namespaced Events watch in 75 s,
    even while other namespaces were written (tests/realcluster/test_protocol.py): a client
    must never rely on timed bookmarks, so the simulator sends none unless a test asks."""
    bookmark_before_timeout_s: float | None = None
    """A bookmark this long before ``timeoutSeconds`` ends a stream; ``None``: none (the real
    1.34 server sent none before a 5, 10, 20 or 75 s timeout)."""
    default_watch_timeout_s: float = 1800.0
    """Stream length without ``timeoutSeconds`` (real: 30-60 min)."""
    watch_list_default: bool = True
    """WatchList gate: RV unset/0 watches default to sendInitialEvents=true."""
    too_old_as_http_410: bool = False
    """Answer a too-old watch RV with HTTP 410 instead of 200 + ERROR event."""
    future_rv_wait_s: float = 3.0
    """How long a read at a future RV waits before 504 "Too large resource version"."""
    expire_continue_tokens: bool = False
    """Every ``continue`` token is treated as expired (410)."""
    unserved: set[str] = field(default_factory=set)
    """``group/plural`` of resources answered with 404 (``"flagger.app/canaries"``: CRD missing)."""


_CONTINUE_TOO_OLD: Final = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)
_HEADERS: Final = {"Cache-Control": "no-cache, private"}


def parse_bool(value: str | None) -> bool:
    """The apiserver's query booleans: absent, ``0`` or ``false`` (any case) are false, anything
    else (even empty) is true (``apimachinery/pkg/runtime/conversion.go``)."""
    if value is None:
        return False
    return value.lower() not in ("0", "false")


def json_response(
    obj: Obj, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(obj, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={**_HEADERS, **(headers or {})},
    )


def status_response(error: ApiError, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(error.status(), error.code, headers)


def _invalid_options(causes: list[tuple[str, str]]) -> ApiError:
    """422 for invalid ListOptions (``apimachinery/.../validation.go``)."""
    text = ", ".join(f"{path}: Forbidden: {msg}" for path, msg in causes)
    return ApiError(
        422,
        "Invalid",
        f'ListOptions.meta.k8s.io "" is invalid: {text}',
        {
            "group": "meta.k8s.io",
            "kind": "ListOptions",
            "causes": [
                {"reason": "FieldValueForbidden", "message": f"Forbidden: {m}", "field": p}
                for p, m in causes
            ],
        },
    )


def validate_list_options(query: Mapping[str, str], watch: bool) -> None:
    rv, match = query.get("resourceVersion", ""), query.get("resourceVersionMatch", "")
    has_continue = bool(query.get("continue"))
    causes: list[tuple[str, str]] = []
    if watch:
        if "sendInitialEvents" in query and match != "NotOlderThan":
            causes.append(
                (
                    "resourceVersionMatch",
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )
            )
        if match:
            if "sendInitialEvents" not in query:
                causes.append(
                    (
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch "
                        "unless sendInitialEvents is provided",
                    )
                )
            if match != "NotOlderThan":
                causes.append(("resourceVersionMatch", f'Unsupported value: "{match}"'))
            if has_continue:
                causes.append(
                    (
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
    else:
        if match:
            if not rv:
                causes.append(
                    (
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden unless resourceVersion is provided",
                    )
                )
            if has_continue:
                causes.append(
                    (
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    )
                )
            if match not in ("Exact", "NotOlderThan"):
                causes.append(("resourceVersionMatch", f'Unsupported value: "{match}"'))
            if match == "Exact" and rv == "0":
                causes.append(
                    (
                        "resourceVersionMatch",
                        'resourceVersionMatch "exact" is forbidden for resourceVersion "0"',
                    )
                )
        if "sendInitialEvents" in query:
            causes.append(("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    if causes:
        raise _invalid_options(causes)


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid {name}: {raw!r}") from None


def _rv_param(query: Mapping[str, str]) -> int | None:
    raw = query.get("resourceVersion", "")
    if raw in ("", "0"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid resource version: {raw!r}") from None


def encode_continue(rv: int, start: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{start[0]}/{start[1]}\x00"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        namespace, name = str(raw["start"]).rstrip("\x00").split("/", 1)
        return int(raw["rv"]), (namespace, name)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, "BadRequest", "continue key is not valid") from None


# -- routing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    view: View
    namespace: str | None
    name: str | None
    subresource: str | None


_NOT_FOUND: Final = ApiError(404, "NotFound", "the server could not find the requested resource")


def resolve(path: str) -> Target:
    """Map a URL path onto a view; anything not served is a 404 Status."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _NOT_FOUND
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise _NOT_FOUND
    view = _BY_PATH.get((group, version, rest[0]))
    if view is None:
        raise _NOT_FOUND
    name = rest[1] if len(rest) >= 2 else None
    subresource = rest[2] if len(rest) == 3 else None
    if subresource not in (None, "status") or (subresource and not view.custom):
        raise _NOT_FOUND
    return Target(view, namespace, name, subresource)


def _verb(method: str, target: Target, query: Mapping[str, str]) -> str:
    if target.name is None:
        if method == "GET":
            return "watch" if parse_bool(query.get("watch")) else "list"
        if method == "POST":
            return "create"
        if method == "DELETE":
            return "deletecollection"
    else:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
        if method in verbs:
            return verbs[method]
    raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method: {method}")


# -- the server -----------------------------------------------------------------------------


class _Control:
    """Control items put on watch queues next to store changes."""

    BOOKMARK: Final = "bookmark"
    CLOSE: Final = "close"


class SimulatedApiServer:
    """The aiohttp app plus its runner, bound to 127.0.0.1 on a free port.

    ``store`` holds the objects (write to it directly to simulate other cluster actors);
    ``faults`` programs misbehaviour; ``settings`` holds the protocol knobs; ``requests`` is a
    log of ``(verb, path_qs)`` served, for asserting what a client did (e.g. no hot loop).
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        settings: ServerSettings | None = None,
        faults: FaultPlan | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.store = store or Store()
        self.settings = settings or ServerSettings()
        self.faults = faults or FaultPlan()
        self.requests: list[tuple[str, str]] = []
        self._host, self._port = host, port
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._url = ""
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if not self._url:
            raise RuntimeError("SimulatedApiServer is not started")
        return self._url

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self._url = f"http://{self._host}:{port}"

    async def close(self) -> None:
        """End every open watch cleanly, then stop serving."""
        self._closing.set()
        self.store.broadcast(_Control.CLOSE)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimulatedApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def compact(self, up_to: int | None = None) -> None:
        """Compact the store's history: watches and Exact lists from older RVs get 410."""
        self.store.compact(up_to)

    def send_bookmarks(self) -> None:
        """Every open watch that allowed bookmarks sends one now, at the current revision."""
        self.store.broadcast(_Control.BOOKMARK)

    # -- request handling -------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            target = resolve(request.path)
            view = target.view
            if f"{view.group}/{view.plural}" in self.settings.unserved:
                raise _NOT_FOUND
            verb = _verb(request.method, target, request.query)
            info = RequestInfo(verb, view.storage, target.namespace, target.name, request.path)
            fault = self.faults.take(info)
            stream_fault: StreamFault | None = None
            if isinstance(fault, StatusFault):
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(int(fault.retry_after))
                error = ApiError(fault.code, fault.reason, fault.message)
                if fault.retry_after is not None:
                    error.details["retryAfterSeconds"] = int(fault.retry_after)
                return status_response(error, headers)
            if isinstance(fault, RawFault):
                return web.Response(
                    status=fault.code, text=fault.body, content_type=fault.content_type
                )
            if isinstance(fault, DisconnectFault):
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if isinstance(fault, DelayFault):
                await asyncio.sleep(fault.seconds)
            elif isinstance(fault, StreamFault):
                stream_fault = fault
            return await self._dispatch(request, target, verb, stream_fault)
        except ApiError as error:
            return status_response(error)

    async def _dispatch(
        self, request: web.Request, target: Target, verb: str, stream_fault: StreamFault | None
    ) -> web.StreamResponse:
        view, query = target.view, request.query
        if verb == "list":
            return json_response(await self._list(target, query))
        if verb == "watch":
            return await self._watch(request, target, stream_fault)
        namespace, name = target.namespace or "", target.name or ""
        if verb == "get":
            return json_response(view.render(self.store.get(view.storage, namespace, name)))
        if verb == "delete":
            return json_response(view.render(self.store.delete(view.storage, namespace, name)))
        if verb == "deletecollection":
            raise ApiError(405, "MethodNotAllowed", "deletecollection is not simulated")
        body = await _read_json(request)
        if verb == "create":
            cluster_scoped = view.storage in CLUSTER_SCOPED
            if target.namespace is None and not cluster_scoped:
                raise ApiError(405, "MethodNotAllowed", "create needs a namespaced path")
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "the body must be a JSON object")
            stored = view.from_view(body)
            if view.custom:
                # A CRD with the status subresource ignores .status on create, as on update.
                stored.pop("status", None)
            if view.storage == "events":
                for name, default in _EVENT_DEFAULTS:
                    stored.setdefault(name, default)
            created = self.store.create(view.storage, stored, target.namespace)
            return json_response(view.render(created), 201)
        return json_response(view.render(self._write_item(target, verb, body)))

    def _write_item(self, target: Target, verb: str, body: Any) -> Obj:
        view, namespace, name = target.view, target.namespace or "", target.name or ""
        if verb == "patch":
            current = view.render(self.store.get(view.storage, namespace, name))
            body = apply_patch(current, body)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be a JSON object")
        meta = body.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})",
            )
        meta.update(name=name, namespace=namespace)
        stored = view.from_view(body)
        if target.subresource == "status":
            # Only .status changes through /status; everything else is taken from storage.
            current = self.store.get(view.storage, namespace, name)
            current["status"] = stored.get("status")
            current["metadata"]["resourceVersion"] = meta.get("resourceVersion")
            stored = current
        elif view.custom:
            # The Canary CRD has a status subresource: the main resource ignores .status.
            current_status = self.store.get(view.storage, namespace, name).get("status")
            stored.pop("status", None)
            if current_status is not None:
                stored["status"] = current_status
        return self.store.update(view.storage, stored)

    # -- LIST -------------------------------------------------------------------------------

    async def _list(self, target: Target, query: Mapping[str, str]) -> Obj:
        validate_list_options(query, watch=False)
        view = target.view
        selection = parse_selection(
            query.get("labelSelector"), query.get("fieldSelector"), view.fields
        )
        limit = _int_param(query, "limit")
        token = query.get("continue", "")
        start: tuple[str, str] | None = None
        if token:
            snapshot_rv, start = decode_continue(token)
            if snapshot_rv == -1:
                snapshot_rv = self.store.resource_version
            if self.settings.expire_continue_tokens or snapshot_rv < self.store.compacted_rv:
                error = expired(_CONTINUE_TOO_OLD)
                error.details = {}
                body = error.status()
                body["metadata"] = {"continue": encode_continue(-1, start)}
                raise _PreparedError(body)
        else:
            rv = _rv_param(query)
            match = query.get("resourceVersionMatch", "")
            snapshot_rv = self.store.resource_version
            if rv is not None and match == "Exact":
                if rv < self.store.compacted_rv:
                    raise expired(f"The resourceVersion for the provided list is too old: {rv}")
                if rv > snapshot_rv:
                    await self._wait_for_rv(rv)
                snapshot_rv = rv
            elif rv is not None:
                await self._wait_for_rv(rv)
                snapshot_rv = self.store.resource_version
        candidates = self.store.snapshot_view(
            view.storage, snapshot_rv, target.namespace, after=start
        )
        wanted = limit + 1 if limit is not None and limit > 0 else None
        chosen: list[tuple[tuple[str, str], Obj]] = []
        for key, stored in candidates:  # render (copy) only up to one item past the page
            obj = view.render(stored, in_list=True)
            if selection.matches(obj):
                chosen.append((key, obj))
                if wanted is not None and len(chosen) >= wanted:
                    break
        metadata: Obj = {"resourceVersion": str(snapshot_rv)}
        if limit is not None and limit > 0 and len(chosen) > limit:
            chosen = chosen[:limit]
            metadata["continue"] = encode_continue(snapshot_rv, chosen[-1][0])
            if not query.get("labelSelector") and not query.get("fieldSelector"):
                # Unfiltered: every candidate after this page counts (no rendering needed).
                metadata["remainingItemCount"] = len(candidates) - limit
        return {
            "kind": f"{view.kind}List",
            "apiVersion": view.api_version,
            "metadata": metadata,
            "items": [obj for _, obj in chosen],
        }

    async def _wait_for_rv(self, rv: int) -> None:
        """A read at a revision the store has not reached waits briefly, then 504."""
        deadline = time.monotonic() + self.settings.future_rv_wait_s
        while self.store.resource_version < rv:
            if time.monotonic() >= deadline:
                raise ApiError(
                    504,
                    "Timeout",
                    f"Too large resource version: {rv}, current: {self.store.resource_version}",
                    {
                        "causes": [
                            {
                                "reason": "ResourceVersionTooLarge",
                                "message": "Too large resource version",
                            }
                        ],
                        "retryAfterSeconds": 1,
                    },
                )
            await asyncio.sleep(0.05)

    # -- WATCH ------------------------------------------------------------------------------

    async def _watch(
        self, request: web.Request, target: Target, fault: StreamFault | None
    ) -> web.StreamResponse:
        query = request.query
        validate_list_options(query, watch=True)
        if query.get("continue"):
            raise ApiError(400, "BadRequest", "continue is not allowed with watch")
        view = target.view
        selection = parse_selection(
            query.get("labelSelector"), query.get("fieldSelector"), view.fields
        )
        timeout = _int_param(query, "timeoutSeconds")
        timeout_s = float(timeout) if timeout else self.settings.default_watch_timeout_s
        bookmarks = parse_bool(query.get("allowWatchBookmarks"))
        rv = _rv_param(query)
        if "sendInitialEvents" in query:
            initial = parse_bool(query["sendInitialEvents"])
            end_marker = initial
        else:
            initial = rv is None
            end_marker = initial and self.settings.watch_list_default
        if rv is not None and (initial or rv > self.store.resource_version):
            await self._wait_for_rv(rv)

        # Subscribing and reading the start state happen in one tick: no gap, no duplicate.
        store = self.store
        backlog: list[Change] = []
        initial_objects: list[Obj] = []
        if initial:
            initial_objects = store.items(view.storage, target.namespace)
        elif rv is None:
            pass  # sendInitialEvents=false without RV: start at the current revision
        else:
            try:
                backlog = store.changes_since(view.storage, rv)
            except ApiError as error:
                if self.settings.too_old_as_http_410:
                    raise
                return await _error_stream(request, error.status())
        start_rv = store.resource_version
        subscription = store.subscribe(view.storage)
        try:
            stream = _WatchStream(
                request, view, target.namespace, selection, fault, bookmarks, self._closing
            )
            await stream.open()
            for obj in initial_objects:
                if not await stream.object_event(WatchType.ADDED, obj):
                    return stream.response
            if end_marker and bookmarks:
                sent = await stream.bookmark(start_rv, initial_events_end=True)
                if not sent:
                    return stream.response
            for change in backlog:
                if not await stream.change(change):
                    return stream.response
            await self._follow(stream, subscription.queue, timeout_s)
            return stream.response
        finally:
            subscription.close()

    async def _follow(
        self, stream: _WatchStream, queue: asyncio.Queue[object], timeout_s: float
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        next_bookmark = self._next_bookmark(loop.time(), deadline)
        while not self._closing.is_set() and not stream.done:
            now = loop.time()
            if now >= deadline:
                break
            wake = min(deadline, next_bookmark) if next_bookmark is not None else deadline
            try:
                async with asyncio.timeout(max(0.0, wake - now)):
                    item = await queue.get()
            except TimeoutError:
                if next_bookmark is not None and loop.time() >= next_bookmark:
                    if not await self._drain(stream, queue):
                        return
                    if stream.bookmarks and not await stream.bookmark(self.store.resource_version):
                        return
                    next_bookmark = self._next_bookmark(loop.time(), deadline)
                continue
            if item == _Control.CLOSE:
                break
            if item == _Control.BOOKMARK:
                if not await self._drain(stream, queue):
                    return
                if stream.bookmarks and not await stream.bookmark(self.store.resource_version):
                    return
                continue
            if isinstance(item, Change) and not await stream.change(item):
                return
        await stream.finish()

    def _next_bookmark(self, now: float, deadline: float) -> float | None:
        """client-go's cache_watcher.nextBookmarkTime: every interval, and shortly before the
        deadline when that is still in the future."""
        candidates = []
        if self.settings.bookmark_interval_s is not None:
            candidates.append(now + self.settings.bookmark_interval_s)
        if self.settings.bookmark_before_timeout_s is not None:
            candidates.append(deadline - self.settings.bookmark_before_timeout_s)
        if not candidates:
            return None
        when = min(candidates)
        return when if when > now else None

    async def _drain(self, stream: _WatchStream, queue: asyncio.Queue[object]) -> bool:
        """Send every queued change, so a following bookmark's RV covers them all."""
        while not queue.empty():
            item = queue.get_nowait()
            if isinstance(item, Change) and not await stream.change(item):
                return False
        return True


class _PreparedError(ApiError):
    """An ApiError whose Status body is already built (e.g. carries ``metadata.continue``)."""

    def __init__(self, body: Obj) -> None:
        super().__init__(int(body["code"]), str(body["reason"]), str(body["message"]))
        self._body = body

    def status(self) -> Obj:
        return self._body


async def _read_json(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError:
        raise ApiError(400, "BadRequest", "couldn't get version/kind; json parse error") from None


async def _error_stream(request: web.Request, status: Obj) -> web.StreamResponse:
    """200 and one ERROR event: how the watch cache answers a too-old resourceVersion."""
    response = web.StreamResponse(status=200, headers=_HEADERS)
    response.content_type = "application/json"
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(_line({"type": "ERROR", "object": status}))
        await response.write_eof()
    return response


def _line(event: Obj) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


class _WatchStream:
    """One open watch response: filters, frames and writes events, applies a stream fault.

    Every send method returns ``False`` once the stream is over (client gone or fault ended it).
    """

    def __init__(
        self,
        request: web.Request,
        view: View,
        namespace: str | None,
        selection: Selection,
        fault: StreamFault | None,
        bookmarks: bool,
        closing: asyncio.Event,
    ) -> None:
        self.request = request
        self.view = view
        self.namespace = namespace
        self.selection = selection
        self.fault = fault
        self.bookmarks = bookmarks
        self.closing = closing
        self.response = web.StreamResponse(status=200, headers=_HEADERS)
        self.sent = 0
        self.done = False

    async def open(self) -> None:
        """Send 200 and the headers now, before any event exists."""
        self.response.content_type = "application/json"
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.request)
        await self._maybe_fault(None)

    def _in_scope(self, obj: Obj) -> bool:
        return self.namespace is None or obj["metadata"].get("namespace") == self.namespace

    async def object_event(self, type_: WatchType, stored: Obj) -> bool:
        if not self._in_scope(stored):
            return not self.done
        obj = self.view.render(stored)
        if not self.selection.matches(obj):
            return not self.done
        return await self._send({"type": type_.value, "object": obj})

    async def change(self, change: Change) -> bool:
        """Translate a store change for this watch's selector: an object that starts matching
        is ADDED, one that stops matching is DELETED (``cache_watcher.convertToWatchEvent``)."""
        if not self._in_scope(change.object):
            return not self.done
        current = self.view.render(change.object)
        previous = self.view.render(change.previous) if change.previous is not None else None
        if change.type is WatchType.DELETED:
            if self.selection.matches(current):
                return await self._send({"type": "DELETED", "object": current})
            return not self.done
        now_matches = self.selection.matches(current)
        was_matching = change.type is WatchType.MODIFIED and self.selection.matches(previous)
        if now_matches:
            type_ = "MODIFIED" if was_matching else "ADDED"
            return await self._send({"type": type_, "object": current})
        if was_matching and previous is not None:
            previous["metadata"]["resourceVersion"] = str(change.rv)
            return await self._send({"type": "DELETED", "object": previous})
        return not self.done

    async def bookmark(self, rv: int, *, initial_events_end: bool = False) -> bool:
        metadata: Obj = {"resourceVersion": str(rv)}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": self.view.kind, "apiVersion": self.view.api_version, "metadata": metadata}
        return await self._send({"type": "BOOKMARK", "object": obj})

    async def _send(self, event: Obj) -> bool:
        if self.done:
            return False
        if self.fault is not None and self.fault.action is StreamAction.TRUNCATE:
            await self._maybe_fault(event)
            if self.done:
                return False
        try:
            await self.response.write(_line(event))
        except ConnectionError:
            self.done = True
            return False
        self.sent += 1
        await self._maybe_fault(None)
        return not self.done

    async def _maybe_fault(self, event: Obj | None) -> None:
        fault = self.fault
        if fault is None or self.sent < fault.after_events:
            return
        self.fault = None
        action = fault.action
        if action is StreamAction.TRUNCATE and event is None:
            self.fault = fault  # needs a line to cut: wait for the next event
            return
        self.done = True
        try:
            if action is StreamAction.ERROR:
                status = status_body(
                    fault.code,
                    reason_for(fault.code),
                    fault.message
                    or (
                        "too old resource version"
                        if fault.code == 410
                        else "Internal error occurred: injected stream error"
                    ),
                )
                await self.response.write(_line({"type": "ERROR", "object": status}))
                await self.response.write_eof()
            elif action is StreamAction.TRUNCATE and event is not None:
                line = _line(event)
                await self.response.write(line[: max(1, len(line) // 2)])
                await self.response.write_eof()
            elif action is StreamAction.CLOSE:
                await self.response.write_eof()
            elif action is StreamAction.DROP:
                if self.request.transport is not None:
                    self.request.transport.abort()
            elif action is StreamAction.SILENT:
                await self.closing.wait()
        except ConnectionError:
            return

    async def finish(self) -> None:
        """End the body cleanly: a watch that times out sends no final event."""
        if self.done:
            return
        self.done = True
        with contextlib.suppress(ConnectionError):
            await self.response.write_eof()
