"""``normalise.timing.backlog_order``: a backlog replayed in the order things happened."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from canarywatch.model import Observation, SourceName
from canarywatch.normalise.timing import backlog_order

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def flagger_event(name: str, second: int, rv: str, message: str) -> Observation:
    obj: dict[str, Any] = {
        "metadata": {"name": f"podinfo.{name}", "namespace": "test", "resourceVersion": rv},
        "involvedObject": {"kind": "Canary", "namespace": "test", "name": "podinfo"},
        "message": message,
        "lastTimestamp": f"2026-12-06T09:00:{second:02d}Z",
    }
    return Observation(at=NOW, source=SourceName.KUBERNETES_EVENTS, data={"object": obj})


def canary(second: int) -> Observation:
    obj = {"status": {"lastTransitionTime": f"2026-12-06T09:00:{second:02d}Z"}}
    return Observation(at=NOW, source=SourceName.CANARIES, data={"object": obj})


def messages(observations: list[Observation]) -> list[str]:
    return [str(o.data["object"].get("message", "status")) for o in observations]  # type: ignore[union-attr]


def test_events_of_one_second_go_in_write_order_not_name_order() -> None:
    """A list returns Events by name (creation order); the combined Event, created earlier and
    rewritten in the same second as a newer Event, was written last."""
    combined = flagger_event(
        "a1", 7, "1077", "(combined from similar events): Promotion completed!"
    )
    not_ready = flagger_event("b2", 7, "1071", "Halt advancement podinfo-primary.test waiting")
    earlier = flagger_event("c3", 5, "1090", "Advance podinfo.test canary weight 50")
    listed = [combined, not_ready, earlier]  # as a list returns them: by name
    assert messages(backlog_order(listed)) == [
        "Advance podinfo.test canary weight 50",  # by time first, whatever its version
        "Halt advancement podinfo-primary.test waiting",
        "(combined from similar events): Promotion completed!",
    ]


def test_ties_across_sources_and_unreadable_versions_keep_their_arrival_order() -> None:
    status = canary(7)
    first = flagger_event("a1", 7, "1077", "first")
    second = flagger_event("b2", 7, "1071", "second")
    assert messages(backlog_order([status, first, second])) == ["status", "second", "first"]
    opaque = flagger_event("b2", 7, "opaque-v2", "second")
    assert messages(backlog_order([first, opaque])) == ["first", "second"]


def test_a_tie_across_sources_goes_in_write_order_when_every_version_is_known() -> None:
    """After an outage (issue 12, ``api_outage`` soak): the relisted Canary, ``Promoting``,
    tied at the second with the weight Events written before it; arrival order (the Canary
    list first) announced the promotion before the steps."""
    promoting = Observation(
        at=NOW,
        source=SourceName.CANARIES,
        data={
            "object": {
                "metadata": {"resourceVersion": "1090"},
                "status": {"lastTransitionTime": "2026-12-06T09:00:07Z"},
            }
        },
    )
    step = flagger_event("a1", 7, "1080", "Advance podinfo.test canary weight 50")
    assert messages(backlog_order([promoting, step])) == [
        "Advance podinfo.test canary weight 50",
        "status",
    ]
