"""Small, valid model objects with overridable fields, at a fixed time (``T0``).

``make_event`` builds a ``CanaryEvent`` with the transition's severity and the labels the
pipeline adds; ``make_notification`` groups events the way the grouper would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Final

from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Notification,
    NotificationStatus,
    SourceName,
    Transition,
)

__all__ = ["T0", "make_event", "make_notification"]

T0: Final = datetime(2025, 1, 2, 14, 8, 2, tzinfo=UTC)
"""The default timestamp of the factories: fixed, so renders are reproducible."""


def make_event(
    transition: Transition = Transition.ROLLED_BACK,
    *,
    canary: str = "test/podinfo",
    cluster: str = "",
    at: datetime = T0,
    **fields: Any,
) -> CanaryEvent:
    """A ``CanaryEvent`` with the transition's severity and the usual labels.

    ``canary`` is ``namespace/name``; any other ``CanaryEvent`` field can be given by keyword.
    """
    namespace, _, name = canary.partition("/")
    ref = CanaryRef(namespace, name, cluster)
    severity = TRANSITIONS[transition].severity
    labels = {
        "canary": str(ref),
        "namespace": namespace,
        "name": name,
        "transition": transition.value,
        "severity": severity.value,
    }
    if cluster:
        labels["cluster"] = cluster
    event = CanaryEvent(
        canary=ref,
        transition=transition,
        observed_at=at,
        sources=(SourceName.KUBERNETES_EVENTS,),
        severity=severity,
        labels=labels,
    )
    return replace(event, **fields) if fields else event


def make_notification(
    *events: CanaryEvent,
    receiver: str = "team-payments",
    status: NotificationStatus = NotificationStatus.FIRING,
    group_labels: Mapping[str, str] | None = None,
    group_key: str | None = None,
    created_at: datetime | None = None,
) -> Notification:
    """A ``Notification`` of ``events`` (default: one ``make_event()``), grouped by canary."""
    evs = events or (make_event(),)
    labels = dict(group_labels) if group_labels is not None else {"canary": str(evs[0].canary)}
    key = group_key
    if key is None:
        key = receiver + ":{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    return Notification(
        receiver=receiver,
        status=status,
        group_key=key,
        group_labels=labels,
        events=tuple(evs),
        created_at=created_at if created_at is not None else max(e.observed_at for e in evs),
    )
