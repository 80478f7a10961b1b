"""What a sink is: the ``Sink`` ABC with its optional capabilities, and what it is handed.

A sink turns a ``Notification`` into a wire body (``render``, pure) and sends it once
(``deliver``). Everything around that (queueing, per-attempt timeouts, retries, dedup,
recording) belongs to ``canarywatch.delivery.dispatch``, so a sink stays small and testable with
golden files. Every optional capability the daemon uses (health, heartbeats, printing to the
terminal) is declared here with a default, so a caller reads an attribute instead of guessing
with ``getattr`` and a plugin author finds everything in one class.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import ClassVar, Protocol, TypeAlias

import aiohttp
import pydantic
from structlog.typing import FilteringBoundLogger

from canarywatch.errors import ConfigError
from canarywatch.formats.jsonout import format_time
from canarywatch.identity import fingerprint
from canarywatch.model import JSONValue, Notification

__all__ = [
    "API_VERSION",
    "BoundLogger",
    "InMemorySinkMemory",
    "OptionProblem",
    "Payload",
    "Sink",
    "SinkLoadError",
    "SinkMemory",
    "idempotency_key",
]

API_VERSION = 1
"""The ``Sink.api_version`` this canarywatch speaks; a plugin declaring another is refused."""

DEFAULT_RESEND_INTERVAL_S = 60.0
"""How often ``Sink.heartbeat`` is called unless the sink says otherwise."""


def idempotency_key(n: Notification) -> str:
    """32 hex digits naming what ``n`` announces: its receiver, status and the identities
    (``identity.fingerprint``) of its events; a ``repeat_interval`` re-send adds its time.

    Not a hash of the rendered body: the body carries times that differ between a retry after a
    restart, a replica taking over and the first attempt, and a receiver must be able to drop
    every one of those as the same message. A deliberate repeat is a new message.
    """
    parts = [n.receiver, n.status.value, *sorted(fingerprint(e) for e in n.events)]
    if n.repeat:
        parts.append(format_time(n.created_at))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


BoundLogger: TypeAlias = FilteringBoundLogger
"""The structlog logger type handed to components (bound once, passed in)."""

Payload: TypeAlias = str | bytes | Mapping[str, JSONValue] | Sequence[JSONValue]
"""What ``Sink.render`` returns and ``Sink.deliver`` receives: the wire body of one message.

A JSON object or array for HTTP sinks (posted as-is), text or bytes for stream-like sinks. The
dispatcher treats it as opaque: it renders once per notification and hands the same payload to
every attempt. ``deliver`` receives the base type; a sink narrows it with ``isinstance`` and
raises ``DeliveryError(reason=DeliveryReason.INVALID_PAYLOAD, retryable=False)`` on a mismatch.
"""

OptionProblem: TypeAlias = tuple[tuple[str | int, ...], str]
"""One bad sink option: its key path inside ``options`` (``("links", 0, "url")``, ``()`` for
the options as a whole) and what is wrong, in canarywatch's words, without the value."""


class SinkLoadError(ConfigError):
    """A sink cannot be loaded or configured: unknown name, broken plugin, bad options.

    A ``ConfigError`` because it is one when the sink is named in config (``check-config`` exits
    2); ``sinks.loader.receiver_problems`` turns it into errors at the config's key paths.
    ``option_problems`` lists each bad option (from ``validate_sink_options``), so a caller can
    point at each key's own line.
    """

    def __init__(self, message: str, *, option_problems: Sequence[OptionProblem] = ()) -> None:
        super().__init__(message)
        self.option_problems: tuple[OptionProblem, ...] = tuple(option_problems)


class SinkMemory(Protocol):
    """A sink's small durable key/value store (message ids for edit-in-place and threads).

    The daemon backs it with the state store, so a restart keeps editing the same message;
    keys are the sink's own (e.g. ``"thread:<rollout key>"``), scoped per receiver.
    """

    def get(self, key: str) -> Mapping[str, str] | None: ...

    def put(self, key: str, value: Mapping[str, str]) -> None:
        """Store ``value``; durable when it returns (blocks the event loop for the write)."""
        ...

    async def put_async(self, key: str, value: Mapping[str, str]) -> None:
        """``put`` without blocking the event loop: the daemon's store commits it on its writer
        thread (shared with other writes) and returns once it is durable. Use it from
        ``deliver``."""
        ...


class InMemorySinkMemory:
    """``SinkMemory`` that forgets on restart: the default, and for tests."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, str]] = {}

    def get(self, key: str) -> Mapping[str, str] | None:
        return self._data.get(key)

    def put(self, key: str, value: Mapping[str, str]) -> None:
        self._data[key] = dict(value)

    async def put_async(self, key: str, value: Mapping[str, str]) -> None:
        self.put(key, value)


class Sink(abc.ABC):
    """A notification destination.

    Call order: ``__init__`` -> ``check()`` once -> (``render`` -> ``deliver``)* -> ``aclose()``;
    with ``supports_heartbeat``, ``heartbeat`` runs beside deliveries until ``aclose``.

    Ownership: ``http`` is the process-wide session, owned by the app (never close it);
    ``aclose`` releases only what the sink itself opened (files, its own sessions). ``render``
    is pure: same notification, same payload, no I/O, no clock; it is golden-file tested.
    ``deliver`` makes exactly one attempt and never retries or sleeps: it returns on success and
    raises ``DeliveryError(retryable=..., reason=...)`` on failure (``classify_http`` and
    ``classify_exception`` do the classification); dispatch owns timeouts and retries.

    Secrets (webhook URLs, tokens) arrive in ``options``: keep them out of ``repr``, log fields
    and exception text (``redact_urls`` helps). The default ``repr`` shows only the name.

    Optional capabilities, each with a default that asks nothing of a sink: ``healthy``,
    ``prints_notifications``, ``heartbeat`` with ``resend_interval_s``, and the ``supports_*``
    flags shown by ``canarywatch plugins``.
    """

    api_version: ClassVar[int] = API_VERSION
    supports_edit: ClassVar[bool] = False
    """Can update a message it sent earlier (e.g. Slack chat.update)."""
    supports_threads: ClassVar[bool] = False
    """Can post follow-ups under one rollout's first message."""
    supports_resolve: ClassVar[bool] = False
    """Renders ``resolved`` notifications meaningfully (receivers may then send them)."""
    options_model: ClassVar[type[pydantic.BaseModel] | None] = None
    """Validates ``options`` at load/check-config time; ``None`` means "takes no options"."""
    prints_notifications: bool = False
    """Writes each notification where the operator reads the log (a terminal: the console
    sink, ``jsonl`` to stdout). Dispatch then logs a successful delivery at debug instead of
    info, so a notification is not shown twice. A class attribute a sink may set per instance."""
    healthy: bool = True
    """``False`` once the sink knows every further delivery fails (a revoked token, a deleted
    webhook): dispatch then reports the receiver unhealthy from the start, before any delivery
    fails. A sink sets it on itself; most never need to, because dispatch marks a receiver
    unhealthy when a delivery fails permanently (a not-retryable ``DeliveryError`` other than
    ``invalid_payload``) and healthy again when one succeeds
    (``canarywatch.delivery.dispatch.SinkHealth``)."""

    def __init__(
        self,
        name: str,
        options: Mapping[str, object],
        *,
        http: aiohttp.ClientSession,
        log: BoundLogger,
        memory: SinkMemory | None = None,
    ) -> None:
        """``name`` is the entry-point name (``slack``): the ``sink`` label in logs and metrics.

        Subclasses parse ``options`` (``self.options_model.model_validate(options)``) and keep
        the parsed result, not the raw mapping. ``memory`` persists message ids across
        restarts (see ``SinkMemory``); sinks that edit or thread use it, others ignore it.
        """
        self.name = name
        self.http = http
        self.log = log
        self.memory: SinkMemory = memory if memory is not None else InMemorySinkMemory()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

    @abc.abstractmethod
    def render(self, n: Notification) -> Payload:
        """Turn a notification into the wire body (pure; golden-file tested)."""

    @abc.abstractmethod
    async def deliver(self, payload: Payload) -> None:
        """Send once; raise ``DeliveryError(retryable=..., reason=...)`` on failure."""

    async def check(self) -> None:  # noqa: B027 - optional hook: the default does nothing
        """Optional start-up self-test (reachability, credentials); default does nothing."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook: the default does nothing
        """Release what ``__init__``/``check`` took; the default holds nothing."""

    async def heartbeat(  # noqa: B027 - optional hook: the default is never called
        self, firing: Sequence[Notification], now: datetime
    ) -> None:
        """Optional: re-push what still fires, for a far side that forgets it otherwise
        (Alertmanager expires an alert whose ``endsAt`` passed).

        A sink that overrides this gets ``supports_heartbeat`` and the daemon calls it every
        ``resend_interval_s`` (on the leader only) with the receiver's still-firing
        notifications; one attempt under the dispatch attempt timeout, a ``DeliveryError`` is
        logged (``heartbeat_failed``) and the next beat tries again.
        """

    @property
    def supports_heartbeat(self) -> bool:
        """Whether the daemon runs a heartbeat loop for this sink: it overrides ``heartbeat``.

        Derived rather than declared, so a plugin written before the capability was declared
        (it only defined ``heartbeat``) keeps its heartbeats."""
        return type(self).heartbeat is not Sink.heartbeat

    @property
    def resend_interval_s(self) -> float:
        """Seconds between two ``heartbeat`` calls (read once, when the loop starts)."""
        return DEFAULT_RESEND_INTERVAL_S
