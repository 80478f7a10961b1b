"""When an observation happened by Flagger's clock, to replay a backlog in the order it happened.

Sources list (and, after an outage, re-deliver) concurrently: the Canary status and the Events
of the same minutes arrive one batch after the other, and processed in arrival order an old
Event can look like news about a newer rollout. What each source says of the time:

- an Event: its last occurrence (``series.lastObservedTime``, ``lastTimestamp``, ``eventTime``,
  then ``metadata.creationTimestamp``), as ``normalise.kube_events`` reads it;
- a Canary: ``status.lastTransitionTime``, which Flagger sets on every status write;
- a webhook payload: Flagger's ``metadata.timestamp``;
- anything else (a metrics scrape), or a time that cannot be read: when it was observed.

Flagger's Event times have a resolution of one second, so several Events of one second tie.
A list returns them by name, which for Flagger's Events is creation order; but an Event written
again (a count bump, client-go's "combined from similar events" rewritten in place) keeps its
old name, and came later. ``backlog_order`` therefore puts tied Events in the order of their
``metadata.resourceVersion`` (the API server's write order: etcd's revision), compared only
among Events and only when every one of them is a number. When every observation of a tie
carries a numeric resourceVersion (Events and Canaries of one cluster, as listed or watched),
the whole tie goes in that order: a Canary status written in the same second as Events came
after them if its version is higher (after an outage, a relisted ``Promoting`` status tied
with the weight Events before it, and arrival order announced it first; issue 12, the fault
matrix's ``api_outage`` soak). This assumes one etcd revision for both resources, which is
Kubernetes' default; with Events in a separate etcd (``--etcd-servers-overrides``) the order
within such a tie is arbitrary, as arrival order is. Other ties across sources keep their
arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from itertools import groupby

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


def backlog_order(observations: Iterable[Observation]) -> list[Observation]:
    """``observations`` in the order they happened (``occurred_at``; see the module docstring
    for tied Events). Stable: other ties keep their arrival order."""
    # Each time read once (a start-up backlog is tens of thousands of observations).
    timed = sorted(((occurred_at(obs), obs) for obs in observations), key=lambda pair: pair[0])
    out: list[Observation] = []
    for _, tied in groupby(timed, key=lambda pair: pair[0]):
        run = [obs for _, obs in tied]
        if len(run) > 1 and len({obs.cluster for obs in run}) == 1:
            written = [_resource_version(obs) for obs in run]
            if all(v is not None for v in written):
                order = sorted(range(len(run)), key=lambda n: written[n] or 0)
                out.extend(run[n] for n in order)
                continue
        slots = [i for i, obs in enumerate(run) if obs.source is SourceName.KUBERNETES_EVENTS]
        versions = [_resource_version(run[i]) for i in slots]
        if len(slots) > 1 and all(v is not None for v in versions):
            events = [run[i] for i in slots]
            by_write = sorted(range(len(events)), key=lambda n: versions[n] or 0)
            for slot, n in zip(slots, by_write, strict=True):
                run[slot] = events[n]
        out.extend(run)
    return out


def _resource_version(obs: Observation) -> int | None:
    data = obs.data
    obj = data.get("object") if isinstance(data, Mapping) else None
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    version = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return int(version) if isinstance(version, str) and version.isdigit() else None
