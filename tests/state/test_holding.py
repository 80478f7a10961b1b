"""``HoldingStateStore`` on a disk that really fills up: writes are held in memory, in order,
and written when there is room again; a full disk never raises out of a write it can hold.

Most tests run on both kinds of ``tests.support.small_disk``: a real tmpfs filled with a file
(skipped without the privilege to mount one) and a database capped with ``max_page_count``. The
cap only refuses writes that need a new page, so the notifications here carry a message longer
than a page, and tests about writes that fit in place (an update, a small row) use the tmpfs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from tests.support.small_disk import KINDS, SmallDisk, small_disk

from canarywatch.clock import SystemClock
from canarywatch.identity import fingerprint
from canarywatch.metrics import STATE_HELD_KINDS
from canarywatch.model import Notification, NotificationStatus, Transition
from canarywatch.state import (
    HoldingStateStore,
    SqliteStateStore,
    StateError,
    StateHeld,
    StateUnwritable,
)
from canarywatch.state.holding import KINDS as HELD_KINDS
from canarywatch.testing import make_event, make_notification

RECEIVER = "oncall"


@pytest.fixture(params=KINDS)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(request.param, tmp_path) as d:
        yield d


@pytest.fixture
def real_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk("tmpfs", tmp_path) as d:
        yield d


def note(i: int) -> Notification:
    """A notification bigger than a database page: writing it always needs room."""
    clock = SystemClock()
    event = make_event(
        Transition.ROLLED_BACK, canary=f"ns/app-{i}", at=clock.now(), message="x" * 6000
    )
    return make_notification(event, receiver=RECEIVER)


class Written:
    def __init__(self) -> None:
        self.receivers: list[frozenset[str]] = []
        self.dropped: list[Notification] = []
        self.failures: list[StateUnwritable] = []
        self.recovered = 0


def holding(
    inner: SqliteStateStore, *, max_held: int = 1000, retry_max_s: float = 30.0
) -> tuple[HoldingStateStore, Written]:
    seen = Written()

    def recovered() -> None:
        seen.recovered += 1

    store = HoldingStateStore(
        inner,
        clock=SystemClock(),
        log=structlog.get_logger(),
        max_held_notifications=max_held,
        retry_initial_s=0.05,
        retry_max_s=retry_max_s,
        on_failed=seen.failures.append,
        on_dropped=seen.dropped.append,
        on_written=seen.receivers.append,
        on_recovered=recovered,
    )
    return store, seen


def test_the_sqlite_error_names_the_database_and_the_os_reason(disk: SmallDisk) -> None:
    clock = SystemClock()
    with disk.store(clock) as store:
        disk.fill()
        with pytest.raises(StateUnwritable) as caught:
            store.outbox_put(RECEIVER, note(0), clock.now())
    exc = caught.value
    assert str(disk.db) in str(exc)
    assert "full" in str(exc)
    if disk.kind == "tmpfs":
        assert exc.errno_name == "ENOSPC"
        assert "ENOSPC: No space left on device" in str(exc)
    else:  # the cap: the disk itself has room, SQLite alone says it is full
        assert exc.code == "SQLITE_FULL"
        assert exc.errno_name == ""


def test_writes_are_held_in_order_and_written_when_room_returns(disk: SmallDisk) -> None:
    clock = SystemClock()
    inner = disk.store(clock)
    store, seen = holding(inner)
    durable = store.outbox_put(RECEIVER, note(0), clock.now())  # before the disk fills
    disk.fill()

    with capture_logs() as logs:
        with pytest.raises(StateHeld) as held:
            store.outbox_put(RECEIVER, note(1), clock.now())
        # Delivered before the disk filled: its record is held, and the outbox and the
        # notification log already answer as if it were written (nothing repeats in-process).
        store.outbox_done(durable, clock.now())
        store.save_canary_states({"sim/ns/app-1": {"rollout": "1"}})
        with pytest.raises(StateHeld):
            store.outbox_put(RECEIVER, note(2), clock.now())
        store.save_canary_states({"sim/ns/app-1": {"rollout": "2"}})  # replaces the held one
        store.sink_memory(RECEIVER).put("thread", {"ts": "1.2"})

    assert str(disk.db) in str(held.value)
    assert store.holding
    problem = store.problem()
    assert problem is not None
    assert str(disk.db) in problem
    assert "holding 2 notification(s) and 3 other write(s)" in problem
    if disk.kind == "tmpfs":
        assert "ENOSPC" in problem
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["state_write_failed"]
    assert len(seen.failures) == 1  # the first failure; held writes are not tried one by one
    assert (store.held("notification"), store.held("outbox"), store.held("snapshot")) == (2, 1, 1)

    first_event = note(0).events[0]
    assert store.sent(RECEIVER, fingerprint(first_event), NotificationStatus.FIRING) is not None
    assert inner.sent(RECEIVER, fingerprint(first_event), NotificationStatus.FIRING) is None
    assert store.outbox_pending() == []
    assert inner.outbox_depth(RECEIVER) == 1
    assert store.outbox_depth(RECEIVER) == 0
    assert store.load_canary_states()["sim/ns/app-1"] == {"rollout": "2"}
    assert store.sink_memory(RECEIVER).get("thread") == {"ts": "1.2"}
    assert store.gc(clock.now(), retention_s=1.0) == 0  # compaction waits for the disk

    assert store.flush() is False  # still full: nothing is lost, nothing written out of order
    assert store.holding
    assert len(seen.failures) == 2

    disk.free()
    assert store.flush() is True
    assert not store.holding
    assert store.problem() is None
    assert seen.receivers == [frozenset({RECEIVER})]
    assert seen.recovered == 1
    pending = inner.outbox_pending(RECEIVER)
    assert [item.notification.events[0].canary.name for item in pending] == ["app-1", "app-2"]
    assert pending[0].id < pending[1].id
    assert inner.sent(RECEIVER, fingerprint(first_event), NotificationStatus.FIRING) is not None
    assert inner.load_canary_states()["sim/ns/app-1"] == {"rollout": "2"}
    assert inner.sink_memory(RECEIVER).get("thread") == {"ts": "1.2"}
    # And writes go straight to the store again.
    assert isinstance(store.outbox_put(RECEIVER, note(3), clock.now()), int)
    store.close()


def test_past_the_bound_the_oldest_held_notification_is_dropped_and_counted(
    disk: SmallDisk,
) -> None:
    clock = SystemClock()
    inner = disk.store(clock)
    store, seen = holding(inner, max_held=2)
    disk.fill()
    with capture_logs() as logs:
        for i in range(4):
            with pytest.raises(StateHeld):
                store.outbox_put(RECEIVER, note(i), clock.now())
    assert store.held_notifications == 2
    assert [n.events[0].canary.name for n in seen.dropped] == ["app-0", "app-1"]
    assert store.dropped_total == 2
    dropped = [e for e in logs if e["event"] == "notification_dropped"]
    assert [e["log_level"] for e in dropped] == ["error", "debug"]  # loud once per outage
    assert dropped[0]["reason"] == "state_unwritable"
    problem = store.problem()
    assert problem is not None
    assert "2 notification(s) dropped past the limit" in problem

    disk.free()
    assert store.flush()
    names = [i.notification.events[0].canary.name for i in inner.outbox_pending(RECEIVER)]
    assert names == ["app-2", "app-3"]
    store.close()


async def test_run_retries_with_backoff_and_recovers_on_its_own(disk: SmallDisk) -> None:
    clock = SystemClock()
    inner = disk.store(clock)
    store, seen = holding(inner, retry_max_s=0.2)
    retries = asyncio.create_task(store.run(), name="state")
    try:
        disk.fill()
        for i in range(3):
            with pytest.raises(StateHeld):
                store.outbox_put(RECEIVER, note(i), clock.now())
        await asyncio.sleep(0.6)
        assert store.holding
        assert len(seen.failures) >= 3  # the first failure plus retries that failed
        disk.free()
        async with asyncio.timeout(5):
            while store.holding:
                await asyncio.sleep(0.02)
    finally:
        retries.cancel()
        with pytest.raises(asyncio.CancelledError):
            await retries
    assert seen.receivers == [frozenset({RECEIVER})]
    names = [i.notification.events[0].canary.name for i in inner.outbox_pending(RECEIVER)]
    assert names == ["app-0", "app-1", "app-2"]
    store.close()


def test_dead_letters_and_attempts_are_held_too(real_disk: SmallDisk) -> None:
    disk = real_disk
    clock = SystemClock()
    inner = disk.store(clock)
    store, _ = holding(inner)
    first = store.outbox_put(RECEIVER, note(0), clock.now())
    second = store.outbox_put(RECEIVER, note(1), clock.now())
    disk.fill()
    store.outbox_attempted(first, "http_4xx")
    store.outbox_dead(first, "http_4xx")
    assert [i.id for i in store.outbox_dead_letters()] == [first]
    assert [i.id for i in store.outbox_pending()] == [second]
    assert store.outbox_item(first) is not None
    assert store.outbox_retry(first)  # never written as dead: it simply stays pending
    assert [i.id for i in store.outbox_pending()] == [first, second]
    store.outbox_dead(second, "http_4xx")
    disk.free()
    assert store.flush()
    assert [i.id for i in inner.outbox_dead_letters()] == [second]
    item = inner.outbox_item(first)
    assert item is not None
    assert item.attempts == 1
    store.close()


def test_failed_attempts_are_held_as_one_write_and_held_notifications_are_listed(
    real_disk: SmallDisk,
) -> None:
    """A retry streak during a disk outage is one held write per item (not one per attempt),
    read back as if written; the notifications not yet in the outbox are listed, in order."""
    disk = real_disk
    clock = SystemClock()
    inner = disk.store(clock)
    store, _ = holding(inner)
    first = store.outbox_put(RECEIVER, note(0), clock.now())
    disk.fill()
    later = clock.now() + timedelta(seconds=30)
    for i in range(5):
        store.outbox_attempted(first, f"connection refused ({i})", next_attempt_at=later)
    with pytest.raises(StateHeld):
        store.outbox_put(RECEIVER, note(1), clock.now())
    assert store.held("outbox") == 1
    [pending] = store.outbox_pending()
    assert (pending.id, pending.attempts, pending.last_error) == (
        first,
        5,
        "connection refused (4)",
    )
    assert pending.next_attempt_at == later
    [held] = store.held_outbox()
    assert held.receiver == RECEIVER
    assert held.notification.events[0].canary.name == "app-1"
    assert store.held_outbox("someone-else") == []
    disk.free()
    assert store.flush()
    assert store.held_outbox() == []
    [written, second] = inner.outbox_pending()
    assert (written.id, written.attempts, written.next_attempt_at) == (first, 5, later)
    assert second.notification.events[0].canary.name == "app-1"
    store.close()


def test_close_reports_what_is_still_held(disk: SmallDisk) -> None:
    clock = SystemClock()
    store, seen = holding(disk.store(clock))
    disk.fill()
    with pytest.raises(StateHeld):
        store.outbox_put(RECEIVER, note(0), clock.now())
    with capture_logs() as logs:
        store.close()
    lost = [e for e in logs if e["event"] == "state_writes_lost"]
    assert len(lost) == 1
    assert lost[0]["notifications"] == 1
    assert len(seen.dropped) == 1
    disk.free()


def test_an_existing_store_opens_on_a_full_disk(real_disk: SmallDisk) -> None:
    """The daemon restarted while the disk is full (its database files are all there): it
    opens and reads the store instead of failing on a write at open."""
    disk = real_disk
    clock = SystemClock()
    running = disk.store(clock)
    running.outbox_put(RECEIVER, note(0), clock.now())
    disk.fill()
    with disk.store(clock) as again:
        assert again.outbox_depth(RECEIVER) == 1
    running.close()


def test_errors_that_will_not_pass_are_not_held(tmp_path: Path) -> None:
    clock = SystemClock()
    store, _ = holding(SqliteStateStore(tmp_path / "db.sqlite3", clock=clock))
    store.inner.close()
    with pytest.raises(StateError) as caught:
        store.outbox_put(RECEIVER, note(0), clock.now())
    assert not isinstance(caught.value, StateHeld | StateUnwritable)
    assert not store.holding
    with pytest.raises(ValueError, match="timezone-aware"):
        store.outbox_done(1, clock.now().replace(tzinfo=None))


def test_held_kinds_match_the_metric_labels() -> None:
    assert HELD_KINDS == STATE_HELD_KINDS
