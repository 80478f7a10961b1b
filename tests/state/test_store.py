"""Every StateStore operation, run against both backends (SQLite file and memory)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import structlog

from canarywatch.clock import SystemClock, VirtualClock
from canarywatch.identity import fingerprint
from canarywatch.model import CanaryEvent, NotificationStatus, SourceName, Transition
from canarywatch.sinks import SinkMemory
from canarywatch.state import (
    SCHEMA_VERSION,
    HoldingStateStore,
    LastNotification,
    MemoryStateStore,
    SqliteStateStore,
    StateError,
    StateStore,
)
from canarywatch.testing import T0, make_event, make_notification

FIRING, RESOLVED = NotificationStatus.FIRING, NotificationStatus.RESOLVED
CEST = timezone(timedelta(hours=2))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture(params=["sqlite", "memory", "holding"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock
) -> Iterator[StateStore]:
    """Each backend, and the daemon's ``HoldingStateStore`` (over SQLite), which must behave
    exactly like its store while the disk takes writes."""
    s: StateStore
    if request.param == "sqlite":
        s = SqliteStateStore(tmp_path / "state" / "canarywatch.sqlite3", clock=clock)
    elif request.param == "holding":
        inner = SqliteStateStore(tmp_path / "state" / "canarywatch.sqlite3", clock=clock)
        s = HoldingStateStore(inner, clock=clock, log=structlog.get_logger())
    else:
        s = MemoryStateStore(clock=clock)
    yield s
    s.close()


def rich_event(transition: Transition = Transition.HALTED, **fields: Any) -> CanaryEvent:
    """An event exercising every field the stored form must keep exactly."""
    defaults: dict[str, Any] = {
        "rollout": "2",
        "episode": 1,
        "reason": "request-success-rate 91 < 99",
        "sources": (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES),
        "occurred_at": T0.astimezone(CEST),
        "hints": {"spec": "5f7d9", "label:team": "payments"},
    }
    return make_event(
        transition,
        cluster="prod",
        at=T0 + timedelta(microseconds=123457),
        **{**defaults, **fields},
    )


# --- notification log --------------------------------------------------------------------------


def test_sent_is_per_receiver_fingerprint_and_status(store: StateStore) -> None:
    assert store.sent("team", "fp1", FIRING) is None
    store.record_notification("team", "g", FIRING, ["fp1", "fp2"], at(1))
    assert store.sent("team", "fp1", FIRING) == at(1)
    assert store.sent("team", "fp2", FIRING) == at(1)
    assert store.sent("team", "fp1", RESOLVED) is None
    assert store.sent("other", "fp1", FIRING) is None
    assert store.sent("team", "fp3", FIRING) is None


def test_sent_answers_the_latest_time(store: StateStore) -> None:
    store.record_notification("team", "g", FIRING, ["fp1"], at(10))
    store.record_notification("team", "g2", FIRING, ["fp1"], at(5))  # recorded later, older
    assert store.sent("team", "fp1", FIRING) == at(10)
    store.record_notification("team", "g", FIRING, ["fp1"], at(20))
    assert store.sent("team", "fp1", FIRING) == at(20)


def test_times_keep_microseconds_and_come_back_in_utc(store: StateStore) -> None:
    when = datetime(2025, 1, 2, 16, 8, 2, 654321, tzinfo=CEST)
    store.record_notification("team", "g", FIRING, ["fp"], when)
    back = store.sent("team", "fp", FIRING)
    assert back == when
    assert back is not None
    assert back.utcoffset() == timedelta(0)


def test_naive_times_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_notification("team", "g", FIRING, ["fp"], datetime(2025, 1, 1))


def test_last_notification_is_the_groups_latest_record(store: StateStore) -> None:
    assert store.last_notification("team", "g") is None
    store.record_notification("team", "g", FIRING, ["a", "b"], at(1))
    assert store.last_notification("team", "g") == (at(1), frozenset({"a", "b"}), frozenset())
    store.record_notification("team", "g", RESOLVED, ["a"], at(2))
    store.record_notification("team", "other", FIRING, ["c"], at(3))
    store.record_notification("else", "g", FIRING, ["d"], at(4))
    last = store.last_notification("team", "g")
    assert last == LastNotification(at(2), frozenset(), frozenset({"a"}))
    at_, firing, resolved = last
    assert (at_, firing, resolved) == (at(2), frozenset(), frozenset({"a"}))


def test_last_notification_ties_go_to_the_last_recorded(store: StateStore) -> None:
    store.record_notification("team", "g", FIRING, ["a"], at(5))
    store.record_notification("team", "g", RESOLVED, ["a"], at(5))
    store.record_notification("team", "g", FIRING, ["old"], at(1))
    assert store.last_notification("team", "g") == (at(5), frozenset(), frozenset({"a"}))


# --- outbox ------------------------------------------------------------------------------------


def test_outbox_keeps_the_notification_exactly(store: StateStore) -> None:
    n = make_notification(
        rich_event(), rich_event(Transition.ROLLED_BACK, episode=0), created_at=at(0.5)
    )
    id_ = store.outbox_put("team", n, at(1))
    [item] = store.outbox_pending()
    assert item.id == id_
    assert item.receiver == "team"
    assert item.notification == n
    assert item.notification.events[0].hints == {"spec": "5f7d9", "label:team": "payments"}
    assert item.created_at == at(1)
    assert (item.attempts, item.last_error) == (0, None)


def test_outbox_pending_is_oldest_first_filtered_and_limited(store: StateStore) -> None:
    n = make_notification()
    late = store.outbox_put("a", n, at(30))
    early = store.outbox_put("a", n, at(10))
    other = store.outbox_put("b", n, at(20))
    same_time = store.outbox_put("a", n, at(10))
    assert late < early < other < same_time
    assert [i.id for i in store.outbox_pending()] == [early, same_time, other, late]
    assert [i.id for i in store.outbox_pending("a")] == [early, same_time, late]
    assert [i.id for i in store.outbox_pending("a", limit=2)] == [early, same_time]
    assert store.outbox_pending("nobody") == []
    with pytest.raises(ValueError, match="limit"):
        store.outbox_pending(limit=0)


def test_outbox_attempted_counts_and_remembers_the_reason(store: StateStore) -> None:
    id_ = store.outbox_put("team", make_notification(), at(0))
    store.outbox_attempted(id_, "http_5xx")
    store.outbox_attempted(id_, "timeout")
    [item] = store.outbox_pending()
    assert (item.attempts, item.last_error) == (2, "timeout")
    store.outbox_attempted(999, "timeout")  # unknown ids are ignored


def test_each_failed_attempt_records_its_error_and_the_next_attempt(
    store: StateStore, clock: VirtualClock
) -> None:
    """What ``canarywatch outbox list`` shows while retries go on: how many attempts failed,
    why the latest did (in plain words) and when the next is due; a dead letter has no next
    attempt, and ``retry`` starts the count again."""
    id_ = store.outbox_put("team", make_notification(), at(0))
    [fresh] = store.outbox_pending()
    assert (fresh.attempts, fresh.last_attempt_at, fresh.next_attempt_at) == (0, None, None)
    clock.advance_to(at(2))
    refused = "cannot connect to hooks.example.com:443: connection refused (retryable)"
    store.outbox_attempted(id_, refused, next_attempt_at=at(3))
    clock.advance_to(at(3))
    store.outbox_attempted(
        id_, "the destination failed (HTTP 503, retryable)", next_attempt_at=at(5)
    )
    [item] = store.outbox_pending()
    assert item.attempts == 2
    assert item.last_error == "the destination failed (HTTP 503, retryable)"
    assert (item.last_attempt_at, item.next_attempt_at) == (at(3), at(5))
    assert store.outbox_item(id_) == item

    clock.advance_to(at(5))
    store.outbox_attempted(id_, refused)  # the last attempt: nothing scheduled after it
    store.outbox_dead(id_, refused)
    [dead] = store.outbox_dead_letters()
    assert (dead.attempts, dead.last_error, dead.next_attempt_at) == (3, refused, None)
    assert dead.last_attempt_at == at(5)
    assert store.outbox_retry(id_)
    [again] = store.outbox_pending()
    assert (again.attempts, again.last_error, again.next_attempt_at) == (0, refused, None)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.outbox_attempted(id_, "x", next_attempt_at=datetime(2025, 1, 1))


def test_outbox_done_records_the_notification_log(store: StateStore) -> None:
    e1, e2 = rich_event(), rich_event(Transition.NO_TRAFFIC)
    n = make_notification(e1, e2, status=RESOLVED, group_key="team:{canary=x}")
    id_ = store.outbox_put("team", n, at(0))
    store.outbox_done(id_, at(3))
    assert store.outbox_pending() == []
    assert store.outbox_depth("team") == 0
    assert store.sent("team", fingerprint(e1), RESOLVED) == at(3)
    assert store.sent("team", fingerprint(e2), RESOLVED) == at(3)
    assert store.sent("team", fingerprint(e1), FIRING) is None
    assert store.last_notification("team", "team:{canary=x}") == (
        at(3),
        frozenset(),
        frozenset({fingerprint(e1), fingerprint(e2)}),
    )
    store.outbox_done(id_, at(9))  # already done: nothing changes
    assert store.sent("team", fingerprint(e1), RESOLVED) == at(3)
    store.outbox_done(12345, at(9))  # unknown: nothing happens
    assert store.outbox_retry(id_) is False


def test_dead_letters_retry_and_drop(store: StateStore, clock: VirtualClock) -> None:
    n = make_notification()
    a = store.outbox_put("team", n, at(0))
    b = store.outbox_put("team", n, at(1))
    store.outbox_attempted(a, "http_5xx")
    store.outbox_dead(a, "http_4xx")
    assert [i.id for i in store.outbox_pending()] == [b]
    [dead] = store.outbox_dead_letters()
    assert (dead.id, dead.attempts, dead.last_error) == (a, 1, "http_4xx")
    store.outbox_attempted(a, "timeout")  # only pending items count attempts
    assert store.outbox_dead_letters()[0].attempts == 1

    assert store.outbox_retry(b) is False  # not dead
    assert store.outbox_retry(a) is True
    assert store.outbox_dead_letters() == []
    [first, _] = store.outbox_pending()
    assert (first.id, first.attempts, first.last_error) == (a, 0, "http_4xx")

    store.outbox_dead(b, "invalid_payload")
    assert store.outbox_drop(b) is True
    assert store.outbox_drop(b) is False
    assert store.outbox_dead_letters() == []
    assert store.outbox_drop(a) is True  # pending items can be dropped too
    assert store.outbox_pending() == []
    assert store.outbox_put("team", n, at(2)) > b  # ids are never reused


def test_outbox_item_finds_pending_and_dead_items_only(store: StateStore) -> None:
    n = make_notification(make_event(), receiver="team")
    pending = store.outbox_put("team", n, at(1))
    dead = store.outbox_put("team", n, at(2))
    done = store.outbox_put("team", n, at(3))
    store.outbox_dead(dead, "http_4xx")
    store.outbox_done(done, at(4))
    found = store.outbox_item(pending)
    assert found is not None
    assert (found.id, found.receiver, found.notification) == (pending, "team", n)
    dead_item = store.outbox_item(dead)
    assert dead_item is not None
    assert dead_item.last_error == "http_4xx"
    assert store.outbox_item(done) is None
    assert store.outbox_item(10_000) is None
    assert store.outbox_drop(pending)
    assert store.outbox_item(pending) is None


def test_a_dead_letter_delivered_after_all_can_be_marked_done(store: StateStore) -> None:
    ev = rich_event()
    id_ = store.outbox_put("team", make_notification(ev), at(0))
    store.outbox_dead(id_, "timeout")
    store.outbox_done(id_, at(5))
    assert store.outbox_dead_letters() == []
    assert store.sent("team", fingerprint(ev), FIRING) == at(5)


def test_outbox_depth_and_oldest_age(store: StateStore) -> None:
    n = make_notification()
    assert store.outbox_depth("team") == 0
    assert store.outbox_oldest_age_s("team", at(100)) is None
    first = store.outbox_put("team", n, at(10))
    store.outbox_put("team", n, at(40))
    store.outbox_put("other", n, at(0))
    assert store.outbox_depth("team") == 2
    assert store.outbox_oldest_age_s("team", at(100)) == pytest.approx(90.0)
    assert store.outbox_oldest_age_s("team", at(5)) == 0.0  # never negative
    store.outbox_dead(first, "timeout")
    assert store.outbox_depth("team") == 1
    assert store.outbox_oldest_age_s("team", at(100)) == pytest.approx(60.0)


def test_outbox_depths_counts_pending_items_per_receiver(store: StateStore) -> None:
    n = make_notification()
    assert store.outbox_depths() == {}
    dead = store.outbox_put("team", n, at(0))
    done = store.outbox_put("team", n, at(1))
    store.outbox_put("team", n, at(2))
    store.outbox_put("other", n, at(3))
    store.outbox_put("other", n, at(4))
    store.outbox_dead(dead, "timeout")
    store.outbox_done(done, at(5))
    assert store.outbox_depths() == {"other": 2, "team": 1}
    assert store.outbox_depths()["team"] == store.outbox_depth("team")


def test_outbox_holds_the_events_of_pending_and_dead_items_only(store: StateStore) -> None:
    """What acceptance checks besides the notification log: an event waiting in the outbox (or
    dead-lettered, for an operator to retry) is accepted already; once delivered it is in the
    log instead, and a dropped item holds nothing."""
    a, b = make_event(canary="shop/a"), make_event(canary="shop/b")
    fa, fb = fingerprint(a), fingerprint(b)
    first = store.outbox_put("team", make_notification(a, b, receiver="team"), at(1))
    assert store.outbox_holds("team", fa, FIRING)
    assert store.outbox_holds("team", fb, FIRING)
    assert not store.outbox_holds("team", fa, RESOLVED)
    assert not store.outbox_holds("other", fa, FIRING)
    store.outbox_dead(first, "http_4xx")
    assert store.outbox_holds("team", fa, FIRING)
    store.outbox_retry(first)
    store.outbox_done(first, at(2))
    assert not store.outbox_holds("team", fa, FIRING)
    assert store.sent("team", fa, FIRING) == at(2)
    second = store.outbox_put("team", make_notification(a, receiver="team"), at(3))
    assert store.outbox_drop(second)
    assert not store.outbox_holds("team", fa, FIRING)


def test_outbox_put_many_writes_notifications_and_canary_states_together(
    store: StateStore,
) -> None:
    ns = [make_notification(make_event(canary=f"shop/c{i}"), receiver="team") for i in range(3)]
    ids = store.outbox_put_many(
        [(n.receiver, n) for n in ns], at(1), canary_states={"k/shop/c0": {"seq": 1}}
    )
    assert len(set(ids)) == 3
    assert [item.id for item in store.outbox_pending("team")] == ids
    assert [item.notification for item in store.outbox_pending("team")] == ns
    assert store.load_canary_states() == {"k/shop/c0": {"seq": 1}}
    assert store.outbox_put_many([], at(2), canary_states={"k/shop/c1": {"seq": 2}}) == []
    assert set(store.load_canary_states()) == {"k/shop/c0", "k/shop/c1"}


# --- silences ----------------------------------------------------------------------------------


def test_silences_add_list_and_activity(store: StateStore, clock: VirtualClock) -> None:
    sid = store.add_silence(
        ['canary="podinfo"', "severity=~warning|critical"], at(0), at(60), "ana", "noisy"
    )
    uuid.UUID(sid)
    future = store.add_silence(["team=payments"], at(120), at(180), "bo", "maintenance")
    [s, f] = store.silences()
    assert (s.id, s.matchers, s.starts_at, s.ends_at) == (
        sid,
        ('canary="podinfo"', "severity=~warning|critical"),
        at(0),
        at(60),
    )
    assert (s.created_by, s.comment, f.id) == ("ana", "noisy", future)
    assert s.active(at(0))
    assert s.active(at(59.9))
    assert not s.active(at(60))
    assert not s.active(at(-1))
    assert not f.active(at(30))
    assert not f.expired(at(30))

    clock.advance_to(at(60))
    assert [x.id for x in store.silences()] == [future]
    assert [x.id for x in store.silences(include_expired=True)] == [sid, future]


def test_expire_silence(store: StateStore, clock: VirtualClock) -> None:
    sid = store.add_silence(["a=b"], at(0), at(600), "ana", "x")
    future = store.add_silence(["a=b"], at(900), at(1200), "ana", "y")
    assert store.expire_silence(sid, at(30)) is True
    assert store.expire_silence(sid, at(40)) is False  # already over
    assert store.expire_silence("no-such-id", at(40)) is False
    assert store.expire_silence(future, at(40)) is True  # ends before it ever began
    clock.advance_to(at(40))
    assert store.silences() == []
    by_id = {s.id: s for s in store.silences(include_expired=True)}
    assert by_id[sid].ends_at == at(30)
    assert by_id[sid].starts_at == at(0)
    assert by_id[future].starts_at == by_id[future].ends_at == at(40)
    assert not any(s.active(at(t)) for s in by_id.values() for t in (35, 45, 950))


@pytest.mark.parametrize(
    ("matchers", "starts", "ends"),
    [([], 0, 60), ("a=b", 0, 60), (["a=b"], 60, 60), (["a=b"], 60, 0)],
)
def test_invalid_silences_are_refused(
    store: StateStore, matchers: list[str], starts: float, ends: float
) -> None:
    with pytest.raises(ValueError, match="silence"):
        store.add_silence(matchers, at(starts), at(ends), "ana", "x")
    assert store.silences(include_expired=True) == []


# --- sink memory, canary state, meta -----------------------------------------------------------


async def test_sink_memory_put_async_is_the_same_write_off_the_loop(store: StateStore) -> None:
    """``put_async`` (what the Slack and Discord sinks use) stores exactly what ``put`` does, per
    receiver, durable when it returns; on SQLite it goes through the writer thread."""
    slack: SinkMemory = store.sink_memory("slack-team")
    commits = store.commits if isinstance(store, SqliteStateStore) else 0
    value = {"ts": "1712345678.000100", "channel": "C042"}
    await slack.put_async("thread:1", value)
    value["ts"] = "changed after put"
    assert slack.get("thread:1") == {"ts": "1712345678.000100", "channel": "C042"}
    assert store.sink_memory("teams").get("thread:1") is None
    if isinstance(store, SqliteStateStore):
        assert store.commits == commits + 1
        reopened = SqliteStateStore(store.path, clock=SystemClock())
        try:
            assert reopened.sink_memory("slack-team").get("thread:1") == {
                "ts": "1712345678.000100",
                "channel": "C042",
            }
        finally:
            reopened.close()


def test_sink_memory_is_per_receiver_and_copies(store: StateStore) -> None:
    slack: SinkMemory = store.sink_memory("slack-team")
    teams = store.sink_memory("teams")
    assert slack.get("thread:1") is None
    value = {"ts": "1712345678.000100", "channel": "C042"}
    slack.put("thread:1", value)
    value["ts"] = "changed after put"
    assert slack.get("thread:1") == {"ts": "1712345678.000100", "channel": "C042"}
    assert teams.get("thread:1") is None
    assert store.sink_memory("slack-team").get("thread:1") == {
        "ts": "1712345678.000100",
        "channel": "C042",
    }
    slack.put("thread:1", {"ts": "2"})
    assert slack.get("thread:1") == {"ts": "2"}
    with pytest.raises(TypeError):
        slack.put("bad", {"n": 1})  # type: ignore[dict-item]


def test_canary_states_and_meta(store: StateStore) -> None:
    assert store.load_canary_states() == {}
    store.save_canary_state("prod/test/podinfo", {"v": 1, "seen": [[1, "halted"]], "x": None})
    store.save_canary_states({"/a/b": {"v": 1}, "prod/test/podinfo": {"v": 2}})
    assert store.load_canary_states() == {"/a/b": {"v": 1}, "prod/test/podinfo": {"v": 2}}
    with pytest.raises(TypeError):
        store.save_canary_state("k", {"when": T0})  # not JSON
    assert "k" not in store.load_canary_states()

    assert store.get_meta("last_gc") is None
    store.set_meta("last_gc", "2025-01-02T14:08:02Z")
    store.set_meta("last_gc", "later")
    assert store.get_meta("last_gc") == "later"
    with pytest.raises(ValueError, match="reserved"):
        store.set_meta("schema_version", "0")


def test_sqlite_reports_its_schema_version(tmp_path: Path, clock: VirtualClock) -> None:
    with SqliteStateStore(tmp_path / "s.db", clock=clock) as s:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)


# --- housekeeping ------------------------------------------------------------------------------


def test_gc_deletes_only_what_is_older_than_retention(store: StateStore) -> None:
    hour = 3600.0
    ev_old, ev_new = rich_event(), rich_event(Transition.NO_TRAFFIC)
    store.record_notification("team", "g", FIRING, [fingerprint(ev_old)], at(0))
    store.record_notification("team", "g", FIRING, [fingerprint(ev_new)], at(5 * hour))
    done_old = store.outbox_put("team", make_notification(ev_old), at(0))
    store.outbox_done(done_old, at(1))  # a second log record, also old
    store.outbox_put("team", make_notification(), at(0))  # pending: kept however old
    dead = store.outbox_put("team", make_notification(), at(0))
    store.outbox_dead(dead, "http_4xx")  # dead letters wait for an operator
    store.add_silence(["a=b"], at(0), at(hour), "ana", "over long ago")
    keep_sid = store.add_silence(["a=b"], at(0), at(5 * hour), "ana", "ended recently")
    store.sink_memory("team").put("k", {"v": "1"})

    deleted = store.gc(at(6 * hour), retention_s=2 * hour)

    assert deleted == 4  # two log records, one done item, one silence
    assert store.sent("team", fingerprint(ev_old), FIRING) is None
    assert store.sent("team", fingerprint(ev_new), FIRING) == at(5 * hour)
    assert store.outbox_depth("team") == 1
    assert [i.id for i in store.outbox_dead_letters()] == [dead]
    assert [s.id for s in store.silences(include_expired=True)] == [keep_sid]
    assert store.sink_memory("team").get("k") == {"v": "1"}
    assert store.gc(at(6 * hour), retention_s=2 * hour) == 0


def test_size_grows_with_content(store: StateStore) -> None:
    before = store.size_bytes()
    assert before >= 0
    n = make_notification(*(rich_event(message="x" * 500) for _ in range(4)))
    for i in range(50):
        store.outbox_put("team", n, at(i))
    assert store.size_bytes() > before + 50 * 1000


def test_closed_store_refuses_every_call(store: StateStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        store.sent("team", "fp", FIRING)
    with pytest.raises(StateError, match="closed"):
        store.outbox_put("team", make_notification(), at(0))
    with pytest.raises(StateError, match="closed"):
        store.sink_memory("team").get("k")


async def test_every_async_write_does_what_its_blocking_twin_does(
    store: StateStore, clock: VirtualClock
) -> None:
    """The ``*_async`` writes the daemon uses while it serves (off the event loop for SQLite)
    have exactly the blocking ones' effects and answers, durable when the await returns."""
    sid = await store.add_silence_async(['namespace="payments"'], T0, at(3600), "ops", "why")
    assert [s.id for s in store.silences()] == [sid]
    assert await store.expire_silence_async(sid, at(60))
    assert not await store.expire_silence_async(sid, at(60))  # already expired
    clock.advance_to(at(120))
    assert store.silences() == []
    with pytest.raises(ValueError, match="matcher"):
        await store.add_silence_async([], T0, at(1), "ops", "")

    [dead, gone] = store.outbox_put_many(
        [("team", make_notification(make_event(canary=f"ns/app-{i}"))) for i in range(2)], T0
    )
    await store.outbox_dead_async(dead, "http_4xx")
    assert await store.outbox_retry_async(dead)
    assert not await store.outbox_retry_async(dead)  # pending now, not dead
    assert [i.id for i in store.outbox_pending("team")] == [dead, gone]
    assert await store.outbox_drop_async(gone)
    assert not await store.outbox_drop_async(gone)

    await store.record_notification_async("team", "g", FIRING, ["fp1"], at(5))
    assert store.sent("team", "fp1", FIRING) == at(5)
    await store.sink_memory_put_async("team", "thread:x", {"ts": "1.2"})
    assert store.sink_memory("team").get("thread:x") == {"ts": "1.2"}
    await store.save_canary_states_async({"c/ns/app": {"v": 1}})
    assert store.load_canary_states() == {"c/ns/app": {"v": 1}}
    await store.set_meta_async("k", "v")
    assert store.get_meta("k") == "v"
    with pytest.raises(ValueError, match="reserved"):
        await store.set_meta_async("schema_version", "9")

    store.outbox_done(dead, at(6))
    removed = await store.gc_async(at(10_000), retention_s=60)
    # Two notification-log records (one recorded, one from "done"), the done item, the silence.
    assert removed == 4
