"""The pager sink's own tests: canarywatch's contract kit plus what is particular to it."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog
from aiohttp import web
from canarywatch_example_sink import PagerSink

from canarywatch.model import NotificationStatus, Transition
from canarywatch.secrets import Secret
from canarywatch.testing import (
    SinkContract,
    SinkContractError,
    make_event,
    make_notification,
)


def closed_url() -> str:
    """A local URL nobody listens on, with a routing key that must never leak."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/events?routing_key=pager-routing-key-123"


@pytest.fixture
def contract() -> SinkContract:
    return SinkContract(PagerSink, {"url": Secret(closed_url())}, url_option="url")


def test_declaration(contract: SinkContract) -> None:
    contract.check_declaration()


async def test_renders_every_transition_purely(contract: SinkContract) -> None:
    payloads = await contract.check_render()
    assert len(payloads) == 2 * len(Transition) + 1


async def test_survives_hostile_text(contract: SinkContract) -> None:
    await contract.check_escaping()


async def test_maps_http_outcomes(contract: SinkContract) -> None:
    outcomes = await contract.check_http_outcomes()
    assert outcomes[200] is None
    limited = outcomes[429]
    assert limited is not None
    assert limited.retry_after_s == 7


async def test_leaks_no_secret(contract: SinkContract) -> None:
    await contract.check_secrets(deliver=True)


async def test_rejects_a_non_http_url() -> None:
    with pytest.raises(SinkContractError, match="options rejected"):
        SinkContract(PagerSink, {"url": "ftp://pager.example/x"}).check_declaration()


async def test_render_shape() -> None:
    async with aiohttp.ClientSession() as http:
        sink = PagerSink("pager", {"url": closed_url()}, http=http, log=structlog.get_logger())
        n = make_notification(
            make_event(message="Rolling back podinfo.test failed checks threshold reached 5")
        )
        assert sink.render(n) == {
            "summary": (
                "test/podinfo rolled back: Rolling back podinfo.test failed checks threshold "
                "reached 5"
            ),
            "severity": "critical",
            "canary": "test/podinfo",
        }
        resolved = sink.render(make_notification(status=NotificationStatus.RESOLVED))
        assert isinstance(resolved, dict)
        assert resolved["severity"] == "info"
        assert resolved["summary"].startswith("RESOLVED ")
        grouped = sink.render(make_notification(make_event(canary="a/x"), make_event(canary="b/y")))
        assert isinstance(grouped, dict)
        assert grouped["canary"] == "a/x, b/y"


@pytest.fixture
async def capture() -> AsyncIterator[tuple[str, list[object]]]:
    received: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/v1/events", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1/events", received
    finally:
        await runner.cleanup()


async def test_delivers_json(capture: tuple[str, list[object]]) -> None:
    url, received = capture
    async with aiohttp.ClientSession() as http:
        sink = PagerSink("pager", {"url": url}, http=http, log=structlog.get_logger())
        payload = sink.render(make_notification())
        await sink.deliver(payload)
    assert received == [payload]
    assert json.dumps(received[0], sort_keys=True).startswith('{"canary": "test/podinfo"')
