"""The ``StateStore`` protocol, its record types and the rules both backends share.

What is kept, and why it must survive a restart:

- the **notification log** (Alertmanager's nflog): which event fingerprints went to which
  receiver with which status, and when. Dispatch checks it before sending, so a restart, a
  replayed outbox item or a second source never notifies twice;
- the **outbox**: a notification is written here before the first delivery attempt and marked
  done (recording it in the log in the same transaction) after success, so a crash between
  "grouped" and "delivered" loses nothing and a crash after delivery sends nothing twice.
  Items that failed for good become *dead letters* an operator can retry or drop;
- **silences** added at run time (``canarywatch silence``);
- **sink memory**: small per-receiver key/value maps (message ids for edit-in-place, threads);
- **correlator snapshots** per canary, so rollouts, open conditions and episodes carry on;
- **meta**: small named strings (the schema version lives here too, under a reserved key).

Times are stored with microsecond precision and handed back as timezone-aware UTC; a naive
datetime is refused (``ValueError``) since canarywatch never makes one. Every write is one
transaction that is durable when the call returns, or raises; in the daemon ``HoldingStateStore``
turns a write the disk cannot take (full, read-only, I/O error) into one held in memory and
written later, in order (see there).

Every write also comes as an ``*_async`` method for the event loop: the same write, durable
when the await returns, but the loop runs on meanwhile (SQLite: a writer thread commits the
writes queued meanwhile together, one ``fsync`` for the group). While the daemon serves, it
writes only through those; the blocking ones are for tools (the CLI, ``replay``, tests) and for
the daemon's start (before the loop serves anything) and its very end (after it stopped).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol

from canarywatch.errors import CanarywatchError
from canarywatch.model import JSONValue, Notification, NotificationStatus

if TYPE_CHECKING:
    from canarywatch.sinks import SinkMemory

SCHEMA_VERSION = 3
"""The layout this canarywatch writes; a database with a newer one is refused, not guessed at.

2: ``outbox_events`` indexes the events of pending and dead outbox items (``outbox_holds``).
3: ``outbox.next_attempt_us``: when a pending item's next delivery attempt is due."""

SCHEMA_VERSION_KEY = "schema_version"
"""The reserved ``meta`` key holding the schema version; ``set_meta`` refuses it."""

DB_FILENAME = "canarywatch.sqlite3"
"""The database's file name inside the configured ``state.dir``."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StateError(CanarywatchError):
    """The state store cannot be used: unreadable, read-only, full, newer schema, closed.

    The message names the database path and what was being done, so the operator can act.
    """


class StateUnwritable(StateError):
    """A write failed for a reason that can pass: the disk or a quota is full (ENOSPC, EDQUOT,
    SQLite's "database or disk is full"), the filesystem went read-only (EROFS), an I/O error
    (EIO), or another process held the lock too long. Retrying the same write later can succeed.

    ``errno_name`` is the operating system's reason when it could be found (``"ENOSPC"``),
    ``code`` SQLite's (``"SQLITE_FULL"``); either may be empty.
    """

    def __init__(self, message: str, *, code: str = "", errno_name: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.errno_name = errno_name


class StateHeld(StateError):
    """The notification could not be made durable now and is *held in memory*: it will be
    written, in order, once the store takes writes again (``HoldingStateStore``).

    Raised by ``HoldingStateStore.outbox_put`` instead of returning an id, so that a caller
    that would act on a durable item (queue it for delivery) does not; the held item reaches
    the outbox, with an id, when it is written.
    """


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One queued delivery: pending, or dead (``outbox_dead_letters``)."""

    id: int
    receiver: str
    notification: Notification
    created_at: datetime
    attempts: int
    last_error: str | None
    """Why the latest attempt failed, in plain words (``dispatch.describe_failure``: the host
    that refused the connection, the file that cannot be written, the HTTP status)."""
    last_attempt_at: datetime | None = None
    """When the latest failed attempt was recorded."""
    next_attempt_at: datetime | None = None
    """When a pending item's next attempt is due (the dispatcher's backoff); ``None`` when no
    retry is scheduled (not attempted yet, dead, or the attempts ended with the process)."""


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """A silence added at run time; mutes events matching all ``matchers`` while active."""

    id: str
    matchers: tuple[str, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    def active(self, at: datetime) -> bool:
        """In force at ``at``: started, not yet ended (``starts_at <= at < ends_at``)."""
        return self.starts_at <= at < self.ends_at

    def expired(self, at: datetime) -> bool:
        """Over for good at ``at`` (``ends_at <= at``)."""
        return self.ends_at <= at


class LastNotification(NamedTuple):
    """The latest notification log record of one aggregation group for one receiver.

    A notification carries one status, so one of the two sets is empty; it unpacks as
    ``at, firing, resolved``.
    """

    at: datetime
    firing: frozenset[str]
    resolved: frozenset[str]


class StateStore(Protocol):
    """Everything canarywatch persists (see the module docstring). Backends: SQLite, memory.

    Unknown ids are not errors: an operator may drop an outbox item (``canarywatch outbox``)
    while the daemon is delivering it, so ``outbox_attempted``/``outbox_done``/``outbox_dead``
    on a missing item do nothing and the ``bool`` operations answer ``False``.
    """

    # -- notification log -------------------------------------------------------------------

    def record_notification(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        """Record that ``receiver`` was sent ``fingerprints`` of ``group_key`` with ``status``."""
        ...

    async def record_notification_async(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        """``record_notification``, awaited off the event loop: durable when it returns."""
        ...

    def sent(self, receiver: str, fingerprint: str, status: NotificationStatus) -> datetime | None:
        """When ``fingerprint`` was last sent to ``receiver`` with ``status``; ``None``: never
        (or longer ago than the retention)."""
        ...

    def last_notification(self, receiver: str, group_key: str) -> LastNotification | None:
        """The group's latest record (ties on time: the one recorded last)."""
        ...

    # -- outbox -----------------------------------------------------------------------------

    def outbox_put(self, receiver: str, notification: Notification, at: datetime) -> int:
        """Queue ``notification`` for ``receiver``; returns its id (ids are never reused)."""
        ...

    def outbox_put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        """Queue each ``(receiver, notification)`` and save ``canary_states`` (correlator
        snapshots, as ``save_canary_states``) in ONE transaction; returns the ids in order.

        The pipeline commits a batch this way: the notifications its transitions produced and
        the state that says "these transitions were seen" are durable together or not at all,
        so a crash between the two cannot leave rows that the next start derives again.
        """
        ...

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        """``outbox_put_many``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_holds(self, receiver: str, fingerprint: str, status: NotificationStatus) -> bool:
        """Whether a pending or dead item for ``receiver`` carries the event ``fingerprint``
        with ``status``: accepted already, so the same event again is a duplicate (with
        ``sent``, what acceptance checks)."""
        ...

    def outbox_pending(self, receiver: str | None = None, *, limit: int = 100) -> list[OutboxItem]:
        """Pending items, oldest first (by ``created_at``, then id), at most ``limit``."""
        ...

    def outbox_attempted(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        """Count one failed attempt of a pending item and remember why (``error_reason``, in
        plain words) and when the next one is due (``None``: none is scheduled). One small
        update, written at every failed attempt, never at a success."""
        ...

    async def outbox_attempted_async(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        """``outbox_attempted``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_done(self, id: int, at: datetime) -> None:
        """Mark delivered and, in the same transaction, record it in the notification log.

        Also accepted for a dead item (it was delivered after all); a no-op when already done.
        """
        ...

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        """``outbox_done``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_dead(self, id: int, reason: str) -> None:
        """Give up on a pending item: it becomes a dead letter with ``reason``."""
        ...

    async def outbox_dead_async(self, id: int, reason: str) -> None:
        """``outbox_dead``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_item(self, id: int) -> OutboxItem | None:
        """The item ``id`` while it is pending or dead; ``None`` once done, dropped or unknown."""
        ...

    def outbox_dead_letters(self) -> list[OutboxItem]:
        """Dead items, oldest first. Never garbage-collected: an operator retries or drops."""
        ...

    def outbox_retry(self, id: int) -> bool:
        """Dead -> pending with ``attempts`` and the next attempt reset (the last error is
        kept); ``False`` when ``id`` is not dead."""
        ...

    async def outbox_retry_async(self, id: int) -> bool:
        """``outbox_retry``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_drop(self, id: int) -> bool:
        """Delete the item whatever its state; ``False`` when there is none."""
        ...

    async def outbox_drop_async(self, id: int) -> bool:
        """``outbox_drop``, awaited off the event loop: durable when it returns."""
        ...

    def outbox_depth(self, receiver: str) -> int:
        """How many items are pending for ``receiver``."""
        ...

    def outbox_depths(self) -> dict[str, int]:
        """How many items are pending, per receiver (receivers with none are left out)."""
        ...

    def outbox_oldest_age_s(self, receiver: str, now: datetime) -> float | None:
        """Age at ``now`` of ``receiver``'s oldest pending item (never negative); ``None``
        when nothing is pending."""
        ...

    # -- silences ---------------------------------------------------------------------------

    def add_silence(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """Store a silence and return its new id (a UUID). ``ends_at`` must follow
        ``starts_at`` and ``matchers`` must not be empty (``ValueError``)."""
        ...

    async def add_silence_async(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        """``add_silence``, awaited off the event loop: durable when it returns."""
        ...

    def silences(self, *, include_expired: bool = False) -> list[SilenceRecord]:
        """Silences in the order they were added; without ``include_expired`` only those not
        expired at the clock's ``now()`` (active or still to start)."""
        ...

    def expire_silence(self, id: str, at: datetime) -> bool:
        """End the silence at ``at`` (one still to start ends before it begins); ``False``
        when unknown or already expired at ``at``."""
        ...

    async def expire_silence_async(self, id: str, at: datetime) -> bool:
        """``expire_silence``, awaited off the event loop: durable when it returns."""
        ...

    # -- sink memory, correlator snapshots, meta --------------------------------------------

    def sink_memory(self, receiver: str) -> SinkMemory:
        """The durable ``SinkMemory`` of ``receiver`` (keys are scoped per receiver).

        Its ``put_async`` waits off the event loop (``sink_memory_put_async``); the built-in
        sinks use it. ``put`` stays for plugins written before it and blocks the loop until the
        write is durable."""
        ...

    async def sink_memory_put_async(
        self, receiver: str, key: str, value: Mapping[str, str]
    ) -> None:
        """``sink_memory(receiver).put(key, value)``, awaited off the event loop: durable when
        it returns."""
        ...

    def save_canary_state(self, key: str, data: Mapping[str, JSONValue]) -> None:
        """Store one canary's correlator snapshot under ``cluster/namespace/name``."""
        ...

    def save_canary_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        """Store several canaries' snapshots in one transaction (the snapshot at drain)."""
        ...

    async def save_canary_states_async(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        """``save_canary_states``, awaited off the event loop: durable when it returns."""
        ...

    def load_canary_states(self) -> dict[str, JSONValue]:
        """Every stored canary snapshot by key (what ``Correlator.restore`` takes)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None:
        """Store a small named string; the key ``schema_version`` is reserved (``ValueError``)."""
        ...

    async def set_meta_async(self, key: str, value: str) -> None:
        """``set_meta``, awaited off the event loop: durable when it returns."""
        ...

    # -- housekeeping -----------------------------------------------------------------------

    def gc(self, now: datetime, *, retention_s: float) -> int:
        """Delete notification-log records, done outbox items and expired silences that ended
        more than ``retention_s`` before ``now``; returns how many were deleted. Pending items
        and dead letters are kept."""
        ...

    async def gc_async(self, now: datetime, *, retention_s: float) -> int:
        """``gc``, awaited off the event loop (the housekeeping task's retention pass)."""
        ...

    def size_bytes(self) -> int:
        """Roughly how much the stored state takes (for a gauge)."""
        ...

    def close(self) -> None:
        """Release the store; every later call raises ``StateError``. Idempotent."""
        ...


# --- helpers shared by the backends ------------------------------------------------------------


def to_us(at: datetime, what: str = "time") -> int:
    """``at`` as integer microseconds since the Unix epoch; refuses naive datetimes."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {at.isoformat()}")
    return (at - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """The inverse of ``to_us``, in UTC."""
    return _EPOCH + timedelta(microseconds=us)


def check_meta_key(key: str) -> None:
    if key == SCHEMA_VERSION_KEY:
        raise ValueError(f"meta key {key!r} is reserved for the store itself")


def check_silence(matchers: Sequence[str], starts_at: datetime, ends_at: datetime) -> None:
    if isinstance(matchers, str) or not matchers:
        raise ValueError("a silence needs at least one matcher (a sequence of strings)")
    if to_us(ends_at, "ends_at") <= to_us(starts_at, "starts_at"):
        raise ValueError("a silence's ends_at must be after its starts_at")


def check_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")


def check_sink_value(value: Mapping[str, str]) -> dict[str, str]:
    """A plain copy of a sink memory value, refusing anything but ``str -> str``."""
    out = dict(value)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("sink memory values are mappings of str to str")
    return out


class BoundSinkMemory:
    """A ``SinkMemory`` view of one receiver's rows in a store (every backend uses it)."""

    __slots__ = ("_get", "_put", "_put_async", "receiver")

    def __init__(
        self,
        receiver: str,
        get: Callable[[str, str], Mapping[str, str] | None],
        put: Callable[[str, str, Mapping[str, str]], None],
        put_async: Callable[[str, str, Mapping[str, str]], Awaitable[None]],
    ) -> None:
        self.receiver = receiver
        self._get = get
        self._put = put
        self._put_async = put_async

    def get(self, key: str) -> Mapping[str, str] | None:
        return self._get(self.receiver, key)

    def put(self, key: str, value: Mapping[str, str]) -> None:
        self._put(self.receiver, key, value)

    async def put_async(self, key: str, value: Mapping[str, str]) -> None:
        await self._put_async(self.receiver, key, value)

    def __repr__(self) -> str:
        return f"BoundSinkMemory(receiver={self.receiver!r})"
