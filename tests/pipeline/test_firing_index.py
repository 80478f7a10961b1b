"""The firing index gives inhibition the same answer as walking every firing event (issue 17).

The pipeline asks ``Inhibitor.muted_by`` with a ``FiringIndex`` instead of every canary's
firing events; the walk stays as the oracle. Cases come from the Alertmanager differential
suite's generators (rules with every operator, ``equal`` on present, absent and empty labels,
sources across canaries, clusters and self-events), then change canary by canary as the
correlator would, each time compared with a walk in the correlator's order.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import pytest
from tests.pipeline.test_alertmanager_differential import (
    canary_events,
    canarywatch_config,
    firing_events,
    inhibit_case,
)

from canarywatch.config import parse_config
from canarywatch.model import CanaryEvent, CanaryRef, Transition
from canarywatch.pipeline import policy
from canarywatch.pipeline.firing_index import FiringIndex
from canarywatch.pipeline.inhibit import Inhibitor
from canarywatch.testing import make_event


def _inhibitor(rules: Iterable[object]) -> Inhibitor:
    return policy.build_inhibitor(parse_config(canarywatch_config(inhibit_rules=list(rules))))


def _by_canary(events: Sequence[CanaryEvent]) -> dict[CanaryRef, list[CanaryEvent]]:
    grouped: dict[CanaryRef, list[CanaryEvent]] = {}
    for event in events:
        grouped.setdefault(event.canary, []).append(event)
    return grouped


def _walk(firing: dict[CanaryRef, list[CanaryEvent]]) -> list[CanaryEvent]:
    return [event for events in firing.values() for event in events]


def _assert_same_answers(
    inhibitor: Inhibitor,
    index: FiringIndex,
    firing: dict[CanaryRef, list[CanaryEvent]],
    targets: Iterable[CanaryEvent],
) -> None:
    walked = _walk(firing)
    for target in targets:
        assert inhibitor.muted_by(target, index) == inhibitor.muted_by(target, walked), target


@pytest.mark.parametrize("seed", range(6))
def test_the_index_answers_as_the_walk_on_generated_cases(seed: int) -> None:
    rng = random.Random(seed)
    for number in range(50):
        case = inhibit_case(rng, number)
        inhibitor = _inhibitor(case.rules)
        firing = _by_canary(case.firing)
        index = inhibitor.index()
        for canary, events in firing.items():
            index.update(canary, events)
        _assert_same_answers(inhibitor, index, firing, (*case.firing, *case.one_shots))


@pytest.mark.parametrize("seed", range(4))
def test_the_index_follows_each_canary_as_its_firing_changes(seed: int) -> None:
    rng = random.Random(1000 + seed)
    case = inhibit_case(rng, 0)
    inhibitor = _inhibitor(case.rules)
    firing = _by_canary(case.firing)
    index = inhibitor.index()
    for canary, events in firing.items():
        index.update(canary, events)
    pool = firing_events(rng) + firing_events(rng)
    targets = canary_events(rng, 40)
    for _ in range(60):
        canary = rng.choice(list(firing)) if rng.random() < 0.7 else rng.choice(pool).canary
        of_canary = [e for e in pool if e.canary == canary]
        changed = rng.sample(of_canary, rng.randint(0, min(2, len(of_canary))))
        firing[canary] = changed  # a canary keeps its place in the walk, as in the correlator
        index.update(canary, changed)
        _assert_same_answers(inhibitor, index, firing, [*targets, *_walk(firing)])


def test_a_canary_whose_conditions_closed_is_no_source_any_more() -> None:
    halted = make_event(Transition.HALTED, canary="shop/a")
    target = make_event(Transition.NO_TRAFFIC, canary="shop/b")
    inhibitor = _inhibitor(
        [
            {
                "source_matchers": ['transition="halted"'],
                "target_matchers": ['transition="no-traffic"'],
                "equal": ["namespace"],
            }
        ]
    )
    index = inhibitor.index()
    index.update(halted.canary, [halted])
    assert inhibitor.muted_by(target, index) is not None
    index.update(halted.canary, [])
    assert inhibitor.muted_by(target, index) is None
