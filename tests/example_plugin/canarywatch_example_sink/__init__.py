"""``pager``: an example third-party canarywatch sink that pages through a JSON endpoint.

It is packaged exactly as any sink plugin is (see ``pyproject.toml``): a distribution that
registers a ``canarywatch.sinks`` entry point and imports only ``canarywatch.sinks`` and
``canarywatch.model``. Configure it as a receiver::

    receivers:
      - name: oncall
        sink: pager
        options:
          url: https://pager.example/v1/events    # or {env: PAGER_URL} when it holds a key
          timeout_s: 10

Each notification becomes one ``POST <url>`` with the JSON body::

    {"summary": "test/podinfo rolled back: Rolling back podinfo.test failed checks ...",
     "severity": "critical",                      # the worst event's; "info" when resolved
     "canary": "test/podinfo"}                     # comma-separated when grouped over several

2xx is success; everything else is classified by ``canarywatch.sinks.classify_http``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar
from urllib.parse import urlsplit

import aiohttp
import pydantic

from canarywatch.model import Notification, NotificationStatus, Severity
from canarywatch.sinks import (
    BoundLogger,
    DeliveryError,
    DeliveryReason,
    Payload,
    Sink,
    SinkMemory,
    classify_exception,
    classify_http,
    clean_text,
)

__all__ = ["SUMMARY_MAX", "PagerOptions", "PagerSink"]

SUMMARY_MAX = 1024
"""Longest summary sent; most paging services cut around here."""


def _reveal(value: object) -> object:
    """Config hands secrets over as ``canarywatch`` ``Secret`` objects (``reveal()``)."""
    reveal = getattr(value, "reveal", None)
    return reveal() if callable(reveal) else value


class PagerOptions(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    url: pydantic.SecretStr
    """Where to POST; a secret because paging URLs often carry a routing key."""
    timeout_s: float = pydantic.Field(default=10.0, gt=0, le=60)

    @pydantic.field_validator("url", mode="before")
    @classmethod
    def _unwrap(cls, value: object) -> object:
        return _reveal(value)

    @pydantic.field_validator("url")
    @classmethod
    def _http(cls, value: pydantic.SecretStr) -> pydantic.SecretStr:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")  # never repeat the value: it is secret
        return value


class PagerSink(Sink):
    """POSTs ``{"summary", "severity", "canary"}``; see the module docstring."""

    supports_resolve: ClassVar[bool] = True
    options_model: ClassVar[type[pydantic.BaseModel] | None] = PagerOptions

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        super().__init__(name, options, http=http, log=log, memory=memory)
        self._options = PagerOptions.model_validate(dict(options))
        self._timeout = aiohttp.ClientTimeout(total=self._options.timeout_s)

    def render(self, n: Notification) -> Payload:
        """Pure: built only from ``n``."""
        resolved = n.status is NotificationStatus.RESOLVED
        canaries = sorted(dict.fromkeys(str(e.canary) for e in n.events))
        worst = max((e.severity for e in n.events), key=lambda s: s.rank, default=Severity.INFO)
        if n.events:
            first = n.events[0]
            what = first.transition.value.replace("-", " ")
            summary = f"{first.canary} {what}"
            if first.message:
                summary += f": {first.message}"
            if len(n.events) > 1:
                summary += f" (+{len(n.events) - 1} more)"
        else:
            summary = "canarywatch: empty notification"
        if resolved:
            summary = f"RESOLVED {summary}"
        return {
            "summary": clean_text(summary, max_len=SUMMARY_MAX),
            "severity": Severity.INFO.value if resolved else worst.value,
            "canary": clean_text(", ".join(canaries), max_len=SUMMARY_MAX),
        }

    async def deliver(self, payload: Payload) -> None:
        """One POST; 2xx returns, anything else raises the classified ``DeliveryError``."""
        if not isinstance(payload, Mapping):
            raise DeliveryError(DeliveryReason.INVALID_PAYLOAD, retryable=False)
        try:
            async with self.http.post(
                self._options.url.get_secret_value(),
                json=dict(payload),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                error = classify_http(status, response.headers)
        except (aiohttp.ClientError, TimeoutError, OSError, TypeError, ValueError) as exc:
            # ``from None``: aiohttp's text can quote the URL, which is secret.
            raise classify_exception(exc) from None
        if error is not None:
            self.log.debug("delivery_rejected", status_code=status, reason=error.reason.value)
            raise error
