"""``SqliteStateStore``: the ``StateStore`` in one SQLite file under ``state.dir``.

Writes happen off the event loop, committed in groups: one writer thread owns the write
connection (``writer.GroupCommitWriter``). Each write is a job; the jobs queued while a commit
is in progress share the next transaction, so under load many writes share one ``fsync``. Every
write has an ``*_async`` twin (what the daemon calls from the event loop: delivery, the control
API, housekeeping, the catch-up after a disk failure), which awaits the job's future; the plain
methods block their caller until it completes (tools, tests, the daemon's start and end). Either
way a write returns only once its transaction is committed, as before: "durable when the call
returns" still holds.

Durability: WAL journal, ``synchronous=FULL``, and a write's future completes only after the
``COMMIT`` of the transaction holding it. A ``kill -9`` right after any acknowledged write
therefore loses nothing (the committed frames are in the WAL file), and with ``FULL`` neither
does a power cut: an outbox item that was accepted is never silently lost. (``NORMAL`` would
skip the fsync, still survive ``kill -9``, and could lose the last commits on power loss.)
``BEGIN IMMEDIATE`` takes the write lock up front, so the CLI (``canarywatch outbox``,
``canarywatch silence``) can write to the same file while the daemon runs; a busy lock is
waited for up to ``BUSY_TIMEOUT_S``, in the writer thread, not on the event loop.

Reads use a second connection (WAL readers never wait for the writer or its fsync), under one
lock so any thread may read; they see every write that has been acknowledged.

Schema: versioned in the ``meta`` table (key ``schema_version``). A database written by a
newer canarywatch is refused with a ``StateError`` rather than misread; older versions are
migrated forward in one transaction when opened (a database already at this version is only
read, so an existing store opens on a full disk). Every ``sqlite3`` failure (read-only file or
directory, full disk, not a database, locked) becomes a ``StateError`` naming the path; one that
can pass (full disk or quota, read-only filesystem, I/O error, a lock held too long) is a
``StateUnwritable``, whose message also carries the operating system's reason (``ENOSPC``,
``EDQUOT``, ``EROFS``, ``EIO``) found by writing one page next to the database, since SQLite
reports most of them as a bare "disk I/O error".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import math
import os
import sqlite3
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self, TypeVar

from canarywatch.clock import Clock, waiting_off_loop
from canarywatch.formats.jsonout import dumps
from canarywatch.identity import fingerprint
from canarywatch.model import JSONValue, Notification, NotificationStatus
from canarywatch.state.base import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    BoundSinkMemory,
    LastNotification,
    OutboxItem,
    SilenceRecord,
    StateError,
    StateUnwritable,
    check_limit,
    check_meta_key,
    check_silence,
    check_sink_value,
    from_us,
    to_us,
)
from canarywatch.state.codec import decode_notification, encode_notification
from canarywatch.state.writer import GroupCommitWriter, rollback

T = TypeVar("T")

if TYPE_CHECKING:
    from canarywatch.sinks import SinkMemory

BUSY_TIMEOUT_S = 5.0
"""How long a write waits for another process (the CLI) holding the write lock."""

_SCHEMA_V1 = (
    """CREATE TABLE nflog (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        receiver TEXT NOT NULL,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        fingerprints TEXT NOT NULL
    )""",
    "CREATE INDEX nflog_group ON nflog (receiver, group_key, at_us)",
    "CREATE INDEX nflog_at ON nflog (at_us)",
    """CREATE TABLE nflog_sent (
        receiver TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        PRIMARY KEY (receiver, fingerprint, status)
    ) WITHOUT ROWID""",
    "CREATE INDEX nflog_sent_at ON nflog_sent (at_us)",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        receiver TEXT NOT NULL,
        notification TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'dead', 'done')),
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_attempt_us INTEGER,
        finished_us INTEGER
    )""",
    "CREATE INDEX outbox_queue ON outbox (state, receiver, created_us, id)",
    """CREATE TABLE silences (
        id TEXT NOT NULL UNIQUE,
        matchers TEXT NOT NULL,
        starts_us INTEGER NOT NULL,
        ends_us INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL
    )""",
    """CREATE TABLE sink_memory (
        receiver TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_us INTEGER NOT NULL,
        PRIMARY KEY (receiver, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE canary_state (
        key TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        saved_us INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

_OUTBOX_EVENTS = (
    """CREATE TABLE outbox_events (
        receiver TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        outbox_id INTEGER NOT NULL,
        PRIMARY KEY (receiver, fingerprint, status, outbox_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX outbox_events_item ON outbox_events (outbox_id)",
)
"""The events of pending and dead outbox items, so acceptance finds a duplicate in one lookup."""


def _index_outbox_events(conn: sqlite3.Connection) -> None:
    """Version 1 -> 2: index the events of the items already pending or dead."""
    rows = conn.execute(
        "SELECT id, receiver, notification FROM outbox WHERE state != ?", (_DONE,)
    ).fetchall()
    for id_, receiver, text in rows:
        try:
            n = decode_notification(json.loads(text))
        except ValueError:
            continue  # an unreadable item is reported when it is read; nothing to index
        _insert_outbox_events(conn, id_, receiver, n)


def _insert_outbox_events(
    conn: sqlite3.Connection, id_: int, receiver: str, n: Notification
) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO outbox_events (receiver, fingerprint, status, outbox_id)"
        " VALUES (?, ?, ?, ?)",
        [(receiver, fingerprint(ev), n.status.value, id_) for ev in n.events],
    )


_NEXT_ATTEMPT = ("ALTER TABLE outbox ADD COLUMN next_attempt_us INTEGER",)
"""When a pending item's next delivery attempt is due (``canarywatch outbox list``)."""

_MIGRATIONS: Mapping[int, Sequence[str | Callable[[sqlite3.Connection], None]]] = {
    1: (*_OUTBOX_EVENTS, _index_outbox_events),
    2: _NEXT_ATTEMPT,
}
"""Statements (or functions of the connection) taking version ``n`` to ``n + 1``."""

_HINTS = {
    "SQLITE_READONLY": "the database is read-only (check the permissions of the file and its "
    "directory, and that the filesystem is mounted read-write)",
    "SQLITE_FULL": "the disk (or the database's size limit) is full",
    "SQLITE_CANTOPEN": "the file cannot be opened (check that its directory exists and is "
    "writable and that the path is not a directory)",
    "SQLITE_NOTADB": "the file is not a canarywatch state database (move it aside)",
    "SQLITE_CORRUPT": "the database is corrupt (move it aside)",
    "SQLITE_BUSY": "another process held the database lock for too long",
    "SQLITE_LOCKED": "another process held the database lock for too long",
    "SQLITE_IOERR": "an I/O error occurred",
    "SQLITE_PERM": "permission denied",
}


_PASSING = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")
"""Failures of the disk under the database: a write may succeed later (``StateUnwritable``)."""
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
"""Another process held the lock too long: also worth retrying, nothing to probe."""

_ERRNO_HINTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EROFS: "the filesystem is read-only",
    errno.EIO: "an I/O error occurred",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
}

_PROBE_BYTES = 4096
"""What the write probe writes and syncs: one page, as a small SQLite commit would."""


def _code(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", None) or ""


def _is(code: str, prefixes: Sequence[str]) -> bool:
    return any(code == p or code.startswith(p + "_") for p in prefixes)


def _hint(exc: sqlite3.Error) -> str:
    name = _code(exc)
    for prefix, hint in _HINTS.items():
        if _is(name, (prefix,)):
            return hint
    return "the database reported an error"


def probe_write(directory: Path) -> OSError | None:
    """Create, write and fsync one page in ``directory``, then remove it: ``None`` when that
    works, else the ``OSError`` saying why (its ``errno`` is ENOSPC, EDQUOT, EROFS, EIO...)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".canarywatch-probe-", dir=directory)
    except OSError as exc:
        return exc
    try:
        block = memoryview(bytes(_PROBE_BYTES))
        while block:
            block = block[os.write(fd, block) :]
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None


def errno_text(exc: OSError) -> tuple[str, str]:
    """``("ENOSPC", "ENOSPC: No space left on device")`` for an ``OSError``."""
    code = exc.errno if exc.errno is not None else 0
    name = errno.errorcode.get(code, f"errno {code}")
    return name, f"{name}: {exc.strerror or os.strerror(code)}"


_PENDING, _DEAD, _DONE = "pending", "dead", "done"
_ITEM_COLUMNS = (
    "id, receiver, notification, created_us, attempts, last_error, last_attempt_us, next_attempt_us"
)


class SqliteStateStore:
    """A ``StateStore`` in the SQLite file ``path`` (see the module docstring).

    The directory is created with its parents. ``max_size_bytes`` caps the database (writes
    past it fail with a "full" ``StateError``, exactly like a full disk); ``None``: no cap.
    """

    def __init__(self, path: Path, *, clock: Clock, max_size_bytes: int | None = None) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        """Guards the read connection."""
        self._conn: sqlite3.Connection | None = None
        """The read connection; ``None`` once closed."""
        self._writer: GroupCommitWriter | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"state database {self.path}: cannot create its directory "
                f"{self.path.parent}: {exc.strerror or exc}"
            ) from exc
        if self.path.is_dir():
            raise StateError(f"state database {self.path}: the path is a directory, not a file")
        conn = self._connect()
        try:
            self._configure(conn, max_size_bytes)
            self._migrate(conn)
            self._conn = self._connect()
        except BaseException:
            conn.close()
            raise
        self._writer = GroupCommitWriter(
            conn, error=self._error, name=f"state-writer:{self.path.name}"
        )

    def __repr__(self) -> str:
        return f"SqliteStateStore({str(self.path)!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _error(self, what: str, exc: sqlite3.Error) -> StateError:
        code = _code(exc)
        prefix = f"state database {self.path}: cannot {what}"
        if _is(code, _BUSY):
            return StateUnwritable(f"{prefix}: {_hint(exc)} ({exc})", code=code)
        if not _is(code, _PASSING):
            return StateError(f"{prefix}: {_hint(exc)} ({exc})")
        found = probe_write(self.path.parent)
        if found is None or found.errno is None:
            return StateUnwritable(f"{prefix}: {_hint(exc)} ({exc})", code=code)
        name, text = errno_text(found)
        hint = _ERRNO_HINTS.get(found.errno, _hint(exc))
        return StateUnwritable(f"{prefix}: {hint} ({text}; {exc})", code=code, errno_name=name)

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # the writer's thread, or readers under self._lock
            )
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc

    def _configure(self, conn: sqlite3.Connection, max_size_bytes: int | None) -> None:
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            if max_size_bytes is not None:
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                pages = max(math.ceil(max_size_bytes / page_size), 1)
                conn.execute(f"PRAGMA max_page_count={int(pages)}")
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        if str(mode).lower() != "wal":
            raise StateError(
                f"state database {self.path}: cannot open: the filesystem does not support "
                f"SQLite's WAL journal (journal_mode is {mode!r})"
            )

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction on ``conn`` outside the writer (opening, before it starts)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            raise self._error(what, exc) from exc
        except BaseException:
            rollback(conn)
            raise

    def _submit(
        self, what: str, work: Callable[[sqlite3.Connection], T]
    ) -> concurrent.futures.Future[T]:
        closed = StateError(f"state database {self.path}: the store is closed")
        if self._writer is None:
            raise closed
        return self._writer.submit(what, work, closed)

    def _commit(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a write transaction (shared with other writes queued meanwhile) and
        block until it is committed."""
        return self._submit(what, work).result()

    async def _commit_async(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """``_commit`` without blocking the event loop. Cancelling the caller does not take a
        queued write back: it is committed all the same (as a blocking write would have been)."""
        with waiting_off_loop(self._clock):
            return await asyncio.shield(asyncio.wrap_future(self._submit(what, work)))

    @property
    def commits(self) -> int:
        """Write transactions committed since opened (one ``fsync`` each)."""
        return self._writer.commits if self._writer is not None else 0

    @contextmanager
    def _read(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(what, exc) from exc

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StateError(f"state database {self.path}: the store is closed")
        return self._conn

    def _stored_version(self, conn: sqlite3.Connection) -> str | None:
        try:
            table = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            if table is None:
                return None
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (SCHEMA_VERSION_KEY,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc
        return None if row is None else str(row[0])

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if self._stored_version(conn) == str(SCHEMA_VERSION):
            return  # nothing to write, so an existing store opens even on a full disk
        with self._transaction(conn, "open"):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                " WITHOUT ROWID"
            )
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_VERSION_KEY,))
            found = row.fetchone()
            if found is None:
                for statement in (*_SCHEMA_V1, *_OUTBOX_EVENTS, *_NEXT_ATTEMPT):
                    conn.execute(statement)
                version = SCHEMA_VERSION
            else:
                try:
                    version = int(found[0])
                except ValueError:
                    raise StateError(
                        f"state database {self.path}: unreadable schema version {found[0]!r}"
                    ) from None
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.path} has schema version {version}, newer than "
                    f"this canarywatch understands ({SCHEMA_VERSION}): upgrade canarywatch, "
                    f"or point state.dir at another directory"
                )
            while version < SCHEMA_VERSION:
                for step in _MIGRATIONS[version]:
                    if callable(step):
                        step(conn)
                    else:
                        conn.execute(step)
                version += 1
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (SCHEMA_VERSION_KEY, str(version)),
            )

    def _unreadable(self, what: str, exc: ValueError) -> StateError:
        return StateError(f"state database {self.path}: {what} is unreadable: {exc}")

    def _notification(self, id: int, text: str) -> Notification:
        """The stored notification of outbox item ``id``; ``StateError`` when unreadable."""
        try:
            return decode_notification(json.loads(text))
        except ValueError as exc:
            raise self._unreadable(f"outbox item {id}", exc) from exc

    # -- notification log -------------------------------------------------------------------

    def record_notification(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        self._commit(*self._record_job(receiver, group_key, status, fingerprints, at))

    async def record_notification_async(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> None:
        await self._commit_async(*self._record_job(receiver, group_key, status, fingerprints, at))

    def _record_job(
        self,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at: datetime,
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        at_us = to_us(at)
        status = NotificationStatus(status)
        fps = tuple(fingerprints)

        def work(conn: sqlite3.Connection) -> None:
            self._record(conn, receiver, group_key, status, fps, at_us)

        return "record a notification", work

    @staticmethod
    def _record(
        conn: sqlite3.Connection,
        receiver: str,
        group_key: str,
        status: NotificationStatus,
        fingerprints: Sequence[str],
        at_us: int,
    ) -> None:
        fps = sorted(set(fingerprints))
        conn.execute(
            "INSERT INTO nflog (receiver, group_key, status, at_us, fingerprints)"
            " VALUES (?, ?, ?, ?, ?)",
            (receiver, group_key, status.value, at_us, dumps(fps)),
        )
        conn.executemany(
            "INSERT INTO nflog_sent (receiver, fingerprint, status, at_us) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (receiver, fingerprint, status)"
            " DO UPDATE SET at_us = max(at_us, excluded.at_us)",
            [(receiver, fp, status.value, at_us) for fp in fps],
        )

    def sent(self, receiver: str, fingerprint: str, status: NotificationStatus) -> datetime | None:
        with self._read("look up the notification log") as conn:
            row = conn.execute(
                "SELECT at_us FROM nflog_sent WHERE receiver = ? AND fingerprint = ?"
                " AND status = ?",
                (receiver, fingerprint, NotificationStatus(status).value),
            ).fetchone()
        return from_us(row[0]) if row is not None else None

    def last_notification(self, receiver: str, group_key: str) -> LastNotification | None:
        with self._read("look up the notification log") as conn:
            row = conn.execute(
                "SELECT at_us, status, fingerprints FROM nflog"
                " WHERE receiver = ? AND group_key = ? ORDER BY at_us DESC, id DESC LIMIT 1",
                (receiver, group_key),
            ).fetchone()
        if row is None:
            return None
        fps = frozenset(json.loads(row[2]))
        firing = row[1] == NotificationStatus.FIRING.value
        return LastNotification(
            at=from_us(row[0]),
            firing=fps if firing else frozenset(),
            resolved=frozenset() if firing else fps,
        )

    # -- outbox -----------------------------------------------------------------------------

    def outbox_put(self, receiver: str, notification: Notification, at: datetime) -> int:
        return self.outbox_put_many([(receiver, notification)], at)[0]

    def outbox_put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        return self._commit(*self._put_many(items, at, canary_states))

    async def outbox_put_many_async(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        *,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None = None,
    ) -> list[int]:
        return await self._commit_async(*self._put_many(items, at, canary_states))

    def _put_many(
        self,
        items: Sequence[tuple[str, Notification]],
        at: datetime,
        canary_states: Mapping[str, Mapping[str, JSONValue]] | None,
    ) -> tuple[str, Callable[[sqlite3.Connection], list[int]]]:
        """What to write for ``outbox_put_many``, encoded now (in the caller's thread)."""
        created_us = to_us(at)
        texts = [(receiver, n, dumps(encode_notification(n))) for receiver, n in items]
        states = [(key, dumps(dict(data))) for key, data in (canary_states or {}).items()]

        def work(conn: sqlite3.Connection) -> list[int]:
            ids: list[int] = []
            for receiver, n, text in texts:
                cur = conn.execute(
                    "INSERT INTO outbox (receiver, notification, created_us, state)"
                    " VALUES (?, ?, ?, ?)",
                    (receiver, text, created_us, _PENDING),
                )
                id_ = cur.lastrowid
                if id_ is None:  # pragma: no cover - an INSERT into a rowid table always sets it
                    raise StateError(f"state database {self.path}: outbox insert returned no id")
                _insert_outbox_events(conn, id_, receiver, n)
                ids.append(id_)
            if states:
                self._save_states(conn, states)
            return ids

        return "queue notifications in the outbox", work

    def outbox_holds(self, receiver: str, fingerprint: str, status: NotificationStatus) -> bool:
        with self._read("read the outbox") as conn:
            row = conn.execute(
                "SELECT 1 FROM outbox_events WHERE receiver = ? AND fingerprint = ?"
                " AND status = ? LIMIT 1",
                (receiver, fingerprint, NotificationStatus(status).value),
            ).fetchone()
        return row is not None

    def _item(
        self, row: tuple[int, str, str, int, int, str | None, int | None, int | None]
    ) -> OutboxItem:
        id_, receiver, text, created_us, attempts, last_error, last_us, next_us = row
        return OutboxItem(
            id=id_,
            receiver=receiver,
            notification=self._notification(id_, text),
            created_at=from_us(created_us),
            attempts=attempts,
            last_error=last_error,
            last_attempt_at=from_us(last_us) if last_us is not None else None,
            next_attempt_at=from_us(next_us) if next_us is not None else None,
        )

    def outbox_pending(self, receiver: str | None = None, *, limit: int = 100) -> list[OutboxItem]:
        check_limit(limit)
        with self._read("read the outbox") as conn:
            if receiver is None:
                rows = conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE state = ?"  # noqa: S608 - constant
                    " ORDER BY created_us, id LIMIT ?",
                    (_PENDING, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE state = ?"  # noqa: S608 - constant
                    " AND receiver = ? ORDER BY created_us, id LIMIT ?",
                    (_PENDING, receiver, limit),
                ).fetchall()
        return [self._item(r) for r in rows]

    def outbox_attempted(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        self._commit(*self._attempted(id, error_reason, next_attempt_at))

    async def outbox_attempted_async(
        self, id: int, error_reason: str, *, next_attempt_at: datetime | None = None
    ) -> None:
        await self._commit_async(*self._attempted(id, error_reason, next_attempt_at))

    def _attempted(
        self, id: int, error_reason: str, next_attempt_at: datetime | None
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        now_us = to_us(self._clock.now())
        next_us = None if next_attempt_at is None else to_us(next_attempt_at, "next_attempt_at")

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, last_attempt_us = ?,"
                " next_attempt_us = ? WHERE id = ? AND state = ?",
                (error_reason, now_us, next_us, id, _PENDING),
            )

        return "update the outbox", work

    def outbox_done(self, id: int, at: datetime) -> None:
        self._commit(*self._done(id, at))

    async def outbox_done_async(self, id: int, at: datetime) -> None:
        await self._commit_async(*self._done(id, at))

    def _done(self, id: int, at: datetime) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        at_us = to_us(at)

        def work(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT receiver, notification, state FROM outbox WHERE id = ?", (id,)
            ).fetchone()
            if row is None or row[2] == _DONE:
                return
            n = self._notification(id, row[1])
            fps = [fingerprint(ev) for ev in n.events]
            self._record(conn, row[0], n.group_key, n.status, fps, at_us)
            conn.execute(
                "UPDATE outbox SET state = ?, finished_us = ? WHERE id = ?", (_DONE, at_us, id)
            )
            conn.execute("DELETE FROM outbox_events WHERE outbox_id = ?", (id,))

        return "mark an outbox item delivered", work

    def outbox_dead(self, id: int, reason: str) -> None:
        self._commit(*self._dead(id, reason))

    async def outbox_dead_async(self, id: int, reason: str) -> None:
        await self._commit_async(*self._dead(id, reason))

    def _dead(self, id: int, reason: str) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        now_us = to_us(self._clock.now())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE outbox SET state = ?, last_error = ?, finished_us = ?,"
                " next_attempt_us = NULL WHERE id = ? AND state = ?",
                (_DEAD, reason, now_us, id, _PENDING),
            )

        return "update the outbox", work

    def outbox_item(self, id: int) -> OutboxItem | None:
        with self._read("read the outbox") as conn:
            row = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE id = ? AND state != ?",  # noqa: S608 - constant
                (id, _DONE),
            ).fetchone()
        return self._item(row) if row is not None else None

    def outbox_dead_letters(self) -> list[OutboxItem]:
        with self._read("read the outbox") as conn:
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM outbox WHERE state = ?"  # noqa: S608 - constant
                " ORDER BY created_us, id",
                (_DEAD,),
            ).fetchall()
        return [self._item(r) for r in rows]

    def outbox_retry(self, id: int) -> bool:
        return self._commit(*self._retry(id))

    async def outbox_retry_async(self, id: int) -> bool:
        return await self._commit_async(*self._retry(id))

    @staticmethod
    def _retry(id: int) -> tuple[str, Callable[[sqlite3.Connection], bool]]:
        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE outbox SET state = ?, attempts = 0, finished_us = NULL,"
                " next_attempt_us = NULL WHERE id = ? AND state = ?",
                (_PENDING, id, _DEAD),
            )
            return cur.rowcount > 0

        return "update the outbox", work

    def outbox_drop(self, id: int) -> bool:
        return self._commit(*self._drop(id))

    async def outbox_drop_async(self, id: int) -> bool:
        return await self._commit_async(*self._drop(id))

    @staticmethod
    def _drop(id: int) -> tuple[str, Callable[[sqlite3.Connection], bool]]:
        def work(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM outbox_events WHERE outbox_id = ?", (id,))
            return conn.execute("DELETE FROM outbox WHERE id = ?", (id,)).rowcount > 0

        return "update the outbox", work

    def outbox_depth(self, receiver: str) -> int:
        with self._read("read the outbox") as conn:
            row = conn.execute(
                "SELECT count(*) FROM outbox WHERE state = ? AND receiver = ?",
                (_PENDING, receiver),
            ).fetchone()
        return int(row[0])

    def outbox_depths(self) -> dict[str, int]:
        with self._read("read the outbox") as conn:
            rows = conn.execute(
                "SELECT receiver, count(*) FROM outbox WHERE state = ?"
                " GROUP BY receiver ORDER BY receiver",
                (_PENDING,),
            ).fetchall()
        return {str(receiver): int(count) for receiver, count in rows}

    def outbox_oldest_age_s(self, receiver: str, now: datetime) -> float | None:
        now_us = to_us(now)
        with self._read("read the outbox") as conn:
            row = conn.execute(
                "SELECT min(created_us) FROM outbox WHERE state = ? AND receiver = ?",
                (_PENDING, receiver),
            ).fetchone()
        if row is None or row[0] is None:
            return None
        return max(now_us - int(row[0]), 0) / 1e6

    # -- silences ---------------------------------------------------------------------------

    def add_silence(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        sid, what, work = self._add_silence(matchers, starts_at, ends_at, created_by, comment)
        self._commit(what, work)
        return sid

    async def add_silence_async(
        self,
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> str:
        sid, what, work = self._add_silence(matchers, starts_at, ends_at, created_by, comment)
        await self._commit_async(what, work)
        return sid

    @staticmethod
    def _add_silence(
        matchers: Sequence[str],
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> tuple[str, str, Callable[[sqlite3.Connection], None]]:
        check_silence(matchers, starts_at, ends_at)
        sid = str(uuid.uuid4())
        row = (
            sid,
            json.dumps(list(matchers), ensure_ascii=False),
            to_us(starts_at),
            to_us(ends_at),
            created_by,
            comment,
        )

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO silences (id, matchers, starts_us, ends_us, created_by, comment)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

        return sid, "add a silence", work

    def silences(self, *, include_expired: bool = False) -> list[SilenceRecord]:
        now_us = to_us(self._clock.now())
        query = "SELECT id, matchers, starts_us, ends_us, created_by, comment FROM silences"
        where, args = ("", ()) if include_expired else (" WHERE ends_us > ?", (now_us,))
        with self._read("read silences") as conn:
            rows = conn.execute(query + where + " ORDER BY rowid", args).fetchall()
        return [
            SilenceRecord(
                id=r[0],
                matchers=tuple(json.loads(r[1])),
                starts_at=from_us(r[2]),
                ends_at=from_us(r[3]),
                created_by=r[4],
                comment=r[5],
            )
            for r in rows
        ]

    def expire_silence(self, id: str, at: datetime) -> bool:
        return self._commit(*self._expire(id, at))

    async def expire_silence_async(self, id: str, at: datetime) -> bool:
        return await self._commit_async(*self._expire(id, at))

    @staticmethod
    def _expire(id: str, at: datetime) -> tuple[str, Callable[[sqlite3.Connection], bool]]:
        at_us = to_us(at)

        def work(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE silences SET starts_us = min(starts_us, ?), ends_us = ?"
                " WHERE id = ? AND ends_us > ?",
                (at_us, at_us, id, at_us),
            )
            return cur.rowcount > 0

        return "expire a silence", work

    # -- sink memory, correlator snapshots, meta --------------------------------------------

    def sink_memory(self, receiver: str) -> SinkMemory:
        return BoundSinkMemory(receiver, self._sink_get, self._sink_put, self.sink_memory_put_async)

    def _sink_get(self, receiver: str, key: str) -> Mapping[str, str] | None:
        with self._read("read sink memory") as conn:
            row = conn.execute(
                "SELECT value FROM sink_memory WHERE receiver = ? AND key = ?", (receiver, key)
            ).fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        return {str(k): str(v) for k, v in value.items()}

    def _sink_put(self, receiver: str, key: str, value: Mapping[str, str]) -> None:
        self._commit(*self._sink_job(receiver, key, value))

    async def sink_memory_put_async(
        self, receiver: str, key: str, value: Mapping[str, str]
    ) -> None:
        await self._commit_async(*self._sink_job(receiver, key, value))

    def _sink_job(
        self, receiver: str, key: str, value: Mapping[str, str]
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        text = dumps(check_sink_value(value))
        now_us = to_us(self._clock.now())

        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO sink_memory (receiver, key, value, updated_us)"
                " VALUES (?, ?, ?, ?)",
                (receiver, key, text, now_us),
            )

        return "write sink memory", work

    def save_canary_state(self, key: str, data: Mapping[str, JSONValue]) -> None:
        self.save_canary_states({key: data})

    def save_canary_states(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        self._commit(*self._states_job(states))

    async def save_canary_states_async(self, states: Mapping[str, Mapping[str, JSONValue]]) -> None:
        await self._commit_async(*self._states_job(states))

    def _states_job(
        self, states: Mapping[str, Mapping[str, JSONValue]]
    ) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        rows = [(key, dumps(dict(data))) for key, data in states.items()]
        return "save correlator state", lambda conn: self._save_states(conn, rows)

    def _save_states(self, conn: sqlite3.Connection, rows: Sequence[tuple[str, str]]) -> None:
        now_us = to_us(self._clock.now())
        conn.executemany(
            "INSERT OR REPLACE INTO canary_state (key, data, saved_us) VALUES (?, ?, ?)",
            [(key, text, now_us) for key, text in rows],
        )

    def load_canary_states(self) -> dict[str, JSONValue]:
        with self._read("load correlator state") as conn:
            rows = conn.execute("SELECT key, data FROM canary_state ORDER BY key").fetchall()
        return {key: json.loads(text) for key, text in rows}

    def get_meta(self, key: str) -> str | None:
        with self._read("read meta") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row is not None else None

    def set_meta(self, key: str, value: str) -> None:
        self._commit(*self._meta_job(key, value))

    async def set_meta_async(self, key: str, value: str) -> None:
        await self._commit_async(*self._meta_job(key, value))

    @staticmethod
    def _meta_job(key: str, value: str) -> tuple[str, Callable[[sqlite3.Connection], None]]:
        check_meta_key(key)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

        return "write meta", work

    # -- housekeeping -----------------------------------------------------------------------

    def gc(self, now: datetime, *, retention_s: float) -> int:
        return self._commit(*self._gc(now, retention_s))

    async def gc_async(self, now: datetime, *, retention_s: float) -> int:
        return await self._commit_async(*self._gc(now, retention_s))

    @staticmethod
    def _gc(now: datetime, retention_s: float) -> tuple[str, Callable[[sqlite3.Connection], int]]:
        cutoff = to_us(now) - round(retention_s * 1e6)

        def work(conn: sqlite3.Connection) -> int:
            deleted: int = conn.execute("DELETE FROM nflog WHERE at_us < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM nflog_sent WHERE at_us < ?", (cutoff,))
            deleted += conn.execute(
                "DELETE FROM outbox WHERE state = ? AND finished_us < ?", (_DONE, cutoff)
            ).rowcount
            deleted += conn.execute("DELETE FROM silences WHERE ends_us < ?", (cutoff,)).rowcount
            return deleted

        return "garbage-collect", work

    def size_bytes(self) -> int:
        """Bytes in use by live pages (freed pages are reused, so this shrinks after ``gc``)."""
        with self._read("measure the database") as conn:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        """Commit what is queued, stop the writer thread, close both connections."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error as exc:
                    raise self._error("close", exc) from exc
