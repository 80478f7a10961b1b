"""The runner after an outage: when one source of a cluster relists while another is still
behind, the cluster is regrouped as at start-up (issue 12, item 4).

The fault matrix's ``api_outage`` soak: every request refused for ~27 s, etcd compacted
meanwhile. The Canary watch relisted 0.5 s before the Events watch (still sleeping out its
backoff); its relist (a new rollout from ``status.lastAppliedSpec``) and the live status after
it were processed before the Events relist, whose older Events (the previous rollout's
rollback, the new rollout's first steps) then came after newer news: out of order, and a
``not-ready`` lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from structlog.testing import capture_logs
from tests.pipeline.test_runner_backlog import AT_WEIGHT_10, POLICY, canary, event

from canarywatch.clock import SystemClock
from canarywatch.model import CanaryEvent, Notification, Observation
from canarywatch.pipeline.policy import build_pipeline
from canarywatch.pipeline.runner import Runner


def live(obs: Observation) -> Observation:
    """``obs`` as a relist (or the live watch) delivers it: news, not start-up state."""
    data = {k: v for k, v in obs.data.items() if k != "initial"}
    data["type"] = "MODIFIED" if obs.data["object"].get("kind") == "Canary" else "ADDED"
    return Observation(at=obs.at, source=obs.source, data=data, cluster="prod")


BEFORE = AT_WEIGHT_10
"""What the daemon saw before the outage: rollout s1 at weight 10."""

CANARY_RELIST = [live(canary(11, "Progressing", "s2"))]
"""The Canary relist, first back: the next rollout (``lastAppliedSpec`` s2) already running."""

ROLLED_BACK = [live(canary(8, "Failed", "s1"))]
"""A Canary relist that is news at once: the rollout the daemon followed has failed."""

EVENTS_RELIST = [
    live(
        event(
            "e4",
            8,
            "Synced",
            "Rolling back podinfo.test failed checks threshold reached 5",
            "Warning",
        )
    ),
    live(event("e5", 8, "Synced", "Canary failed! Scaling down podinfo.test", "Warning")),
    live(event("e6", 10, "Synced", "New revision detected! Scaling up podinfo.test")),
]
"""The Events relist, a moment later: the s1 rollback and s2's start, all older than the
Canary status the relist above showed."""


class Cluster:
    """A runner over a pipeline that saw ``BEFORE``, regrouping cluster ``prod`` whose two
    sources' currency the test sets by hand."""

    def __init__(self, *, events_behind: bool) -> None:
        pipeline = build_pipeline(POLICY, catch_up=False)
        for obs in BEFORE:
            pipeline.observe(dataclasses.replace(obs, cluster="prod"), obs.at)
        pipeline.flush_all(datetime.now(UTC))
        self.sent: list[Notification] = []
        self.runner = Runner(pipeline, clock=SystemClock(), commit=self.commit)
        self.canaries_current = asyncio.Event()
        self.events_current = asyncio.Event()
        if not events_behind:
            self.events_current.set()

        def behind(e: asyncio.Event) -> Callable[[], bool]:
            return lambda: not e.is_set()

        self.runner.regroup_after_gaps(
            {
                "prod": [
                    ("canaries", self.canaries_current, behind(self.canaries_current)),
                    ("kube_events", self.events_current, behind(self.events_current)),
                ]
            },
            max_wait_s=5.0,
        )

    async def commit(self, due: list[Notification], new: list[CanaryEvent]) -> None:
        self.sent.extend(due)

    def announced(self) -> list[tuple[str, str]]:
        return [(e.transition.value, e.rollout) for n in self.sent for e in n.events]

    async def relist(self, source: str, items: list[Observation], current: asyncio.Event) -> None:
        """What a source does on a relist: the runner's marker, the items, then current."""
        await self.runner.catching_up("prod", source)
        for obs in items:
            await self.runner.emit(obs)
        current.set()


async def settle() -> None:
    await asyncio.sleep(0.05)


async def test_a_relist_while_the_events_watch_is_behind_is_replayed_in_order() -> None:
    cluster = Cluster(events_behind=True)
    task = asyncio.create_task(cluster.runner.run())
    with capture_logs() as logs:
        await cluster.relist("canaries", CANARY_RELIST, cluster.canaries_current)
        await settle()
        assert not cluster.sent, "held while the Events source is behind"
        await cluster.relist("kube_events", EVENTS_RELIST, cluster.events_current)
        await settle()
        await cluster.runner.stop(flush_all=True)
        await task
    got = cluster.announced()
    transitions = [t for t, _ in got]
    assert "rolled-back" in transitions, got
    assert "revision-detected" in transitions, got
    rolled_back = transitions.index("rolled-back")
    assert rolled_back < transitions.index("revision-detected"), got
    old, new = got[rolled_back][1], got[transitions.index("revision-detected")][1]
    assert old != new, "the rollback is the old rollout's, the revision the new one's"
    regrouped = [e for e in logs if e["event"] == "sources_regrouped"]
    assert len(regrouped) == 1
    assert regrouped[0]["log_level"] == "info"
    assert regrouped[0]["cluster"] == "prod"
    assert regrouped[0]["caught_up"] == "canaries"
    assert regrouped[0]["waited_for"] == ["kube_events"]
    assert regrouped[0]["held"] == len(CANARY_RELIST) + len(EVENTS_RELIST)


async def test_a_relist_on_a_healthy_cluster_is_processed_at_once() -> None:
    """A routine 410 relist of one watch while the other is current: nothing is held."""
    cluster = Cluster(events_behind=False)
    task = asyncio.create_task(cluster.runner.run())
    with capture_logs() as logs:
        await cluster.relist("canaries", ROLLED_BACK, cluster.canaries_current)
        await settle()
        assert [t for t, _ in cluster.announced()] == ["rolled-back"]
        await cluster.runner.stop(flush_all=True)
        await task
    assert not [e for e in logs if e["event"].startswith("sources_")]


async def test_a_laggard_that_stays_behind_is_given_up_on_after_the_bound() -> None:
    cluster = Cluster(events_behind=True)
    cluster.runner.regroup_after_gaps(
        {
            "prod": [
                ("canaries", cluster.canaries_current, lambda: False),
                ("kube_events", cluster.events_current, lambda: True),
            ]
        },
        max_wait_s=0.2,
    )
    task = asyncio.create_task(cluster.runner.run())
    with capture_logs() as logs:
        await cluster.relist("canaries", ROLLED_BACK, cluster.canaries_current)
        await settle()
        assert not cluster.sent
        await asyncio.sleep(0.3)
        assert [t for t, _ in cluster.announced()] == ["rolled-back"]
        await cluster.runner.stop(flush_all=True)
        await task
    warned: list[dict[str, Any]] = [e for e in logs if e["event"] == "sources_not_current"]
    assert len(warned) == 1
    assert warned[0]["log_level"] == "warning"
    assert warned[0]["sources"] == ["kube_events"]
