"""Canary status watch events -> lifecycle events, by diffing each status against the last one.

The Canary's ``status`` is the lifecycle's source of truth (``reference/flagger.md`` §2), but it is
*state*: a transition is a difference between two observed states of the same canary
(``reference/transitions.md``, "State is not news"). So the first sight of a canary announces
nothing and is only remembered; later watch events are diffed with :func:`diff_status`, a pure
function, and a change may yield several transitions in lifecycle order.

What the status cannot say:

- ``failedChecks`` rising is reported as ``halted``. A metric that failed its threshold and a
  metric that returned no values (``no-traffic``) both add one failed check; only the Event or
  webhook text tells them apart, and the correlator merges by episode.
- ``canaryWeight`` is 0 outside Progressing/Waiting/Promoting, so it only ever *rises* during an
  analysis; falls are never news.
- The rollback cause: ``rolled-back`` gets reason ``failed-checks`` when ``failedChecks`` reached
  ``analysis.threshold`` (Flagger's default 1 when unset), else no reason (manual, deadline, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from canarywatch.lru import BoundedLru
from canarywatch.model import (
    EMPTY_MAPPING,
    SEEN_BY,
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Gate,
    JSONValue,
    Normalised,
    Observation,
    Outcome,
    Phase,
    SourceName,
    Transition,
)

DEFAULT_THRESHOLD = 1
"""Flagger's ``analysis.threshold`` default (``pkg/apis/flagger/v1beta1/canary.go``)."""
MAX_REMEMBERED = 10_000
MAX_HINT_VALUE_CHARS = 1024
"""Longer label/annotation values (``last-applied-configuration``, ...) are not copied as hints."""

_GATES: Mapping[Phase, Gate] = MappingProxyType(
    {Phase.WAITING: Gate.ROLLOUT, Phase.WAITING_PROMOTION: Gate.PROMOTION}
)
_APPROVED_INTO: Mapping[Gate, frozenset[Phase]] = MappingProxyType(
    {
        Gate.ROLLOUT: frozenset(
            {
                Phase.PROGRESSING,
                Phase.WAITING_PROMOTION,
                Phase.PROMOTING,
                Phase.FINALISING,
                Phase.SUCCEEDED,
            }
        ),
        Gate.PROMOTION: frozenset({Phase.PROMOTING, Phase.FINALISING, Phase.SUCCEEDED}),
    }
)
_REVISION_FROM = frozenset({Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED})
_PROMOTION_PHASES = frozenset({Phase.PROMOTING, Phase.FINALISING})
_INITIALISING = frozenset({Phase.INITIALIZING, Phase.INITIALIZED})
_ENDED = frozenset({Phase.FAILED, Phase.TERMINATING, Phase.TERMINATED})


class _Malformed(ValueError):
    """A field of the Canary object has the wrong shape (becomes ``MALFORMED``)."""


@dataclass(frozen=True, slots=True)
class CanaryStatusView:
    """The parts of a ``flagger.app/v1beta1`` Canary that the diff reads."""

    namespace: str
    name: str
    phase: Phase | None = None
    phase_text: str = ""
    """The raw ``status.phase``; non-empty with ``phase=None`` means Flagger invented a phase."""
    canary_weight: int = 0
    iterations: int = 0
    failed_checks: int = 0
    last_applied_spec: str = ""
    last_transition_time: datetime | None = None
    condition_reason: str = ""
    condition_status: str = ""
    condition_message: str = ""
    target: str = ""
    threshold: int | None = None
    max_iterations: int = 0
    """``spec.analysis.iterations`` (blue/green); 0 for weight-stepped analyses."""
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAPPING)
    annotations: Mapping[str, str] = field(default_factory=lambda: EMPTY_MAPPING)

    def relevant(self) -> tuple[object, ...]:
        """What a status change must touch to be more than a repeat."""
        return (
            self.phase,
            self.canary_weight,
            self.iterations,
            self.failed_checks,
            self.last_applied_spec,
            self.condition_reason,
            self.condition_status,
        )


@dataclass(frozen=True, slots=True)
class StatusTransition:
    """One transition found by :func:`diff_status`."""

    transition: Transition
    detail: str = ""
    reason: str = ""


def parse_canary(obj: JSONValue) -> CanaryStatusView:
    """Parse a Canary object; raises ``ValueError`` naming the first field of the wrong shape."""
    if not isinstance(obj, dict):
        raise _Malformed("object is not a mapping")
    metadata = _mapping(obj, "metadata")
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
        raise _Malformed("metadata.namespace/name missing")
    spec = _mapping(obj, "spec")
    status = _mapping(obj, "status")
    target = _mapping(spec, "targetRef").get("name", "")
    analysis = spec.get("analysis") or spec.get("canaryAnalysis") or {}
    if not isinstance(analysis, dict):
        raise _Malformed("spec.analysis is not a mapping")
    threshold = analysis.get("threshold")
    phase_text = status.get("phase") or ""
    if not isinstance(phase_text, str) or not isinstance(target, str):
        raise _Malformed("status.phase or spec.targetRef.name is not text")
    reason, cond_status, message = _promoted_condition(status.get("conditions"))
    return CanaryStatusView(
        namespace=namespace,
        name=name,
        phase=Phase.parse(phase_text),
        phase_text=phase_text,
        canary_weight=_int(status, "canaryWeight"),
        iterations=_int(status, "iterations"),
        failed_checks=_int(status, "failedChecks"),
        last_applied_spec=_text(status, "lastAppliedSpec"),
        last_transition_time=_time(status.get("lastTransitionTime")),
        condition_reason=reason,
        condition_status=cond_status,
        condition_message=message,
        target=target,
        threshold=_int(analysis, "threshold") if threshold is not None else None,
        max_iterations=_int(analysis, "iterations"),
        labels=_string_map(metadata.get("labels")),
        annotations=_string_map(metadata.get("annotations")),
    )


def diff_status(prev: CanaryStatusView | None, cur: CanaryStatusView) -> list[StatusTransition]:
    """The transitions between two statuses of one canary, in lifecycle order.

    ``prev=None`` (first sight) yields nothing: state is not news. Nor does the first status of
    a Canary first seen without one: a real API server never returns a new Canary with a status
    (the CRD's status subresource drops it on create), so every Canary is created bare and its
    first status arrives as a MODIFIED. Flagger's own first write is Initializing; a bare Canary
    that turns up already Succeeded or Failed was restored or re-created with its old status,
    and announcing that as a promotion or rollback would invent a verdict.
    """
    if prev is None or (prev.phase is None and not prev.phase_text):
        return []
    before, now = prev.phase, cur.phase
    moved = now is not None and before is not now
    found: list[StatusTransition] = []

    if moved and now is Phase.INITIALIZED:
        found.append(StatusTransition(Transition.INITIALIZED))
    left_gate = _GATES.get(before) if before is not None else None
    if moved and left_gate is not None and now in _APPROVED_INTO[left_gate]:
        found.append(StatusTransition(Transition.APPROVED, detail=left_gate.value))
    spec_changed = (
        bool(prev.last_applied_spec)
        and bool(cur.last_applied_spec)
        and prev.last_applied_spec != cur.last_applied_spec
        and now not in _INITIALISING
    )
    if spec_changed or (moved and now is Phase.PROGRESSING and before in _REVISION_FROM):
        found.append(StatusTransition(Transition.REVISION_DETECTED))
    # Steps happen only while Progressing; elsewhere the field is zeroed or shows the promotion.
    if now is Phase.PROGRESSING and cur.canary_weight > prev.canary_weight:
        found.append(StatusTransition(Transition.WEIGHT_ADVANCED, detail=str(cur.canary_weight)))
    # Flagger bumps ``iterations`` once past the configured number when the last iteration is
    # done ("max iterations reached", before promoting): bookkeeping, not an iteration; real
    # Flagger 1.37 and 1.44 both do it and say nothing (tests/realcluster/test_real_flagger.py).
    if (
        now is Phase.PROGRESSING
        and cur.iterations > prev.iterations
        and (cur.max_iterations == 0 or cur.iterations <= cur.max_iterations)
    ):
        found.append(StatusTransition(Transition.ITERATION_ADVANCED, detail=str(cur.iterations)))
    if cur.failed_checks > prev.failed_checks and now not in _ENDED:
        found.append(
            StatusTransition(Transition.HALTED, reason=f"failed-checks {cur.failed_checks}")
        )
    entered_gate = _GATES.get(now) if now is not None else None
    if moved and entered_gate is not None:
        found.append(StatusTransition(Transition.AWAITING_APPROVAL, detail=entered_gate.value))
    if moved and now is Phase.PROMOTING:
        found.append(StatusTransition(Transition.PROMOTING))
    if moved and now is Phase.FINALISING:
        found.append(StatusTransition(Transition.FINALISING))
    if moved and now is Phase.SUCCEEDED:
        found.append(StatusTransition(Transition.PROMOTED))
    if moved and now is Phase.FAILED:
        # A failure during promotion is a failed promotion only when traffic stayed on the
        # canary (Flagger 1.44+ writes Failed with canaryWeight 100); Flagger before 1.44
        # routes back to the primary (canaryWeight 0) with "Canary failed!": a rollback.
        # Both seen from the real Flagger (tests/realcluster/test_real_flagger.py).
        if before in _PROMOTION_PHASES and cur.canary_weight > 0:
            found.append(StatusTransition(Transition.PROMOTION_FAILED))
        else:
            threshold = cur.threshold if cur.threshold is not None else DEFAULT_THRESHOLD
            reason = "failed-checks" if cur.failed_checks >= threshold else ""
            found.append(StatusTransition(Transition.ROLLED_BACK, reason=reason))
    if moved and now in (Phase.TERMINATING, Phase.TERMINATED):
        found.append(StatusTransition(Transition.TERMINATED))
    return found


class CanaryStatusNormaliser:
    """Normalise ``canaries`` watch events; remembers the last status of each canary (bounded)."""

    def __init__(self, *, max_remembered: int = MAX_REMEMBERED) -> None:
        # Ordered by write: each read is followed at once by a put, which refreshes.
        self._last: BoundedLru[tuple[str, str, str], CanaryStatusView] = BoundedLru(
            max_remembered, refresh_on_read=False
        )

    def __call__(self, obs: Observation) -> Normalised:
        data = obs.data
        if not isinstance(data, dict):
            return Normalised(Outcome.MALFORMED, note="watch event is not a mapping")
        kind = data.get("type")
        if kind in ("BOOKMARK", "ERROR"):
            return Normalised(Outcome.IGNORED, note=f"watch {kind.lower()}")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return Normalised(Outcome.MALFORMED, note="unknown watch event type")
        try:
            cur = parse_canary(data.get("object"))
        except _Malformed as exc:
            return Normalised(Outcome.MALFORMED, note=str(exc))
        key = (obs.cluster, cur.namespace, cur.name)
        if kind == "DELETED":
            self._last.pop(key)
            return Normalised(Outcome.IGNORED, note="deleted")
        if cur.phase is None and cur.phase_text:
            return Normalised(Outcome.UNKNOWN, note=f"unknown phase {cur.phase_text[:64]!r}")
        prev = self._last.get(key)
        self._last.put(key, cur)
        if prev is None:
            return Normalised(Outcome.IGNORED, note="first sight")
        found = diff_status(prev, cur)
        if found:
            return Normalised(Outcome.TRANSITION, tuple(_event(obs, cur, t) for t in found))
        if prev.relevant() == cur.relevant():
            return Normalised(Outcome.REPEAT)
        return Normalised(Outcome.INFORMATIONAL, note="status changed without a transition")

    def forget(self, cluster: str, namespace: str, name: str) -> None:
        """Drop what is remembered of one canary (its next sight is a first sight)."""
        self._last.pop((cluster, namespace, name))


_CHECKS_MATTER = frozenset({Transition.HALTED, Transition.ROLLED_BACK, Transition.PROMOTION_FAILED})


STATUS_TEXT = "From the Canary status (no Flagger message yet)"
"""How a message canarywatch wrote from a Canary status change begins: it is not Flagger's own
text (an Event's or the webhook's), which replaces it if it arrives while the event still waits
in its group (``Grouper.reword``); a notification sent before then says where its text is from."""


def _status_message(view: CanaryStatusView, found: StatusTransition) -> str:
    """What the status change says, in words (the condition message only where it fits),
    after ``STATUS_TEXT``.

    The ``Promoted`` condition keeps its message across weight and check changes, so it would
    mislabel them ("New revision detected, ..." on a weight step): those get their own text.
    """
    t = found.transition
    if t is Transition.WEIGHT_ADVANCED:
        return f"{STATUS_TEXT}: canaryWeight {view.canary_weight}"
    if t is Transition.ITERATION_ADVANCED:
        return f"{STATUS_TEXT}: iterations {view.iterations}"
    if t is Transition.HALTED:
        return f"{STATUS_TEXT}: failedChecks {view.failed_checks}"
    if t is Transition.REVISION_DETECTED:
        return f"{STATUS_TEXT}: new lastAppliedSpec {view.last_applied_spec}".rstrip()
    phase = view.phase.value if view.phase is not None else view.phase_text
    text = f"{STATUS_TEXT}: phase {phase}"
    return f"{text}: {view.condition_message}" if view.condition_message else text


def _event(obs: Observation, view: CanaryStatusView, found: StatusTransition) -> CanaryEvent:
    hints: dict[str, str] = {}
    if view.last_applied_spec:
        hints["spec"] = view.last_applied_spec
    if found.transition is Transition.REVISION_DETECTED and _shows_the_start(view):
        # This write is the reconcile that detected the revision: its time is the start's
        # (``Correlator``: what happened before it belongs to an earlier rollout).
        hints["start"] = "true"
    for prefix, values in (("label:", view.labels), ("annotation:", view.annotations)):
        for k, v in values.items():
            if len(v) <= MAX_HINT_VALUE_CHARS:
                hints[prefix + k] = v
    return CanaryEvent(
        canary=CanaryRef(view.namespace, view.name, obs.cluster),
        transition=found.transition,
        observed_at=obs.at,
        sources=SEEN_BY[SourceName.CANARIES],
        severity=TRANSITIONS[found.transition].severity,
        phase=view.phase,
        weight=view.canary_weight if found.transition is Transition.WEIGHT_ADVANCED else None,
        failed_checks=view.failed_checks if found.transition in _CHECKS_MATTER else None,
        message=_status_message(view, found),
        reason=found.reason,
        detail=found.detail,
        target=view.target,
        occurred_at=view.last_transition_time,
        hints=MappingProxyType(hints) if hints else EMPTY_MAPPING,
    )


def _shows_the_start(view: CanaryStatusView) -> bool:
    """Flagger's write on detecting a revision: ``Progressing``, no traffic, no checks yet."""
    return (
        view.phase is Phase.PROGRESSING
        and not view.canary_weight
        and not view.failed_checks
        and not view.iterations
    )


def _mapping(parent: Mapping[str, JSONValue], key: str) -> Mapping[str, JSONValue]:
    value = parent.get(key)
    if value is None:
        return EMPTY_MAPPING
    if not isinstance(value, dict):
        raise _Malformed(f"{key} is not a mapping")
    return value


def _int(parent: Mapping[str, JSONValue], key: str) -> int:
    value = parent.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Malformed(f"{key} is not an integer")
    return value


def _text(parent: Mapping[str, JSONValue], key: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Malformed(f"{key} is not text")
    return value


def _time(value: JSONValue) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _string_map(value: JSONValue) -> Mapping[str, str]:
    if not isinstance(value, dict):
        return EMPTY_MAPPING
    return MappingProxyType(
        {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    )


def _promoted_condition(conditions: JSONValue) -> tuple[str, str, str]:
    """``(reason, status, message)`` of the ``Promoted`` condition, empty when absent."""
    if not isinstance(conditions, list):
        return "", "", ""
    for condition in conditions:
        if isinstance(condition, dict) and condition.get("type") == "Promoted":
            parts = (condition.get("reason"), condition.get("status"), condition.get("message"))
            reason, status, message = (p if isinstance(p, str) else "" for p in parts)
            return reason, status, message
    return "", "", ""
