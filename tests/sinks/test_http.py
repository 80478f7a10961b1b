"""``send_json`` and ``encode_json``: the one request every HTTP sink makes, against a local
aiohttp server standing in for the far side."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from tests.support.ports import free_port

from canarywatch.sinks import DeliveryError, DeliveryReason, encode_json, send_json

SECRET = "T000/B000/s3cr3t"


async def _echo(request: web.Request) -> web.Response:
    """Answers with the status asked for in ``?status=``, echoing what it was sent."""
    status = int(request.query.get("status", "200"))
    headers = {"Retry-After": "7"} if status == 429 else {}
    if status == 302:
        raise web.HTTPFound("/elsewhere")
    body = await request.read()
    echo = {
        "method": request.method,
        "content_type": request.headers.get("Content-Type"),
        "body": body.decode(),
        "x_team": request.headers.get("X-Team"),
    }
    return web.json_response(echo, status=status, headers=headers)


async def _text(_: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    app = web.Application()
    app.router.add_route("*", f"/{SECRET}", _echo)
    app.router.add_route("*", "/text", _text)
    async with TestServer(app) as test_server:
        yield test_server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_posts_json_and_returns_the_read_answer(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    url = str(server.make_url(f"/{SECRET}"))
    answer = await send_json(http, url, {"b": 1, "a": "é"}, headers={"X-Team": "payments"})
    assert (answer.status, answer.error) == (200, None)
    assert answer.headers["content-type"].startswith("application/json")  # names lower-cased
    echo = answer.json()
    assert echo == {
        "method": "POST",
        "content_type": "application/json",
        "body": '{"a":"é","b":1}',  # encode_json: compact, keys sorted
        "x_team": "payments",
    }


async def test_bytes_are_sent_as_given_and_none_sends_no_body(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    url = str(server.make_url(f"/{SECRET}"))
    signed = b'{"z":0, "a":1}'
    echo = (await send_json(http, url, signed)).json()
    assert isinstance(echo, dict)
    assert echo["body"] == signed.decode()
    echo = (await send_json(http, url, method="GET")).json()
    assert isinstance(echo, dict)
    assert (echo["method"], echo["body"], echo["content_type"]) == ("GET", "", None)


@pytest.mark.parametrize(
    ("status", "payload_errors", "reason", "retryable", "retry_after"),
    [
        (429, (), DeliveryReason.RATE_LIMITED, True, 7.0),
        (503, (), DeliveryReason.HTTP_5XX, True, None),
        (400, (), DeliveryReason.HTTP_4XX, False, None),
        (400, (400, 413), DeliveryReason.INVALID_PAYLOAD, False, None),
        (302, (), DeliveryReason.HTTP_4XX, False, None),  # redirects are not followed
    ],
)
async def test_answers_are_classified(
    server: TestServer,
    http: aiohttp.ClientSession,
    status: int,
    payload_errors: tuple[int, ...],
    reason: DeliveryReason,
    retryable: bool,
    retry_after: float | None,
) -> None:
    url = str(server.make_url(f"/{SECRET}").with_query(status=str(status)))
    answer = await send_json(http, url, {"x": 1}, payload_errors=payload_errors)
    assert answer.status == status
    assert answer.error is not None
    assert (answer.error.reason, answer.error.retryable) == (reason, retryable)
    assert (answer.error.status_code, answer.error.retry_after_s) == (status, retry_after)
    assert SECRET not in str(answer.error)


async def test_a_body_that_is_not_json_decodes_to_none(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    answer = await send_json(http, str(server.make_url("/text")), {})
    assert (answer.text, answer.json(), answer.error) == ("ok", None, None)


async def test_transport_failure_is_raised_classified_without_the_url(
    http: aiohttp.ClientSession,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/{SECRET}"
    with pytest.raises(DeliveryError) as exc:
        await send_json(http, url, {"x": 1})
    assert (exc.value.reason, exc.value.retryable) == (DeliveryReason.CONNECTION, True)
    assert exc.value.__cause__ is None
    assert exc.value.__suppress_context__
    assert SECRET not in str(exc.value)


def test_encode_json_refuses_what_json_cannot_say() -> None:
    assert json.loads(encode_json([{"b": 2, "a": None}])) == [{"a": None, "b": 2}]
    with pytest.raises(DeliveryError) as exc:
        encode_json({"at": object()})
    assert (exc.value.reason, exc.value.retryable) == (DeliveryReason.INVALID_PAYLOAD, False)
