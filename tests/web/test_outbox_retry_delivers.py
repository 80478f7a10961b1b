"""``canarywatch outbox retry ID`` delivers now, not at the next start (issue 14).

The whole path, as the daemon wires it: a sink refuses a notification for good (dead letter),
the operator retries it through the control API over real HTTP (and through the real
``canarywatch outbox retry`` command), and the same running dispatcher delivers it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from prometheus_client import CollectorRegistry

from canarywatch.cli.control_client import ControlClient
from canarywatch.clock import VirtualClock
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.metrics import Metrics
from canarywatch.model import DeliveryReason, Notification, Transition
from canarywatch.pipeline.silence import Silencer
from canarywatch.sinks import DeliveryError
from canarywatch.state import HoldingStateStore, MemoryStateStore, SqliteStateStore, StateStore
from canarywatch.testing import T0, RecordingSink, make_event, make_notification
from canarywatch.web.control import control_routes
from canarywatch.web.server import Readiness, WebServer, build_app

RECEIVER = "oncall"
REFUSED = DeliveryError(DeliveryReason.HTTP_4XX, retryable=False, status_code=404)


@dataclass
class RunningDaemon:
    """The delivery side and the control API of a daemon, wired as ``app.py`` wires them."""

    store: StateStore
    delivery: DurableDelivery
    dispatcher: Dispatcher
    sink: RecordingSink
    base_url: str


@pytest.fixture(params=["memory", "sqlite", "holding-sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    clock = VirtualClock(T0)
    s: StateStore
    if request.param == "memory":
        s = MemoryStateStore(clock=clock)
    else:
        s = SqliteStateStore(tmp_path / "canarywatch.sqlite3", clock=clock)
        if request.param == "holding-sqlite":  # what the daemon runs on
            s = HoldingStateStore(s, clock=clock, log=structlog.get_logger())
    yield s
    s.close()


@pytest.fixture
async def daemon(store: StateStore) -> AsyncIterator[RunningDaemon]:
    clock = VirtualClock(T0)
    metrics = Metrics(CollectorRegistry())
    delivery = DurableDelivery(store, clock=clock, metrics=metrics, log=structlog.get_logger())
    sink = RecordingSink(clock=clock)
    dispatcher = Dispatcher(
        {RECEIVER: sink, "other": RecordingSink("other", clock=clock)},
        clock=clock,
        metrics=metrics,
        log=structlog.get_logger(),
        queue_size=2,
        on_delivered=delivery.on_delivered,
        refill=delivery.refill,
        on_retrying=delivery.retrying,
    )
    delivery.attach(dispatcher)
    routes = control_routes(
        store, Silencer(store, []), clock=clock, on_outbox_retry=delivery.retried
    )
    server = WebServer(
        build_app(registry=CollectorRegistry(), readiness=Readiness(), extra_routes=routes),
        "127.0.0.1",
        0,
    )
    await server.start()
    try:
        async with dispatcher:
            yield RunningDaemon(
                store, delivery, dispatcher, sink, f"http://127.0.0.1:{server.port}"
            )
    finally:
        await server.close()


def notification(canary: str) -> Notification:
    return make_notification(make_event(Transition.ROLLED_BACK, canary=canary), receiver=RECEIVER)


async def dead_letter(d: RunningDaemon, n: Notification) -> int:
    """Accept ``n`` while the sink refuses it for good; its outbox id once dead-lettered."""
    d.sink.fail_next(1, REFUSED)
    await d.delivery.accept(n)
    assert await asyncio.wait_for(d.dispatcher.drain(10), 20) == 0
    (dead,) = d.store.outbox_dead_letters()
    assert d.sink.payloads == []
    return dead.id


async def test_an_outbox_retry_over_the_control_api_is_delivered_without_a_restart(
    daemon: RunningDaemon,
) -> None:
    n = notification("shop/checkout")
    dead = await dead_letter(daemon, n)

    answer = await ControlClient(daemon.base_url, token=None).outbox_retry(dead)

    assert answer == {"id": dead, "state": "pending", "receiver": RECEIVER}
    async with asyncio.timeout(10):
        await daemon.sink.wait_for(1)
        assert await daemon.dispatcher.drain(10) == 0
    assert daemon.sink.payloads == [daemon.sink.render(n)]
    assert daemon.store.outbox_dead_letters() == []
    assert daemon.store.outbox_depth(RECEIVER) == 0  # recorded as delivered: not sent again


async def test_a_retried_item_behind_a_full_queue_waits_its_turn_and_is_delivered(
    daemon: RunningDaemon,
) -> None:
    """The receiver's queue is full when the operator retries: the item is read back from the
    outbox as the queue drains, in outbox order (it is the oldest), and nothing is lost."""
    n = notification("shop/checkout")
    dead = await dead_letter(daemon, n)
    daemon.sink.pause()
    later = [notification(f"shop/app-{i}") for i in range(4)]
    for m in later:
        await daemon.delivery.accept(m)  # queued or, past the room, spilled to the outbox
    async with asyncio.timeout(10):
        await daemon.sink.wait_for_attempts(2)  # the refused one, then the first of ``later``

    await ControlClient(daemon.base_url, token=None).outbox_retry(dead)
    daemon.sink.resume()

    async with asyncio.timeout(10):
        await daemon.sink.wait_for(5)
        assert await daemon.dispatcher.drain(10) == 0
    assert sorted(map(str, daemon.sink.payloads)) == sorted(
        str(daemon.sink.render(m)) for m in [n, *later]
    )
    assert daemon.store.outbox_depth(RECEIVER) == 0
    assert daemon.store.outbox_dead_letters() == []


async def test_the_outbox_retry_command_delivers_without_a_restart(
    daemon: RunningDaemon,
) -> None:
    n = notification("shop/checkout")
    dead = await dead_letter(daemon, n)

    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "canarywatch",
        "outbox",
        "retry",
        str(dead),
        "--url",
        daemon.base_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await command.communicate()
        assert command.returncode == 0, err.decode()
        await daemon.sink.wait_for(1)
    assert out.decode().strip() == f"outbox item {dead} queued again"
    assert daemon.sink.payloads == [daemon.sink.render(n)]
    assert daemon.store.outbox_dead_letters() == []
