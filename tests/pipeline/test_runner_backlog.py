"""The runner at start-up: every source's backlog is replayed in the order things happened.

Issue 12: sources list concurrently. When the Canary list (the rollout already rolled back)
was processed before the Events list (the revision, its steps, the rollback), the older Events
were taken for news about a finished rollout: steps were lost and, before the correlator's
own guard, a phantom rollout repeated the whole rollback.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from canarywatch.clock import SystemClock
from canarywatch.config import parse_config
from canarywatch.model import CanaryEvent, Notification, Observation, SourceName
from canarywatch.pipeline.correlate import Correlator
from canarywatch.pipeline.policy import build_pipeline
from canarywatch.pipeline.runner import Runner

T0 = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
"""When Flagger did things: minutes before the daemon started (inside the catch-up window)."""


POLICY = parse_config(
    "receivers: [{name: all, sink: console}]\n"
    'route: {receiver: all, group_by: ["..."], group_wait: 0s, group_interval: 0s}\n'
    "inhibit_rules: []\n"
)
"""Every transition its own notification at once, nothing inhibited: what is announced is
exactly what the correlator made of the backlog."""


def stamp(minute: float) -> str:
    return (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event(uid: str, minute: float, reason: str, message: str, kind: str = "Normal") -> Observation:
    obj: dict[str, Any] = {
        "metadata": {"name": f"podinfo.{uid}", "namespace": "test", "uid": uid},
        "involvedObject": {"kind": "Canary", "namespace": "test", "name": "podinfo"},
        "reason": reason,
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": stamp(minute),
        "lastTimestamp": stamp(minute),
        "source": {"component": "flagger"},
    }
    return Observation(
        at=datetime.now(UTC),
        source=SourceName.KUBERNETES_EVENTS,
        data={"type": "ADDED", "object": obj, "initial": True},
    )


def canary(minute: float, phase: str, spec: str, *, weight: int = 0) -> Observation:
    obj = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test", "uid": "c1"},
        "spec": {"targetRef": {"name": "podinfo"}, "analysis": {"stepWeight": 10}},
        "status": {
            "phase": phase,
            "canaryWeight": weight,
            "failedChecks": 0,
            "iterations": 0,
            "lastAppliedSpec": spec,
            "lastTransitionTime": stamp(minute),
        },
    }
    return Observation(
        at=datetime.now(UTC),
        source=SourceName.CANARIES,
        data={"type": "ADDED", "object": obj, "initial": True},
    )


DEFAULT_INHIBITION = parse_config(
    "receivers: [{name: all, sink: console}]\n"
    'route: {receiver: all, group_by: ["..."], group_wait: 0s, group_interval: 0s}\n'
)
"""As ``POLICY``, with the shipped inhibit rules (a verdict mutes its rollout's waiting steps)."""


async def run(
    before: list[Observation],
    observations: list[Observation],
    policy: Any = POLICY,
    *,
    restart: bool = False,
) -> list[tuple[str, str, str]]:
    """``before`` is what the daemon saw before it went down; ``observations`` the backlog the
    sources list when it starts again, in the order they arrive. What the backlog announced.

    ``restart``: a new process continues from the correlator's saved state (its normalisers
    start empty, as after a kill), not the same pipeline after a relist.
    """
    pipeline = build_pipeline(policy, catch_up=False)
    for obs in before:
        pipeline.observe(obs, obs.at)
    pipeline.flush_all(datetime.now(UTC))
    if restart:
        saved = Correlator.restore(pipeline.correlator.snapshot())
        pipeline = build_pipeline(policy, catch_up=False, correlator=saved)
    sent: list[Notification] = []

    async def commit(due: list[Notification], new: list[CanaryEvent]) -> None:
        sent.extend(due)

    runner = Runner(pipeline, clock=SystemClock(), commit=commit)
    listed = asyncio.Event()
    runner.hold_until_listed({"default": [listed]})
    task = asyncio.create_task(runner.run())
    for obs in observations:
        await runner.emit(obs)
    await asyncio.sleep(0.05)
    assert not sent, "nothing is processed before every source has listed"
    listed.set()
    await asyncio.sleep(0.05)
    await runner.stop(flush_all=True)
    await task
    return [(e.transition.value, e.detail, e.rollout) for n in sent for e in n.events]


async def test_the_canary_list_first_does_not_hide_the_steps_the_events_list_shows() -> None:
    before = [
        canary(-60, "Initialized", "s0"),
        event("e0", -60, "Synced", "Initialization done! podinfo.test"),
        canary(-59, "Succeeded", "s0"),
    ]
    # While the daemon was down: a new revision, one step, a rollback. The Canary list shows
    # only the outcome (one object, its latest status) and arrives first.
    status = [canary(9, "Failed", "s1")]
    events = [
        event("e1", 0, "Synced", "New revision detected! Scaling up podinfo.test"),
        event("e2", 1, "Synced", "Starting canary analysis for podinfo.test"),
        event("e3", 2, "Synced", "Advance podinfo.test canary weight 10"),
        event(  # one reconcile: the verdict's Events and the status write (as Flagger does)
            "e4",
            9,
            "Synced",
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Warning",
        ),
        event("e5", 9, "Synced", "Canary failed! Scaling down podinfo.test", "Warning"),
    ]
    got = await run(before, [*status, *events])
    transitions = [(t, d) for t, d, _ in got]
    assert sorted(transitions) == [
        ("analysis-started", ""),
        ("revision-detected", ""),
        ("rolled-back", ""),
        ("weight-advanced", "10"),
    ]
    assert len({rollout for _, _, rollout in got}) == 1, got


async def test_a_backlog_step_is_sent_before_its_rollback_mutes_it() -> None:
    """The fault matrix's kill -9 case: the daemon had made ``halted`` but was killed before it
    was durable; the restart's backlog holds the halt and the rollback that followed it. Live,
    the halt was sent before the rollback fired; replayed, it must be too (the default rule
    mutes only steps still waiting when the verdict fires)."""
    before = [
        canary(-60, "Initialized", "s0"),
        event("e0", -60, "Synced", "Initialization done! podinfo.test"),
        canary(-59, "Succeeded", "s0"),
        event("e1", 0, "Synced", "New revision detected! Scaling up podinfo.test"),
        event("e2", 1, "Synced", "Starting canary analysis for podinfo.test"),
        event("e3", 1, "Synced", "Advance podinfo.test canary weight 10"),
    ]
    backlog = [
        event(
            "e5",
            3,
            "Synced",
            "Halt podinfo.test advancement request-success-rate 91.40 < 99",
            "Warning",
        ),
        event(
            "e6",
            8,
            "Synced",
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Warning",
        ),
        event("e7", 8, "Synced", "Canary failed! Scaling down podinfo.test", "Warning"),
    ]
    got = await run(before, backlog, policy=DEFAULT_INHIBITION)
    assert [t for t, _, _ in got] == ["halted", "rolled-back"], got


AT_WEIGHT_10 = [
    canary(-60, "Initialized", "s0"),
    event("e0", -60, "Synced", "Initialization done! podinfo.test"),
    canary(-59, "Succeeded", "s0"),
    event("e1", 0, "Synced", "New revision detected! Scaling up podinfo.test"),
    canary(0, "Progressing", "s1"),
    event("e2", 1, "Synced", "Starting canary analysis for podinfo.test"),
    event("e3", 2, "Synced", "Advance podinfo.test canary weight 10"),
]
"""What the daemon saw before a restart or an outage: rollout s1 at weight 10."""


async def test_a_relisted_canary_recovers_a_missed_step_only_after_the_backlogs_events() -> None:
    """The fault matrix's kill -9 case (its one remaining out-of-order): Flagger does not move
    ``lastTransitionTime`` when only the weight changes, so the relisted Canary sorts before
    the backlog's newer weight Events. Its missed-step recovery (``pipeline.recover``) ran at
    that place and announced weight 40 before 20 and 30; it must wait for the backlog."""
    backlog = [
        canary(0, "Progressing", "s1", weight=40),  # Progressing since minute 0, now at 40
        event("e4", 3, "Synced", "Advance podinfo.test canary weight 20"),
        event("e5", 4, "Synced", "Advance podinfo.test canary weight 30"),
        event("e6", 5, "Synced", "Advance podinfo.test canary weight 40"),
    ]
    got = await run(AT_WEIGHT_10, backlog, restart=True)
    assert [(t, d) for t, d, _ in got] == [
        ("weight-advanced", "20"),
        ("weight-advanced", "30"),
        ("weight-advanced", "40"),
    ], got


async def test_a_missed_step_is_still_recovered_after_the_backlog() -> None:
    """Deferred, not dropped: a step only the relisted status shows (its Event folded away)
    is still announced, once, after what the Events listed."""
    backlog = [
        canary(0, "Progressing", "s1", weight=40),
        event("e4", 3, "Synced", "Advance podinfo.test canary weight 20"),
    ]
    got = await run(AT_WEIGHT_10, backlog, restart=True)
    assert [(t, d) for t, d, _ in got] == [("weight-advanced", "20"), ("weight-advanced", "40")]
