"""One canary's rollouts as timelines, for the status page: built from the decision trails.

``DecisionRecorder`` (``views.explain``) keeps, per canary, the last transitions with what was
decided about each; a timeline groups them by rollout (the correlator's rollout id), oldest
first, and numbers the rollouts 1, 2, ... in the order they were first seen, so a person can say
"checkout's rollout 2". Each step carries the canary weight after it (a transition that does
not say fills it the way ``views.live`` does: a verdict or a new revision puts all traffic back
on the primary), its kind (``weight``, ``check``, ``halt``, ``gate``, ``verdict``, ``other``)
and its trail.

Not-news trails and the daemon's self-events are left out: they are no step of a rollout.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from canarywatch.model import CanaryRef, SourceName, Transition
from canarywatch.views.explain import DecisionRecorder, Trail
from canarywatch.views.live import ZERO_WEIGHT

__all__ = ["Rollout", "StepKind", "TimelineStep", "rollouts"]


class StepKind(enum.StrEnum):
    WEIGHT = "weight"
    CHECK = "check"
    HALT = "halt"
    GATE = "gate"
    VERDICT = "verdict"
    OTHER = "other"


_KINDS: Final[Mapping[Transition, StepKind]] = {
    Transition.WEIGHT_ADVANCED: StepKind.WEIGHT,
    Transition.ITERATION_ADVANCED: StepKind.CHECK,
    Transition.ANALYSIS_STARTED: StepKind.CHECK,
    Transition.HALTED: StepKind.HALT,
    Transition.NO_TRAFFIC: StepKind.HALT,
    Transition.WEBHOOK_FAILED: StepKind.HALT,
    Transition.NOT_READY: StepKind.HALT,
    Transition.AWAITING_APPROVAL: StepKind.GATE,
    Transition.APPROVED: StepKind.GATE,
    Transition.PROMOTED: StepKind.VERDICT,
    Transition.LOW_TRAFFIC_PROMOTION: StepKind.VERDICT,
    Transition.ROLLED_BACK: StepKind.VERDICT,
    Transition.PROMOTION_FAILED: StepKind.VERDICT,
    Transition.TERMINATED: StepKind.VERDICT,
}
_SUCCESS: Final = frozenset({Transition.PROMOTED, Transition.LOW_TRAFFIC_PROMOTION})


@dataclass(frozen=True, slots=True)
class TimelineStep:
    at: datetime
    """When the daemon first saw it (the x axis: sub-second, in the order decided)."""
    transition: Transition
    kind: StepKind
    weight: int | None
    """The canary weight after this step (``None`` while unknown)."""
    trail: Trail


@dataclass(frozen=True, slots=True)
class Rollout:
    number: int
    label: str
    """The correlator's rollout id (the revision's spec hash, or a sequence number)."""
    canary: CanaryRef
    steps: tuple[TimelineStep, ...]

    @property
    def started_at(self) -> datetime:
        return self.steps[0].at

    @property
    def ended_at(self) -> datetime:
        return self.steps[-1].at

    @property
    def verdict(self) -> TimelineStep | None:
        """The step that ended it (promoted, rolled back, ...), ``None`` while it runs."""
        return next((s for s in self.steps if s.kind is StepKind.VERDICT), None)

    @property
    def succeeded(self) -> bool | None:
        verdict = self.verdict
        return None if verdict is None else verdict.transition in _SUCCESS

    @property
    def max_weight(self) -> int:
        return max((s.weight or 0 for s in self.steps), default=0)


def rollouts(recorder: DecisionRecorder, canary: CanaryRef, *, now: datetime) -> list[Rollout]:
    """``canary``'s kept rollouts, oldest first (see the module docstring)."""
    trails = [
        t
        for t in recorder.trails(canary.namespace, canary.name, now=now)
        if t.kind.value == "transition"
        and t.event.canary == canary
        and not (t.event.sources and t.event.sources[0] is SourceName.SELF)
    ]
    trails.sort(key=lambda t: t.first_seen)
    grouped: dict[str, list[Trail]] = {}
    for trail in trails:
        grouped.setdefault(trail.event.rollout or "-", []).append(trail)
    result: list[Rollout] = []
    for number, (label, members) in enumerate(grouped.items(), start=1):
        weight: int | None = None
        steps: list[TimelineStep] = []
        for trail in members:
            event = trail.event
            if event.weight is not None:
                weight = event.weight
            elif event.transition in ZERO_WEIGHT:
                weight = 0
            kind = _KINDS.get(event.transition, StepKind.OTHER)
            steps.append(TimelineStep(trail.first_seen, event.transition, kind, weight, trail))
        result.append(Rollout(number, label, canary, tuple(steps)))
    return result
