"""The exception hierarchy: ``cli`` maps these to exit codes (2 for config, 1 for runtime).

Error text is user-facing and may end up in logs, metrics and chat messages, so no error here
ever carries a secret, a URL path or a query string: ``ConfigError`` names the *key path* of
the offending value, never the value, and ``DeliveryError`` carries only a fixed reason and an
HTTP status.
"""

from __future__ import annotations

from collections.abc import Sequence

from canarywatch.model import DeliveryReason


class CanarywatchError(Exception):
    """Base of every error canarywatch raises on purpose."""


class ConfigError(CanarywatchError):
    """A configuration problem, located by file, line and key path.

    ``path`` is the key path in the YAML document (``receivers[1].options.url``), ``line`` the
    1-based line of the offending key. ``others`` holds further problems found in the same pass
    so ``check-config`` can report them all at once; ``str()`` lists every one, one per line.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str = "",
        line: int | None = None,
        file: str | None = None,
        others: Sequence[ConfigError] = (),
    ) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.file = file
        self.others: tuple[ConfigError, ...] = tuple(others)
        super().__init__(self.describe())

    def describe(self) -> str:
        """This error alone: ``config.yaml:14: receivers[1].sink: unknown sink 'slak'``."""
        where = ""
        if self.file is not None and self.line is not None:
            where = f"{self.file}:{self.line}: "
        elif self.file is not None:
            where = f"{self.file}: "
        elif self.line is not None:
            where = f"line {self.line}: "
        key = f"{self.path}: " if self.path else ""
        return f"{where}{key}{self.message}"

    @property
    def all_errors(self) -> tuple[ConfigError, ...]:
        return (self, *self.others)

    def __str__(self) -> str:
        return "\n".join(e.describe() for e in self.all_errors)


class SourceError(CanarywatchError):
    """An input (Kubernetes API, Flagger metrics, webhook listener) failed for good."""


_RETRYABLE_BY_DEFAULT = frozenset(
    {
        DeliveryReason.TIMEOUT,
        DeliveryReason.HTTP_5XX,
        DeliveryReason.RATE_LIMITED,
        DeliveryReason.CONNECTION,
    }
)


class DeliveryError(CanarywatchError):
    """One delivery attempt failed; ``dispatch`` decides whether to retry from ``retryable``.

    HTTP statuses are classified once, by ``canarywatch.sinks.classify_http``; ``retryable``
    defaults from the reason (timeouts, 5xx, 429 and connection errors retry).

    The reason is a metric label; the message is built from the reason, the status code, the
    retry hint and, where a sink can say more than the reason does, ``detail``: what happened in
    plain words for a person (``cannot append to /var/lib/x.jsonl: permission denied``). A sink
    puts no secret there; as a second line of defence every URL in it is cut down to
    ``scheme://host`` and it is kept to one short line, so a webhook URL or token cannot leak
    through ``str(error)``.
    """

    def __init__(
        self,
        reason: DeliveryReason,
        *,
        retryable: bool | None = None,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        detail: str | None = None,
    ) -> None:
        self.reason = reason
        self.retryable = reason in _RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.detail = _one_line(detail) if detail else None
        super().__init__(str(self))

    def __str__(self) -> str:
        details = []
        if self.status_code is not None:
            details.append(f"status {self.status_code}")
        if self.retry_after_s is not None:
            details.append(f"retry after {self.retry_after_s:g}s")
        details.append("retryable" if self.retryable else "not retryable")
        if self.detail:
            details.insert(0, f"reason {self.reason.value}")
            return f"delivery failed: {self.detail} ({', '.join(details)})"
        return f"delivery failed: {self.reason.value} ({', '.join(details)})"

    def __repr__(self) -> str:
        return (
            f"DeliveryError({self.reason.value!r}, retryable={self.retryable}, "
            f"status_code={self.status_code}, retry_after_s={self.retry_after_s}, "
            f"detail={self.detail!r})"
        )


_DETAIL_MAX = 300


def _one_line(text: str) -> str:
    """``DeliveryError.detail`` made safe to show: URLs cut to ``scheme://host``, control
    characters and line breaks gone, at most ``_DETAIL_MAX`` characters."""
    from canarywatch.logs import strip_urls  # here: logs imports secrets, which imports us

    cleaned = " ".join("".join(c if c.isprintable() else " " for c in strip_urls(text)).split())
    return cleaned if len(cleaned) <= _DETAIL_MAX else cleaned[: _DETAIL_MAX - 1] + "…"
