"""Writes off the event loop, committed in groups (issue 14: ``state.writer``).

Concurrent writes share transactions (fewer commits than writes, so fewer fsyncs), each is
durable when its await returns, one write's failure is its own, and a slow ``fsync`` stalls the
write, not the event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.support.slow_disk import SlowDisk

from canarywatch.clock import VirtualClock
from canarywatch.identity import fingerprint
from canarywatch.model import NotificationStatus
from canarywatch.state import DB_FILENAME, SqliteStateStore, StateError
from canarywatch.testing import T0, make_event, make_notification

FIRING = NotificationStatus.FIRING


@pytest.fixture
def store(tmp_path: Path) -> SqliteStateStore:
    return SqliteStateStore(tmp_path / DB_FILENAME, clock=VirtualClock(T0))


@contextmanager
def commit_in_progress(store: SqliteStateStore) -> Iterator[None]:
    """A write whose transaction does not finish until the block ends: what is written in the
    block arrives while a commit is in progress."""
    release = threading.Event()
    started = threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(30)

    blocker = store._submit("wait", slow)
    started.wait(30)
    try:
        yield
    finally:
        release.set()
        blocker.result(30)


async def test_writes_arriving_during_a_commit_share_the_next_one(
    store: SqliteStateStore, tmp_path: Path
) -> None:
    ns = [make_notification(make_event(rollout=str(i)), receiver="team") for i in range(50)]
    before = store.commits
    with commit_in_progress(store):
        puts = [asyncio.ensure_future(store.outbox_put_many_async([("team", n)], T0)) for n in ns]
        await asyncio.sleep(0)  # each has queued its write
    ids = await asyncio.gather(*puts)
    assert store.commits - before == 2  # the slow one, then all 50 together
    with commit_in_progress(store):
        dones = [asyncio.ensure_future(store.outbox_done_async(i, T0)) for [i] in ids]
        await asyncio.sleep(0)
    await asyncio.gather(*dones)
    assert store.commits - before == 4
    assert len({i for [i] in ids}) == len(ns)
    store.close()
    with SqliteStateStore(tmp_path / DB_FILENAME, clock=VirtualClock(T0)) as reopened:
        assert reopened.outbox_depth("team") == 0
        for n in ns:
            assert reopened.sent("team", fingerprint(n.events[0]), FIRING) == T0


async def test_a_failing_write_fails_alone_in_its_group(store: SqliteStateStore) -> None:
    """A write that raises (here: an unreadable outbox row) is rolled back alone; the writes
    committed with it are not."""
    [bad] = store.outbox_put_many([("team", make_notification())], T0)
    damage = sqlite3.connect(store.path)  # a row this canarywatch cannot read
    with damage:
        damage.execute("UPDATE outbox SET notification = '{}' WHERE id = ?", (bad,))
    damage.close()
    good = make_notification(make_event(rollout="good"), receiver="team")
    before = store.commits
    with commit_in_progress(store):
        writes = [
            asyncio.ensure_future(store.outbox_done_async(bad, T0)),
            asyncio.ensure_future(store.outbox_put_many_async([("team", good)], T0)),
        ]
        await asyncio.sleep(0)
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert store.commits - before == 2  # the two shared one transaction
    assert isinstance(results[0], StateError)
    assert "unreadable" in str(results[0])
    assert isinstance(results[1], list)
    assert store.outbox_item(results[1][0]) is not None
    store.close()


def test_writes_after_close_are_refused(store: SqliteStateStore) -> None:
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.set_meta("k", "v")
    store.close()  # idempotent


_TICKER = """
import asyncio, json, sys
from datetime import UTC, datetime
from pathlib import Path

from canarywatch.clock import SystemClock
from canarywatch.state import SqliteStateStore
from canarywatch.testing import make_notification

async def main() -> None:
    store = SqliteStateStore(Path(sys.argv[1]), clock=SystemClock())
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    n = make_notification()
    await store.outbox_put_many_async([("team", n)], datetime.now(UTC))
    during = ticks
    ticker.cancel()
    store.close()
    print(json.dumps({"ticks_during_write": during}))

asyncio.run(main())
"""


def test_the_event_loop_keeps_running_while_a_write_waits_for_a_slow_fsync(
    tmp_path: Path,
) -> None:
    """With every fsync 300 ms slow, a task keeps ticking while a write is committed: the
    write waits off the loop (before, the commit blocked the loop and nothing ticked)."""
    disk = SlowDisk(tmp_path / "shim", delay_ms=300).build()
    done = subprocess.run(
        [sys.executable, "-c", _TICKER, str(tmp_path / DB_FILENAME)],
        env={**os.environ, **disk.env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert disk.syncs() > 0  # the delay applied in the child
    assert figures["ticks_during_write"] >= 2
