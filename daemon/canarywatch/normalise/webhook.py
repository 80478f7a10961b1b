"""Flagger event-webhook bodies → ``CanaryEvent``.

The body is ``{"name", "namespace", "phase", "checksum", "metadata": {"eventMessage",
"eventType", "timestamp", ...}}`` (``reference/flagger.md`` §4). Flagger POSTs on every
``recordEvent``, so repeats are separate POSTs with no count: every recognised body is a
transition, and ``pipeline.correlate`` folds repeats by identity.

Two facts of the feed shape the output:

- ``phase`` is the phase of the object Flagger recorded, often the one being *left* (the
  confirm-rollout gate reports ``Succeeded``). The phase the message implies wins; the reported
  one is used only when the message implies none.
- ``checksum`` identifies a revision, but ``New revision detected!`` and the confirm-rollout gate
  events still carry the *previous* revision's checksum. Those go into the hint
  ``previous_checksum``; every other event's goes into ``checksum``, which correlate may use as
  the rollout id.

Custom ``metadata`` keys of a per-canary hook are not copied: they are free text a user put in a
Canary and may hold anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from canarywatch.model import (
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
from canarywatch.normalise.messages import MessageMatch, classify, safe_excerpt, to_event

_MAX_MILLIS_DIGITS = 15
"""Beyond year 33658 in milliseconds: longer strings are not timestamps (and ``int()`` of a
huge digit string raises)."""

HINT_CHECKSUM = "checksum"
HINT_PREVIOUS_CHECKSUM = "previous_checksum"


@dataclass(frozen=True, slots=True)
class WebhookPayload:
    """The fields of one event-webhook body that canarywatch reads."""

    canary: CanaryRef
    message: str
    event_type: str
    phase: Phase | None
    checksum: str
    occurred_at: datetime | None


def _text(value: JSONValue) -> str:
    return value if isinstance(value, str) else ""


def parse_unix_ms(value: JSONValue) -> datetime | None:
    """Flagger's ``timestamp`` (Unix milliseconds as a decimal string) as an aware datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > _MAX_MILLIS_DIGITS:
            return None
        millis = int(value)
    elif isinstance(value, int):
        millis = value
    else:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def read_payload(data: JSONValue, *, cluster: str = "") -> WebhookPayload | str:
    """Narrow a decoded webhook body into a ``WebhookPayload``, or a short log-safe note."""
    if not isinstance(data, Mapping):
        return "body is not a JSON object"
    name = _text(data.get("name"))
    namespace = _text(data.get("namespace"))
    if not name or not namespace:
        return "body lacks name or namespace"
    metadata = data.get("metadata")
    if not isinstance(metadata, Mapping):
        return "body lacks metadata"
    message = _text(metadata.get("eventMessage"))
    if not message:
        return "body lacks metadata.eventMessage"
    return WebhookPayload(
        canary=CanaryRef(namespace=namespace, name=name, cluster=cluster),
        message=message,
        event_type=_text(metadata.get("eventType")),
        phase=Phase.parse(data.get("phase")),
        checksum=_text(data.get("checksum")),
        occurred_at=parse_unix_ms(metadata.get("timestamp")),
    )


def _carries_previous_checksum(match: MessageMatch) -> bool:
    """Sent before Flagger syncs ``lastAppliedSpec``, so the checksum is the old revision's."""
    if match.transition is Transition.REVISION_DETECTED:
        return True
    return (
        match.transition in (Transition.AWAITING_APPROVAL, Transition.APPROVED)
        and match.detail == Gate.ROLLOUT.value
    )


def _hints(match: MessageMatch, checksum: str) -> Mapping[str, str]:
    if not checksum:
        return MappingProxyType({})
    key = HINT_PREVIOUS_CHECKSUM if _carries_previous_checksum(match) else HINT_CHECKSUM
    return MappingProxyType({key: checksum})


def normalise_webhook(observation: Observation) -> Normalised:
    """One event-webhook observation → ``Normalised``. Pure and total: never raises."""
    payload = read_payload(observation.data, cluster=observation.cluster)
    if isinstance(payload, str):
        return Normalised(Outcome.MALFORMED, note=payload)
    match = classify(payload.message)
    if match is None:
        kind = payload.event_type or "untyped"
        return Normalised(
            Outcome.UNKNOWN, note=f"unknown {kind} message: {safe_excerpt(payload.message)}"
        )
    event = to_event(
        match,
        canary=payload.canary,
        message=payload.message,
        source=SourceName.FLAGGER_WEBHOOK,
        observed_at=observation.at,
        occurred_at=payload.occurred_at,
        phase=payload.phase,
        hints=_hints(match, payload.checksum),
    )
    if event is None:
        return Normalised(Outcome.INFORMATIONAL, note=match.entry)
    return Normalised(Outcome.TRANSITION, (event,))


class WebhookNormaliser:
    """``normalise_webhook`` behind the same callable shape as the stateful normalisers.

    Stateless: webhook repeats are separate POSTs with nothing to tell them apart, so folding them
    is ``pipeline.correlate``'s job.
    """

    def __call__(self, observation: Observation) -> Normalised:
        return normalise_webhook(observation)
