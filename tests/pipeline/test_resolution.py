"""When a verdict condition resolves (README "Conditions", reference/transitions.md).

``rolled-back`` and ``promotion-failed`` open ``rollout-failed``; it fires until the canary's
next ``promoted`` or ``terminated``, which resolves every failed rollout still firing, each once.
The six simulator scenarios are played back to back on virtual time (the simulated cluster's
Events and Canary statuses, in write order) through the whole pipeline, and every resolution
must be exactly where that rule puts it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from canarywatch.clock import VirtualClock
from canarywatch.config import parse_config
from canarywatch.identity import fingerprint
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    NotificationStatus,
    Observation,
    SourceName,
    Transition,
)
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import SCENARIOS, play_all, virtual_pace
from canarywatch.simulator.store import Change, Store

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES
VERDICTS = (Transition.ROLLED_BACK, Transition.PROMOTION_FAILED)
CLOSERS = (Transition.PROMOTED, Transition.TERMINATED)
CONFIG = """
receivers: [{name: capture, sink: jsonl, send_resolved: true}]
route: {receiver: capture, group_by: ["..."]}
"""


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


@dataclass(frozen=True)
class Sent:
    at: datetime
    status: NotificationStatus
    event: CanaryEvent


async def record_all_scenarios() -> list[tuple[datetime, Change]]:
    """Every Event and Canary write of the six scenarios, stamped with its virtual time."""
    clock = VirtualClock(START)
    store = Store(clock=clock)
    sim = FlaggerSimulator(store, clock)
    subscriptions = [store.subscribe("events"), store.subscribe("canaries")]
    changes: list[tuple[datetime, Change]] = []
    inner = virtual_pace(clock)

    def drain() -> None:
        batch: list[Change] = []
        for subscription in subscriptions:
            while not subscription.queue.empty():
                item = subscription.queue.get_nowait()
                assert isinstance(item, Change)
                batch.append(item)
        changes.extend((clock.now(), c) for c in sorted(batch, key=lambda c: c.rv))

    async def pace(seconds: float) -> None:
        drain()
        await inner(seconds)

    await play_all(sim, pace)
    drain()
    for subscription in subscriptions:
        subscription.close()
    return changes


def send(changes: list[tuple[datetime, Change]], *sources: SourceName) -> list[Sent]:
    pipeline = policy.build_pipeline(parse_config(CONFIG))
    sent: list[Sent] = []
    for at, change in changes:
        source = EVENTS if change.resource == "events" else CANARIES
        if source not in sources:
            continue
        data = {"type": change.type.value, "object": change.object}
        pipeline.observe(Observation(at=at, source=source, data=data), at)
        for n in pipeline.due(at):
            sent += [Sent(n.created_at, n.status, e) for e in n.events]
    return sent


def rule(sent: list[Sent]) -> list[tuple[datetime, str]]:
    """Where the rule puts each verdict's resolution, from the firing notifications alone:
    ``(time of the canary's next promoted/terminated, fingerprint of the verdict)``."""
    firing: dict[CanaryRef, list[str]] = {}
    expected: list[tuple[datetime, str]] = []
    for s in sent:
        if s.status is not NotificationStatus.FIRING:
            continue
        if s.event.transition in VERDICTS:
            firing.setdefault(s.event.canary, []).append(fingerprint(s.event))
        elif s.event.transition in CLOSERS:
            expected += [(s.at, key) for key in firing.pop(s.event.canary, [])]
    return expected


@pytest.fixture(scope="module")
def changes() -> list[tuple[datetime, Change]]:
    import asyncio

    return asyncio.run(record_all_scenarios())


@pytest.mark.parametrize(
    "sources",
    [(EVENTS,), (CANARIES,), (EVENTS, CANARIES)],
    ids=["events", "canary-status", "both"],
)
def test_every_rollback_of_the_six_scenarios_resolves_where_the_rule_says(
    changes: list[tuple[datetime, Change]], sources: tuple[SourceName, ...]
) -> None:
    sent = send(changes, *sources)
    fired = [s for s in sent if s.status is NotificationStatus.FIRING]
    resolved = [
        s
        for s in sent
        if s.status is NotificationStatus.RESOLVED and s.event.transition in VERDICTS
    ]
    # Four rollbacks: two of test/podinfo, two of shop/checkout.
    verdicts = [s.event for s in fired if s.event.transition in VERDICTS]
    assert Counter(str(e.canary) for e in verdicts) == {"test/podinfo": 2, "shop/checkout": 2}
    # Each resolution exactly where the rule puts it, and none twice.
    assert [(s.at, fingerprint(s.event)) for s in resolved] == rule(sent)
    # Which, for these scenarios, is: both podinfo rollbacks at podinfo's promotion in
    # parallel_canaries; checkout is never promoted again (it is deleted without
    # revertOnDeletion, so no terminated either): its two rollbacks stay firing.
    podinfo_promoted = [
        s.at
        for s in fired
        if str(s.event.canary) == "test/podinfo" and s.event.transition is Transition.PROMOTED
    ]
    assert sorted(fingerprint(s.event) for s in resolved) == sorted(
        fingerprint(e) for e in verdicts if str(e.canary) == "test/podinfo"
    )
    assert {s.at for s in resolved} == {podinfo_promoted[-1]}


def test_the_scenarios_declare_what_the_rule_is_checked_on() -> None:
    """Guards the test above: the scenario list still has two rollbacks of each canary and a
    later promotion of podinfo only."""
    per_canary: Counter[tuple[str, str]] = Counter()
    for scenario in SCENARIOS.values():
        for canary, transitions in scenario.expected.items():
            for transition, _ in transitions:
                per_canary[(canary, transition)] += 1
    assert per_canary[("test/podinfo", "rolled-back")] == 2
    assert per_canary[("shop/checkout", "rolled-back")] == 2
    assert per_canary[("shop/checkout", "promoted")] == 0
    assert list(SCENARIOS)[-1] == "parallel_canaries"


# -- catch-up: a resolution is state reconciliation, not news --------------------------------

T0 = datetime(2026, 8, 4, 14, 0, tzinfo=UTC)
PODINFO = CanaryRef("test", "podinfo", "default")


def ev(transition: Transition, minute: float, *, spec: str = "") -> CanaryEvent:
    return CanaryEvent(
        canary=PODINFO,
        transition=transition,
        observed_at=T0 + timedelta(minutes=minute),
        sources=(EVENTS,),
        severity=TRANSITIONS[transition].severity,
        hints={"spec": spec} if spec else {},
    )


def statuses(pipeline: Pipeline, now: datetime) -> list[tuple[str, str, str]]:
    return [
        (n.status.value, e.transition.value, e.rollout)
        for n in pipeline.due(now)
        if not n.repeat  # repeat_interval re-sends of what still fires
        for e in n.events
    ]


def offer(
    pipeline: Pipeline, event: CanaryEvent, now: datetime, *, stale: bool = False
) -> list[tuple[str, str, str]]:
    window = now - timedelta(minutes=10) if stale else None
    pipeline.offer_event(event, now, stale_before=window)
    return statuses(pipeline, now)


def test_a_promotion_older_than_the_catch_up_window_still_resolves_a_notified_rollback() -> None:
    pipeline = policy.build_pipeline(parse_config(CONFIG))
    offer(pipeline, ev(Transition.REVISION_DETECTED, 0, spec="a"), T0)
    now = T0 + timedelta(minutes=5)
    assert offer(pipeline, ev(Transition.ROLLED_BACK, 5), now) == [("firing", "rolled-back", "a")]
    # Down for a day; meanwhile a new revision was promoted. The initial list says so: the
    # steps are state (not announced), the rollback's resolution is still owed.
    later = T0 + timedelta(days=1)
    assert offer(pipeline, ev(Transition.REVISION_DETECTED, 60, spec="b"), later, stale=True) == []
    assert offer(pipeline, ev(Transition.PROMOTED, 70), later, stale=True) == [
        ("resolved", "rolled-back", "a")
    ]
    assert offer(pipeline, ev(Transition.TERMINATED, 80), later) == [("firing", "terminated", "b")]


def test_a_rollback_that_was_only_recorded_as_state_never_resolves() -> None:
    pipeline = policy.build_pipeline(parse_config(CONFIG))
    now = T0 + timedelta(days=1)
    offer(pipeline, ev(Transition.REVISION_DETECTED, 0, spec="a"), now, stale=True)
    assert offer(pipeline, ev(Transition.ROLLED_BACK, 5), now, stale=True) == []
    offer(pipeline, ev(Transition.REVISION_DETECTED, 24 * 60 + 1, spec="b"), now)
    assert offer(pipeline, ev(Transition.PROMOTED, 24 * 60 + 2), now) == [
        ("firing", "promoted", "b")
    ]


def test_a_silenced_rollback_never_resolves() -> None:
    from canarywatch.pipeline.silence import Silencer

    config = parse_config(
        CONFIG
        + """
silences:
  - matchers: ['transition="rolled-back"']
    starts_at: "2026-08-04T00:00:00Z"
    ends_at: "2026-08-04T15:00:00Z"
    created_by: test
    comment: maintenance
"""
    )
    pipeline = policy.build_pipeline(config, silencer=Silencer(None, config.silences))
    offer(pipeline, ev(Transition.REVISION_DETECTED, 0, spec="a"), T0)
    assert offer(pipeline, ev(Transition.ROLLED_BACK, 5), T0 + timedelta(minutes=5)) == []
    offer(pipeline, ev(Transition.REVISION_DETECTED, 90, spec="b"), T0 + timedelta(minutes=90))
    assert offer(pipeline, ev(Transition.PROMOTED, 95), T0 + timedelta(minutes=95)) == [
        ("firing", "promoted", "b")
    ]


def test_a_resolution_stops_the_repeats_of_a_route_muted_by_then() -> None:
    """The repeats stop where the opener was grouped when it fired, not where routing would put
    it at the resolution: a route muted by then (or changed by a reload) kept re-sending it."""
    config = parse_config(
        """
receivers: [{name: chat, sink: jsonl, send_resolved: true}, {name: pager, sink: jsonl}]
route:
  receiver: chat
  group_by: ["..."]
  repeat_interval: 1h
  routes:
    - receiver: pager
      matchers: ['transition="rolled-back"']
      mute_time_intervals: [weekends]
time_intervals:
  - {name: weekends, time_intervals: [{weekdays: [saturday, sunday]}]}
"""
    )
    pipeline = policy.build_pipeline(config)
    tuesday = T0  # 2026-08-04
    saturday = T0 + timedelta(days=4)
    offer(pipeline, ev(Transition.REVISION_DETECTED, 0, spec="a"), tuesday)
    assert offer(pipeline, ev(Transition.ROLLED_BACK, 5), tuesday + timedelta(minutes=5)) == [
        ("firing", "rolled-back", "a")
    ]
    assert [n.repeat for n in pipeline.due(tuesday + timedelta(hours=2))] == [True]
    four_days = 4 * 24 * 60
    offer(pipeline, ev(Transition.REVISION_DETECTED, four_days, spec="b"), saturday)
    offer(pipeline, ev(Transition.PROMOTED, four_days + 5), saturday + timedelta(minutes=5))
    assert pipeline.due(saturday + timedelta(days=3)) == []
