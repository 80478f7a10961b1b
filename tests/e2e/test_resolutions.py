"""The real daemon against the simulated cluster: when verdicts resolve, and what a restart
recovers of the steps client-go folded away (README "Conditions" and "Start-up policy")."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.e2e.test_daemon import (
    SPEED,
    daemon_config,
    expected,
    running,
    settle,
    simulated_cluster,
)

from canarywatch.config import Config
from canarywatch.simulator.event_recorder import COMBINED_PREFIX
from canarywatch.simulator.flagger import PODINFO_ANALYSIS
from canarywatch.simulator.scenarios import SCENARIOS, play_all, realtime_pace
from canarywatch.simulator.store import format_time


def with_send_resolved(config: Config) -> Config:
    receivers = tuple(r.model_copy(update={"send_resolved": True}) for r in config.receivers)
    return dataclasses.replace(config, receivers=receivers)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_each_rollback_of_the_six_scenarios_resolves_once_at_the_next_promotion(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    async with simulated_cluster() as cluster:
        config = with_send_resolved(daemon_config(cluster, out, tmp_path / "state"))
        async with running(config):
            await play_all(cluster.sim, realtime_pace(SPEED))
            await settle(out, expected(SCENARIOS))
    sent = [(line["status"], line["at"], e) for line in lines(out) for e in line["events"]]
    fired = [e for status, _, e in sent if status == "firing"]
    resolved = [(at, e) for status, at, e in sent if status == "resolved"]

    rollbacks = Counter(
        (e["canary"], e["rollout"]) for e in fired if e["transition"] == "rolled-back"
    )
    assert sorted(c for c, _ in rollbacks) == ["shop/checkout"] * 2 + ["test/podinfo"] * 2
    assert set(rollbacks.values()) == {1}
    resolved_rollbacks = Counter(
        (e["canary"], e["rollout"]) for _, e in resolved if e["transition"] == "rolled-back"
    )
    # Both podinfo rollbacks resolve, once each, when podinfo is promoted again (the last
    # scenario); checkout is never promoted again (deleted without revertOnDeletion: no
    # terminated either), so its two rollbacks stay firing.
    assert resolved_rollbacks == Counter({k: 1 for k in rollbacks if k[0] == "test/podinfo"})
    promoted = max(
        when(e["observed_at"])
        for e in fired
        if e["canary"] == "test/podinfo" and e["transition"] == "promoted"
    )
    for at, e in resolved:
        if e["transition"] == "rolled-back":
            assert promoted <= when(at) < promoted + timedelta(seconds=5)


FIVE_PERCENT_STEPS = {**PODINFO_ANALYSIS, "stepWeight": 5}
"""Ten steps to 50%: from ``canary weight 35`` (the rollout's 10th distinct Normal message) on,
client-go folds every message into one combined Event, each overwriting the one before."""


async def test_a_restart_recovers_the_folded_step_the_canary_status_still_shows(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    weights = Counter({("test/podinfo", "weight-advanced", str(w)): 1 for w in range(5, 41, 5)})
    async with simulated_cluster() as cluster:
        config = daemon_config(cluster, out, state)
        c = cluster.sim.create_canary("test", "podinfo", analysis=FIVE_PERCENT_STEPS)
        async with running(config):
            c.new_revision("fff666")
            c.start_analysis()  # weight 5
            while c.routes[1] < 40:
                c.advance()
            await settle(out, weights)
        # Down: weight 45, weight 50 and the promotion's first message, all folded into the one
        # combined Event, each overwriting the one before.
        down_since = format_time(cluster.sim.clock.now())
        c.advance()
        c.advance()
        c.promote()
        folded = [e for e in cluster.api.store.items("events") if e["lastTimestamp"] >= down_since]
        assert [e["message"] for e in folded if e["type"] == "Normal"] == [
            COMBINED_PREFIX + "Copying podinfo.test template spec to podinfo-primary.test"
        ]
        async with running(config):
            c.finalise()
            c.succeed()
            want = weights + Counter(
                {
                    ("test/podinfo", "revision-detected", ""): 1,
                    ("test/podinfo", "analysis-started", ""): 1,
                    # weight 45 is lost: overwritten, and no longer in the Canary status.
                    ("test/podinfo", "weight-advanced", "50"): 1,  # recovered from the status
                    ("test/podinfo", "promoting", ""): 1,  # the combined Event's last message
                    ("test/podinfo", "finalising", ""): 1,
                    ("test/podinfo", "promoted", ""): 1,
                }
            )
            got = await settle(out, want)
    assert got == want
