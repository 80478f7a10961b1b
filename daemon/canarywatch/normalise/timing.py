"""When an observation happened by Flagger's clock, to replay a backlog in the order it happened.

Sources list (and, after an outage, re-deliver) concurrently: the Canary status and the Events
of the same minutes arrive one batch after the other, and processed in arrival order an old
Event can look like news about a newer rollout. What each source says of the time:

- an Event: its last occurrence (``series.lastObservedTime``, ``lastTimestamp``, ``eventTime``,
  then ``metadata.creationTimestamp``), as ``normalise.kube_events`` reads it;
- a Canary: ``status.lastTransitionTime``, which Flagger sets on every status write;
- a webhook payload: Flagger's ``metadata.timestamp``;
- anything else (a metrics scrape), or a time that cannot be read: when it was observed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from canarywatch.model import Observation, SourceName
from canarywatch.normalise.kube_events import last_seen_of, parse_time
from canarywatch.normalise.webhook import WebhookPayload, read_payload


def occurred_at(obs: Observation) -> datetime:
    """The time ``obs`` happened at its source, else when it was observed (never fails)."""
    data = obs.data
    found: datetime | None = None
    if isinstance(data, Mapping):
        if obs.source is SourceName.KUBERNETES_EVENTS:
            event = data.get("object")
            found = last_seen_of(event) if isinstance(event, Mapping) else None
        elif obs.source is SourceName.CANARIES:
            obj = data.get("object")
            status = obj.get("status") if isinstance(obj, Mapping) else None
            if isinstance(status, Mapping):
                found = parse_time(status.get("lastTransitionTime"))
        elif obs.source is SourceName.FLAGGER_WEBHOOK:
            payload = read_payload(data)
            found = payload.occurred_at if isinstance(payload, WebhookPayload) else None
    if found is None or found.tzinfo is None or obs.at.tzinfo is None:
        return obs.at
    return found
