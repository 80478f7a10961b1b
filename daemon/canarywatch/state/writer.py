"""``GroupCommitWriter``: one thread owns SQLite's write connection and commits in groups.

Why a thread: a commit ends in an ``fsync`` (0.5-2 ms on a VM disk, a tenth of a second on a
saturated network disk) and ``BEGIN IMMEDIATE`` may wait for the CLI's lock; done on the event
loop, either froze the whole daemon. The writer thread does both; an event-loop caller awaits a
future (``SqliteStateStore``'s ``*_async`` methods), a plain caller blocks on it.

Why groups: every write that is queued while a commit is in progress goes into the next
transaction, each in its own ``SAVEPOINT``, and that transaction is committed (one ``fsync``)
before any of their futures completes. So under load many notifications share one fsync, and
still no caller hears "done" before its write is durable.

Failures keep today's per-write meaning. A job that raises anything but a SQLite error (an
unreadable row, a bad argument) is rolled back to its savepoint alone and fails alone. A SQLite
error (disk full, I/O error, lock held too long) inside a group, or at its commit, rolls the
whole transaction back and the group is run again one job per transaction, so each job gets the
outcome it would have had on its own.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from canarywatch.state.base import StateError

T = TypeVar("T")

MAX_GROUP = 500
"""Writes committed together at most: bounds one transaction's size and duration."""

ErrorMapper = Callable[[str, sqlite3.Error], StateError]
"""Turns a SQLite error while doing ``what`` into the store's ``StateError``."""


@dataclass(frozen=True, slots=True)
class _Job:
    what: str
    work: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


_STOP = object()


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back whatever transaction is open (SQLite may have rolled back already)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class GroupCommitWriter:
    """Runs write jobs on ``conn`` in one thread, committing them in groups (module docstring).

    ``conn`` must be opened with ``isolation_level=None`` and ``check_same_thread=False``; the
    writer closes it when it stops.
    """

    def __init__(self, conn: sqlite3.Connection, *, error: ErrorMapper, name: str) -> None:
        self._conn = conn
        self._error = error
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._closing = False
        self._submit_lock = threading.Lock()
        self.commits = 0
        """Transactions committed so far (each one ``fsync``); read it for tests and benchmarks."""
        self.writes = 0
        """Write jobs that completed successfully so far."""
        # A daemon thread: a process that exits without close() must not hang on it; what it
        # had not committed was not acknowledged either.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, what: str, work: Callable[[sqlite3.Connection], T], closed: StateError
    ) -> Future[T]:
        """Queue ``work`` (run inside a transaction on the write connection); the future holds
        its result once the transaction is committed. ``closed`` is raised after ``close()``."""
        future: Future[T] = Future()
        with self._submit_lock:
            if self._closing:
                raise closed
            self._jobs.put(_Job(what, work, future))
        return future

    def close(self) -> None:
        """Finish every write already queued, then stop the thread and close the connection.
        Idempotent."""
        with self._submit_lock:
            if not self._closing:
                self._closing = True
                self._jobs.put(_STOP)
        if self._thread is not threading.current_thread():
            self._thread.join()

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            stop = False
            while not stop:
                group: list[_Job] = []
                item = self._jobs.get()
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, _Job)  # noqa: S101 - only jobs and _STOP are queued
                    group.append(item)
                    if len(group) >= MAX_GROUP:
                        break
                    try:
                        item = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                live = [job for job in group if job.future.set_running_or_notify_cancel()]
                if live:
                    self._commit_group(live)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()

    def _commit_group(self, jobs: list[_Job]) -> None:
        conn = self._conn
        outcomes: list[tuple[_Job, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.work(conn)
                except sqlite3.Error:
                    raise
                except Exception as exc:  # noqa: BLE001 - this job's failure, handed to its caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((job, False, exc))
                    continue
                conn.execute("RELEASE job")
                outcomes.append((job, True, result))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            rollback(conn)
            if len(jobs) == 1:
                jobs[0].future.set_exception(self._error(jobs[0].what, exc))
                return
            for job in jobs:  # one by one: each gets the outcome it would have had alone
                self._commit_group([job])
            return
        except Exception as exc:  # noqa: BLE001 - pragma: no cover; the thread must go on
            rollback(conn)
            for job in jobs:
                job.future.set_exception(exc)
            return
        self.commits += 1
        for job, ok, value in outcomes:
            if ok:
                self.writes += 1
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
