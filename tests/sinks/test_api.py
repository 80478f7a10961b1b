"""The ``Sink`` ABC declares every optional capability the daemon reads, with defaults that ask
nothing of a plugin, and ``canarywatch.sinks`` keeps exporting what plugins import."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

import canarywatch.sinks
from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.metrics import Metrics
from canarywatch.model import Notification
from canarywatch.secrets import Secret
from canarywatch.sinks import Payload, Sink
from canarywatch.testing import T0, RecordingSink, make_notification


class PlainSink(Sink):
    """What a third-party plugin written against the first API looks like: render and deliver."""

    def render(self, n: Notification) -> Payload:
        return n.group_key

    async def deliver(self, payload: Payload) -> None:
        return None


class BeatingSink(PlainSink):
    """Defines only ``heartbeat`` and an interval, as plugins did before the ABC declared them."""

    resend_interval_s = 15.0  # type: ignore[assignment]  # a plain attribute, as plugins wrote it

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.beats: list[tuple[list[Notification], datetime]] = []

    async def heartbeat(self, firing: Sequence[Notification], now: datetime) -> None:
        self.beats.append((list(firing), now))


async def test_a_sink_that_declares_nothing_gets_the_defaults_of_today() -> None:
    async with aiohttp.ClientSession() as http:
        sink = PlainSink("plain", {}, http=http, log=structlog.get_logger())
        assert sink.healthy is True
        assert sink.prints_notifications is False
        assert sink.supports_heartbeat is False
        assert sink.resend_interval_s == 60.0
        await sink.heartbeat([make_notification()], T0)  # declared, does nothing


async def test_defining_heartbeat_is_what_turns_the_heartbeat_on() -> None:
    async with aiohttp.ClientSession() as http:
        sink = BeatingSink("beating", {}, http=http, log=structlog.get_logger())
        assert sink.supports_heartbeat is True
        assert sink.resend_interval_s == 15.0
        n = make_notification()
        await sink.heartbeat([n], T0)
        assert sink.beats == [([n], T0)]


def test_a_sink_may_say_it_is_unhealthy_or_prints_on_the_instance() -> None:
    class Revoked(PlainSink):
        def __init__(self) -> None:  # no session needed to set flags
            self.healthy = False
            self.prints_notifications = True

    sink = Revoked()
    assert (sink.healthy, sink.prints_notifications) == (False, True)
    assert PlainSink.healthy is True  # the class default is untouched


def test_the_package_exports_what_plugins_import_including_secret() -> None:
    for name in canarywatch.sinks.__all__:
        assert hasattr(canarywatch.sinks, name), name
    assert canarywatch.sinks.Secret is Secret
    assert {"Sink", "classify_http", "weight_bar", "build_sink", "SinkLoadError"} <= set(
        canarywatch.sinks.__all__
    )


async def test_dispatch_believes_a_sink_that_says_it_is_unhealthy() -> None:
    sink = RecordingSink()
    sink.healthy = False
    dispatcher = Dispatcher(
        {"team": sink},
        clock=VirtualClock(T0),
        metrics=Metrics(CollectorRegistry()),
        log=structlog.get_logger(),
    )
    health = dispatcher.health("team")
    assert not health.healthy
    assert health.problem == "the sink reports a permanent failure"
