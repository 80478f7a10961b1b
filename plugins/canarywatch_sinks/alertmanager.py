"""``alertmanager``: push canary events as alerts to Prometheus Alertmanager (API v2).

Each event becomes one alert, ``POST <url>/api/v2/alerts`` (a JSON array), sent to **every**
configured replica concurrently, as Prometheus does: replicas dedupe notifications among
themselves by gossip, so never put a load balancer in front. A push counts as delivered when at
least one replica accepted it; per-replica failures are logged (``replica_push_failed``). When
all fail, the error is classified from the answers: 400/415/422 are a permanent
``invalid_payload``, 5xx/timeouts/connection errors are retryable.

Options::

    urls: [https://am-0.example:9093, https://am-1.example:9093]  # include any --web.route-prefix
    basic_auth: {username: canarywatch, password: {env: AM_PASSWORD}}  # or:
    bearer_token: {file: /run/secrets/am-token}
    tls: {ca_file: /etc/ssl/am-ca.pem, cert_file: …, key_file: …, insecure_skip_verify: false}
    links: {runbook_url: "https://…/{namespace}/{canary}", dashboard_url: "https://…"}
    resend_interval_s: 60    # how often the dispatcher calls heartbeat()
    ends_at_after_s: 300     # firing alerts carry endsAt = now + this
    timeout_s: 10            # per replica request

Alert shape (``render``; labels identify the alert, so they are stable per rollout)::

    labels:      alertname=Canary<Transition in CamelCase> (CanaryRolledBack), namespace, canary,
                 cluster, severity, rollout  (empty values are left out)
    annotations: summary, description (message, reason, weight, failed checks),
                 runbook_url, dashboard_url (from ``links``)
    startsAt:    when the event was observed (the same on every push)
    endsAt:      firing: n.created_at + ends_at_after_s; resolved: n.created_at
    generatorURL: the dashboard link, when configured

``render`` is pure: times come from the notification, never the wall clock. Several events with
the same label set in one notification collapse to the last one.

Lifecycle: Alertmanager resolves an alert when its ``endsAt`` passes, so firing alerts must be
re-sent. The dispatcher calls ``heartbeat(firing, now)`` every ``resend_interval_s`` with the
notifications still firing for this receiver; it re-pushes them with ``endsAt`` = now +
``ends_at_after_s`` (tolerates several missed heartbeats). A resolved notification is pushed with
``endsAt`` = its ``created_at`` and the alert leaves Alertmanager at once; resolved notifications
passed to ``heartbeat`` are re-sent unchanged, so a replica that restarted still learns of them.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, Self
from urllib.parse import urlsplit

import aiohttp
import pydantic

from canarywatch.model import CanaryEvent, JSONValue, Notification, NotificationStatus
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    clean_text,
    dumps,
    encode_json,
    format_time,
    redact_urls,
    send_json,
)
from canarywatch_sinks.base import BuiltinSink
from canarywatch_sinks.content import EventContent, LinkOptions, SecretOption, describe, truncate

API_PATH = "/api/v2/alerts"
ANNOTATION_MAX = 4000
"""Longest annotation value sent (Alertmanager has no limit; receivers downstream do)."""
_PERMANENT_INVALID = frozenset({400, 415, 422})


class BasicAuthOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    username: str = pydantic.Field(min_length=1, pattern=r"^[^:]+$")
    password: SecretOption


class TLSOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @pydantic.model_validator(mode="after")
    def _cert_and_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate)")
        return self

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None
        )
        if self.cert_file is not None and self.key_file is not None:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


class AlertmanagerOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    urls: list[str] = pydantic.Field(min_length=1)
    """Base URL of every replica, including any ``--web.route-prefix``."""
    basic_auth: BasicAuthOptions | None = None
    bearer_token: SecretOption | None = None
    tls: TLSOptions | None = None
    links: LinkOptions = LinkOptions()
    resend_interval_s: float = pydantic.Field(default=60.0, gt=0)
    ends_at_after_s: float = pydantic.Field(default=300.0, gt=0)
    timeout_s: float = pydantic.Field(default=10.0, gt=0, le=300)

    @pydantic.field_validator("urls")
    @classmethod
    def _base_urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("each url must be an http(s) base URL")
            if parts.username or parts.password:
                raise ValueError("credentials do not belong in the url: use basic_auth")
            if parts.query or parts.fragment:
                raise ValueError("a base url takes no query or fragment")
        if len(set(urls)) != len(urls):
            raise ValueError("urls must be distinct")
        return urls

    @pydantic.model_validator(mode="after")
    def _one_auth_and_sane_times(self) -> Self:
        if self.basic_auth is not None and self.bearer_token is not None:
            raise ValueError("give basic_auth or bearer_token, not both")
        if self.ends_at_after_s <= self.resend_interval_s:
            raise ValueError(
                "ends_at_after_s must exceed resend_interval_s, or alerts resolve between "
                "heartbeats"
            )
        return self


def alertname(event: CanaryEvent) -> str:
    """``rolled-back`` -> ``CanaryRolledBack``: a valid, stable label value per transition."""
    return "Canary" + "".join(part.capitalize() for part in event.transition.value.split("-"))


def _label(value: str) -> str:
    return clean_text(value, max_len=256)


def alert_labels(event: CanaryEvent) -> dict[str, str]:
    """The identity of the alert for ``event``; empty values are left out."""
    labels = {
        "alertname": alertname(event),
        "namespace": _label(event.canary.namespace),
        "canary": _label(event.canary.name),
        "cluster": _label(event.canary.cluster),
        "severity": event.severity.value,
        "rollout": _label(event.rollout),
    }
    return {k: v for k, v in labels.items() if v}


def _description(content: EventContent) -> str:
    event = content.event
    parts = []
    if event.message:
        message = clean_text(event.message)
        parts.append(message if message.endswith((".", "!", "?")) else message + ".")
    if event.reason:
        parts.append(f"Reason: {clean_text(event.reason)}.")
    if event.weight is not None:
        parts.append(f"Canary weight: {max(0, min(100, event.weight))}%.")
    if event.failed_checks is not None:
        parts.append(f"Failed checks: {event.failed_checks}.")
    if event.phase is not None:
        parts.append(f"Phase: {event.phase.value}.")
    return truncate(" ".join(parts) or content.summary, ANNOTATION_MAX)


class AlertmanagerSink(BuiltinSink[AlertmanagerOptions]):
    """Pushes one alert per event to every Alertmanager replica; see the module docstring."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = AlertmanagerOptions

    def _setup(self) -> None:
        opts = self._options
        self._endpoints = [url.rstrip("/") + API_PATH for url in opts.urls]
        self._replicas = [redact_urls(url) for url in opts.urls]
        self._ssl: ssl.SSLContext | bool = opts.tls.context() if opts.tls is not None else True
        self._headers = {"Content-Type": "application/json"}
        if opts.basic_auth is not None:
            # Built by hand: aiohttp.BasicAuth is deprecated in 3.14, encode_basic_auth is new.
            pair = f"{opts.basic_auth.username}:{opts.basic_auth.password.get_secret_value()}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        if opts.bearer_token is not None:
            self._headers["Authorization"] = f"Bearer {opts.bearer_token.get_secret_value()}"
        self._timeout = aiohttp.ClientTimeout(total=opts.timeout_s)

    @property
    def resend_interval_s(self) -> float:
        """How often the dispatcher should call ``heartbeat``."""
        return self._options.resend_interval_s

    # --- render ---------------------------------------------------------------------------

    def render(self, n: Notification) -> Payload:
        """The alerts of ``n`` as the JSON array Alertmanager takes (pure)."""
        return self.alerts(n, at=n.created_at)

    def alerts(self, n: Notification, *, at: datetime) -> list[JSONValue]:
        """The alerts of ``n`` as if pushed at ``at`` (``render`` uses ``n.created_at``)."""
        resolved = n.status is NotificationStatus.RESOLVED
        ends = at if resolved else at + timedelta(seconds=self._options.ends_at_after_s)
        by_identity: dict[tuple[tuple[str, str], ...], JSONValue] = {}
        for event in n.events:
            # Described as firing: Alertmanager itself says "resolved"; annotations stay put.
            content = describe(event, status=NotificationStatus.FIRING, links=self._options.links)
            labels = alert_labels(event)
            annotations = {
                "summary": truncate(clean_text(content.title), ANNOTATION_MAX),
                "description": _description(content),
            }
            generator: str | None = None
            for link in content.links:
                key = "dashboard_url" if link.label == "Dashboard" else "runbook_url"
                annotations[key] = link.url
                if key == "dashboard_url":
                    generator = link.url
            alert: dict[str, JSONValue] = {
                "labels": labels,
                "annotations": annotations,
                "startsAt": format_time(min(event.observed_at, ends)),
                "endsAt": format_time(ends),
            }
            if generator is not None:
                alert["generatorURL"] = generator
            identity = tuple(sorted(labels.items()))
            by_identity.pop(identity, None)  # the latest event of an identity wins, in order
            by_identity[identity] = alert
        return list(by_identity.values())

    # --- deliver --------------------------------------------------------------------------

    async def deliver(self, payload: Payload) -> None:
        """Push the alerts to every replica at once; fail only when every replica failed."""
        if isinstance(payload, str | bytes | Mapping) or not isinstance(payload, Sequence):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        body = encode_json(list(payload))
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._push(index, endpoint, body))
                for index, endpoint in enumerate(self._endpoints)
            ]
        errors = [e for e in (t.result() for t in tasks) if e is not None]
        if len(errors) < len(tasks):
            return
        retryable = [e for e in errors if e.retryable]
        raise retryable[0] if retryable else errors[0]

    async def heartbeat(self, firing: Sequence[Notification], now: datetime) -> None:
        """Re-push still-firing alerts with ``endsAt`` = ``now`` + ``ends_at_after_s``.

        The dispatcher calls this every ``resend_interval_s`` with the notifications currently
        firing for this receiver (resolved ones may be included for a while and are re-sent
        unchanged). ``startsAt`` stays the observed time, so each alert keeps its identity and
        only its ``endsAt`` (and Alertmanager's ``updatedAt``) moves. Raises ``DeliveryError``
        like ``deliver`` when no replica accepted the push.
        """
        by_identity: dict[str, JSONValue] = {}
        for n in firing:
            at = now if n.status is NotificationStatus.FIRING else n.created_at
            for alert in self.alerts(n, at=at):
                by_identity[dumps(alert["labels"])] = alert
        if not by_identity:
            return
        await self.deliver(list(by_identity.values()))
        self.log.debug("alerts_refreshed", alerts=len(by_identity))

    async def _push(self, index: int, endpoint: str, body: bytes) -> DeliveryError | None:
        """One replica, one attempt: ``None`` on 2xx, else the classified error (logged)."""
        detail: str | None = None
        try:
            answer = await send_json(
                self.http,
                endpoint,
                body,
                headers=self._headers,
                client_timeout=self._timeout,
                ssl_context=self._ssl,
                payload_errors=_PERMANENT_INVALID,
            )
        except DeliveryError as transport:
            error = transport
        else:
            if answer.error is None:
                return None
            error = answer.error
            detail = redact_urls(clean_text(answer.text, max_len=200)) or None
        self.log.warning(
            "replica_push_failed",
            replica=self._replicas[index],
            reason=error.reason.value,
            status_code=error.status_code,
            detail=detail,
        )
        return error
