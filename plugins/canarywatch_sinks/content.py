"""What every built-in sink says about a notification, before each sink's own formatting.

One place decides the facts a message carries (what happened, which canary/namespace/cluster,
the rollout, weight and failed checks, the reason, links, the time) so Slack, Teams, Discord,
Alertmanager and the webhook agree. Texts here are *unescaped*: each sink escapes for its own
markup and truncates to its own limits.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

import pydantic

from canarywatch.model import CanaryEvent, Notification, NotificationStatus, Severity, Transition
from canarywatch.sinks import clean_text, format_time, reveal_secret, weight_bar

TITLES: Mapping[Transition, str] = {
    Transition.INITIALIZED: "Canary initialized",
    Transition.AWAITING_APPROVAL: "Waiting for approval",
    Transition.APPROVED: "Approved",
    Transition.REVISION_DETECTED: "New revision detected",
    Transition.ANALYSIS_STARTED: "Analysis started",
    Transition.WEIGHT_ADVANCED: "Canary weight advanced",
    Transition.ITERATION_ADVANCED: "Iteration advanced",
    Transition.NOT_READY: "Workload not ready",
    Transition.HALTED: "Analysis halted",
    Transition.NO_TRAFFIC: "No traffic to analyse",
    Transition.WEBHOOK_FAILED: "Webhook or metric check failed",
    Transition.PROMOTING: "Promoting",
    Transition.FINALISING: "Finalising",
    Transition.PROMOTED: "Promoted",
    Transition.LOW_TRAFFIC_PROMOTION: "Promoted on low traffic",
    Transition.ROLLED_BACK: "Rolled back",
    Transition.PROMOTION_FAILED: "Promotion failed",
    Transition.SUSPENDED: "Suspended",
    Transition.TERMINATED: "Terminated",
    Transition.METRICS_SOURCE_DOWN: "Flagger metrics unreachable",
    Transition.METRICS_SOURCE_RECOVERED: "Flagger metrics back",
    Transition.CLUSTER_UNREACHABLE: "Cluster unreachable",
    Transition.CLUSTER_REACHABLE: "Cluster reachable again",
}

TEMPLATE_FIELDS = ("cluster", "namespace", "canary", "target", "rollout", "transition")


class LinkOptions(pydantic.BaseModel):
    """Link templates shared by the built-in sinks (``{namespace}``, ``{canary}``, ...)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    dashboard_url: str | None = None
    runbook_url: str | None = None

    @pydantic.field_validator("dashboard_url", "runbook_url")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL template")
        for _, field, _, _ in string.Formatter().parse(value):
            if field is not None and field not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown template field {{{field}}} (known: {TEMPLATE_FIELDS})")
        return value


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Fact:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EventContent:
    """One event, said plainly."""

    title: str
    """``Rolled back: test/podinfo``."""
    summary: str
    """One sentence: the Flagger message, cleaned of control characters."""
    severity: Severity
    resolved: bool
    facts: tuple[Fact, ...]
    links: tuple[Link, ...]
    time: str
    """RFC 3339 of when canarywatch observed it."""
    event: CanaryEvent


def render_link(template: str, event: CanaryEvent) -> str:
    values = {
        "cluster": event.canary.cluster,
        "namespace": event.canary.namespace,
        "canary": event.canary.name,
        "target": event.target,
        "rollout": event.rollout,
        "transition": event.transition.value,
    }
    return template.format_map({k: quote(v, safe="") for k, v in values.items()})


def describe(
    event: CanaryEvent, *, status: NotificationStatus, links: LinkOptions | None = None
) -> EventContent:
    resolved = status is NotificationStatus.RESOLVED
    title = TITLES.get(event.transition, event.transition.value)
    if resolved:
        title = f"Resolved: {title}"
    facts: list[Fact] = [
        Fact("Canary", f"{event.canary.namespace}/{event.canary.name}"),
    ]
    if event.canary.cluster:
        facts.append(Fact("Cluster", event.canary.cluster))
    if event.rollout:
        facts.append(Fact("Rollout", event.rollout))
    if event.phase is not None:
        facts.append(Fact("Phase", event.phase.value))
    if event.weight is not None:
        facts.append(Fact("Weight", weight_bar(event.weight)))
    if event.failed_checks is not None:
        facts.append(Fact("Failed checks", str(event.failed_checks)))
    if event.reason:
        facts.append(Fact("Reason", clean_text(event.reason)))
    if event.detail and event.transition in (Transition.AWAITING_APPROVAL, Transition.APPROVED):
        facts.append(Fact("Gate", event.detail))
    rendered_links: list[Link] = []
    if links is not None:
        if links.dashboard_url:
            rendered_links.append(Link("Dashboard", render_link(links.dashboard_url, event)))
        if links.runbook_url:
            rendered_links.append(Link("Runbook", render_link(links.runbook_url, event)))
    summary = clean_text(event.message) if event.message else title
    return EventContent(
        title=f"{title}: {event.canary.namespace}/{event.canary.name}",
        summary=summary,
        severity=event.severity,
        resolved=resolved,
        facts=tuple(facts),
        links=tuple(rendered_links),
        time=format_time(event.observed_at),
        event=event,
    )


def describe_all(n: Notification, *, links: LinkOptions | None = None) -> tuple[EventContent, ...]:
    return tuple(describe(e, status=n.status, links=links) for e in n.events)


def headline(n: Notification) -> str:
    """One line for the whole notification (fallback text, titles)."""
    if not n.events:
        return "canarywatch: empty notification"
    first = describe(n.events[0], status=n.status)
    more = len(n.events) - 1
    return first.title + (f" (+{more} more)" if more else "")


def worst_severity(n: Notification) -> Severity:
    return max((e.severity for e in n.events), key=lambda s: s.rank, default=Severity.INFO)


def rollout_key(n: Notification) -> str:
    """The rollout a notification is about, for threads and edit-in-place: ``cluster/ns/name@id``.

    The empty string when there is no single known rollout: no events, events of several
    canaries or rollouts, or a rollout not identified yet (an empty id). Decided from the events,
    not from the key's text: an id may itself end in ``@``.
    """
    keys = {
        f"{e.canary.cluster}/{e.canary.namespace}/{e.canary.name}@{e.rollout}" for e in n.events
    }
    if len(keys) != 1 or not n.events[0].rollout:
        return ""
    return keys.pop()


def truncate(text: str, limit: int, *, ellipsis: str = "…") -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))] + ellipsis


SecretOption = Annotated[pydantic.SecretStr, pydantic.BeforeValidator(reveal_secret)]
"""An option holding a secret (URL with ``sig=``, token, password, HMAC key).

Config hands secrets over as ``Secret`` objects, tests as plain ``str``; both become a
``pydantic.SecretStr``, whose ``repr`` is masked. Call ``get_secret_value()`` only where the
value goes on the wire.
"""
