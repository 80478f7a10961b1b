"""Issue 12, item 5: one rollout id, whichever source reported the start first.

Flagger records "New revision detected!" and writes ``status.lastAppliedSpec`` in one
reconcile, so the Events watch and the Canary watch race to report the start. The id used to
be the spec when the status won and a sequence number when the Events did ("1" in one replica,
"3f0a9c21" in the other, or after a relist), and with it every fingerprint of the rollout: the
sent log and the HA shared log no longer recognised what had been sent. Where the status is
watched, a start reported without its spec now waits (``correlate.SPEC_WAIT`` at most) for the
status to reveal it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from tests.pipeline.test_runner_backlog import DEFAULT_INHIBITION, POLICY, canary, event

from canarywatch.clock import SystemClock
from canarywatch.identity import fingerprint
from canarywatch.model import CanaryEvent, Notification, Observation
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.correlate import SPEC_WAIT, Correlator
from canarywatch.pipeline.policy import DEFAULT_CLUSTER, build_pipeline
from canarywatch.pipeline.runner import Runner

BEFORE = [
    canary(-60, "Initialized", "s0"),
    event("e0", -60, "Synced", "Initialization done! podinfo.test"),
    canary(-59, "Succeeded", "s0"),
]
START_EVENT = event("e1", 0, "Synced", "New revision detected! Scaling up podinfo.test")
START_STATUS = canary(0, "Progressing", "s1")
"""The status write of the reconcile that recorded ``START_EVENT``."""
STEPS = [
    event("e2", 1, "Synced", "Starting canary analysis for podinfo.test"),
    event("e3", 1, "Synced", "Advance podinfo.test canary weight 10"),
    event(
        "e4", 5, "Synced", "Rolling back podinfo.test failed checks threshold reached 5", "Warning"
    ),
    event("e5", 5, "Synced", "Canary failed! Scaling down podinfo.test", "Warning"),
    canary(5, "Failed", "s1"),
]


def waits() -> Correlator:
    return Correlator(spec_wait_clusters={DEFAULT_CLUSTER})


def live(observations: list[Observation]) -> list[CanaryEvent]:
    """What one process announces, fed ``observations`` a few milliseconds apart."""
    pipeline = build_pipeline(POLICY, correlator=waits())
    sent: list[Notification] = []
    now = datetime.now(UTC)
    for obs in [*BEFORE, *observations]:
        now += timedelta(milliseconds=5)
        pipeline.observe(obs, now)
        pipeline.release_held(now)
        sent.extend(pipeline.due(now))
    sent.extend(pipeline.flush_all(now))
    return [e for n in sent for e in n.events]


async def relisted(observations: list[Observation]) -> list[CanaryEvent]:
    """What a fresh process (no state) announces from the same objects listed at start-up."""
    pipeline = build_pipeline(POLICY, correlator=waits())
    sent: list[Notification] = []

    async def commit(due: list[Notification], new: list[CanaryEvent]) -> None:
        sent.extend(due)

    runner = Runner(pipeline, clock=SystemClock(), commit=commit)
    listed = asyncio.Event()
    runner.hold_until_listed({DEFAULT_CLUSTER: [listed]})
    task = asyncio.create_task(runner.run())
    for obs in [*BEFORE, *observations]:
        await runner.emit(obs)
    listed.set()
    await asyncio.sleep(0.05)
    await runner.stop(flush_all=True)
    await task
    return [e for n in sent for e in n.events]


def of_the_rollout(events: list[CanaryEvent]) -> list[tuple[str, str, str]]:
    return [(e.transition.value, e.detail, e.rollout) for e in events if e.rollout not in ("", "0")]


def test_events_first_and_status_first_give_the_rollout_one_id_and_the_same_fingerprints() -> None:
    events_first = live([START_EVENT, START_STATUS, *STEPS])
    status_first = live([START_STATUS, START_EVENT, *STEPS])
    assert [fingerprint(e) for e in events_first] == [fingerprint(e) for e in status_first]
    assert of_the_rollout(events_first) == [
        ("revision-detected", "", "s1"),
        ("analysis-started", "", "s1"),
        ("weight-advanced", "10", "s1"),
        ("rolled-back", "", "s1"),
    ]
    started = next(e for e in events_first if e.transition.value == "revision-detected")
    assert started.message.startswith("New revision detected!")  # Flagger's words, held or not


async def test_a_relist_by_a_fresh_process_gives_the_ids_the_live_process_gave() -> None:
    live_ids = {fingerprint(e) for e in live([START_EVENT, START_STATUS, *STEPS])}
    # The relist replays in Flagger's order: every Event of the rollout before the status.
    relist = await relisted([START_STATUS, *STEPS[-1:], START_EVENT, *STEPS[:-1]])
    assert of_the_rollout(relist)
    assert {fingerprint(e) for e in relist if e.rollout == "s1"} <= live_ids
    assert {e.rollout for e in relist if e.transition.value == "rolled-back"} == {"s1"}


def holding_a_start() -> tuple[Pipeline, datetime]:
    """A pipeline past ``BEFORE`` that holds ``START_EVENT`` for its spec, and the time."""
    pipeline = build_pipeline(POLICY, correlator=waits())
    now = datetime.now(UTC)
    for obs in BEFORE:
        pipeline.observe(obs, now)
    pipeline.flush_all(now)
    assert pipeline.observe(START_EVENT, now) == []
    return pipeline, now


def test_a_start_whose_spec_does_not_come_is_released_after_the_wait() -> None:
    """The Canary watch is down: the start goes out ``SPEC_WAIT`` late, named by its Event
    occurrence, so another process that waited in vain names it the same."""

    def released_by_a_process() -> list[tuple[str, str]]:
        pipeline, now = holding_a_start()
        assert pipeline.next_deadline() == now + SPEC_WAIT
        assert pipeline.release_held(now + SPEC_WAIT - timedelta(milliseconds=1)) == []
        return [(e.transition.value, e.rollout) for e in pipeline.release_held(now + SPEC_WAIT)]

    first = released_by_a_process()
    assert [t for t, _ in first] == ["revision-detected"]
    assert first[0][1].startswith("e-")
    assert released_by_a_process() == first


def test_a_verdict_is_not_held_behind_a_start_waiting_for_its_spec() -> None:
    """A page goes out at once: a rollback arriving while the start waits releases it."""
    pipeline, now = holding_a_start()
    assert pipeline.observe(STEPS[0], now) == []  # a step waits behind the start
    made = pipeline.observe(STEPS[2], now)
    assert [e.transition.value for e in made] == [
        "revision-detected",
        "analysis-started",
        "rolled-back",
    ]


def test_steps_released_by_their_rollback_are_sent_before_it_fires() -> None:
    """The fault matrix's kill -9: a restart's backlog held a start and its steps (the status
    had not revealed the spec), then the rollback released them. They happened before it and
    are news; correlated with the rollback first, the default inhibit rule muted them."""
    pipeline = build_pipeline(DEFAULT_INHIBITION, correlator=waits())
    now = datetime.now(UTC)
    for obs in BEFORE:
        pipeline.observe(obs, now)
    pipeline.flush_all(now)
    for obs in [START_EVENT, *STEPS[:4]]:
        pipeline.observe(obs, now)
    sent = [e.transition.value for n in pipeline.due(now) for e in n.events]
    assert sent == ["revision-detected", "analysis-started", "weight-advanced", "rolled-back"]


@pytest.mark.parametrize("waiting", [False, True])
def test_without_a_status_watch_nothing_waits(waiting: bool) -> None:
    clusters = {DEFAULT_CLUSTER} if waiting else set()
    pipeline = build_pipeline(POLICY, correlator=Correlator(spec_wait_clusters=clusters))
    now = datetime.now(UTC)
    made = pipeline.observe(START_EVENT, now)
    assert (made == []) is waiting


def test_only_the_canaries_holding_a_start_are_released_and_waited_for() -> None:
    """``release_due`` and ``next_release`` run after every observation: they look only at the
    canaries that hold a start (issue 17: walking the fleet each time cost a fifth of the
    throughput), and a canary stops counting once its start is released."""
    correlator = waits()
    now = datetime.now(UTC)
    pipeline = build_pipeline(POLICY, correlator=correlator)
    for obs in BEFORE:
        pipeline.observe(obs, now)
    assert correlator.next_release() is None
    pipeline.observe(START_EVENT, now)
    assert correlator.next_release() == now + SPEC_WAIT
    assert correlator.release_due(now + SPEC_WAIT - timedelta(milliseconds=1)) == []
    released = correlator.release_due(now + SPEC_WAIT)
    assert [e.transition.value for e, _ in released] == ["revision-detected"]
    assert correlator.next_release() is None
    assert correlator.release_due(now + 2 * SPEC_WAIT) == []


def test_without_the_status_a_start_event_gives_every_process_the_same_id() -> None:
    """Only the Events are watched (no spec to wait for): the rollout id is derived from the
    start Event's occurrence, so a replica that saw an earlier rollout and a fresh process that
    sees only this one agree (a sequence number said "2" in one and "1" in the other)."""

    def announced(observations: list[Observation]) -> dict[str, str]:
        pipeline = build_pipeline(POLICY, correlator=Correlator())
        now = datetime.now(UTC)
        sent: list[Notification] = []
        for obs in observations:
            now += timedelta(milliseconds=5)
            pipeline.observe(obs, now)
            sent.extend(pipeline.due(now))
        sent.extend(pipeline.flush_all(now))
        return {e.message: e.rollout for n in sent for e in n.events}

    events_before = [o for o in BEFORE if o.source is START_EVENT.source]
    second_start = event("e6", 10, "Synced", "New revision detected! Scaling up podinfo.test")
    second_step = event("e7", 11, "Synced", "Starting canary analysis for podinfo.test")
    steps = [o for o in STEPS if o.source is START_EVENT.source]
    replica = announced([*events_before, START_EVENT, *steps, second_start, second_step])
    fresh = announced([*events_before, second_start, second_step])
    message = "New revision detected! Scaling up podinfo.test"
    ids = {replica[message], fresh[message]}
    assert len(ids) == 1, ids
    assert ids.pop().startswith("e-")
    assert replica["Starting canary analysis for podinfo.test"] == fresh[message]
