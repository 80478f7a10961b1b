"""The SQLite backend's own promises: durability, crash safety, schema checks, clear errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tests.support.small_disk import TmpfsDisk, small_disk

from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.identity import fingerprint
from canarywatch.model import NotificationStatus, Transition
from canarywatch.state import DB_FILENAME, SqliteStateStore, StateError, StateUnwritable
from canarywatch.testing import T0, make_event, make_notification

FIRING = NotificationStatus.FIRING


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "nested" / DB_FILENAME


def open_store(path: Path, clock: VirtualClock, **kw: int) -> SqliteStateStore:
    return SqliteStateStore(path, clock=clock, **kw)


def test_creates_directories_and_uses_wal(db: Path, clock: VirtualClock) -> None:
    with open_store(db, clock):
        assert db.is_file()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_everything_survives_close_and_reopen(db: Path, clock: VirtualClock) -> None:
    ev = make_event(Transition.HALTED, hints={"spec": "abc"}, rollout="1")
    with open_store(db, clock) as s:
        s.record_notification("team", "g", FIRING, ["fp"], T0)
        pending = s.outbox_put("team", make_notification(ev), T0)
        done = s.outbox_put("team", make_notification(ev), T0)
        s.outbox_done(done, T0 + timedelta(seconds=1))
        dead = s.outbox_put("team", make_notification(), T0)
        s.outbox_dead(dead, "http_4xx")
        sid = s.add_silence(["a=b"], T0, T0 + timedelta(hours=1), "ana", "x")
        s.sink_memory("team").put("thread", {"ts": "1.2"})
        s.save_canary_state("/test/podinfo", {"v": 1})
        s.set_meta("k", "v")
    with open_store(db, clock) as s:
        assert s.sent("team", "fp", FIRING) == T0
        assert s.sent("team", fingerprint(ev), FIRING) == T0 + timedelta(seconds=1)
        assert [i.id for i in s.outbox_pending()] == [pending]
        assert s.outbox_pending()[0].notification == make_notification(ev)
        assert [i.id for i in s.outbox_dead_letters()] == [dead]
        assert [x.id for x in s.silences()] == [sid]
        assert s.sink_memory("team").get("thread") == {"ts": "1.2"}
        assert s.load_canary_states() == {"/test/podinfo": {"v": 1}}
        assert s.get_meta("k") == "v"


def test_two_handles_on_one_file_see_each_others_writes(db: Path, clock: VirtualClock) -> None:
    # The daemon and the CLI (`canarywatch silence add`) share the file.
    with open_store(db, clock) as daemon, open_store(db, clock) as cli:
        sid = cli.add_silence(["a=b"], T0, T0 + timedelta(hours=1), "ana", "x")
        assert [x.id for x in daemon.silences()] == [sid]
        daemon.record_notification("team", "g", FIRING, ["fp"], T0)
        assert cli.sent("team", "fp", FIRING) == T0


def test_one_connection_is_safe_across_threads(db: Path, clock: VirtualClock) -> None:
    errors: list[BaseException] = []
    with open_store(db, clock) as s:

        def work(t: int) -> None:
            try:
                for i in range(25):
                    s.record_notification("team", f"g{t}", FIRING, [f"{t}-{i}"], T0)
                    s.outbox_put(f"r{t}", make_notification(), T0)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        assert all(s.outbox_depth(f"r{t}") == 25 for t in range(4))
        assert all(s.sent("team", f"{t}-24", FIRING) == T0 for t in range(4))


# --- schema ------------------------------------------------------------------------------------


def test_a_newer_schema_is_refused_with_a_clear_error(db: Path, clock: VirtualClock) -> None:
    open_store(db, clock).close()
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StateError, match="schema version 99, newer") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


def test_a_file_that_is_not_a_database_is_refused(db: Path, clock: VirtualClock) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not sqlite, it is a shopping list\n" * 100)
    with pytest.raises(StateError, match="not a canarywatch state database") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


# --- unusable locations (tests run as root, so no chmod: use paths that cannot work) ------------


def test_a_path_below_a_regular_file_is_a_state_error(tmp_path: Path, clock: VirtualClock) -> None:
    blocker = tmp_path / "regular_file"
    blocker.write_text("x")
    path = blocker / "state" / DB_FILENAME
    with pytest.raises(StateError, match="cannot create its directory") as info:
        open_store(path, clock)
    assert str(path) in str(info.value)


def test_a_directory_in_place_of_the_file_is_a_state_error(db: Path, clock: VirtualClock) -> None:
    db.mkdir(parents=True)
    with pytest.raises(StateError, match="is a directory") as info:
        open_store(db, clock)
    assert str(db) in str(info.value)


def test_a_full_database_is_a_state_error_and_loses_nothing_committed(
    db: Path, clock: VirtualClock
) -> None:
    n = make_notification(*(make_event(message="x" * 2000) for _ in range(5)))
    with open_store(db, clock, max_size_bytes=256 * 1024) as s:
        written = 0
        error: StateError | None = None
        for _ in range(1000):
            try:
                s.outbox_put("team", n, T0)
            except StateError as exc:
                error = exc
                break
            written += 1
        assert error is not None
        assert "full" in str(error)
        assert str(db) in str(error)
        assert 0 < written < 1000
        assert s.outbox_depth("team") == written  # the failed write left nothing behind
        assert s.sent("team", "fp", FIRING) is None  # reads still work
        s.outbox_drop(1)  # deleting makes room again
        s.outbox_put("team", make_notification(), T0)
    with open_store(db, clock) as s:
        assert s.outbox_depth("team") == written


def test_a_full_database_can_pass_so_it_is_unwritable_not_broken(
    db: Path, clock: VirtualClock
) -> None:
    """A full disk or database is a ``StateUnwritable`` (worth retrying, the daemon holds the
    write); a file that is not a database is a plain ``StateError`` (it will not pass)."""
    n = make_notification(make_event(message="x" * 6000))
    error: StateError | None = None
    with open_store(db, clock, max_size_bytes=64 * 1024) as s:
        for _ in range(100):
            try:
                s.outbox_put("team", n, T0)
            except StateError as exc:
                error = exc
                break
    assert isinstance(error, StateUnwritable)
    assert error.code == "SQLITE_FULL"
    other = db.parent / "other.sqlite3"
    other.write_text("not a database\n" * 100, encoding="utf-8")
    with pytest.raises(StateError) as refused:
        open_store(other, clock)
    assert not isinstance(refused.value, StateUnwritable)


def test_a_read_only_filesystem_is_named_at_open(tmp_path: Path, clock: VirtualClock) -> None:
    """Unusable at start (read-only mount): one clear error naming the path and EROFS."""
    with small_disk("tmpfs", tmp_path) as disk:
        assert isinstance(disk, TmpfsDisk)
        with disk.store(clock) as s:
            s.set_meta("k", "v")
        disk.remount("ro")
        with pytest.raises(StateUnwritable) as info:
            disk.store(clock)
        disk.remount("rw")
    assert info.value.errno_name == "EROFS"
    assert str(disk.db) in str(info.value)
    assert "the filesystem is read-only (EROFS: Read-only file system" in str(info.value)


# --- crash safety ------------------------------------------------------------------------------

_WRITER = """
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from canarywatch.clock import SystemClock
from canarywatch.model import NotificationStatus
from canarywatch.state import SqliteStateStore
from canarywatch.testing import make_event, make_notification

path, mode = Path(sys.argv[1]), sys.argv[2]
store = SqliteStateStore(path, clock=SystemClock())
t0 = datetime(2025, 1, 2, tzinfo=UTC)
for i in range(100_000):
    at = t0 + timedelta(seconds=i)
    if mode == "lockstep":
        store.record_notification("team", "g", NotificationStatus.FIRING, [f"fp{i}"], at)
    else:
        id_ = store.outbox_put("team", make_notification(make_event(rollout=str(i))), at)
        store.outbox_done(id_, at)
        store.sink_memory("team").put(f"k{i}", {"i": str(i)})
    print(i, flush=True)
    if mode == "lockstep" and sys.stdin.readline() != "go\\n":
        break
"""


Writer = Callable[[str], "subprocess.Popen[str]"]


@pytest.fixture
def writer(db: Path) -> Iterator[Writer]:
    """Starts the writer script on ``db``; kills and reaps whatever is left at teardown."""
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(db), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _read_ack(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "writer died before acknowledging"
    return int(line)


def test_kill_9_right_after_acknowledged_writes_loses_none_of_them(
    writer: Writer, db: Path
) -> None:
    proc = writer("lockstep")
    assert proc.stdin is not None
    acked = -1
    for _ in range(20):
        acked = _read_ack(proc)
        if acked == 19:
            break
        proc.stdin.write("go\n")
        proc.stdin.flush()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    with SqliteStateStore(db, clock=SystemClock()) as s:
        held = [i for i in range(25) if s.sent("team", f"fp{i}", FIRING) is not None]
    assert held == list(range(acked + 1))  # exactly the acknowledged writes


def test_kill_9_mid_stream_keeps_every_acknowledged_write(writer: Writer, db: Path) -> None:
    proc = writer("free")
    acked = -1
    while acked < 40:
        acked = _read_ack(proc)
    os.kill(proc.pid, signal.SIGKILL)  # the writer is still going: killed mid-transaction
    proc.wait(timeout=30)

    with SqliteStateStore(db, clock=SystemClock()) as s:
        for i in range(acked + 1):
            ev = make_event(rollout=str(i))
            assert s.sent("team", fingerprint(ev), FIRING) is not None, i
            assert s.sink_memory("team").get(f"k{i}") == {"i": str(i)}
        # and the store is intact and writable after the crash
        s.record_notification("team", "g", FIRING, ["after"], T0)
        assert s.sent("team", "after", FIRING) == T0


def test_a_batch_that_does_not_fit_writes_neither_its_notifications_nor_its_state(
    db: Path, clock: VirtualClock
) -> None:
    """Issue 12: outbox rows and the correlation state of one batch are one transaction. A
    crash (here: a full database) between the two must not leave rows whose transitions the
    state does not know were seen, nor state claiming what the outbox does not hold."""
    big = make_notification(make_event(message="x" * 6000), receiver="team")
    with open_store(db, clock, max_size_bytes=128 * 1024) as s:
        committed = 0
        failure: StateError | None = None
        for i in range(100):
            try:
                s.outbox_put_many(
                    [("team", big), ("team", big)], T0, canary_states={f"k{i}": {"i": i}}
                )
            except StateError as exc:
                failure = exc
                break
            committed += 1
        assert isinstance(failure, StateUnwritable)
        assert committed > 0
        assert s.outbox_depth("team") == 2 * committed
        assert sorted(s.load_canary_states()) == sorted(f"k{i}" for i in range(committed))


def test_a_version_1_database_is_migrated_and_its_pending_events_indexed(
    db: Path, clock: VirtualClock
) -> None:
    """Upgrading keeps the promise for what a version-1 daemon left pending: the events of its
    pending and dead items count as accepted, delivered ones do not."""
    pending, dead, done = (make_event(canary=f"shop/{n}") for n in ("p", "d", "x"))
    with open_store(db, clock) as s:
        ids = [
            s.outbox_put("team", make_notification(e, receiver="team"), T0)
            for e in (pending, dead, done)
        ]
        s.outbox_dead(ids[1], "http_4xx")
        s.outbox_done(ids[2], T0)
    conn = sqlite3.connect(db)  # back to what version 1 wrote: no index of outbox events
    conn.execute("DROP TABLE outbox_events")
    conn.execute("ALTER TABLE outbox DROP COLUMN next_attempt_us")  # nor a next attempt (v3)
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with open_store(db, clock) as s:
        assert s.get_meta("schema_version") == "3"
        assert s.outbox_holds("team", fingerprint(pending), FIRING)
        assert s.outbox_holds("team", fingerprint(dead), FIRING)
        assert not s.outbox_holds("team", fingerprint(done), FIRING)


def test_a_version_2_database_is_migrated_and_its_items_get_a_next_attempt(
    db: Path, clock: VirtualClock
) -> None:
    """Version 3 adds when a pending item's next attempt is due: what a version-2 daemon left
    pending keeps its attempts and last error (no next attempt is known), and every later failed
    attempt records one."""
    with open_store(db, clock) as s:
        item = s.outbox_put("team", make_notification(receiver="team"), T0)
        s.outbox_attempted(item, "http_5xx")
    conn = sqlite3.connect(db)  # back to what version 2 wrote: no next attempt column
    conn.execute("ALTER TABLE outbox DROP COLUMN next_attempt_us")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with open_store(db, clock) as s:
        assert s.get_meta("schema_version") == "3"
        [kept] = s.outbox_pending()
        assert (kept.id, kept.attempts, kept.last_error, kept.next_attempt_at) == (
            item,
            1,
            "http_5xx",
            None,
        )
        clock.advance_by(2)
        s.outbox_attempted(
            item,
            "the destination failed (HTTP 503, retryable)",
            next_attempt_at=T0 + timedelta(seconds=6),
        )
    with open_store(db, clock) as s:  # and it is durable
        [after] = s.outbox_pending()
        assert after.attempts == 2
        assert after.last_error == "the destination failed (HTTP 503, retryable)"
        assert after.last_attempt_at == T0 + timedelta(seconds=2)
        assert after.next_attempt_at == T0 + timedelta(seconds=6)
