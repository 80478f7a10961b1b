"""Flagger's Event recorder: client-go ``tools/record`` writing core/v1 Events into the store.

What reaches the API is not what Flagger emits (``reference/flagger.md`` §6, client-go
``tools/record/events_cache.go``), and canarywatch must cope with exactly that, so the
simulator reproduces the correlator step by step, in client-go's order:

1. Aggregator, keyed by (source, involvedObject, type, reason, reportingController/Instance):
   once 10 distinct messages were seen with no gap longer than 10 min, every further event
   becomes one Event "(combined from similar events): <message>" (cache key = the aggregate key,
   so it is patched in place: its message changes and its count grows). The aggregate copy has
   no ``reportingComponent``.
2. Logger (dedup), keyed by (source, object incl. fieldPath and uid, type, reason, message):
   a repeat becomes a PATCH of ``count+1``/``lastTimestamp``/``message`` onto the same name
   (MODIFIED). If the Event is gone (TTL), it is re-created under the same name with the old
   ``firstTimestamp`` and the count continued (ADDED with count > 1).
3. Spam filter, per (source, object, type): a token bucket of 25 refilled at 1 per 5 min;
   a filtered event is dropped and never reaches the API (but step 2 already counted it).

Caches are LRUs of 4096 entries, like client-go's. Time comes only from the injected clock.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from canarywatch.clock import Clock
from canarywatch.lru import BoundedLru
from canarywatch.simulator.store import ApiError, Obj, Store, format_time

COMBINED_PREFIX = "(combined from similar events): "
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL = timedelta(seconds=600)
SPAM_BURST = 25
SPAM_QPS = 1.0 / 300.0
LRU_ENTRIES = 4096
"""Size of each of client-go's caches (``maxLruCacheEntries``); a read refreshes, as in
``golang/groupcache/lru``."""


@dataclass(slots=True)
class _AggregateRecord:
    local_keys: set[str] = field(default_factory=set)
    last: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Observation:
    count: int
    first_timestamp: str
    name: str


@dataclass(slots=True)
class _TokenBucket:
    """golang.org/x/time/rate as client-go's passive token bucket uses it."""

    tokens: float
    last: datetime

    def try_accept(self, now: datetime) -> bool:
        elapsed = max(0.0, (now - self.last).total_seconds())
        self.tokens = min(float(SPAM_BURST), self.tokens + elapsed * SPAM_QPS)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Outcome(enum.StrEnum):
    CREATED = "created"
    """A new Event object (watchers see ADDED, count 1)."""
    PATCHED = "patched"
    """count+1 on the existing object (watchers see MODIFIED)."""
    RECREATED = "recreated"
    """The Event had expired: created again under its old name, count continued (ADDED)."""
    DROPPED = "dropped"
    """Swallowed by the spam filter: nothing reached the API."""


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: Outcome
    event: Obj | None
    """The stored Event after the write; ``None`` when dropped."""


def _object_ref(canary: Mapping[str, Any]) -> dict[str, str]:
    meta = canary.get("metadata") or {}
    return {
        "kind": str(canary.get("kind") or "Canary"),
        "namespace": str(meta.get("namespace", "")),
        "name": str(meta.get("name", "")),
        "uid": str(meta.get("uid", "")),
        "apiVersion": str(canary.get("apiVersion") or "flagger.app/v1beta1"),
        "resourceVersion": str(meta.get("resourceVersion", "")),
    }


class FlaggerEventRecorder:
    """Records Flagger's Events about Canaries into ``store`` as client-go ≥ 0.32 would.

        recorder = FlaggerEventRecorder(api.store, clock)
        recorder.record(canary, "Normal", "New revision detected! Scaling up podinfo.test")

    ``canary`` is the Canary object (as stored: its uid and resourceVersion become the
    ``involvedObject``). ``expire_ttl`` runs the store's Event TTL sweep before each record,
    so re-creation after expiry happens as time passes on the clock.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        component: str = "flagger",
        host: str = "",
        reporting_component: str | None = "flagger",
        expire_ttl: bool = True,
        seed: int = 0,
    ) -> None:
        self.store = store
        self._rng = random.Random(seed)  # noqa: S311 - reproducible runs, not security
        self.clock = clock
        self.component = component
        self.host = host
        self.reporting_component = component if reporting_component is None else reporting_component
        self.expire_ttl = expire_ttl
        self._aggregates: BoundedLru[str, _AggregateRecord] = BoundedLru(LRU_ENTRIES)
        self._observed: BoundedLru[str, _Observation] = BoundedLru(LRU_ENTRIES)
        self._spam: BoundedLru[str, _TokenBucket] = BoundedLru(LRU_ENTRIES)
        self._last_nanos = 0

    def record(
        self, canary: Mapping[str, Any], event_type: str, message: str, reason: str = "Synced"
    ) -> Recorded:
        """One ``recorder.Event(canary, type, reason, message)`` call, written synchronously."""
        if self.expire_ttl:
            self.store.expire_events()
        now = self.clock.now()
        event = self._make_event(canary, event_type, reason, message, now)
        event, key = self._aggregate(event, now)
        event, patch = self._observe(event, key)
        if not self._spam_accept(event, now):
            return Recorded(Outcome.DROPPED, None)
        return self._write(event, patch)

    # -- client-go's pipeline ------------------------------------------------------------

    def _make_event(
        self, canary: Mapping[str, Any], event_type: str, reason: str, message: str, now: datetime
    ) -> Obj:
        ref = _object_ref(canary)
        stamp = format_time(now)
        return {
            "metadata": {"name": self._event_name(ref["name"], now), "namespace": ref["namespace"]},
            "involvedObject": ref,
            "reason": reason,
            "message": message,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": event_type,
            "eventTime": None,
            "reportingComponent": self.reporting_component,
            "reportingInstance": self.host,
        }

    def _source_object(self, event: Obj) -> list[str]:
        ref = event["involvedObject"]
        return [
            event["source"].get("component", ""),
            event["source"].get("host", ""),
            ref["kind"],
            ref["namespace"],
            ref["name"],
        ]

    def _event_key(self, event: Obj) -> str:
        ref = event["involvedObject"]
        parts = self._source_object(event)
        parts += [ref.get("fieldPath", ""), ref["uid"], ref["apiVersion"]]
        parts += [event["type"], event["reason"], event["message"]]
        return "\x00".join(parts)

    def _aggregate(self, event: Obj, now: datetime) -> tuple[Obj, str]:
        ref = event["involvedObject"]
        parts = [*self._source_object(event), ref["uid"], ref["apiVersion"], event["type"]]
        parts += [event["reason"], event.get("reportingComponent", ""), event["reportingInstance"]]
        aggregate_key = "\x00".join(parts)
        record = self._aggregates.get(aggregate_key) or _AggregateRecord()
        if record.last is None or now - record.last > AGGREGATE_INTERVAL:
            record = _AggregateRecord()
        record.local_keys.add(event["message"])
        record.last = now
        self._aggregates.put(aggregate_key, record)
        if len(record.local_keys) < AGGREGATE_MAX_EVENTS:
            return event, self._event_key(event)
        # Do not grow the set past the threshold. client-go's PopAny drops an arbitrary key (Go's
        # map order); a seeded choice keeps that arbitrary but the same in every run (a Python
        # ``set.pop`` followed the per-process string hash: which steps folded changed per run).
        record.local_keys.discard(self._rng.choice(sorted(record.local_keys)))
        stamp = format_time(now)
        combined: Obj = {
            "metadata": {"name": self._event_name(ref["name"], now), "namespace": ref["namespace"]},
            "involvedObject": ref,
            "reason": event["reason"],
            "message": COMBINED_PREFIX + event["message"],
            "source": event["source"],
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "type": event["type"],
            "eventTime": None,
            "reportingComponent": "",
            "reportingInstance": "",
        }
        return combined, aggregate_key

    def _observe(self, event: Obj, key: str) -> tuple[Obj, Obj | None]:
        last = self._observed.get(key)
        patch: Obj | None = None
        if last is not None and last.count > 0:
            event["metadata"]["name"] = last.name
            event["firstTimestamp"] = last.first_timestamp
            event["count"] = last.count + 1
            patch = {
                "count": event["count"],
                "lastTimestamp": event["lastTimestamp"],
                "message": event["message"],
            }
        self._observed.put(
            key, _Observation(event["count"], event["firstTimestamp"], event["metadata"]["name"])
        )
        return event, patch

    def _spam_accept(self, event: Obj, now: datetime) -> bool:
        ref = event["involvedObject"]
        key = "\x00".join(
            [*self._source_object(event), ref["uid"], ref["apiVersion"], event["type"]]
        )
        bucket = self._spam.get(key) or _TokenBucket(float(SPAM_BURST), now)
        accepted = bucket.try_accept(now)
        self._spam.put(key, bucket)
        return accepted

    def _write(self, event: Obj, patch: Obj | None) -> Recorded:
        meta = event["metadata"]
        if patch is not None:
            try:
                stored = self.store.patch("events", meta["namespace"], meta["name"], patch)
            except ApiError as error:
                if error.code != 404:
                    raise
                stored = self.store.create("events", event)
                outcome = Outcome.RECREATED
            else:
                outcome = Outcome.PATCHED
        else:
            stored = self.store.create("events", event)
            outcome = Outcome.CREATED
        # client-go's UpdateState: remember the server's answer under the written event's key.
        self._observed.put(
            self._event_key(stored),
            _Observation(stored["count"], stored["firstTimestamp"], stored["metadata"]["name"]),
        )
        return Recorded(outcome, stored)

    def _event_name(self, object_name: str, now: datetime) -> str:
        """``<object>.<hex unix nanoseconds>``, as client-go's makeEvent names Events.

        Kept strictly increasing: a virtual clock often repeats a second, a real one never
        repeats a nanosecond, and equal names would collide on create."""
        nanos = int(now.timestamp()) * 1_000_000_000 + now.microsecond * 1000
        self._last_nanos = max(nanos, self._last_nanos + 1)
        return f"{object_name}.{self._last_nanos:x}"
