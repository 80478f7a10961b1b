"""The fault matrix's own logic, without a daemon: the truth model and ``judge``'s verdicts.

``test_fault_matrix`` is only as good as what it compares with: the transitions the traced
simulator says it made must be exactly what the scenarios declare, and each kind of wrong
delivery must land in its column (and a right one in none).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.resilience.matrix import (
    IDEMPOTENCY_HEADER,
    Arrival,
    DaemonProcess,
    Finding,
    Made,
    TracedFlagger,
    Truth,
    Verdict,
    excuse_unseen_folds,
    expected_of,
    judge,
    unseen_fold,
)

from canarywatch.clock import VirtualClock
from canarywatch.simulator import Store
from canarywatch.simulator.flagger import PODINFO_ANALYSIS
from canarywatch.simulator.scenarios import SCENARIOS, play_all, promoted_rollout, virtual_pace

CANARY = "test/podinfo"


async def test_the_traced_simulator_makes_what_every_scenario_declares() -> None:
    clock = VirtualClock(datetime(2025, 1, 2, 9, 0, tzinfo=UTC))
    truth = Truth()
    sim = TracedFlagger(Store(clock=clock), truth, cluster_name="sim")
    names = list(SCENARIOS) * 2
    await play_all(sim, virtual_pace(clock), names=names)
    assert truth.check(expected_of(names)) == ""
    assert len(truth.made) == sum(len(k) for k in expected_of(names).values())
    rollouts = {m.rollout for m in truth.made if m.canary == CANARY}
    # four scenarios with test/podinfo, twice; 0: the initialisation before the first revision
    assert rollouts == set(range(9))


def truth_of(*keys: tuple[str, str, int]) -> Truth:
    """``(transition, detail, rollout)`` made one per second from t=0."""
    truth = Truth()
    truth.made = [Made(CANARY, t, d, float(n), r, "step") for n, (t, d, r) in enumerate(keys)]
    return truth


def arrival(
    at: float, transition: str, detail: str = "", rollout: str = "1", key: str = ""
) -> Arrival:
    event = {
        "canary": CANARY,
        "namespace": "test",
        "transition": transition,
        "detail": detail,
        "rollout": rollout,
        "occurred_at": None,
        "observed_at": "",
        "sources": ["kubernetes-events"],
    }
    body = {"notification": {"at": "", "status": "firing", "events": [event]}}
    key = key or f"{transition}-{detail}-{rollout}-{at}"
    headers = {IDEMPOTENCY_HEADER: key}
    return Arrival("POST", "/", headers, json.dumps(body).encode(), None, at=at, status=200)


ROLLBACK = (
    ("revision-detected", "", 1),
    ("analysis-started", "", 1),
    ("weight-advanced", "10", 1),
    ("halted", "", 1),
    ("rolled-back", "", 1),
)


def exact() -> list[Arrival]:
    return [arrival(n + 0.5, t, d) for n, (t, d, _) in enumerate(ROLLBACK)]


def kinds(arrivals: list[Arrival], truth: Truth | None = None) -> dict[str, int]:
    verdict = judge(truth or truth_of(*ROLLBACK), arrivals)
    out = {k: verdict.count(k) for k in ("LOST", "DUPLICATED", "INVENTED", "OUT OF ORDER")}
    return {k: v for k, v in out.items() if v}


def test_exactly_what_was_made_is_clean_and_its_delay_measured() -> None:
    verdict = judge(truth_of(*ROLLBACK), exact())
    assert verdict.clean
    assert verdict.max_delay_s == pytest.approx(0.5)
    assert verdict.announced.resends == 0


def test_an_exact_resend_is_allowed_and_counted() -> None:
    arrivals = exact()
    again = arrivals[2]
    arrivals.insert(3, dataclasses.replace(again, at=2.9))
    verdict = judge(truth_of(*ROLLBACK), arrivals)
    assert verdict.clean
    assert verdict.announced.resends == 1


def test_a_refused_request_was_not_received() -> None:
    arrivals = exact()
    arrivals[1] = dataclasses.replace(arrivals[1], at=1.5, status=500)
    assert kinds(arrivals) == {"LOST": 1}


def test_the_same_step_under_a_new_key_is_duplicated() -> None:
    arrivals = [*exact(), arrival(9.0, "weight-advanced", "10", key="re-derived")]
    assert kinds(arrivals) == {"DUPLICATED": 1}


def test_a_phantom_rollout_is_invented() -> None:
    phantom = [arrival(9.0 + n, t, d, rollout="b7d2e914") for n, (t, d, _) in enumerate(ROLLBACK)]
    assert kinds([*exact(), *phantom]) == {"INVENTED": 5}


def test_a_verdict_announced_for_the_next_rollout_is_invented_and_the_real_one_lost() -> None:
    truth = truth_of(*ROLLBACK, ("revision-detected", "", 2), ("promoted", "", 2))
    arrivals = [
        *exact()[:4],
        arrival(5.5, "revision-detected", rollout="2"),
        arrival(6.5, "promoted", rollout="2"),
        arrival(7.0, "rolled-back", rollout="2"),
    ]
    verdict = judge(truth, arrivals)
    assert kinds(arrivals, truth) == {"LOST": 1, "INVENTED": 1}
    (invented,) = [f for f in verdict.findings if f.kind == "INVENTED"]
    assert (invented.transition, invented.rollout) == ("rolled-back", "2")


def test_a_swap_is_out_of_order_once() -> None:
    arrivals = exact()
    arrivals[2] = arrival(3.7, "weight-advanced", "10")  # after halted (3.5)
    assert kinds(arrivals) == {"OUT OF ORDER": 1}


def test_an_events_only_step_behind_a_status_step_is_known_late_not_the_step_out_of_order() -> None:
    """The Canary status showed weight 10 before the Events watch delivered "Starting canary
    analysis": the late one is the Events-only step (known), however the tie falls."""
    arrivals = exact()
    arrivals[1] = arrival(2.7, "analysis-started")  # after weight-advanced[10] (2.5)
    verdict = judge(truth_of(*ROLLBACK), arrivals)
    assert verdict.clean, verdict.findings
    assert len(verdict.known) == 1
    assert "analysis-started announced late" in verdict.known[0]


def test_what_never_arrived_is_lost() -> None:
    assert kinds(exact()[:-1]) == {"LOST": 1}


def test_a_no_traffic_announced_as_halted_is_the_known_discrepancy() -> None:
    truth = truth_of(
        *[(t, d, r) if t != "halted" else ("no-traffic", "", 1) for t, d, r in ROLLBACK]
    )
    verdict = judge(truth, exact())
    assert verdict.clean
    assert len(verdict.known) == 1
    assert "no-traffic" in verdict.known[0]


# -- unseen_fold: the proof behind "unrecoverable (folded while nobody watched)" ---------------


async def folded_history() -> tuple[Store, Truth]:
    """Two promoted rollouts of test/podinfo a minute per step: by the second, client-go folds
    most Normal messages into one "(combined from similar events)" Event, each overwriting the
    one before (the simulator's arbitrary choice is seeded, so which ones is the same every run:
    the second ``promoting`` is folded and the ``finalising`` tick overwrites it)."""
    clock = VirtualClock(datetime(2025, 1, 2, 9, 0, tzinfo=UTC))
    store, truth = Store(clock=clock), Truth()
    sim = TracedFlagger(store, truth, cluster_name="sim")
    c = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS)
    pace = virtual_pace(clock)
    await promoted_rollout(c, pace, revision="aaa111", not_ready=False)
    await promoted_rollout(c, pace, revision="bbb222", not_ready=False)
    return store, truth


def second(truth: Truth, transition: str, detail: str = "") -> Made:
    """The second rollout's ``transition[detail]``."""
    return next(m for m in truth.made if m.rollout == 2 and m.key == (transition, detail))


async def test_a_folded_step_overwritten_while_nobody_watched_is_proven_unseen() -> None:
    store, truth = await folded_history()
    step, overwriting = second(truth, "promoting"), second(truth, "finalising")
    start = truth.made[0].revisions[0]
    # Killed just before the step; the next process listed after the overwrite.
    sights = [(start, float(step.revisions[0])), (overwriting.revisions[1], math.inf)]
    proven, proof = unseen_fold(step, store, sights)
    assert proven, proof
    assert "promoting of rollout #2" in proof


@pytest.mark.parametrize(
    "case",
    ["watched when made", "listed before the overwrite", "status still shows it", "not folded"],
)
async def test_a_step_somebody_could_have_seen_is_not_excused(case: str) -> None:
    store, truth = await folded_history()
    made, overwriting = second(truth, "promoting"), second(truth, "finalising")
    start = truth.made[0].revisions[0]
    killed, relisted = float(made.revisions[0]), overwriting.revisions[1]
    if case == "watched when made":
        killed = float(made.revisions[1])
    elif case == "listed before the overwrite":
        relisted = made.revisions[1] + 1  # the list shows the combined Event (and the phase)
    elif case == "status still shows it":
        # The same folded, overwritten Event, for a step the status at the list does show.
        made = dataclasses.replace(made, transition="finalising")
    elif case == "not folded":
        # The second rollout's 20 % step: client-go counted it on the first one's own Event
        # (same message), which nothing overwrote.
        made = second(truth, "weight-advanced", "20")
        killed = float(made.revisions[0])
    proven, why = unseen_fold(made, store, [(start, killed), (relisted, math.inf)])
    assert not proven
    assert why.startswith(
        {
            "watched when made": "made at revision",
            "listed before the overwrite": "its folded Event",
            "status still shows it": "the Canary status still showed it",
            "not folded": "its Event 'Advance podinfo.test canary weight 20'",
        }[case]
    ), why


async def test_excuse_moves_only_proven_losses_to_known() -> None:
    store, truth = await folded_history()
    step, overwriting = second(truth, "promoting"), second(truth, "finalising")
    watched = second(truth, "weight-advanced", "20")  # made while the first process watched
    lost = [
        Finding("LOST", CANARY, m.transition, m.detail, f"#{m.rollout}", "")
        for m in (watched, step)
    ]
    verdict = Verdict(len(truth.made), judge(truth, []).announced, list(lost), [], 0.0, "")

    class Killed:
        """A daemon killed just before ``step``, listed again after ``overwriting``."""

        def sights(self) -> list[tuple[int, float]]:
            start = truth.made[0].revisions[0]
            return [(start, float(step.revisions[0])), (overwriting.revisions[1], math.inf)]

    proofs = excuse_unseen_folds(verdict, truth, store, [Killed()])  # type: ignore[list-item]
    assert len(proofs) == 1
    assert [(f.kind, f.transition) for f in verdict.findings] == [("LOST", "weight-advanced")]
    assert "not excused: made at revision" in verdict.findings[0].note
    assert any("promoting of rollout #2" in k for k in verdict.known)


def test_a_process_sees_from_its_list_to_its_kill_except_while_it_relisted(tmp_path: Path) -> None:
    """``DaemonProcess.sights``: a run's Events watch sees from its first list to its SIGKILL,
    minus the gap between the last version it passed on before a 410 and its relist."""
    daemon = DaemonProcess("cw", tmp_path / "cw.yaml", tmp_path, 0)

    def line(event: str, **fields: object) -> str:
        return json.dumps({"resource": "events", "event": event, **fields})

    (tmp_path / "cw-1.log").write_text(
        "\n".join(
            [
                line("watch_listed", resource_version="1000", initial=True),
                json.dumps({"resource": "canaries.flagger.app", "event": "watch_relisted"}),
                line("watch_relisted", resource_version="1040", reason="410"),
                line("watch_listed", resource_version="1090", initial=False),
            ]
        ),
        encoding="utf-8",
    )
    (tmp_path / "cw-2.log").write_text("", encoding="utf-8")  # killed before it listed
    (tmp_path / "cw-3.log").write_text(line("watch_listed", resource_version="1200"), "utf-8")
    daemon.runs = 3
    daemon.killed_at = {1: 1100, 2: 1150}
    assert daemon.sights() == [(1000, 1040.0), (1090, 1100.0), (1200, math.inf)]
