"""The public JSON output shape (used by ``replay`` and the ``jsonl`` sink)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.formats.jsonout import dumps, event_to_json, format_time, notification_to_json
from canarywatch.model import NotificationStatus, Phase, SourceName, Transition
from canarywatch.testing import T0, make_event, make_notification


def test_format_time_is_utc_with_z_and_millis_only_when_non_zero() -> None:
    assert format_time(datetime(2025, 1, 2, 14, 8, 2, tzinfo=UTC)) == "2025-01-02T14:08:02Z"
    assert (
        format_time(datetime(2025, 1, 2, 14, 8, 2, 123456, tzinfo=UTC))
        == "2025-01-02T14:08:02.123Z"
    )
    # sub-millisecond noise is not shown as ".000"
    assert format_time(datetime(2025, 1, 2, 14, 8, 2, 999, tzinfo=UTC)) == "2025-01-02T14:08:02Z"
    cest = timezone(timedelta(hours=2))
    assert format_time(datetime(2025, 1, 2, 16, 8, 2, tzinfo=cest)) == "2025-01-02T14:08:02Z"


@pytest.mark.parametrize(
    ("dt", "text"),
    [
        (datetime(999, 3, 4, 5, 6, 7, tzinfo=UTC), "0999-03-04T05:06:07Z"),
        (datetime(999, 3, 4, 5, 6, 7, 250000, tzinfo=UTC), "0999-03-04T05:06:07.250Z"),
        (datetime(2026, 8, 4, 14, 8, 2, tzinfo=UTC), "2026-08-04T14:08:02Z"),
    ],
)
def test_format_time_pads_the_year_to_four_digits(dt: datetime, text: str) -> None:
    # strftime("%Y") gives "999" on glibc: the recording format used it and drifted (issue 14).
    assert format_time(dt) == text


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_time_round_trips_to_the_millisecond(dt: datetime) -> None:
    text = format_time(dt)
    assert text.endswith("Z")
    back = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert back == dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def test_event_to_json_has_every_public_field() -> None:
    ev = make_event(
        Transition.ROLLED_BACK,
        cluster="prod-eu",
        phase=Phase.FAILED,
        failed_checks=5,
        message="Canary failed! Rolling back podinfo.test",
        reason="failed-checks",
        target="podinfo",
        rollout="2",
        episode=1,
        occurred_at=T0 - timedelta(seconds=1),
        sources=(SourceName.KUBERNETES_EVENTS, SourceName.CANARIES),
    )
    assert event_to_json(ev) == {
        "canary": "test/podinfo",
        "cluster": "prod-eu",
        "namespace": "test",
        "name": "podinfo",
        "transition": "rolled-back",
        "severity": "critical",
        "phase": "Failed",
        "weight": None,
        "failed_checks": 5,
        "message": "Canary failed! Rolling back podinfo.test",
        "reason": "failed-checks",
        "detail": "",
        "target": "podinfo",
        "rollout": "2",
        "episode": 1,
        "labels": {
            "canary": "test/podinfo",
            "cluster": "prod-eu",
            "name": "podinfo",
            "namespace": "test",
            "severity": "critical",
            "transition": "rolled-back",
        },
        "observed_at": "2025-01-02T14:08:02Z",
        "occurred_at": "2025-01-02T14:08:01Z",
        "sources": ["kubernetes-events", "canaries"],
    }


def test_notification_to_json_and_dumps_are_deterministic() -> None:
    a = make_event(Transition.WEIGHT_ADVANCED, weight=30, detail="30", at=T0)
    b = make_event(Transition.ROLLED_BACK, at=T0 + timedelta(seconds=5))
    n = make_notification(
        a, b, status=NotificationStatus.RESOLVED, group_labels={"z": "1", "canary": "test/podinfo"}
    )
    obj = notification_to_json(n)
    assert obj["at"] == "2025-01-02T14:08:07Z"
    assert obj["receiver"] == "team-payments"
    assert obj["status"] == "resolved"
    assert obj["group"] == {"canary": "test/podinfo", "z": "1"}
    assert obj["group_key"] == n.group_key
    events = obj["events"]
    assert isinstance(events, list)
    assert [e["transition"] for e in events] == ["weight-advanced", "rolled-back"]
    text = dumps(obj)
    assert "\n" not in text
    assert '", "' not in text
    assert '": ' not in text
    assert json.loads(text) == obj
    # same content in another insertion order serialises identically
    assert dumps(dict(reversed(list(obj.items())))) == text


def test_dumps_keeps_non_ascii() -> None:
    assert dumps({"m": "ünïcødé ▰"}) == '{"m":"ünïcødé ▰"}'
