"""What the daemon shows ``canarywatch tail``: every canary's current state and recent transitions.

``LiveState.observe`` is called (synchronously, from the pipeline runner's ``on_transitions``
callback) with every *new* transition. It keeps, per canary, the phase, the canary weight, the
failed checks, the last transition and when it happened, and the rollout; and a bounded ring of
the last ``history`` transitions, each with a sequence number (``seq``, from 1, per daemon
process; ``instance`` tells two processes apart).

A transition does not always say the phase or the weight (an Event's text implies some, the
Canary status says more), so the state fills the gaps from what the transition means:
``promoted`` is ``Succeeded`` at 0 %, ``rolled-back`` is ``Failed`` at 0 %, and so on. Self-events
(``cluster-unreachable``, ``metrics-source-down``) go into the transition log, not the canary
table.

``canarywatch.web.live`` serves it over HTTP: the table, the transition log paged by ``seq``,
and a stream of NDJSON lines (``encode_line``) fed through ``subscribe``. A subscriber's queue is
bounded: a stuck client is cut off, never the pipeline slowed down. Call ``LiveState.close()``
before stopping the web server so open streams end at once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from canarywatch.formats.jsonout import canary_to_json, format_time
from canarywatch.model import CanaryEvent, CanaryRef, Phase, Severity, SourceName, Transition

__all__ = [
    "ZERO_WEIGHT",
    "CanaryRow",
    "LiveState",
    "StreamSubscriber",
    "TransitionRecord",
    "encode_line",
]

DEFAULT_HISTORY: Final = 500
DEFAULT_SUBSCRIBER_QUEUE: Final = 1000

_IMPLIED_PHASE: Final[Mapping[Transition, Phase]] = {
    Transition.INITIALIZED: Phase.INITIALIZED,
    Transition.REVISION_DETECTED: Phase.PROGRESSING,
    Transition.ANALYSIS_STARTED: Phase.PROGRESSING,
    Transition.WEIGHT_ADVANCED: Phase.PROGRESSING,
    Transition.ITERATION_ADVANCED: Phase.PROGRESSING,
    Transition.HALTED: Phase.PROGRESSING,
    Transition.NO_TRAFFIC: Phase.PROGRESSING,
    Transition.APPROVED: Phase.PROGRESSING,
    Transition.PROMOTING: Phase.PROMOTING,
    Transition.FINALISING: Phase.FINALISING,
    Transition.PROMOTED: Phase.SUCCEEDED,
    Transition.LOW_TRAFFIC_PROMOTION: Phase.SUCCEEDED,
    Transition.ROLLED_BACK: Phase.FAILED,
    Transition.PROMOTION_FAILED: Phase.FAILED,
    Transition.TERMINATED: Phase.TERMINATED,
}
_GATE_PHASE: Final[Mapping[str, Phase]] = {
    "rollout": Phase.WAITING,
    "promotion": Phase.WAITING_PROMOTION,
    "traffic": Phase.PROGRESSING,
}
ZERO_WEIGHT: Final = frozenset(
    {
        Transition.INITIALIZED,
        Transition.REVISION_DETECTED,
        Transition.FINALISING,
        Transition.PROMOTED,
        Transition.LOW_TRAFFIC_PROMOTION,
        Transition.ROLLED_BACK,
        Transition.PROMOTION_FAILED,
        Transition.TERMINATED,
    }
)
"""All traffic is on the primary after these (a new revision starts from 0 %)."""
_RESET_CHECKS: Final = frozenset(
    {Transition.INITIALIZED, Transition.REVISION_DETECTED, Transition.PROMOTED}
)
_FAILED_CHECK: Final = frozenset({Transition.HALTED, Transition.NO_TRAFFIC})


@dataclass(frozen=True, slots=True)
class CanaryRow:
    """One canary as ``tail`` shows it."""

    canary: CanaryRef
    phase: Phase | None
    weight: int | None
    failed_checks: int
    last_transition: Transition
    detail: str
    severity: Severity
    last_at: datetime
    message: str
    reason: str
    rollout: str
    target: str
    transitions: int
    """How many transitions of this canary this daemon process has seen."""

    def to_json(self, now: datetime | None = None) -> dict[str, object]:
        row: dict[str, object] = {
            **canary_to_json(self.canary),
            "phase": self.phase.value if self.phase is not None else None,
            "weight": self.weight,
            "failed_checks": self.failed_checks,
            "last_transition": self.last_transition.value,
            "detail": self.detail,
            "severity": self.severity.value,
            "last_transition_at": format_time(self.last_at),
            "message": self.message,
            "reason": self.reason,
            "rollout": self.rollout,
            "target": self.target,
            "transitions": self.transitions,
        }
        if now is not None:
            row["age_s"] = round(max((now - self.last_at).total_seconds(), 0.0), 3)
        return row


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    seq: int
    event: CanaryEvent
    suppressed: tuple[str, str] | None = None
    """``(reason, detail)`` when nothing of it was sent (inhibited, silenced, muted, ...)."""

    def to_json(self) -> dict[str, object]:
        ev = self.event
        return {
            "seq": self.seq,
            "at": format_time(ev.observed_at),
            "occurred_at": format_time(ev.occurred_at) if ev.occurred_at is not None else None,
            **canary_to_json(ev.canary),
            "transition": ev.transition.value,
            "detail": ev.detail,
            "severity": ev.severity.value,
            "phase": ev.phase.value if ev.phase is not None else None,
            "weight": ev.weight,
            "failed_checks": ev.failed_checks,
            "reason": ev.reason,
            "message": ev.message,
            "rollout": ev.rollout,
            "sources": [s.value for s in ev.sources],
            "suppressed": (
                {"reason": self.suppressed[0], "detail": self.suppressed[1]}
                if self.suppressed is not None
                else None
            ),
        }


def encode_line(obj: Mapping[str, object]) -> bytes:
    """One line of the stream: compact JSON and a newline."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class StreamSubscriber:
    """One open stream: a bounded queue of encoded lines; ``None`` ends the stream."""

    __slots__ = ("ended", "overflowed", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=size + 1)
        self.overflowed = False
        self.ended = False

    def offer(self, line: bytes) -> None:
        if self.ended:
            return
        if self.queue.qsize() >= self.queue.maxsize - 1:
            self.overflowed = True
            self.end()
            return
        self.queue.put_nowait(line)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(None)  # the slot kept free for it


class LiveState:
    """Per-canary state and the last ``history`` transitions; see the module docstring."""

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE,
        suppression: Callable[[CanaryEvent], tuple[str, str] | None] | None = None,
    ) -> None:
        """``suppression(event)``: ``(reason, detail)`` when nothing of a new transition is
        sent (``explain.DecisionRecorder.suppression``); its record says so."""
        if history < 1 or subscriber_queue < 1:
            raise ValueError("history and subscriber_queue must be positive")
        self._suppression = suppression
        self.instance = uuid.uuid4().hex[:12]
        self._rows: dict[CanaryRef, CanaryRow] = {}
        self._ring: deque[TransitionRecord] = deque(maxlen=history)
        self._seq = 0
        self._queue_size = subscriber_queue
        self._subscribers: set[StreamSubscriber] = set()
        self._closed = False

    # -- feeding ----------------------------------------------------------------------------

    def observe(self, event: CanaryEvent) -> None:
        """Record one new transition (sync, never blocks: called from the pipeline runner)."""
        self._seq += 1
        suppressed = self._suppression(event) if self._suppression is not None else None
        record = TransitionRecord(self._seq, event, suppressed)
        self._ring.append(record)
        row = None if _is_self_event(event) else self._update_row(event)
        if self._subscribers:
            line = encode_line(
                {
                    "type": "transition",
                    "transition": record.to_json(),
                    "canary": row.to_json() if row is not None else None,
                }
            )
            for sub in list(self._subscribers):
                sub.offer(line)

    def on_transitions(self, events: Iterable[CanaryEvent]) -> None:
        """``Runner(on_transitions=...)``-shaped: ``observe`` each."""
        for event in events:
            self.observe(event)

    def close(self) -> None:
        """End every open stream (``bye``) and refuse new ones: call before the web server stops."""
        self._closed = True
        for sub in list(self._subscribers):
            sub.offer(encode_line({"type": "bye"}))
            sub.end()

    def _update_row(self, event: CanaryEvent) -> CanaryRow:
        old = self._rows.get(event.canary)
        t = event.transition
        phase = event.phase or _implied_phase(event) or (old.phase if old else None)
        if event.weight is not None:
            weight: int | None = event.weight
        elif t in ZERO_WEIGHT:
            weight = 0
        else:
            weight = old.weight if old else None
        checks = old.failed_checks if old else 0
        if event.failed_checks is not None:
            checks = event.failed_checks
        elif t in _RESET_CHECKS:
            checks = 0
        elif t in _FAILED_CHECK:
            checks += 1
        row = CanaryRow(
            canary=event.canary,
            phase=phase,
            weight=weight,
            failed_checks=checks,
            last_transition=t,
            detail=event.detail,
            severity=event.severity,
            last_at=event.occurred_at or event.observed_at,
            message=event.message,
            reason=event.reason,
            rollout=event.rollout or (old.rollout if old else ""),
            target=event.target or (old.target if old else ""),
            transitions=(old.transitions if old else 0) + 1,
        )
        self._rows[event.canary] = row
        return row

    # -- reading ----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def oldest_seq(self) -> int:
        """The oldest ``seq`` still held (``last_seq + 1`` when none is)."""
        return self._ring[0].seq if self._ring else self._seq + 1

    def canaries(self) -> list[CanaryRow]:
        return [self._rows[ref] for ref in sorted(self._rows, key=_order)]

    def row(self, canary: CanaryRef) -> CanaryRow | None:
        return self._rows.get(canary)

    def transitions(
        self, *, after: int = 0, limit: int | None = None, last: int | None = None
    ) -> list[TransitionRecord]:
        """Records with ``seq > after``, oldest first; the first ``limit`` or the last ``last``."""
        found = [r for r in self._ring if r.seq > after]
        if last is not None:
            found = found[-last:] if last > 0 else []
        if limit is not None:
            found = found[:limit]
        return found

    # -- streaming --------------------------------------------------------------------------

    def subscribe(self) -> StreamSubscriber:
        """A new stream subscriber (the stream route's; ``unsubscribe`` when done)."""
        sub = StreamSubscriber(self._queue_size)
        if self._closed:
            sub.offer(encode_line({"type": "bye"}))
            sub.end()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: StreamSubscriber) -> None:
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _order(ref: CanaryRef) -> tuple[str, str, str]:
    return (ref.cluster, ref.namespace, ref.name)


def _is_self_event(event: CanaryEvent) -> bool:
    return bool(event.sources) and event.sources[0] is SourceName.SELF


def _implied_phase(event: CanaryEvent) -> Phase | None:
    if event.transition is Transition.AWAITING_APPROVAL:
        return _GATE_PHASE.get(event.detail, Phase.WAITING)
    return _IMPLIED_PHASE.get(event.transition)
