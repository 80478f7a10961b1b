"""The Flagger Event recorder (§1.6) reproduces client-go's correlation, checked against the
composed fixtures: replaying Flagger's record calls must yield the same watch stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, watch

from canarywatch.clock import VirtualClock
from canarywatch.simulator.apiserver import SimulatedApiServer
from canarywatch.simulator.event_recorder import (
    COMBINED_PREFIX,
    LRU_ENTRIES,
    FlaggerEventRecorder,
    Outcome,
)
from canarywatch.simulator.store import Change, Store

FIXTURES = Path("/work/shared/fixtures/flagger")
START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)


def load(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def canary_of(event: dict[str, Any]) -> dict[str, Any]:
    ref = event["involvedObject"]
    return {
        "kind": ref["kind"],
        "apiVersion": ref["apiVersion"],
        "metadata": {k: ref[k] for k in ("name", "namespace", "uid", "resourceVersion")},
    }


def drain(queue: Any) -> list[Change]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def comparable(type_: str, obj: dict[str, Any]) -> tuple[Any, ...]:
    return (
        type_,
        obj["type"],
        obj["message"],
        obj["count"],
        obj["firstTimestamp"],
        obj["lastTimestamp"],
        obj["reportingComponent"],
        obj["involvedObject"],
    )


def replay(
    recorder: FlaggerEventRecorder, clock: VirtualClock, lines: list[dict[str, Any]]
) -> list[Change]:
    """Re-issue the record calls behind a fixture's non-DELETED lines; return the changes."""
    subscription = recorder.store.subscribe("events")
    changes: list[Change] = []
    for line in lines:
        if line["type"] == "DELETED":
            continue
        obj = line["object"]
        clock.advance_to(parse_time(obj["lastTimestamp"]))
        message = obj["message"].removeprefix(COMBINED_PREFIX)
        recorder.record(canary_of(obj), obj["type"], message)
        changes += drain(subscription.queue)
    subscription.close()
    return changes


def assert_same_names(ours: list[str], theirs: list[str]) -> None:
    """Two lines share an object name in our output exactly when they do in the fixture."""
    for i in range(len(ours)):
        for j in range(len(ours)):
            assert (ours[i] == ours[j]) == (theirs[i] == theirs[j]), (i, j)


def test_rollout_then_rollback_streams_match_the_fixtures() -> None:
    clock = VirtualClock(START)
    store = Store(clock=clock)
    recorder = FlaggerEventRecorder(store, clock)
    rollout, rollback = load("events-rollout-success.jsonl"), load("events-rollback.jsonl")

    first = replay(recorder, clock, rollout)
    # TTL deletes (lines 5-7) appear once time has moved past the init events' hour.
    assert [comparable(c.type.value, c.object) for c in first] == [
        comparable(line["type"], line["object"]) for line in rollout
    ]
    second = [c for c in replay(recorder, clock, rollback) if c.type.value != "DELETED"]
    assert [comparable(c.type.value, c.object) for c in second] == [
        comparable(line["type"], line["object"]) for line in rollback
    ]
    assert_same_names(
        [c.object["metadata"]["name"] for c in [*first, *second]],
        [line["object"]["metadata"]["name"] for line in [*rollout, *rollback]],
    )
    combined = first[18].object
    assert combined["message"] == COMBINED_PREFIX + "Routing all traffic to primary"
    assert first[19].object["metadata"]["name"] == combined["metadata"]["name"]
    assert first[0].object["metadata"]["name"].startswith("podinfo.")


def test_repeated_halt_patches_the_count_like_the_no_traffic_fixture() -> None:
    clock = VirtualClock(START)
    recorder = FlaggerEventRecorder(Store(clock=clock), clock)
    lines = load("events-no-traffic-halt.jsonl")
    changes = replay(recorder, clock, lines)
    assert [comparable(c.type.value, c.object) for c in changes] == [
        comparable(line["type"], line["object"]) for line in lines
    ]
    assert {c.object["metadata"]["name"] for c in changes[3:8]} == {
        changes[3].object["metadata"]["name"]
    }


def test_spam_filter_bursts_25_then_one_per_five_minutes() -> None:
    clock = VirtualClock(START)
    recorder = FlaggerEventRecorder(Store(clock=clock), clock)
    canary = {"metadata": {"name": "podinfo", "namespace": "test", "uid": "u"}}
    outcomes = []
    for i in range(27):
        clock.advance_by(1)
        outcomes.append(recorder.record(canary, "Warning", "halt" if i % 2 else "other").outcome)
    assert Outcome.DROPPED not in outcomes[:25]
    assert outcomes[25:] == [Outcome.DROPPED, Outcome.DROPPED]
    assert recorder.record(canary, "Normal", "other type").outcome is Outcome.CREATED
    clock.advance_by(301)
    again = recorder.record(canary, "Warning", "other")
    assert again.outcome is Outcome.PATCHED
    assert again.event is not None
    # client-go counted the dropped occurrences in its cache before the filter dropped them.
    assert again.event["count"] == 15  # 14 seen (13 written) + this one


def test_expired_event_is_recreated_with_its_count_continued() -> None:
    clock = VirtualClock(START)
    store = Store(clock=clock, event_ttl=timedelta(hours=1))
    recorder = FlaggerEventRecorder(store, clock)
    canary = {"metadata": {"name": "podinfo", "namespace": "test", "uid": "u"}}
    created = recorder.record(canary, "Normal", "New revision detected! Scaling up podinfo.test")
    clock.advance_by(7200)
    again = recorder.record(canary, "Normal", "New revision detected! Scaling up podinfo.test")
    assert (created.outcome, again.outcome) == (Outcome.CREATED, Outcome.RECREATED)
    assert created.event is not None
    assert again.event is not None
    assert again.event["metadata"]["name"] == created.event["metadata"]["name"]
    assert again.event["count"] == 2
    assert again.event["firstTimestamp"] == "2026-08-04T09:00:00Z"
    assert again.event["lastTimestamp"] == "2026-08-04T11:00:00Z"


@pytest.mark.parametrize(
    ("others", "outcome"), [(LRU_ENTRIES - 1, Outcome.PATCHED), (LRU_ENTRIES, Outcome.CREATED)]
)
def test_the_event_cache_forgets_the_least_recently_used_past_4096(
    others: int, outcome: Outcome
) -> None:
    """client-go's caches hold 4096 keys: an Event about object 0 is patched while its key is
    among the last 4096 used, and created anew once Events about 4096 other objects pushed it
    out."""
    clock = VirtualClock(START)
    recorder = FlaggerEventRecorder(Store(clock=clock), clock, expire_ttl=False)

    def canary(i: int) -> dict[str, Any]:
        return {"metadata": {"name": f"c{i}", "namespace": "test", "uid": f"u{i}"}}

    assert recorder.record(canary(0), "Normal", "Halt").outcome is Outcome.CREATED
    for i in range(1, others + 1):
        recorder.record(canary(i), "Normal", "Halt")
    assert recorder.record(canary(0), "Normal", "Halt").outcome is outcome


@pytest.mark.timeout(10)
async def test_recorded_events_reach_a_real_client_watch() -> None:
    clock = VirtualClock(START)
    async with SimulatedApiServer(Store(clock=clock)) as api:
        canary = api.store.create(
            "canaries", {"metadata": {"name": "checkout", "namespace": "shop"}}
        )
        recorder = FlaggerEventRecorder(api.store, clock)
        rv = str(api.store.resource_version)
        halt = "Halt advancement no values found for istio metric request-success-rate"
        for _ in range(3):
            recorder.record(canary, "Warning", halt)
            clock.advance_by(60)
        seen = []
        async with client.ApiClient(client.Configuration(host=api.url)) as kube:
            core = client.CoreV1Api(kube)
            async with watch.Watch() as w:
                async for item in w.stream(
                    core.list_namespaced_event,
                    "shop",
                    resource_version=rv,
                    field_selector="involvedObject.kind=Canary,involvedObject.name=checkout",
                    timeout_seconds=5,
                ):
                    seen.append((item["type"], item["object"].count))
                    if len(seen) == 3:
                        break
        assert seen == [("ADDED", 1), ("MODIFIED", 2), ("MODIFIED", 3)]
