"""Kubernetes-Event normalisation, driven by the composed Flagger watch streams in fixtures/."""

from __future__ import annotations

import copy
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.model import (
    CanaryRef,
    Normalised,
    Observation,
    Outcome,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.kube_events import KubeEventNormaliser, parse_time, read_event

FIXTURES = Path(__file__).parents[1] / "fixtures" / "flagger"
AT = datetime(2026, 8, 4, 16, 0, tzinfo=UTC)
CLUSTER = "prod-eu-1"
T = Transition


def stream(name: str) -> list[dict[str, Any]]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def observe(data: object) -> Observation:
    return Observation(at=AT, source=SourceName.KUBERNETES_EVENTS, data=data, cluster=CLUSTER)


def run(normaliser: KubeEventNormaliser, items: list[dict[str, Any]]) -> list[Normalised]:
    return [normaliser(observe(item)) for item in items]


def transitions(results: list[Normalised]) -> list[tuple[Transition, str]]:
    return [(e.transition, e.detail) for r in results for e in r.events]


def test_rollout_success_stream() -> None:
    results = run(KubeEventNormaliser(), stream("events-rollout-success.jsonl"))
    assert transitions(results) == [
        (T.NOT_READY, ""),
        (T.INITIALIZED, ""),
        (T.REVISION_DETECTED, ""),
        (T.NOT_READY, ""),
        (T.ANALYSIS_STARTED, ""),
        (T.WEIGHT_ADVANCED, "10"),
        (T.WEIGHT_ADVANCED, "20"),
        (T.WEIGHT_ADVANCED, "30"),
        (T.WEIGHT_ADVANCED, "40"),
        (T.WEIGHT_ADVANCED, "50"),
        (T.PROMOTING, ""),
        (T.NOT_READY, ""),
        (T.FINALISING, ""),
        (T.PROMOTED, ""),
    ]
    outcomes = [r.outcome for r in results]
    # Lines 1 and 3 (providers available, then its count bump) and line 11 (pre-rollout passed).
    assert Counter(outcomes)[Outcome.INFORMATIONAL] == 3
    # Lines 5-7: TTL expiry of the initialisation Events.
    assert outcomes[4:7] == [Outcome.IGNORED] * 3
    promoted = results[-1].events[0]
    assert promoted.message == "Promotion completed! Scaling down podinfo.test"
    assert promoted.occurred_at == datetime(2026, 8, 4, 10, 41, 3, tzinfo=UTC)


def test_manual_gate_stream() -> None:
    results = run(KubeEventNormaliser(), stream("events-manual-gate.jsonl"))
    assert transitions(results) == [
        (T.AWAITING_APPROVAL, "rollout"),
        (T.APPROVED, "rollout"),
        (T.REVISION_DETECTED, ""),
        (T.NOT_READY, ""),
        (T.ANALYSIS_STARTED, ""),
        (T.WEIGHT_ADVANCED, "5"),
        (T.WEIGHT_ADVANCED, "25"),
        (T.WEIGHT_ADVANCED, "50"),
        (T.AWAITING_APPROVAL, "promotion"),
        (T.APPROVED, "promotion"),
        (T.PROMOTING, ""),
        (T.NOT_READY, ""),
        (T.FINALISING, ""),
        (T.PROMOTED, ""),
    ]
    gate = results[0].events[0]
    assert gate.severity is Severity.WARNING
    assert gate.phase is Phase.WAITING
    assert gate.canary == CanaryRef("test", "frontend", CLUSTER)
    assert gate.sources == (SourceName.KUBERNETES_EVENTS,)
    assert gate.observed_at == AT
    assert gate.hints["canary_uid"] == "1c4e9a70-8f2d-4b6e-9d13-7a5f0c2b8e64"
    # The occurrence key: the Event's uid, its count, and a checksum of its message.
    assert gate.hints["occurrence"].startswith("4c3bfe85-4b85-43ec-84b6-fbc811eb64c8#1#")


def test_rollback_stream_uses_last_timestamp_of_recreated_events() -> None:
    results = run(KubeEventNormaliser(), stream("events-rollback.jsonl"))
    assert transitions(results) == [
        (T.REVISION_DETECTED, ""),
        (T.ANALYSIS_STARTED, ""),
        (T.WEIGHT_ADVANCED, "10"),
        (T.WEIGHT_ADVANCED, "20"),
        *[(T.HALTED, "")] * 5,
        (T.ROLLED_BACK, ""),
        (T.ROLLED_BACK, ""),
    ]
    # ADDED with count 2 and a 10:31 firstTimestamp: the occurrence is the 14:00 one.
    revision = results[0].events[0]
    assert revision.occurred_at == datetime(2026, 8, 4, 14, 0, 2, tzinfo=UTC)
    halts = [e for r in results for e in r.events if e.transition is T.HALTED]
    assert [h.reason for h in halts] == [
        "request-success-rate 96.12 < 99",
        "request-success-rate 93.87 < 99",
        "request-duration 1.283s > 500ms",
        "request-success-rate 91.40 < 99",
        "request-success-rate 89.96 < 99",
    ]
    threshold, confirm = (e for r in results[-2:] for e in r.events)
    assert (threshold.reason, threshold.failed_checks) == ("failed-checks", 5)
    assert threshold.severity is Severity.CRITICAL
    assert confirm.reason == ""
    assert confirm.target == "podinfo"


def test_no_traffic_count_bumps_are_occurrences() -> None:
    results = run(KubeEventNormaliser(), stream("events-no-traffic-halt.jsonl"))
    assert transitions(results) == [
        (T.REVISION_DETECTED, ""),
        (T.ANALYSIS_STARTED, ""),
        (T.WEIGHT_ADVANCED, "10"),
        *[(T.NO_TRAFFIC, "")] * 5,
        (T.ROLLED_BACK, ""),
        (T.ROLLED_BACK, ""),
    ]
    no_traffic = [e for r in results for e in r.events if e.transition is T.NO_TRAFFIC]
    assert [e.occurred_at.minute for e in no_traffic if e.occurred_at] == [22, 23, 24, 25, 26]
    assert {e.target for e in no_traffic} == {"checkout"}


def test_relist_of_unchanged_objects_is_a_repeat() -> None:
    normaliser = KubeEventNormaliser()
    items = stream("events-manual-gate.jsonl")
    run(normaliser, items)
    again = run(normaliser, items)
    assert {r.outcome for r in again} == {Outcome.REPEAT}
    assert transitions(again) == []


def test_modified_without_count_rise_is_a_repeat() -> None:
    normaliser = KubeEventNormaliser()
    added = stream("events-no-traffic-halt.jsonl")[3]
    touched = copy.deepcopy(added)
    touched["type"] = "MODIFIED"
    touched["object"]["metadata"]["resourceVersion"] = "99999999"
    assert normaliser(observe(added)).outcome is Outcome.TRANSITION
    assert normaliser(observe(touched)).outcome is Outcome.REPEAT


def test_aggregated_message_change_is_news_even_when_the_count_lags() -> None:
    normaliser = KubeEventNormaliser()
    added, modified = stream("events-rollout-success.jsonl")[-2:]
    lagging = copy.deepcopy(modified)
    lagging["object"]["count"] = 1
    normaliser(observe(added))
    result = normaliser(observe(lagging))
    assert transitions([result]) == [(T.PROMOTED, "")]


def test_ttl_recreation_under_the_same_name_is_news() -> None:
    normaliser = KubeEventNormaliser()
    added = stream("events-rollout-success.jsonl")[7]  # New revision detected, 10:31
    deleted = copy.deepcopy(added)
    deleted["type"] = "DELETED"
    recreated = copy.deepcopy(added)
    recreated["object"]["count"] = 2
    recreated["object"]["lastTimestamp"] = "2026-08-04T14:00:02Z"
    results = run(normaliser, [added, deleted, recreated])
    assert [r.outcome for r in results] == [
        Outcome.TRANSITION,
        Outcome.IGNORED,
        Outcome.TRANSITION,
    ]
    assert len(normaliser) == 1


def test_memory_is_bounded_and_forgets_the_oldest() -> None:
    normaliser = KubeEventNormaliser(memory=2)
    first, second, third = stream("events-no-traffic-halt.jsonl")[:3]
    run(normaliser, [first, second, third])
    assert len(normaliser) == 2
    assert normaliser(observe(third)).outcome is Outcome.REPEAT
    assert normaliser(observe(first)).outcome is Outcome.TRANSITION
    with pytest.raises(ValueError, match="memory"):
        KubeEventNormaliser(memory=0)


def test_memory_is_per_cluster() -> None:
    normaliser = KubeEventNormaliser()
    item = stream("events-rollback.jsonl")[0]
    here = normaliser(observe(item))
    there = normaliser(
        Observation(at=AT, source=SourceName.KUBERNETES_EVENTS, data=item, cluster="other")
    )
    assert here.outcome is there.outcome is Outcome.TRANSITION
    assert there.events[0].canary.cluster == "other"


def to_events_v1(core: dict[str, Any]) -> dict[str, Any]:
    """The events.k8s.io/v1 view of a core/v1 Event (reference/kubernetes-watch.md §1.7)."""
    obj = core["object"]
    return {
        "type": core["type"],
        "object": {
            "kind": "Event",
            "apiVersion": "events.k8s.io/v1",
            "metadata": obj["metadata"],
            "regarding": obj["involvedObject"],
            "note": obj["message"],
            "type": obj["type"],
            "reason": obj["reason"],
            "deprecatedSource": obj["source"],
            "deprecatedCount": obj["count"],
            "deprecatedFirstTimestamp": obj["firstTimestamp"],
            "deprecatedLastTimestamp": obj["lastTimestamp"],
            "reportingController": obj["reportingComponent"],
            "eventTime": None,
        },
    }


@pytest.mark.parametrize(
    "name",
    [
        "events-rollout-success.jsonl",
        "events-manual-gate.jsonl",
        "events-rollback.jsonl",
        "events-no-traffic-halt.jsonl",
    ],
)
def test_events_k8s_io_view_normalises_identically(name: str) -> None:
    core = run(KubeEventNormaliser(), stream(name))
    v1 = run(KubeEventNormaliser(), [to_events_v1(item) for item in stream(name)])
    assert v1 == core


def test_series_count_and_time_win() -> None:
    item = to_events_v1(stream("events-rollback.jsonl")[0])
    item["object"]["series"] = {"count": 7, "lastObservedTime": "2026-08-04T14:30:00.123456Z"}
    view = read_event(item["object"])
    assert not isinstance(view, str)
    assert view.count == 7
    assert view.last_seen == datetime(2026, 8, 4, 14, 30, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        ("not a watch event", Outcome.MALFORMED),
        ({"type": "ADDED"}, Outcome.MALFORMED),
        ({"type": "SOMETHING", "object": {}}, Outcome.MALFORMED),
        ({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "1"}}}, Outcome.IGNORED),
        ({"type": "ERROR", "object": {"code": 410}}, Outcome.IGNORED),
        (
            {
                "type": "ADDED",
                "object": {"involvedObject": {"kind": "Pod", "name": "p", "namespace": "n"}},
            },
            Outcome.IGNORED,
        ),
        (
            {
                "type": "ADDED",
                "object": {
                    "involvedObject": {"kind": "Canary", "apiVersion": "argoproj.io/v1"},
                    "message": "Initialization done! a.b",
                },
            },
            Outcome.IGNORED,
        ),
        (
            {"type": "ADDED", "object": {"involvedObject": {"kind": "Canary", "name": "a"}}},
            Outcome.MALFORMED,
        ),
    ],
)
def test_odd_watch_events(data: object, outcome: Outcome) -> None:
    result = KubeEventNormaliser()(observe(data))
    assert result.outcome is outcome
    assert result.events == ()
    assert result.note


def test_unknown_message_note_is_safe() -> None:
    item = copy.deepcopy(stream("events-rollback.jsonl")[5])
    item["object"]["message"] = "router error: Get https://u:pw@mesh.local/x?token=abc: EOF"
    result = KubeEventNormaliser()(observe(item))
    assert result.outcome is Outcome.UNKNOWN
    assert result.note.startswith("unknown Warning message: router error")
    assert "pw" not in result.note
    assert "abc" not in result.note


def test_parse_time() -> None:
    assert parse_time("2026-08-04T10:40:02Z") == datetime(2026, 8, 4, 10, 40, 2, tzinfo=UTC)
    assert parse_time("2026-08-04T10:40:02") == datetime(2026, 8, 4, 10, 40, 2, tzinfo=UTC)
    assert parse_time("yesterday") is None
    assert parse_time(None) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
EVENT_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "metadata": st.fixed_dictionaries(
            {}, optional={"uid": JSON, "name": JSON, "resourceVersion": JSON}
        ),
        "involvedObject": st.fixed_dictionaries(
            {"kind": st.just("Canary")}, optional={"name": JSON, "namespace": JSON}
        ),
        "message": JSON
        | st.sampled_from(
            [
                "Advance a.b canary weight 5",
                "(combined from similar events): Canary failed! Scaling down a.b",
                "all the metrics providers are available!",
            ]
        ),
        "count": JSON,
        "series": JSON,
        "lastTimestamp": JSON | st.just("2026-08-04T10:40:02Z"),
        "eventTime": JSON,
    },
)


@given(
    st.one_of(
        JSON,
        st.fixed_dictionaries(
            {"type": st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), "object": EVENT_FIELDS}
        ),
    )
)
def test_normaliser_is_total(data: object) -> None:
    normaliser = KubeEventNormaliser(memory=4)
    first = normaliser(observe(data))
    second = normaliser(observe(data))
    assert isinstance(first, Normalised)
    assert len(first.events) <= 1
    # Feeding the same object twice equals feeding it once.
    news = {Outcome.TRANSITION, Outcome.INFORMATIONAL, Outcome.UNKNOWN}
    if first.outcome in news:
        assert second.outcome is Outcome.REPEAT
    else:
        assert second.outcome is first.outcome
