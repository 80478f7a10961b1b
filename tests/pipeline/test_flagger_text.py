"""Notifications carry Flagger's own words where Flagger wrote them (issue 15).

The Canary status often reaches canarywatch before the Event of the same step: the status write
and the Event are one tick apart, and their watches deliver independently. The status only shows
a change (``canaryWeight 20``), so the event it yields has a text canarywatch wrote. When the
Event (or the webhook) brings Flagger's message while that event still waits in its group, the
notification carries Flagger's message; when it is sent before, its text says it comes from the
Canary status, so nobody takes it for Flagger's.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from canarywatch.clock import VirtualClock
from canarywatch.config import parse_config
from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    Observation,
    SourceName,
    Transition,
)
from canarywatch.normalise.status import STATUS_TEXT
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.group import Grouper
from canarywatch.pipeline.route import Route, Router
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator, SimulatedCanary
from canarywatch.simulator.store import Change, Store
from canarywatch.testing import make_event

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES


def config(group_wait: str) -> Any:
    return parse_config(f"""
receivers: [{{name: capture, sink: jsonl}}]
route: {{receiver: capture, group_by: ["..."], group_wait: {group_wait}}}
""")


class StatusFirst:
    """The pipeline fed from the simulated cluster, each tick's Canary status a second before
    its Events (what the demo's watches often deliver)."""

    def __init__(self, group_wait: str) -> None:
        self.clock = VirtualClock(START)
        self.store = Store(clock=self.clock)
        self.sim = FlaggerSimulator(self.store, self.clock)
        self.pipeline: Pipeline = policy.build_pipeline(config(group_wait))
        self.sent: list[Notification] = []
        self._canaries = self.store.subscribe("canaries")
        self._events = self.store.subscribe("events")

    def _read(self, source: SourceName) -> None:
        subscription = self._canaries if source is CANARIES else self._events
        now = self.clock.now()
        while not subscription.queue.empty():
            change = subscription.queue.get_nowait()
            assert isinstance(change, Change)
            data = {"type": change.type.value, "object": change.object}
            self.pipeline.observe(Observation(at=now, source=source, data=data), now)
        self.sent += self.pipeline.due(now)

    def tick(self, canary: SimulatedCanary, action: str, *args: Any) -> None:
        getattr(canary, action)(*args)
        self._read(CANARIES)
        self.clock.advance_by(1)
        self._read(EVENTS)
        self.clock.advance_by(59)
        self.sent += self.pipeline.due(self.clock.now())

    def rollout(self) -> None:
        c = self.sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, revision="a1")
        self._read(CANARIES)  # the first sight of a canary is state, not news
        self._read(EVENTS)
        self.tick(c, "new_revision", "b2")
        self.tick(c, "start_analysis")
        while c.routes[1] < 50:
            self.tick(c, "advance")
        for action in ("promote", "finalise", "succeed"):
            self.tick(c, action)

    def messages(self, *transitions: Transition) -> list[str]:
        return [
            e.message
            for n in self.sent
            for e in n.events
            if n.status is NotificationStatus.FIRING and e.transition in transitions
        ]


def test_flaggers_message_arriving_within_the_group_wait_is_the_one_sent() -> None:
    daemon = StatusFirst("5s")
    daemon.rollout()
    weights = daemon.messages(Transition.WEIGHT_ADVANCED)
    assert weights == [f"Advance podinfo.test canary weight {w}" for w in (10, 20, 30, 40, 50)]
    assert daemon.messages(Transition.PROMOTED) == [
        "Promotion completed! Scaling down podinfo.test"
    ]
    steps = [e for n in daemon.sent for e in n.events if e.transition is Transition.WEIGHT_ADVANCED]
    assert all(set(e.sources) == {CANARIES, EVENTS} for e in steps)  # both said it
    assert not [m for n in daemon.sent for e in n.events if (m := e.message).startswith("From")]


def test_a_text_sent_before_flaggers_message_says_it_comes_from_the_canary_status() -> None:
    daemon = StatusFirst("0s")  # sent the moment the status shows it
    daemon.rollout()
    weights = daemon.messages(Transition.WEIGHT_ADVANCED)
    # canaryWeight 10 comes with "Starting canary analysis", whose Event names it first.
    assert weights[1:] == [f"{STATUS_TEXT}: canaryWeight {w}" for w in (20, 30, 40, 50)]
    [promoted] = daemon.messages(Transition.PROMOTED)
    assert promoted.startswith(f"{STATUS_TEXT}: phase Succeeded")
    # Every message is Flagger's own or says where it came from.
    for n in daemon.sent:
        for e in n.events:
            assert e.message.startswith(STATUS_TEXT) or set(e.sources) & {EVENTS}, e


# --- the two stages on their own ------------------------------------------------------------------


def step(source: SourceName, message: str, *, detail: str = "20") -> CanaryEvent:
    return make_event(
        Transition.WEIGHT_ADVANCED,
        canary="test/podinfo",
        sources=(source,),
        message=message,
        detail=detail,
        at=START,
    )


def test_reword_changes_only_the_same_waiting_step_and_only_once() -> None:
    pipeline = Pipeline(router=Router(_route(group_wait_s=30)), grouper=Grouper())
    now = START
    status_text = f"{STATUS_TEXT}: canaryWeight 20"
    first = pipeline.offer_event(step(CANARIES, status_text), now)
    other = pipeline.offer_event(
        step(CANARIES, f"{STATUS_TEXT}: canaryWeight 30", detail="30"), now
    )
    assert first is not None
    assert other is not None
    pipeline.offer_event(step(CANARIES, status_text), now)  # the status again: no Flagger text
    pipeline.offer_event(step(EVENTS, "Advance podinfo.test canary weight 20"), now)
    pipeline.offer_event(step(SourceName.FLAGGER_WEBHOOK, "a later, different text"), now)
    [n] = pipeline.due(now + timedelta(seconds=30))
    assert [(e.detail, e.message, e.sources) for e in n.events] == [
        ("20", "Advance podinfo.test canary weight 20", (CANARIES, EVENTS)),
        ("30", f"{STATUS_TEXT}: canaryWeight 30", (CANARIES,)),
    ]
    assert pipeline.stats.suppressed == {"duplicate": 3}


@pytest.mark.parametrize("first", [CANARIES, SourceName.FLAGGER_METRICS])
def test_merge_prefers_flaggers_message_over_one_canarywatch_wrote(first: SourceName) -> None:
    """A kept event (a verdict) repeated by the Events takes Flagger's message once."""
    pipeline = Pipeline(router=Router(_route(group_wait_s=0)))
    now = START
    canary = CanaryRef("test", "podinfo")
    text = f"{STATUS_TEXT}: phase Succeeded" if first is CANARIES else ""
    verdict = make_event(Transition.PROMOTED, canary=str(canary), sources=(first,), message=text)
    assert pipeline.offer_event(verdict, now) is not None
    flagger = make_event(
        Transition.PROMOTED,
        canary=str(canary),
        sources=(EVENTS,),
        message="Promotion completed! Scaling down podinfo.test",
    )
    result = pipeline.correlator(flagger, now)
    assert result.duplicate_of is not None
    assert result.duplicate_of.message == "Promotion completed! Scaling down podinfo.test"
    again = make_event(
        Transition.PROMOTED, canary=str(canary), sources=(SourceName.FLAGGER_WEBHOOK,), message="x"
    )
    repeat = pipeline.correlator(again, now).duplicate_of
    assert repeat is not None
    assert repeat.message == "Promotion completed! Scaling down podinfo.test"  # the first kept


def _route(*, group_wait_s: float) -> Route:
    return dataclasses.replace(
        policy.DEFAULT_ROUTE, group_wait_s=group_wait_s, group_interval_s=group_wait_s
    )
