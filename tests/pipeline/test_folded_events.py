"""Steps whose Events client-go folded and overwrote while canarywatch was down (README,
"Start-up policy: the initial list is state, not news").

client-go folds a canary's Events into one "(combined from similar events): …" Event once ten
distinct messages arrived within ten minutes, and every later message overwrites that object. The
simulator's recorder (``simulator/event_recorder.py``) does the same; a restart's initial list
then holds only the last folded message. What the Canary status still shows comes back; the rest
is lost, as documented.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.config import parse_config
from canarywatch.model import NotificationStatus, Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.correlate import Correlator
from canarywatch.simulator.event_recorder import COMBINED_PREFIX
from canarywatch.simulator.flagger import PODINFO_ANALYSIS, FlaggerSimulator
from canarywatch.simulator.store import Change, Store, format_time

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
EVENTS, CANARIES = SourceName.KUBERNETES_EVENTS, SourceName.CANARIES
CONFIG = parse_config("""
receivers: [{name: capture, sink: jsonl}]
route: {receiver: capture, group_by: ["..."]}
""")
MINUTE = 60.0
FIVE_PERCENT_STEPS = {**PODINFO_ANALYSIS, "stepWeight": 5}
"""Ten steps to 50%: the rollout's 10th distinct Normal message is ``canary weight 35``, and
client-go folds every later one (each a new text) into one combined Event."""


@pytest.fixture(autouse=True)
def _pipeline_logs_at_info() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


class Daemon:
    """The pipeline fed from the simulated cluster, with a restart in between (the state a
    restart keeps is the correlator's snapshot; every normaliser starts empty)."""

    def __init__(self, store: Store, clock: VirtualClock) -> None:
        self.store = store
        self.clock = clock
        self.pipeline = self._pipeline(Correlator())
        self.sent: list[tuple[str, str, str]] = []
        self._subscriptions = [store.subscribe("events"), store.subscribe("canaries")]

    @staticmethod
    def _pipeline(correlator: Correlator) -> Pipeline:
        return policy.build_pipeline(CONFIG, correlator=correlator, catch_up=True)

    def feed(self, changes: Iterable[tuple[str, dict[str, Any]]], *, initial: bool) -> None:
        now = self.clock.now()
        for resource, data in changes:
            source = EVENTS if resource == "events" else CANARIES
            if initial:
                data = {**data, "initial": True}
            self.pipeline.observe(Observation(at=now, source=source, data=data), now)
        for n in self.pipeline.due(now):
            assert n.status is NotificationStatus.FIRING
            self.sent += [(e.rollout, e.transition.value, e.detail) for e in n.events]

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        batch: list[Change] = []
        for subscription in self._subscriptions:
            while not subscription.queue.empty():
                item = subscription.queue.get_nowait()
                assert isinstance(item, Change)
                batch.append(item)
        return [
            (c.resource, {"type": c.type.value, "object": c.object})
            for c in sorted(batch, key=lambda c: c.rv)
        ]

    def live(self) -> None:
        self.feed(self.drain(), initial=False)

    def restart(self, *, events_first: bool) -> None:
        """Down since the last ``live()``: what happened meanwhile is only in the lists."""
        self.drain()  # the watch stream of the downtime: nobody read it
        self.pipeline = self._pipeline(Correlator.restore(self.pipeline.correlator.snapshot()))
        events = [("events", {"type": "ADDED", "object": e}) for e in self.store.items("events")]
        canaries = [
            ("canaries", {"type": "ADDED", "object": c}) for c in self.store.items("canaries")
        ]
        self.feed([*events, *canaries] if events_first else [*canaries, *events], initial=True)


def step(clock: VirtualClock, daemon: Daemon | None, action: Any, *args: Any) -> None:
    """One Flagger tick a minute after the last; the daemon (if up) reads the watch."""
    clock.advance_by(MINUTE)
    action(*args)
    if daemon is not None:
        daemon.live()


@pytest.mark.parametrize("events_first", [True, False], ids=["events-listed-first", "status-first"])
def test_a_folded_weight_step_is_recovered_from_the_canary_status_after_a_restart(
    events_first: bool,
) -> None:
    clock = VirtualClock(START)
    store = Store(clock=clock)
    sim = FlaggerSimulator(store, clock)
    c = sim.create_canary("test", "podinfo", analysis=FIVE_PERCENT_STEPS, revision="aaaa1111")
    daemon = Daemon(store, clock)
    step(clock, daemon, c.new_revision, "bbbb2222")
    step(clock, daemon, c.start_analysis)  # weight 5
    while c.routes[1] < 40:
        step(clock, daemon, c.advance)  # 10 .. 40; from 35 on, in the combined Event
    # canarywatch is down for three ticks: weight 45, weight 50, Copying (phase Promoting).
    down_since = format_time(clock.now())
    for action in (c.advance, c.advance, c.promote):
        step(clock, None, action)
    # All three went into the one combined Event, each overwriting the one before.
    written = [e for e in store.items("events") if e["lastTimestamp"] > down_since]
    assert [(e["message"], e["count"]) for e in written] == [
        (COMBINED_PREFIX + "Copying podinfo.test template spec to podinfo-primary.test", 5)
    ]
    assert (c.status["phase"], c.status["canaryWeight"]) == ("Promoting", 50)

    with capture_logs() as logs:
        daemon.restart(events_first=events_first)
    step(clock, daemon, c.finalise)
    step(clock, daemon, c.succeed)

    assert sorted((t, d) for _, t, d in daemon.sent) == sorted(
        [
            ("revision-detected", ""),
            ("analysis-started", ""),
            *[("weight-advanced", str(w)) for w in range(5, 41, 5)],
            # weight 45: folded, overwritten, and the status no longer shows it: lost.
            ("weight-advanced", "50"),  # recovered: the status still shows canaryWeight 50
            ("promoting", ""),  # the combined Event's last message, listed at start-up
            ("finalising", ""),
            ("promoted", ""),
        ]
    )
    assert len({rollout for rollout, _, _ in daemon.sent}) == 1  # one rollout, one id
    assert ("step_recovered_from_status", "50") in [
        (entry["event"], entry.get("detail")) for entry in logs
    ]


def test_nothing_is_recovered_when_the_rollout_was_seen_to_its_last_step() -> None:
    clock = VirtualClock(START)
    store = Store(clock=clock)
    sim = FlaggerSimulator(store, clock)
    c = sim.create_canary("test", "podinfo", analysis=PODINFO_ANALYSIS, revision="aaaa1111")
    daemon = Daemon(store, clock)
    step(clock, daemon, c.new_revision, "bbbb2222")
    step(clock, daemon, c.start_analysis)
    step(clock, daemon, c.advance)
    before = list(daemon.sent)
    daemon.restart(events_first=False)
    assert daemon.sent == before  # the status shows 20, which was already sent
    assert daemon.pipeline.stats.transitions == 0
