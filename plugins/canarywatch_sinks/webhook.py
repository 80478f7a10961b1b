"""``webhook``: POST each notification as versioned JSON to any HTTP endpoint, optionally signed.

Options::

    url: {env: HOOK_URL}                  # secret or plain; http(s)
    headers:                              # extra request headers; values may be secrets
      X-Team: payments
      Authorization: {env: HOOK_AUTH}
    hmac_secret: {env: HOOK_HMAC_KEY}     # optional: sign every request
    timeout_s: 10                         # per request (``timeout`` is accepted as an alias)

Request: ``POST <url>`` with ``Content-Type: application/json`` and this body (UTF-8, compact,
keys sorted; the same bytes on every retry of one notification)::

    {
      "version": "1",
      "kind": "canarywatch.notification",
      "notification": {
        "at": "2025-01-02T14:08:02Z",          # when the notification was made (RFC 3339, UTC)
        "receiver": "team-payments",
        "status": "firing",                     # or "resolved"
        "group": {"canary": "test/podinfo"},    # the group labels
        "group_key": "team-payments:{canary=\\"test/podinfo\\"}",
        "events": [{
          "canary": "test/podinfo", "cluster": "", "namespace": "test", "name": "podinfo",
          "transition": "rolled-back", "severity": "critical", "phase": "Failed",
          "weight": null, "failed_checks": 5, "message": "…", "reason": "…", "detail": "",
          "target": "podinfo", "rollout": "2", "episode": 1, "labels": {…},
          "observed_at": "…", "occurred_at": null, "sources": ["kubernetes-events"]
        }]
      }
    }

``notification`` is exactly ``canarywatch.sinks.notification_to_json`` (the ``jsonl`` sink and
``canarywatch replay`` print the same object). Fields may be added within version ``1``; a
rename or removal bumps ``version``. Receivers should ignore unknown fields.

Headers canarywatch sets:

- ``X-Canarywatch-Timestamp``: the notification's ``at`` as Unix seconds (so a retry carries the
  same value and the signature stays reproducible; receivers may reject stale timestamps).
- ``X-Canarywatch-Signature: sha256=<hex>`` (only with ``hmac_secret``): HMAC-SHA256 keyed with
  the secret over ``<timestamp> + "." + <exact body bytes>``. To verify, recompute it over the raw
  body as received (before any JSON parsing) and compare in constant time.
- ``X-Canarywatch-Idempotency-Key``: the envelope's ``key``: 32 hex digits naming what the
  notification announces (receiver, status, the identities of its events; see
  ``canarywatch.sinks.idempotency_key``). A retry, a resend after a restart and a replica that
  takes over send the same key for the same message, so receivers can drop duplicates.

Responses: any 2xx is success; 429 (honouring ``Retry-After``), 408 and 5xx are retryable;
other 4xx and redirects (not followed) are permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import ClassVar
from urllib.parse import urlsplit

import aiohttp
import pydantic

from canarywatch.model import Notification
from canarywatch.sinks import (
    DeliveryError,
    DeliveryReason,
    Payload,
    encode_json,
    idempotency_key,
    notification_to_json,
    send_json,
)
from canarywatch_sinks.base import BuiltinSink
from canarywatch_sinks.content import SecretOption

ENVELOPE_VERSION = "1"
ENVELOPE_KIND = "canarywatch.notification"
SIGNATURE_HEADER = "X-Canarywatch-Signature"
TIMESTAMP_HEADER = "X-Canarywatch-Timestamp"
IDEMPOTENCY_HEADER = "X-Canarywatch-Idempotency-Key"

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


class WebhookOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: SecretOption
    headers: dict[str, SecretOption] = pydantic.Field(default_factory=dict)
    hmac_secret: SecretOption | None = None
    timeout_s: float = pydantic.Field(
        default=10.0,
        gt=0,
        le=300,
        validation_alias=pydantic.AliasChoices("timeout_s", "timeout"),
    )

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, value: pydantic.SecretStr) -> pydantic.SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return value

    @pydantic.field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, pydantic.SecretStr]) -> dict[str, pydantic.SecretStr]:
        for name, value in headers.items():
            if not _TOKEN.match(name):
                raise ValueError(f"invalid header name {name!r}")
            lowered = name.lower()
            if lowered in _RESERVED or lowered.startswith("x-canarywatch-"):
                raise ValueError(f"header {name!r} is set by canarywatch")
            if any(ch in value.get_secret_value() for ch in "\r\n\0"):
                raise ValueError(f"header {name!r}: value contains a line break or NUL")
        return headers

    @pydantic.field_validator("hmac_secret")
    @classmethod
    def _non_empty(cls, value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty")
        return value


def envelope(n: Notification) -> dict[str, object]:
    """The versioned body: ``{"version", "kind", "key", "notification"}`` (``key``: the
    idempotency key, as in the header)."""
    return {
        "version": ENVELOPE_VERSION,
        "kind": ENVELOPE_KIND,
        "key": idempotency_key(n),
        "notification": notification_to_json(n),
    }


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 over ``timestamp + "." + body`` (see the module docstring)."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _key(payload: Mapping[str, object]) -> str | None:
    key = payload.get("key")
    return key if isinstance(key, str) and key else None


def _timestamp(payload: Mapping[str, object]) -> str | None:
    notification = payload.get("notification")
    at = notification.get("at") if isinstance(notification, Mapping) else None
    if not isinstance(at, str):
        return None
    try:
        return str(int(datetime.fromisoformat(at).timestamp()))
    except ValueError:
        return None


class WebhookSink(BuiltinSink[WebhookOptions]):
    """Generic JSON webhook with an optional HMAC signature; see the module docstring."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = WebhookOptions

    def _setup(self) -> None:
        self._timeout = aiohttp.ClientTimeout(total=self._options.timeout_s)

    def render(self, n: Notification) -> Payload:
        """The envelope (pure: the timestamp header is derived from it in ``deliver``)."""
        return envelope(n)

    def request_headers(
        self, body: bytes, timestamp: str, key: str | None = None
    ) -> dict[str, str]:
        """Every header of the request for ``body`` (secrets included: never log this).

        ``key``: the envelope's idempotency key; without one (a hand-built payload), a hash of
        the body stands in."""
        headers = {k: v.get_secret_value() for k, v in self._options.headers.items()}
        headers["Content-Type"] = "application/json"
        headers[TIMESTAMP_HEADER] = timestamp
        headers[IDEMPOTENCY_HEADER] = key or hashlib.sha256(body).hexdigest()[:32]
        if self._options.hmac_secret is not None:
            secret = self._options.hmac_secret.get_secret_value().encode()
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        return headers

    async def deliver(self, payload: Payload) -> None:
        """POST the envelope once; raise a classified ``DeliveryError`` unless 2xx."""
        if not isinstance(payload, Mapping):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        timestamp = _timestamp(payload)
        if timestamp is None:
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        body = encode_json(payload)
        answer = await send_json(
            self.http,
            self._options.url.get_secret_value(),
            body,
            headers=self.request_headers(body, timestamp, _key(payload)),
            client_timeout=self._timeout,
        )
        if answer.error is not None:
            self.log.debug(
                "delivery_rejected", status_code=answer.status, reason=answer.error.reason.value
            )
            raise answer.error
