"""The store and the selector parsers on their own (no HTTP): §1.2 and the §1.3 grammar."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest

from canarywatch.clock import VirtualClock
from canarywatch.simulator.selectors import (
    CORE_EVENT_FIELDS,
    CUSTOM_RESOURCE_FIELDS,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from canarywatch.simulator.store import ApiError, Store, WatchType


def _event(name: str, **extra: object) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "test"}, "message": "m", **extra}


def test_revisions_are_strings_from_one_counter_with_gaps() -> None:
    store = Store(seed=3, rv_gap=5)
    rvs = [
        int(store.create(kind, _event(f"o{i}"))["metadata"]["resourceVersion"])
        for i, kind in enumerate(["events", "canaries", "leases", "events", "canaries"] * 3)
    ]
    assert rvs == sorted(rvs)
    assert len(set(rvs)) == len(rvs)
    assert any(b - a > 1 for a, b in itertools.pairwise(rvs))
    assert store.resource_version == rvs[-1]


def test_create_stamps_metadata_and_generation_for_custom_resources() -> None:
    clock = VirtualClock(datetime(2026, 8, 4, 9, 0, 2, tzinfo=UTC))
    store = Store(clock=clock)
    canary = store.create("canaries", {"metadata": {"name": "podinfo", "namespace": "test"}})
    event = store.create("events", _event("e"))
    assert canary["metadata"]["creationTimestamp"] == "2026-08-04T09:00:02Z"
    assert canary["metadata"]["generation"] == 1
    assert "generation" not in event["metadata"]
    assert canary["kind"] == "Canary"
    assert canary["apiVersion"] == "flagger.app/v1beta1"
    assert canary["metadata"]["uid"] != event["metadata"]["uid"]
    with pytest.raises(ApiError) as info:
        store.create("events", _event("e"))
    assert (info.value.code, info.value.reason) == (409, "AlreadyExists")


def test_update_with_stale_rv_conflicts_and_without_rv_is_unconditional() -> None:
    store = Store()
    first = store.create("leases", {"metadata": {"name": "l", "namespace": "ns"}, "spec": {}})
    second = store.update("leases", {**first, "spec": {"holderIdentity": "a"}})
    with pytest.raises(ApiError) as info:
        store.update("leases", {**first, "spec": {"holderIdentity": "b"}})
    assert info.value.code == 409
    assert "the object has been modified" in info.value.message
    unconditional = {**second, "metadata": {"name": "l", "namespace": "ns"}}
    assert store.update("leases", unconditional)["metadata"]["uid"] == first["metadata"]["uid"]


def test_snapshot_rewinds_history_and_compaction_expires_it() -> None:
    store = Store()
    store.create("events", _event("a"))
    at = store.resource_version
    store.patch("events", "test", "a", {"count": 2})
    store.create("events", _event("b"))
    store.delete("events", "test", "a")
    old = store.snapshot("events", at)
    assert [o["metadata"]["name"] for o in old] == ["a"]
    assert "count" not in old[0]
    assert [o["metadata"]["name"] for o in store.items("events")] == ["b"]
    changes = store.changes_since("events", at)
    assert [c.type for c in changes] == [WatchType.MODIFIED, WatchType.ADDED, WatchType.DELETED]
    store.compact()
    with pytest.raises(ApiError) as info:
        store.snapshot("events", at)
    assert info.value.code == 410


def test_event_ttl_deletes_events_by_last_write() -> None:
    clock = VirtualClock(datetime(2026, 8, 4, 9, 0, tzinfo=UTC))
    store = Store(clock=clock, event_ttl=timedelta(hours=1))
    store.create("events", _event("old"))
    clock.advance_by(600)
    store.create("events", _event("young"))
    clock.advance_by(3000)
    assert store.expire_events() == 1
    assert [o["metadata"]["name"] for o in store.items("events")] == ["young"]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=podinfo", {"app": "podinfo"}, True),
        ("app==podinfo", {"app": "other"}, False),
        ("app!=podinfo", {}, True),
        ("tier in (web, api)", {"tier": "api"}, True),
        ("tier notin (web,api)", {"tier": "api"}, False),
        ("tier notin (web,api)", {}, True),
        ("app", {"app": ""}, True),
        ("!app", {"app": "x"}, False),
        ("app=podinfo,tier in (web,api),!canary", {"app": "podinfo", "tier": "web"}, True),
        ("", {"x": "y"}, True),
    ],
)
def test_label_selector_operators(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["app=(x", "a b", "=x", "app in x"])
def test_label_selector_rejects_garbage(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_field_selector_terms_and_unsupported_fields() -> None:
    sel = parse_field_selector(
        "involvedObject.kind=Canary,involvedObject.name==podinfo,type!=Warning",
        CORE_EVENT_FIELDS,
    )
    fields = {"involvedObject.kind": "Canary", "involvedObject.name": "podinfo", "type": "Normal"}
    assert sel.matches(fields)
    assert not sel.matches({**fields, "type": "Warning"})
    with pytest.raises(SelectorError, match=re.escape("field label not supported: spec.x")):
        parse_field_selector("spec.x=1", CORE_EVENT_FIELDS)
    with pytest.raises(SelectorError, match=re.escape("field label not supported: spec.x")):
        parse_field_selector("spec.x=1", CUSTOM_RESOURCE_FIELDS)
