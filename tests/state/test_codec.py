"""The JSON decoders invert the public shape; the state codec round-trips exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.formats.jsonout import (
    dumps,
    event_from_json,
    event_to_json,
    notification_from_json,
    notification_to_json,
)
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    Phase,
    SourceName,
    Transition,
)
from canarywatch.state.codec import (
    decode_event,
    decode_notification,
    encode_event,
    encode_notification,
)
from canarywatch.testing import T0, make_event, make_notification

_text = st.text(max_size=12)
_maps = st.dictionaries(_text, _text, max_size=4)
# RFC 3339 offsets are whole minutes (a 1 microsecond offset cannot be written down).
_offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_any_time = st.one_of(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=_offsets
    ),
)
_millis_utc = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda dt: dt.replace(microsecond=dt.microsecond // 1000 * 1000))


@st.composite
def events(
    draw: st.DrawFn,
    times: st.SearchStrategy[datetime] = _any_time,
    hints: st.SearchStrategy[dict[str, str]] = _maps,
) -> CanaryEvent:
    transition = draw(st.sampled_from(list(Transition)))
    return CanaryEvent(
        canary=CanaryRef(draw(_text), draw(_text), draw(_text)),
        transition=transition,
        observed_at=draw(times),
        sources=tuple(draw(st.lists(st.sampled_from(list(SourceName)), max_size=3))),
        severity=TRANSITIONS[transition].severity,
        phase=draw(st.none() | st.sampled_from(list(Phase))),
        weight=draw(st.none() | st.integers(0, 100)),
        failed_checks=draw(st.none() | st.integers(0, 10**6)),
        message=draw(st.text()),
        reason=draw(_text),
        detail=draw(_text),
        target=draw(_text),
        rollout=draw(_text),
        episode=draw(st.integers(0, 10**9)),
        occurred_at=draw(st.none() | times),
        hints=draw(hints),
        labels=draw(_maps),
    )


@given(events(times=_millis_utc, hints=st.just({})))
def test_event_from_json_inverts_event_to_json(ev: CanaryEvent) -> None:
    assert event_from_json(json.loads(dumps(event_to_json(ev)))) == ev


@given(events())
def test_state_codec_is_exact_with_hints_microseconds_and_offsets(ev: CanaryEvent) -> None:
    back = decode_event(json.loads(dumps(encode_event(ev))))
    assert back == ev
    assert back.hints == ev.hints
    assert back.observed_at.utcoffset() == ev.observed_at.utcoffset()


@given(events())
def test_state_codec_is_the_public_shape_plus_hints(ev: CanaryEvent) -> None:
    public, stored = event_to_json(ev), encode_event(ev)
    assert set(stored) == {*public, "hints"}
    for key in set(public) - {"observed_at", "occurred_at"}:
        assert stored[key] == public[key]
    assert datetime.fromisoformat(stored["observed_at"]) == ev.observed_at


@given(
    st.lists(events(), min_size=1, max_size=3),
    _maps,
    st.sampled_from(list(NotificationStatus)),
    _any_time,
)
def test_notification_round_trips(
    evs: list[CanaryEvent], group: dict[str, str], status: NotificationStatus, at: datetime
) -> None:
    n = Notification("team", status, "team:{}", group, tuple(evs), at)
    assert decode_notification(json.loads(dumps(encode_notification(n)))) == n


def test_public_notification_round_trips() -> None:
    ev = make_event(
        Transition.AWAITING_APPROVAL,
        cluster="prod",
        detail="promotion",
        rollout="2",
        episode=3,
        occurred_at=T0 - timedelta(seconds=2),
        phase=Phase.WAITING_PROMOTION,
        weight=50,
    )
    n = make_notification(ev, status=NotificationStatus.RESOLVED)
    assert notification_from_json(notification_to_json(n)) == n


def test_events_without_hints_or_labels_decode_to_empty_mappings() -> None:
    ev = make_event(labels={})
    back = event_from_json(event_to_json(ev))
    assert back == ev
    assert dict(back.hints) == {}
    assert dict(back.labels) == {}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"transition": "exploded"}, "event.transition"),
        ({"severity": "meh"}, "event.severity"),
        ({"phase": "Sideways"}, "event.phase"),
        ({"sources": ["carrier-pigeon"]}, "event.sources"),
        ({"sources": "canaries"}, "event.sources"),
        ({"weight": "ten"}, "event.weight"),
        ({"weight": True}, "event.weight"),
        ({"episode": None}, "event.episode"),
        ({"message": 3}, "event.message"),
        ({"labels": {"a": 1}}, "event.labels"),
        ({"labels": []}, "event.labels"),
        ({"hints": {"spec": None}}, "event.hints"),
        ({"observed_at": "yesterday"}, "event.observed_at"),
        ({"occurred_at": 17}, "event.occurred_at"),
    ],
)
def test_malformed_events_raise_value_error_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    d = {**event_to_json(make_event()), **change}
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        event_from_json(d)


def test_missing_fields_and_non_objects_are_value_errors() -> None:
    d = event_to_json(make_event())
    del d["rollout"]
    with pytest.raises(ValueError, match="missing field 'rollout'"):
        event_from_json(d)
    with pytest.raises(ValueError, match="expected a JSON object"):
        event_from_json(["not", "an", "object"])
    n = notification_to_json(make_notification())
    with pytest.raises(ValueError, match=r"notification\.status"):
        notification_from_json({**n, "status": "smouldering"})
    with pytest.raises(ValueError, match=r"notification\.events"):
        notification_from_json({**n, "events": {}})
