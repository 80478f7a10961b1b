"""Scenario scripts: Flagger's day in the simulated cluster, with what canarywatch should say.

A script drives a ``FlaggerSimulator`` and waits between ticks with ``await pace(seconds)``,
seconds of *Flagger* time. The same script runs on a ``VirtualClock`` in the tests
(``virtual_pace``: time jumps, nothing sleeps) and in accelerated real time for the demo
(``realtime_pace(speed=60)``: a 1 m interval takes a second). Each ``Scenario`` declares the
transitions canarywatch must notify for each canary (``reference/transitions.md``), per
``"namespace/name"``, in order.

    sim = FlaggerSimulator(store, clock)
    await play_all(sim, virtual_pace(clock), names=["successful_rollout"])

The timings follow the fixture day (``fixtures/flagger/README.md``), so client-go's
aggregation lands where the fixtures show it (the 10th distinct Normal message of a rollout).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from canarywatch.clock import VirtualClock
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator, SimulatedCanary

Pace: TypeAlias = Callable[[float], Awaitable[None]]
"""``await pace(s)``: let ``s`` seconds of Flagger time pass."""
Expected: TypeAlias = Mapping[str, list[tuple[str, str]]]
"""``{"namespace/name": [(transition, detail), ...]}``."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    run: Callable[[FlaggerSimulator, Pace], Awaitable[None]]
    expected: Expected


# -- pacing -------------------------------------------------------------------------------


def virtual_pace(clock: VirtualClock) -> Pace:
    """Advance ``clock`` by the requested seconds (waking its sleepers); never sleeps."""

    async def pace(seconds: float) -> None:
        clock.advance_by(seconds)
        await asyncio.sleep(0)  # let whoever woke up run before the next tick

    return pace


def realtime_pace(speed: float = 60.0) -> Pace:
    """Sleep ``seconds / speed`` on the event loop (for the demo on a ``SystemClock``)."""
    if speed <= 0:
        raise ValueError("speed must be positive")

    async def pace(seconds: float) -> None:
        await asyncio.sleep(seconds / speed)

    return pace


async def together(pace: Pace, *scripts: Callable[[Pace], Awaitable[None]]) -> None:
    """Run several scripts at once on one timeline.

    Each script gets its own ``pace``; a small discrete-event scheduler releases the earliest
    sleepers (in the order they went to sleep) and calls the outer ``pace`` only for the gaps
    between wake-ups, so the interleaving is deterministic on any clock.
    """
    loop = asyncio.get_running_loop()
    now = 0.0
    seq = itertools.count()
    sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
    running = len(scripts)
    idle = asyncio.Event()

    def settle() -> None:
        nonlocal running
        running -= 1
        if running == 0:
            idle.set()

    def local_pace_for() -> Pace:
        async def local_pace(seconds: float) -> None:
            fut: asyncio.Future[None] = loop.create_future()
            heapq.heappush(sleepers, (now + max(seconds, 0.0), next(seq), fut))
            settle()
            await fut

        return local_pace

    async def guarded(script: Callable[[Pace], Awaitable[None]]) -> None:
        try:
            await script(local_pace_for())
        finally:
            settle()

    async with asyncio.TaskGroup() as group:
        for script in scripts:
            group.create_task(guarded(script))
        while True:
            await idle.wait()
            idle.clear()
            if not sleepers:
                break
            deadline = sleepers[0][0]
            if deadline > now:
                await pace(deadline - now)
                now = deadline
            while sleepers and sleepers[0][0] <= now:
                _, _, fut = heapq.heappop(sleepers)
                running += 1
                fut.set_result(None)


# -- canary shapes of the fixture day -----------------------------------------------------

FRONTEND_ANALYSIS: Final[Mapping[str, Any]] = {
    "interval": "30s",
    "threshold": 5,
    "stepWeights": [5, 25, 50],
    "metrics": [
        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
    ],
    "webhooks": [
        {"name": "gate", "type": "confirm-rollout", "url": "http://tester/gate/check"},
        {"name": "promotion-gate", "type": "confirm-promotion", "url": "http://tester/gate/p"},
        {"name": "load-test", "type": "rollout", "url": "http://tester/load"},
    ],
}
CHECKOUT_ANALYSIS: Final[Mapping[str, Any]] = {
    "interval": "1m",
    "threshold": 5,
    "stepWeight": 10,
    "maxWeight": 50,
    "metrics": PODINFO_ANALYSIS["metrics"],
    "webhooks": [
        {
            "name": "payments-events",
            "type": "event",
            "url": "http://events.payments/flagger",
            "metadata": {"team": "payments", "slackChannel": "payments-deploys"},
        }
    ],
}
MINUTE: Final = 60.0
HALF_MINUTE: Final = 30.0


def _weights(*weights: int) -> list[tuple[str, str]]:
    return [("weight-advanced", str(w)) for w in weights]


# -- per-canary scripts (reused by parallel_canaries) ---------------------------------------


async def _rollout_from_initialisation(c: SimulatedCanary, pace: Pace) -> None:
    await pace(2)
    c.initialize(primary_ready=False)
    await pace(MINUTE)
    c.initialize()
    for _ in range(11):  # idle past client-go's 10 min aggregation window
        await pace(MINUTE)
        c.tick()
    await pace(MINUTE)
    await promoted_rollout(c, pace, revision="8c669c5f")


async def promoted_rollout(
    c: SimulatedCanary, pace: Pace, *, revision: str, not_ready: bool = True
) -> None:
    """A new revision analysed weight step by weight step to its promotion, a minute apart;
    with a not-ready canary before the analysis and a not-ready primary during the promotion
    unless ``not_ready=False``. Shared with the tests that play a rollout of their own."""
    c.new_revision(revision)
    await pace(MINUTE)
    if not_ready:
        c.not_ready("canary")
        await pace(MINUTE)
    c.start_analysis()
    while c.routes[1] < c.max_weight:
        await pace(MINUTE)
        c.advance()
    await pace(MINUTE)
    await finish_promotion(c, pace, not_ready=not_ready)


async def finish_promotion(c: SimulatedCanary, pace: Pace, *, not_ready: bool = True) -> None:
    """From the last weight step: promote, (primary not ready,) finalise, succeed."""
    c.promote()
    await pace(MINUTE)
    if not_ready:
        c.not_ready("primary")
        await pace(MINUTE)
    c.finalise()
    await pace(MINUTE)
    c.succeed()
    await pace(MINUTE)


async def _failed_checks_rollback(c: SimulatedCanary, pace: Pace) -> None:
    c.new_revision("b7d2e914")
    await pace(MINUTE)
    c.start_analysis()
    await pace(MINUTE)
    c.advance(20)
    for metric, value in (
        ("request-success-rate", 96.12),
        ("request-success-rate", 93.87),
        ("request-duration", 1.283),
        ("request-success-rate", 91.40),
        ("request-success-rate", 89.96),
    ):
        await pace(MINUTE)
        passing = {"request-success-rate": 99.71} if metric == "request-duration" else None
        c.halt_metric(metric, value, values=passing)
    await pace(MINUTE)
    c.rollback("failed-checks")
    await pace(MINUTE)
    c.tick()


async def _no_traffic_rollback(c: SimulatedCanary, pace: Pace) -> None:
    c.new_revision("3f0a9c21")
    await pace(MINUTE)
    c.start_analysis()
    for _ in range(c.threshold):
        await pace(MINUTE)
        c.halt_no_traffic("request-success-rate")
    await pace(MINUTE)
    c.rollback("failed-checks")
    await pace(MINUTE)
    c.tick()


# -- the scenarios ------------------------------------------------------------------------


async def successful_rollout(sim: FlaggerSimulator, pace: Pace) -> None:
    c = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, phase_initialized=False)
    await _rollout_from_initialisation(c, pace)


async def rollback_failed_checks(sim: FlaggerSimulator, pace: Pace) -> None:
    c = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, revision="5d8f7c9b6")
    await pace(MINUTE)
    await _failed_checks_rollback(c, pace)


async def no_traffic_halt_then_rollback(sim: FlaggerSimulator, pace: Pace) -> None:
    c = sim.create_canary("shop", "checkout", analysis=CHECKOUT_ANALYSIS, revision="865dbb8b64")
    await pace(MINUTE)
    await _no_traffic_rollback(c, pace)


async def manual_approval_gate(sim: FlaggerSimulator, pace: Pace) -> None:
    c = sim.create_canary("test", "frontend", analysis=FRONTEND_ANALYSIS, revision="6c1e0d7f")
    await pace(HALF_MINUTE)
    c.deploy("a41f5b90")
    c.wait_for_approval("rollout")
    for _ in range(13):  # about 6.5 min of closed-gate ticks: silent
        await pace(HALF_MINUTE)
        c.tick()
    await pace(HALF_MINUTE)
    c.approve("rollout")
    await pace(HALF_MINUTE)
    c.not_ready(
        "canary",
        "waiting for rollout to finish: 2 of 3 (readyThreshold 100%) updated "
        "replicas are available",
    )
    await pace(HALF_MINUTE)
    c.start_analysis()
    for _ in range(2):
        await pace(HALF_MINUTE)
        c.advance()
    await pace(HALF_MINUTE)
    c.wait_for_approval("promotion")
    for _ in range(13):  # about 7 min at the promotion gate: analysed, silent
        await pace(HALF_MINUTE)
        c.tick()
    await pace(HALF_MINUTE)
    c.approve("promotion")
    await pace(HALF_MINUTE)
    c.not_ready("primary")
    await pace(HALF_MINUTE)
    c.finalise()
    await pace(HALF_MINUTE)
    c.succeed()


async def progress_deadline_failure(sim: FlaggerSimulator, pace: Pace) -> None:
    c = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, revision="5d8f7c9b6")
    await pace(MINUTE)
    c.new_revision("e03b6a55")
    stuck = (
        "waiting for rollout to finish: 0 of 2 (readyThreshold 100%) updated replicas are available"
    )
    for _ in range(10):  # progressDeadlineSeconds 600: the same Warning, a count bump a tick
        await pace(MINUTE)
        c.not_ready("canary", stuck)
    await pace(MINUTE)
    c.rollback("progress-deadline")
    await pace(MINUTE)
    c.tick()


async def parallel_canaries(sim: FlaggerSimulator, pace: Pace) -> None:
    podinfo = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, revision="5d8f7c9b6")
    checkout = sim.create_canary(
        "shop",
        "checkout",
        analysis={**PODINFO_ANALYSIS, "webhooks": CHECKOUT_ANALYSIS["webhooks"]},
        revision="865dbb8b64",
    )

    async def first(p: Pace) -> None:
        await p(MINUTE)
        await promoted_rollout(podinfo, p, revision="8c669c5f")

    async def second(p: Pace) -> None:
        await p(MINUTE + 20)  # ticks 20 s after podinfo's: each canary has its own ticker
        await _failed_checks_rollback(checkout, p)

    await together(pace, first, second)


_ROLLOUT_BODY: Final[list[tuple[str, str]]] = [
    ("revision-detected", ""),
    ("not-ready", ""),
    ("analysis-started", ""),
    *_weights(10, 20, 30, 40, 50),
    ("promoting", ""),
    ("not-ready", ""),
    ("finalising", ""),
    ("promoted", ""),
]
_FAILED_CHECKS: Final[list[tuple[str, str]]] = [
    ("revision-detected", ""),
    ("analysis-started", ""),
    *_weights(10, 20),
    ("halted", ""),
    ("rolled-back", ""),
]

SCENARIOS: Final[Mapping[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            "successful_rollout",
            "test/podinfo is created, initialised, then a new revision is promoted in five "
            "10% steps (the fixture day, 09:00-10:42).",
            successful_rollout,
            {"test/podinfo": [("not-ready", ""), ("initialized", ""), *_ROLLOUT_BODY]},
        ),
        Scenario(
            "rollback_failed_checks",
            "test/podinfo halts on five failed metric checks at 20% and is rolled back.",
            rollback_failed_checks,
            {"test/podinfo": _FAILED_CHECKS},
        ),
        Scenario(
            "no_traffic_halt_then_rollback",
            "shop/checkout receives no traffic: the same no-values Warning five times "
            "(one Event, count 1..5), then the rollback.",
            no_traffic_halt_then_rollback,
            {
                "shop/checkout": [
                    ("revision-detected", ""),
                    ("analysis-started", ""),
                    *_weights(10),
                    ("no-traffic", ""),
                    ("rolled-back", ""),
                ]
            },
        ),
        Scenario(
            "manual_approval_gate",
            "test/frontend waits at the confirm-rollout gate, advances 5/25/50, waits at the "
            "confirm-promotion gate, then is promoted.",
            manual_approval_gate,
            {
                "test/frontend": [
                    ("awaiting-approval", "rollout"),
                    ("approved", "rollout"),
                    ("revision-detected", ""),
                    ("not-ready", ""),
                    ("analysis-started", ""),
                    *_weights(5, 25, 50),
                    ("awaiting-approval", "promotion"),
                    ("approved", "promotion"),
                    ("promoting", ""),
                    ("not-ready", ""),
                    ("finalising", ""),
                    ("promoted", ""),
                ]
            },
        ),
        Scenario(
            "progress_deadline_failure",
            "test/podinfo's new pods never become ready; after the progress deadline the "
            "rollout fails without reaching the analysis.",
            progress_deadline_failure,
            {
                "test/podinfo": [
                    ("revision-detected", ""),
                    ("not-ready", ""),
                    ("rolled-back", ""),
                ]
            },
        ),
        Scenario(
            "parallel_canaries",
            "test/podinfo is promoted while shop/checkout, at the same time, is rolled back "
            "after five failed checks.",
            parallel_canaries,
            {"test/podinfo": _ROLLOUT_BODY, "shop/checkout": _FAILED_CHECKS},
        ),
    )
}


async def play_all(
    sim: FlaggerSimulator, pace: Pace, *, names: Iterable[str] | None = None
) -> None:
    """Play scenarios one after the other on ``sim`` (default: all, in registry order).

    Scenarios reuse canary names, so each one's canaries are deleted (revertOnDeletion off:
    no Events) before the next starts; one idle minute separates them."""
    chosen = list(SCENARIOS) if names is None else list(names)
    unknown = [n for n in chosen if n not in SCENARIOS]
    if unknown:
        raise KeyError(f"unknown scenarios {unknown}; known: {sorted(SCENARIOS)}")
    for name in chosen:
        await SCENARIOS[name].run(sim, pace)
        for canary in sim.canaries:
            canary.delete()
        await pace(MINUTE)
