"""Steps the Canary status still shows whose Events were folded away while canarywatch was down.

client-go folds a canary's Events into one "(combined from similar events): …" Event once ten
distinct messages of one type arrived within ten minutes (``reference/flagger.md`` §6), and
every later message of that type *overwrites* that one object. A watcher that is running sees
each overwrite as a MODIFIED; a daemon that was down sees, on its initial list, only the last
message: a ``weight-advanced`` written and overwritten meanwhile is gone from the Events API.

The Canary status keeps the latest step, ``canaryWeight`` and ``iterations``, and the
correlator knows the highest step it saw in the rollout. When the status of a canary listed
again (start-up, or an unknown canary after a relist) shows a higher step of the *same* rollout
(same ``lastAppliedSpec``, not ended), that step happened and was not seen: it is offered as a
status-derived transition, subject to the start-up catch-up window like any other listed
item, and deduplicated by the correlator and the notification log like any other sighting.

What cannot come back: steps between the last one seen and the one the status shows (the status
keeps only the latest), and one-shot messages the status has no field for.

Pure functions: the pipeline (``pipeline.core``) calls :func:`missed_steps` with what the
correlator knows (``Correlator.rollout_progress``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    JSONValue,
    Phase,
    SourceName,
    Transition,
)
from canarywatch.normalise.status import (
    MAX_HINT_VALUE_CHARS,
    STATUS_TEXT,
    CanaryStatusView,
    parse_canary,
)
from canarywatch.pipeline.correlate import RolloutProgress

_WEIGHT_PHASES = frozenset({Phase.PROGRESSING, Phase.PROMOTING})
"""Where ``canaryWeight`` is the last step taken (Flagger zeroes it in every other phase)."""


@dataclass(frozen=True, slots=True)
class ListedStatus:
    """A Canary as a (re)list shows it: its status, and whether its promotion shifts traffic
    in steps (then ``canaryWeight`` falls during Promoting and no longer shows the last step)."""

    canary: CanaryRef
    view: CanaryStatusView
    promotion_steps: bool


def read_listed(obs_data: JSONValue, *, cluster: str) -> ListedStatus | None:
    """The Canary of a ``canaries`` observation that lists it again (an ``ADDED``), else
    ``None``; never raises (a malformed object is the status normaliser's to report)."""
    if not isinstance(obs_data, Mapping) or obs_data.get("type") != "ADDED":
        return None
    obj = obs_data.get("object")
    try:
        view = parse_canary(obj)
    except ValueError:
        return None
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    analysis = spec.get("analysis") if isinstance(spec, Mapping) else None
    step = analysis.get("stepWeightPromotion") if isinstance(analysis, Mapping) else None
    return ListedStatus(
        canary=CanaryRef(view.namespace, view.name, cluster),
        view=view,
        promotion_steps=bool(step),
    )


def missed_steps(
    listed: ListedStatus, known: RolloutProgress | None, *, observed_at: datetime
) -> tuple[CanaryEvent, ...]:
    """The ``weight-advanced``/``iteration-advanced`` the status shows beyond what is known.

    Only for the rollout the correlator is following (same ``lastAppliedSpec``, not ended): a
    status of a rollout whose start was not seen says nothing about which steps were notified.
    """
    view = listed.view
    if known is None or known.ended or not known.spec or known.spec != view.last_applied_spec:
        return ()
    found: list[CanaryEvent] = []
    weight_shown = view.phase is Phase.PROGRESSING or (
        view.phase is Phase.PROMOTING and not listed.promotion_steps
    )
    if weight_shown and view.canary_weight > known.weight:
        found.append(
            _event(
                listed,
                Transition.WEIGHT_ADVANCED,
                str(view.canary_weight),
                f"{STATUS_TEXT}: canaryWeight {view.canary_weight}",
                observed_at,
                weight=view.canary_weight,
            )
        )
    if view.phase is Phase.PROGRESSING and view.iterations > known.iteration:
        found.append(
            _event(
                listed,
                Transition.ITERATION_ADVANCED,
                str(view.iterations),
                f"{STATUS_TEXT}: iterations {view.iterations}",
                observed_at,
            )
        )
    return tuple(found)


def _event(
    listed: ListedStatus,
    transition: Transition,
    detail: str,
    message: str,
    observed_at: datetime,
    *,
    weight: int | None = None,
) -> CanaryEvent:
    view = listed.view
    hints = {"spec": view.last_applied_spec, "recovered": "canary-status"}
    for prefix, values in (("label:", view.labels), ("annotation:", view.annotations)):
        for k, v in values.items():
            if len(v) <= MAX_HINT_VALUE_CHARS:
                hints[prefix + k] = v
    return CanaryEvent(
        canary=listed.canary,
        transition=transition,
        observed_at=observed_at,
        sources=(SourceName.CANARIES,),
        severity=TRANSITIONS[transition].severity,
        phase=view.phase,
        weight=weight,
        message=message,
        detail=detail,
        target=view.target,
        occurred_at=view.last_transition_time,
        hints=MappingProxyType(hints),
    )
