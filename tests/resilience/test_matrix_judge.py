"""The fault matrix's own logic, without a daemon: the truth model and ``judge``'s verdicts.

``test_fault_matrix`` is only as good as what it compares with: the transitions the traced
simulator says it made must be exactly what the scenarios declare, and each kind of wrong
delivery must land in its column (and a right one in none).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tests.resilience.matrix import (
    IDEMPOTENCY_HEADER,
    Arrival,
    Made,
    TracedFlagger,
    Truth,
    expected_of,
    judge,
)

from canarywatch.clock import VirtualClock
from canarywatch.simulator import Store
from canarywatch.simulator.scenarios import SCENARIOS, play_all, virtual_pace

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
    return Arrival(at, 200, {IDEMPOTENCY_HEADER: key}, json.dumps(body).encode())


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
    arrivals.insert(3, Arrival(2.9, 200, again.headers, again.body))
    verdict = judge(truth_of(*ROLLBACK), arrivals)
    assert verdict.clean
    assert verdict.announced.resends == 1


def test_a_refused_request_was_not_received() -> None:
    arrivals = exact()
    arrivals[1] = Arrival(1.5, 500, arrivals[1].headers, arrivals[1].body)
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
