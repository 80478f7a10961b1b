"""What the chat sinks (Slack, Discord, Teams) share: endpoint checks, and for Slack and
Discord a destination that can be gone for good.

Slack and Discord tell a revoked token or a deleted webhook apart from a passing failure
(``reference/sinks.md`` §1.2, §3.2). Once told, a ``ChatSink`` is unhealthy: dispatch reports
the receiver down and ``check()`` raises, and Discord stops calling the webhook altogether.
Both serialise requests per instance (one destination each) with ``self._lock``.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Final
from urllib.parse import urlsplit

from canarywatch.sinks import DeliveryError, DeliveryReason
from canarywatch_sinks.base import BuiltinSink, OptionsT

LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})
CHECK_TIMEOUT_S: Final = 10.0
"""For ``check()``, which runs outside dispatch's per-attempt timeout."""

__all__ = ["CHECK_TIMEOUT_S", "LOOPBACK", "ChatSink", "check_https_url"]


def check_https_url(url: str, what: str) -> None:
    """Raise ``ValueError`` unless ``url`` is an absolute https URL (plain http only on loopback,
    for test servers). The message names ``what``, never the value: it is a credential."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"{what} is not a valid URL") from None
    if not parts.hostname:
        raise ValueError(f"{what} must be an absolute URL")
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return
    raise ValueError(f"{what} must be an https URL (plain http only for loopback test servers)")


class ChatSink(BuiltinSink[OptionsT], abc.ABC):
    """A chat sink whose destination can be gone for good (Slack, Discord)."""

    supports_edit = True
    supports_resolve = True

    def _setup(self) -> None:
        self.healthy = True  # until the service says the webhook/token/channel is gone
        self._broken_status: int | None = None
        self._lock = asyncio.Lock()

    def _mark_broken(self, status: int, **why: object) -> DeliveryError:
        """Remember that the destination is gone (logged once); the error to raise."""
        if self.healthy:
            self.log.error("sink_marked_unhealthy", status_code=status, **why)
        self.healthy = False
        self._broken_status = status
        return self._gone()

    def _gone(self) -> DeliveryError:
        return DeliveryError(
            DeliveryReason.HTTP_4XX, retryable=False, status_code=self._broken_status
        )

    @abc.abstractmethod
    async def _probe(self) -> None:
        """One side-effect-free request that fails if the destination or credential is gone;
        raise the classified ``DeliveryError``. Does nothing where there is nothing to ask."""

    async def check(self) -> None:
        """Raise if the destination is gone (now or earlier); transient failures are only
        logged, so the daemon still starts."""
        if self.healthy:
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_S), self._lock:
                    await self._probe()
            except DeliveryError as exc:
                if self.healthy:
                    self.log.warning("sink_check_failed", reason=exc.reason.value)
            except TimeoutError:
                self.log.warning("sink_check_failed", reason=DeliveryReason.TIMEOUT.value)
        if not self.healthy:
            raise self._gone()
