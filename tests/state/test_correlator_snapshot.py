"""A correlator restored from its snapshot deduplicates exactly like the one that never stopped."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarywatch.clock import VirtualClock
from canarywatch.formats.jsonout import dumps
from canarywatch.identity import canary_key
from canarywatch.model import TRANSITIONS, CanaryEvent, CanaryRef, JSONValue, SourceName, Transition
from canarywatch.pipeline.correlate import Correlation, Correlator
from canarywatch.state import SqliteStateStore

T0 = datetime(2026, 8, 4, 14, 0, tzinfo=UTC)
PODINFO = CanaryRef("test", "podinfo", "prod")
FRONTEND = CanaryRef("web", "frontend", "")
EV, ST, WH = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES, SourceName.FLAGGER_WEBHOOK
HINTS = {"label:team": "team_label"}


def ev(
    transition: Transition,
    minute: float,
    *,
    detail: str = "",
    source: SourceName = EV,
    canary: CanaryRef = PODINFO,
    reason: str = "",
    hints: Mapping[str, str] | None = None,
) -> CanaryEvent:
    return CanaryEvent(
        canary=canary,
        transition=transition,
        observed_at=T0 + timedelta(minutes=minute, microseconds=7),
        sources=(source,),
        severity=TRANSITIONS[transition].severity,
        detail=detail,
        reason=reason,
        target="podinfo" if source is ST else "",
        hints=dict(hints or {}),
    )


# Two rollouts of podinfo (gates, halts, readiness, rollback, a second source repeating
# everything late) interleaved with another canary and a metrics-source outage.
SCENARIO = [
    ev(Transition.REVISION_DETECTED, 0, hints={"spec": "aaa", "label:team": "pay"}),
    ev(Transition.REVISION_DETECTED, 0.2, source=ST, hints={"spec": "aaa"}),
    ev(Transition.AWAITING_APPROVAL, 0.5, detail="rollout"),
    ev(Transition.REVISION_DETECTED, 0.6, canary=FRONTEND),
    ev(Transition.REVISION_DETECTED, 0.65, canary=FRONTEND),  # repeat while quiet
    ev(Transition.AWAITING_APPROVAL, 0.7, detail="rollout", source=ST),
    ev(Transition.APPROVED, 1, detail="rollout"),
    ev(Transition.NOT_READY, 1.0, canary=FRONTEND),
    ev(Transition.REVISION_DETECTED, 1.2, canary=FRONTEND, source=ST),  # second source, in window
    ev(Transition.REVISION_DETECTED, 1.4, canary=FRONTEND),  # same source again: a new rollout
    ev(Transition.WEIGHT_ADVANCED, 2, detail="10"),
    ev(Transition.WEIGHT_ADVANCED, 2.1, detail="10", source=WH),
    ev(Transition.ROLLED_BACK, 2.0, canary=FRONTEND),
    ev(Transition.METRICS_SOURCE_DOWN, 2.5, source=SourceName.SELF),
    ev(Transition.REVISION_DETECTED, 3.0, canary=FRONTEND, source=WH),  # after the end: new
    ev(Transition.HALTED, 3, reason="request-success-rate 91 < 99"),
    ev(Transition.HALTED, 4, reason="request-success-rate 93 < 99"),
    ev(Transition.NOT_READY, 4.5, canary=FRONTEND),
    ev(Transition.WEIGHT_ADVANCED, 5, detail="20"),
    ev(Transition.HALTED, 6, reason="latency 600 > 500", hints={"label:team": "payments"}),
    ev(Transition.HALTED, 6.2, source=ST),
    ev(Transition.METRICS_SOURCE_RECOVERED, 6.5, source=SourceName.SELF),
    ev(Transition.REVISION_DETECTED, 7, source=WH, hints={"spec": "aaa"}),  # same spec: same
    ev(Transition.ROLLED_BACK, 8, reason="failed-checks"),
    ev(Transition.ROLLED_BACK, 8.01, source=ST),
    ev(Transition.WEIGHT_ADVANCED, 8.5, detail="10", canary=FRONTEND),
    ev(Transition.REVISION_DETECTED, 20, hints={"spec": "bbb"}),
    ev(Transition.HALTED, 8.3, source=WH),  # late repeat from the previous rollout
    ev(Transition.AWAITING_APPROVAL, 21, detail="promotion"),
    ev(Transition.APPROVED, 22, detail="promotion"),
    ev(Transition.APPROVED, 22.2, detail="promotion", source=ST),  # repeat after the gate closed
    ev(Transition.AWAITING_APPROVAL, 23, detail="promotion"),
    ev(Transition.PROMOTING, 24),
    ev(Transition.PROMOTED, 25),
    ev(Transition.PROMOTED, 25.5, source=ST),
]


def feed(correlator: Correlator, events: list[CanaryEvent]) -> list[Correlation]:
    return [correlator(e, e.observed_at) for e in events]


def through_json(snapshot: dict[str, JSONValue]) -> dict[str, JSONValue]:
    loaded: dict[str, JSONValue] = json.loads(dumps(snapshot))
    return loaded


def resumed(events: list[CanaryEvent], split: int) -> list[Correlation]:
    first = Correlator(label_hints=HINTS)
    out = feed(first, events[:split])
    second = Correlator.restore(through_json(first.snapshot()), label_hints=HINTS)
    return out + feed(second, events[split:])


def test_the_scenario_exercises_dedup_and_resolution() -> None:
    results = feed(Correlator(label_hints=HINTS), SCENARIO)
    assert sum(r.duplicate_of is not None for r in results) >= 6
    assert sum(len(r.resolved) for r in results) >= 4


@pytest.mark.parametrize("split", range(len(SCENARIO) + 1))
def test_restored_correlator_continues_exactly(split: int) -> None:
    whole = feed(Correlator(label_hints=HINTS), SCENARIO)
    assert resumed(SCENARIO, split) == whole


def test_snapshot_is_keyed_per_canary_and_restores_to_itself() -> None:
    c = Correlator(label_hints=HINTS)
    feed(c, SCENARIO[:12])
    snap = c.snapshot()
    assert set(snap) == {canary_key(PODINFO), canary_key(FRONTEND)}
    restored = Correlator.restore(through_json(snap), label_hints=HINTS)
    assert restored.snapshot() == snap
    assert restored.open_conditions(PODINFO) == c.open_conditions(PODINFO)
    assert set(restored.canaries()) == {PODINFO, FRONTEND}


def test_restore_through_a_real_state_store(tmp_path: Path) -> None:
    whole = feed(Correlator(label_hints=HINTS), SCENARIO)
    first = Correlator(label_hints=HINTS)
    out = feed(first, SCENARIO[:10])
    db = tmp_path / "state.db"
    with SqliteStateStore(db, clock=VirtualClock(T0)) as store:
        store.save_canary_states(first.snapshot())
    with SqliteStateStore(db, clock=VirtualClock(T0)) as store:
        second = Correlator.restore(store.load_canary_states(), label_hints=HINTS)
    assert out + feed(second, SCENARIO[10:]) == whole


def test_a_bad_snapshot_names_its_key() -> None:
    c = Correlator()
    feed(c, SCENARIO[:3])
    snap = through_json(c.snapshot())
    snap[canary_key(PODINFO)]["v"] = 99
    with pytest.raises(ValueError, match="prod/test/podinfo"):
        Correlator.restore(snap)
    with pytest.raises(ValueError, match="/x/y"):
        Correlator.restore({"/x/y": {"v": 1}})


_events = st.builds(
    ev,
    st.sampled_from(list(Transition)),
    st.floats(0, 60, allow_nan=False),
    detail=st.sampled_from(["", "10", "20", "rollout", "promotion"]),
    source=st.sampled_from([EV, ST, WH]),
    canary=st.sampled_from([PODINFO, FRONTEND]),
    reason=st.sampled_from(["", "r1", "r2"]),
    hints=st.sampled_from([{}, {"spec": "aaa"}, {"spec": "bbb"}, {"label:team": "pay"}]),
)


@settings(max_examples=200)
@given(st.lists(_events, max_size=40), st.data())
def test_any_sequence_resumes_exactly(events: list[CanaryEvent], data: st.DataObject) -> None:
    events.sort(key=lambda e: e.observed_at)
    split = data.draw(st.integers(0, len(events)))
    assert resumed(events, split) == feed(Correlator(label_hints=HINTS), events)


def test_a_closed_episode_survives_a_restart() -> None:
    """Found by ``test_any_sequence_resumes_exactly``: the status reported a gate, the
    promotion closed it, and the slower Events reported the very same gate after a restart.
    The closed opener was not in the snapshot, so the restored correlator took the repeat for
    a second episode (a duplicate notification)."""
    events = [
        ev(Transition.AWAITING_APPROVAL, 0.0, source=ST, canary=PODINFO),
        ev(Transition.PROMOTED, 0.0, source=EV, canary=PODINFO),
        ev(Transition.AWAITING_APPROVAL, 1.0, source=EV, canary=PODINFO),
    ]
    assert resumed(events, 2) == feed(Correlator(label_hints=HINTS), events)
