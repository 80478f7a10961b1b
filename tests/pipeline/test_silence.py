"""Silences: Alertmanager's matching and active-window semantics over config and runtime sources."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from canarywatch.clock import VirtualClock
from canarywatch.config import Silence as SilenceConfig
from canarywatch.model import CanaryEvent, Transition
from canarywatch.pipeline.silence import (
    SilenceOrigin,
    Silencer,
    SilenceState,
    config_silence_id,
)
from canarywatch.state import MemoryStateStore, SqliteStateStore, StateStore
from canarywatch.testing import T0, make_event


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(transition: Transition = Transition.ROLLED_BACK, **extra: str) -> CanaryEvent:
    """``payments/checkout`` rolled back (severity critical), with ``extra`` labels."""
    ev = make_event(transition, canary="payments/checkout")
    return dataclasses.replace(ev, labels={**ev.labels, **extra})


def config_silence(*matchers: str, start: float = 0, end: float = 3600, **kw: str) -> SilenceConfig:
    return SilenceConfig(
        matchers=matchers,
        starts_at=at(start),
        ends_at=at(end),
        created_by=kw.get("created_by", "alice"),
        comment=kw.get("comment", "maintenance"),
    )


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture(params=["memory", "sqlite"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: VirtualClock
) -> Iterator[StateStore]:
    s: StateStore
    if request.param == "sqlite":
        s = SqliteStateStore(tmp_path / "canarywatch.sqlite3", clock=clock)
    else:
        s = MemoryStateStore(clock=clock)
    yield s
    s.close()


# --- the active window: starts_at <= now < ends_at --------------------------------------------


@pytest.mark.parametrize(
    ("now_s", "muted"),
    [
        (-1, False),  # not started yet
        (-0.000001, False),
        (0, True),  # starts_at is inclusive
        (1800, True),
        (3599.999999, True),
        (3600, False),  # ends_at is exclusive
        (7200, False),
    ],
)
def test_active_window_edges(store: StateStore, now_s: float, muted: bool) -> None:
    id_ = store.add_silence(['namespace="payments"'], at(0), at(3600), "bob", "deploy freeze")
    silencer = Silencer(store)
    assert silencer.mutes(event(), at(now_s)) == (id_ if muted else None)


def test_config_silence_window_edges() -> None:
    s = config_silence('namespace="payments"', start=10, end=20)
    silencer = Silencer(config_silences=[s])
    id_ = config_silence_id(s)
    assert [silencer.mutes(event(), at(t)) for t in (9, 10, 19, 20)] == [None, id_, id_, None]
    [parsed] = silencer.config_silences
    assert [parsed.state(at(t)) for t in (9, 10, 20)] == [
        SilenceState.PENDING,
        SilenceState.ACTIVE,
        SilenceState.EXPIRED,
    ]


# --- matchers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "labels", "muted"),
    [
        (['namespace="payments"'], {}, True),
        (['namespace="billing"'], {}, False),
        (['namespace="payments"', 'severity="critical"'], {}, True),  # all must match
        (['namespace="payments"', 'severity="info"'], {}, False),
        (['namespace=~"pay.*"'], {}, True),
        (['namespace=~"pay"'], {}, False),  # regexes are anchored
        (['namespace=~"billing|payments"'], {}, True),
        (['namespace!~"pay.*"'], {}, False),
        (['transition!="promoted"'], {}, True),
        (['team="payments"'], {"team": "payments"}, True),
        (['team="payments"'], {}, False),  # missing label is ""
        (['namespace="payments"', 'team=""'], {}, True),  # "" selects events without it
        (['namespace="payments"', 'team=""'], {"team": "x"}, False),
        (['namespace="payments"', 'team!=""'], {}, False),
        (['namespace="payments"', 'team=~".*"'], {}, True),
        (['{namespace="payments", severity=~"warning|critical"}'], {}, True),  # set syntax
    ],
)
def test_matchers(
    store: StateStore, matchers: list[str], labels: dict[str, str], muted: bool
) -> None:
    id_ = store.add_silence(matchers, at(0), at(60), "bob", "x")
    silencer = Silencer(store)
    muted_by = silencer.mutes(event(Transition.ROLLED_BACK, **labels), at(1))
    assert muted_by == (id_ if muted else None)


# --- config vs runtime --------------------------------------------------------------------------


def test_config_and_runtime_silences_both_mute_config_first(store: StateStore) -> None:
    cfg = config_silence('severity="critical"')
    runtime_id = store.add_silence(['canary="payments/checkout"'], at(0), at(60), "bob", "x")
    silencer = Silencer(store, [cfg])
    assert silencer.mutes(event(), at(1)) == config_silence_id(cfg)
    assert silencer.mutes(event(Transition.PROMOTED), at(1)) == runtime_id
    assert silencer.mutes(make_event(Transition.PROMOTED, canary="a/b"), at(1)) is None
    assert silencer.is_config(config_silence_id(cfg))
    assert not silencer.is_config(runtime_id)
    assert [s.origin for s in (*silencer.config_silences, *silencer.runtime_silences)] == [
        SilenceOrigin.CONFIG,
        SilenceOrigin.RUNTIME,
    ]


def test_config_silence_ids_are_stable_and_content_derived() -> None:
    a = config_silence('namespace="payments"')
    same = SilenceConfig(
        matchers=('namespace = "payments"',),  # other spelling, same matcher
        starts_at=at(0).astimezone(timezone(timedelta(hours=2))),  # other offset
        ends_at=at(3600),
        created_by="alice",
        comment="maintenance",
    )
    other = config_silence('namespace="payments"', comment="another reason")
    assert config_silence_id(a).startswith("config-")
    assert config_silence_id(a) == config_silence_id(same)
    assert config_silence_id(a) != config_silence_id(other)
    silencer = Silencer(config_silences=[a, same, other])
    assert len(silencer.config_silences) == 2  # an identical declaration twice is one


def test_config_silences_are_not_written_to_the_store(store: StateStore) -> None:
    Silencer(store, [config_silence('namespace="payments"')])
    assert store.silences(include_expired=True) == []


def test_runtime_changes_are_seen_after_reload(store: StateStore, clock: VirtualClock) -> None:
    silencer = Silencer(store)
    assert not silencer
    id_ = store.add_silence(['namespace="payments"'], at(0), at(60), "bob", "x")
    assert silencer.mutes(event(), at(1)) is None  # not reloaded yet
    silencer.reload()
    assert silencer
    assert silencer.mutes(event(), at(1)) == id_
    clock.advance_to(at(2))
    assert store.expire_silence(id_, at(2))
    assert silencer.mutes(event(), at(2)) == id_  # the cached copy until reload
    silencer.reload()
    assert silencer.runtime_silences == ()  # expired: gone from the store's live list
    assert silencer.mutes(event(), at(2)) is None


def test_expired_silences_never_mute(store: StateStore, clock: VirtualClock) -> None:
    store.add_silence(['namespace="payments"'], at(0), at(60), "bob", "x")
    clock.advance_to(at(61))
    silencer = Silencer(store)
    assert silencer.runtime_silences == ()
    assert silencer.mutes(event(), at(61)) is None


def test_reload_reuses_parsed_matchers(store: StateStore) -> None:
    store.add_silence(['namespace=~"pay.*"'], at(0), at(60), "bob", "x")
    silencer = Silencer(store)
    [before] = silencer.runtime_silences
    store.add_silence(['severity="info"'], at(0), at(60), "bob", "y")
    silencer.reload()
    first, _second = silencer.runtime_silences
    assert first.matchers is before.matchers


def test_an_unparseable_stored_silence_is_skipped_and_logged(clock: VirtualClock) -> None:
    store = MemoryStateStore(clock=clock)
    bad = store.add_silence(["not a matcher"], at(0), at(60), "bob", "x")
    good = store.add_silence(['namespace="payments"'], at(0), at(60), "bob", "x")
    with capture_logs() as logs:
        silencer = Silencer(store)
    assert [s.id for s in silencer.runtime_silences] == [good]
    assert silencer.mutes(event(), at(1)) == good
    assert [(e["event"], e["silence_id"]) for e in logs] == [("silence_unusable", bad)]
