"""The simulated cluster's object store: what etcd plus the watch cache do for the apiserver.

One global integer revision is shared by every resource, exactly like etcd's: every create,
update, patch and delete bumps it (by a small seeded random step, so a client that assumes "+1"
breaks) and stamps ``metadata.resourceVersion`` as a string. Each write is appended to a bounded
history of ``(rv, type, object, previous)``; the history is what watches replay from and what
``snapshot(rv)`` rewinds through for consistent paging and ``resourceVersionMatch=Exact``. Once
history is dropped (``compact`` or the size bound), reads and watches from older revisions fail
with 410, as after an etcd compaction.

Objects are stored in their storage form (core/v1 for Events, with ``kind``/``apiVersion``);
the API views in ``apiserver`` convert and strip on the way out. Writers get copies, never
references, so nobody can mutate stored state behind the watchers' backs.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import enum
import random
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, TypeAlias

from canarywatch.clock import Clock, SystemClock

Obj: TypeAlias = dict[str, Any]
"""A Kubernetes object as decoded JSON."""

Key: TypeAlias = tuple[str, str]
"""``(namespace, name)``; the list order of the apiserver."""

_STORAGE: Mapping[str, tuple[str, str, bool]] = {
    # storage resource -> (kind, apiVersion, is a custom resource)
    "events": ("Event", "v1", False),
    "canaries": ("Canary", "flagger.app/v1beta1", True),
    "leases": ("Lease", "coordination.k8s.io/v1", False),
    "configmaps": ("ConfigMap", "v1", False),
    "services": ("Service", "v1", False),
    "namespaces": ("Namespace", "v1", False),
}
RESOURCES: frozenset[str] = frozenset(_STORAGE)
CLUSTER_SCOPED: frozenset[str] = frozenset({"namespaces"})
"""Resources without a namespace (their key is ``("", name)``)."""
"""The storage resources the simulator knows: ``events``, ``canaries``, ``leases``,
``configmaps`` (the HA notification log)."""


def format_time(when: datetime) -> str:
    """RFC 3339 at second precision with ``Z``: how ``metav1.Time`` serialises."""
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(
    code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
) -> Obj:
    """A ``meta/v1`` Status object, the body of every non-2xx answer."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = dict(details)
    return body


class ApiError(Exception):
    """A failure the apiserver reports as a Status: raised by the store, rendered by the server."""

    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details) if details else {}

    def status(self) -> Obj:
        return status_body(self.code, self.reason, self.message, self.details)


def _qualified(resource: str) -> str:
    """``events`` / ``canaries.flagger.app``: how error messages name a resource."""
    api_version = _STORAGE[resource][1]
    return f"{resource}.{api_version.split('/')[0]}" if "/" in api_version else resource


def not_found(resource: str, name: str) -> ApiError:
    details: dict[str, Any] = {"name": name, "kind": resource}
    api_version = _STORAGE[resource][1]
    if "/" in api_version:
        details["group"] = api_version.split("/")[0]
    return ApiError(404, "NotFound", f'{_qualified(resource)} "{name}" not found', details)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


class WatchType(enum.StrEnum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class Change:
    """One write as the watch cache keeps it; ``previous`` lets snapshots rewind and lets
    selector-filtered watches turn "stopped matching" into DELETED."""

    rv: int
    resource: str
    type: WatchType
    object: Obj
    previous: Obj | None


@dataclass(slots=True)
class _Subscriber:
    resource: str
    queue: asyncio.Queue[object] = field(default_factory=asyncio.Queue)


class Subscription:
    """A live feed of one resource's changes, in revision order, for one watch stream.

    Besides ``Change`` items the queue carries control items pushed by the server (a
    "bookmark now" or "close" marker); the store only ever puts ``Change`` objects.
    """

    def __init__(self, store: Store, sub: _Subscriber) -> None:
        self._store = store
        self._sub = sub

    @property
    def queue(self) -> asyncio.Queue[object]:
        return self._sub.queue

    def close(self) -> None:
        self._store._unsubscribe(self._sub)


class Store:
    """Objects of every simulated resource, the global revision, and the write history.

    ``clock`` stamps ``creationTimestamp`` and drives the Event TTL; ``seed`` makes uids and
    revision gaps reproducible; ``rv_gap`` is the largest step between two revisions;
    ``history_limit`` bounds the kept history (older entries count as compacted);
    ``event_ttl`` is the apiserver's ``--event-ttl`` (``None`` disables expiry).
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        seed: int = 0,
        start_rv: int = 1000,
        rv_gap: int = 3,
        history_limit: int = 10_000,
        event_ttl: timedelta | None = timedelta(hours=1),
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._rng = random.Random(seed)  # noqa: S311 - seeded for reproducible runs, not security
        self._rv = start_rv
        self._rv_gap = max(1, rv_gap)
        self._history: deque[Change] = deque()
        self._history_limit = history_limit
        self._compacted_rv = start_rv
        self._objects: dict[str, dict[Key, Obj]] = {r: {} for r in RESOURCES}
        self._written_at: dict[Key, datetime] = {}
        self._subscribers: list[_Subscriber] = []
        self.event_ttl = event_ttl
        self._sorted_views: dict[tuple[str, int], tuple[list[Key], dict[Key, Obj]]] = {}
        """The last few snapshots a paged list read, keys sorted: a snapshot at a revision never
        changes (every write takes a new one), and each page of a list reads the same one."""

    # -- revisions -------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The current global revision (the list RV of a consistent read)."""
        return self._rv

    @property
    def compacted_rv(self) -> int:
        """History at or below this revision is gone: older reads and watches get 410."""
        return self._compacted_rv

    def compact(self, up_to: int | None = None) -> None:
        """Forget history up to ``up_to`` (default: everything so far), like an etcd compaction."""
        target = self._rv if up_to is None else min(up_to, self._rv)
        while self._history and self._history[0].rv <= target:
            self._history.popleft()
        self._compacted_rv = max(self._compacted_rv, target)

    def _next_rv(self) -> int:
        self._rv += self._rng.randint(1, self._rv_gap)
        return self._rv

    # -- reads -----------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> Obj:
        obj = self._objects[_known(resource)].get((namespace, name))
        if obj is None:
            raise not_found(resource, name)
        return copy.deepcopy(obj)

    def items(self, resource: str, namespace: str | None = None) -> list[Obj]:
        """Current objects in key order (copies)."""
        return self.snapshot(resource, self._rv, namespace)

    def snapshot(self, resource: str, rv: int, namespace: str | None = None) -> list[Obj]:
        """The objects as they were at revision ``rv``, in key order; 410 if compacted."""
        return [copy.deepcopy(obj) for _, obj in self.snapshot_view(resource, rv, namespace)]

    def snapshot_view(
        self,
        resource: str,
        rv: int,
        namespace: str | None = None,
        *,
        after: Key | None = None,
    ) -> list[tuple[Key, Obj]]:
        """Like ``snapshot`` but without copying, from the first key past ``after``.

        The objects are the store's own: read them, never change them. A paged list serves
        one page per request, so it must not copy the whole collection every time.
        """
        if rv < self._compacted_rv:
            raise expired(f"too old resource version: {rv} ({self._compacted_rv})")
        keys, state = self._sorted_view(_known(resource), rv)
        low, high = 0, len(keys)
        if namespace is not None:
            low = bisect.bisect_left(keys, (namespace,))
            high = bisect.bisect_left(keys, (namespace + "\x00",))
        if after is not None:
            low = max(low, bisect.bisect_right(keys, after))
        return [(k, state[k]) for k in keys[low:high]]

    def _sorted_view(self, resource: str, rv: int) -> tuple[list[Key], dict[Key, Obj]]:
        """``resource`` as it was at revision ``rv``, and its keys in order (kept for reuse)."""
        found = self._sorted_views.get((resource, rv))
        if found is not None:
            return found
        state = dict(self._objects[resource])
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.resource != resource:
                continue
            key = _key(change.object)
            if change.previous is None:
                state.pop(key, None)
            else:
                state[key] = change.previous
        if len(self._sorted_views) >= _SORTED_VIEWS_KEPT:
            del self._sorted_views[next(iter(self._sorted_views))]
        found = self._sorted_views[(resource, rv)] = (sorted(state), state)
        return found

    def changes_since(self, resource: str, rv: int) -> list[Change]:
        """History of ``resource`` with revision > ``rv``; 410 when that is no longer known."""
        if rv < self._compacted_rv:
            raise expired(f"too old resource version: {rv} ({self._compacted_rv})")
        return [c for c in self._history if c.rv > rv and c.resource == resource]

    def subscribe(self, resource: str) -> Subscription:
        """Start receiving every later change of ``resource`` (call in the same tick as the
        read that precedes it, so nothing is lost or duplicated in between)."""
        sub = _Subscriber(_known(resource))
        self._subscribers.append(sub)
        return Subscription(self, sub)

    def _unsubscribe(self, sub: _Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    def broadcast(self, item: object) -> None:
        """Put a control item on every open subscription (``send bookmarks now``, close)."""
        for sub in self._subscribers:
            sub.queue.put_nowait(item)

    # -- writes ----------------------------------------------------------------------------

    def create(self, resource: str, obj: Mapping[str, Any], namespace: str | None = None) -> Obj:
        """Store a new object; 409 AlreadyExists if the name is taken. Returns the stored copy."""
        kind, api_version, custom = _STORAGE[_known(resource)]
        new: Obj = copy.deepcopy(dict(obj))
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if namespace is not None:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(self._rng.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            meta["name"] = f"{meta['generateName']}{suffix}"
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "" is invalid: metadata.name: Required value: name or generateName '
                "is required",
                {"kind": resource, "causes": [_cause("FieldValueRequired", "metadata.name")]},
            )
        if not meta.get("namespace") and resource not in CLUSTER_SCOPED:
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: metadata.namespace: Required value',
                {"name": name, "kind": resource},
            )
        key = (meta.get("namespace", ""), name)
        if key in self._objects[resource]:
            details: dict[str, Any] = {"name": name, "kind": resource}
            if custom:
                details["group"] = api_version.split("/")[0]
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_qualified(resource)} "{name}" already exists',
                details,
            )
        new["kind"], new["apiVersion"] = kind, api_version
        meta.pop("resourceVersion", None)
        meta["uid"] = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        meta["creationTimestamp"] = format_time(self.clock.now())
        if custom:
            meta["generation"] = 1
        return self._write(resource, WatchType.ADDED, new, None)

    def update(self, resource: str, obj: Mapping[str, Any]) -> Obj:
        """Replace an object (PUT). A ``metadata.resourceVersion`` that is not the stored one
        is a 409 Conflict; without one the update is unconditional."""
        new: Obj = copy.deepcopy(dict(obj))
        meta = new.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        old = self._objects[_known(resource)].get(key)
        if old is None:
            raise not_found(resource, key[1])
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            details: dict[str, Any] = {"name": key[1], "kind": resource}
            api_version = _STORAGE[resource][1]
            if "/" in api_version:
                details["group"] = api_version.split("/")[0]
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {_qualified(resource)} "{key[1]}": the object '
                "has been modified; please apply your changes to the latest version and try again",
                details,
            )
        kind, api_version, custom = _STORAGE[resource]
        new["kind"], new["apiVersion"] = kind, api_version
        new_meta = new.setdefault("metadata", {})
        for immutable in ("uid", "creationTimestamp", "namespace", "name"):
            new_meta[immutable] = old["metadata"][immutable]
        if custom:
            generation = int(old["metadata"].get("generation", 1))
            if new.get("spec") != old.get("spec"):
                generation += 1
            new_meta["generation"] = generation
        return self._write(resource, WatchType.MODIFIED, new, old)

    def patch(self, resource: str, namespace: str, name: str, patch: Any) -> Obj:
        """Apply a JSON merge patch (a dict; strategic merge is the same for scalar fields such as
        an Event's ``count``) or a JSON Patch (a list of operations) and store the result."""
        current = self.get(resource, namespace, name)
        patched = apply_patch(current, patch)
        patched.setdefault("metadata", {}).update(namespace=namespace, name=name)
        return self.update(resource, patched)

    def delete(self, resource: str, namespace: str, name: str) -> Obj:
        """Remove an object; the DELETED change carries its last state with the deletion RV."""
        old = self._objects[_known(resource)].get((namespace, name))
        if old is None:
            raise not_found(resource, name)
        return self._write(resource, WatchType.DELETED, copy.deepcopy(old), old)

    def expire_events(self) -> int:
        """Delete Events not written for ``event_ttl`` (the apiserver's etcd lease per write)."""
        if self.event_ttl is None:
            return 0
        now = self.clock.now()
        stale = sorted(
            (
                key
                for key in self._objects["events"]
                if now - self._written_at.get(key, now) >= self.event_ttl
            ),
            key=lambda k: self._written_at[k],
        )
        for namespace, name in stale:
            self.delete("events", namespace, name)
        return len(stale)

    def _write(self, resource: str, type_: WatchType, obj: Obj, previous: Obj | None) -> Obj:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        key = _key(obj)
        if type_ is WatchType.DELETED:
            del self._objects[resource][key]
            if resource == "events":
                self._written_at.pop(key, None)
        else:
            self._objects[resource][key] = obj
            if resource == "events":
                self._written_at[key] = self.clock.now()
        change = Change(rv, resource, type_, obj, previous)
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self._compacted_rv = self._history.popleft().rv
        for sub in self._subscribers:
            if sub.resource == resource:
                sub.queue.put_nowait(change)
        return copy.deepcopy(obj)

    def load(self, resource: str, objects: Iterable[Mapping[str, Any]]) -> list[Obj]:
        """Create several objects (fixture seeding); each keeps its namespace from metadata."""
        return [self.create(resource, o) for o in objects]


_SORTED_VIEWS_KEPT: Final = 4


def _known(resource: str) -> str:
    if resource not in _STORAGE:
        raise KeyError(f"unknown simulated resource {resource!r}; known: {sorted(RESOURCES)}")
    return resource


def _key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return (str(meta.get("namespace", "")), str(meta["name"]))


def _cause(reason: str, field_path: str) -> Obj:
    return {"reason": reason, "message": "Required value", "field": field_path}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``null`` deletes, objects merge recursively, rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: Obj = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def apply_patch(obj: Obj, patch: Any) -> Obj:
    """Merge patch for a dict, RFC 6902 ``add``/``replace``/``remove``/``test`` for a list."""
    if isinstance(patch, dict):
        merged: Obj = merge_patch(obj, patch)
        return merged
    if not isinstance(patch, list):
        raise ApiError(400, "BadRequest", "patch body must be a JSON object or array")
    result = copy.deepcopy(obj)
    for op in patch:
        _json_patch_op(result, op)
    return result


def _json_patch_op(doc: Obj, op: Any) -> None:
    if not isinstance(op, dict) or not isinstance(op.get("path"), str):
        raise ApiError(400, "BadRequest", f"invalid JSON Patch operation: {op!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    if not parts:
        raise ApiError(400, "BadRequest", "JSON Patch on the document root is not supported")
    parent: Any = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
        if parent is None:
            raise ApiError(422, "Invalid", f"JSON Patch path not found: {op['path']}")
    last = parts[-1]
    kind = op.get("op")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op.get("value"))
        elif kind == "replace":
            parent[index] = op.get("value")
        elif kind == "remove":
            del parent[index]
        elif kind == "test" and parent[index] != op.get("value"):
            raise ApiError(422, "Invalid", f"JSON Patch test failed at {op['path']}")
        return
    if kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise ApiError(422, "Invalid", f"JSON Patch path not found: {op['path']}")
        parent[last] = op.get("value")
    elif kind == "remove":
        if last not in parent:
            raise ApiError(422, "Invalid", f"JSON Patch path not found: {op['path']}")
        del parent[last]
    elif kind == "test":
        if parent.get(last) != op.get("value"):
            raise ApiError(422, "Invalid", f"JSON Patch test failed at {op['path']}")
    else:
        raise ApiError(400, "BadRequest", f"unsupported JSON Patch op {kind!r}")
