"""The one Prometheus client: the HTTP call, auth, TLS, failure classification, the query API."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from tests.support.binaries import require_binary
from tests.support.http_server import LocalServer, Reply, local_server

from canarywatch.config.sources import BasicAuthSpec, TLSSpec
from canarywatch.errors import ConfigError
from canarywatch.secrets import Secret
from canarywatch.sources.flagger_exposition import flagger_query
from canarywatch.sources.prometheus import (
    BasicAuth,
    BearerAuth,
    FailureKind,
    FetchError,
    PromSample,
    RequestOptions,
    TLSOptions,
    fetch_text,
    http_auth,
    parse_vector,
    query_instant,
)

OPTIONS = RequestOptions(timeout_s=2.0)
OPENSSL_SELF_SIGNED = [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1",
]


def vector(*items: tuple[dict[str, str], str]) -> str:
    result = [{"metric": metric, "value": [1785833712.5, value]} for metric, value in items]
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    async with local_server() as s:
        yield s


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error"},
        {"status": "success", "data": {"resultType": "matrix", "result": []}},
        {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"__name__": "x"}, "value": [1]}],
            },
        },
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"__name__": "x"}, "value": [1, "not-a-number"]}],
            },
        },
        ["not", "an", "object"],
    ],
)
def test_parse_vector_rejects_odd_bodies(body: object) -> None:
    with pytest.raises(FetchError) as caught:
        parse_vector(body)
    assert caught.value.kind is FailureKind.BAD_RESPONSE


def test_parse_vector_takes_aggregations_without_a_name() -> None:
    body = json.loads(vector(({}, "12"), ({"i": "1"}, "0.5")))
    assert parse_vector(body) == (PromSample("", {}, "12"), PromSample("", {"i": "1"}, "0.5"))
    assert [sample.number for sample in parse_vector(body)] == [12.0, 0.5]


# -- the query over HTTP (local fake) --------------------------------------------------------


async def test_query_instant_success(http: aiohttp.ClientSession, server: LocalServer) -> None:
    server.reply = Reply(
        body=vector(
            ({"__name__": "flagger_canary_status", "name": "p", "namespace": "t", "job": "f"}, "1")
        ),
        content_type="application/json",
    )
    samples = await query_instant(http, server.url("/prefix/"), flagger_query(), OPTIONS)
    assert samples == (
        PromSample("flagger_canary_status", {"name": "p", "namespace": "t", "job": "f"}, "1"),
    )
    assert server.requests[0].path == "/prefix/api/v1/query"
    assert server.requests[0].headers["Accept"] == "application/json"
    assert "Authorization" not in server.requests[0].headers


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        (
            Reply(status=400, body='{"status":"error","errorType":"bad_data","error":"parse"}'),
            FailureKind.QUERY_ERROR,
            400,
        ),
        (Reply(status=404, body="404 page not found"), FailureKind.BAD_RESPONSE, 404),
        (Reply(status=403, body='{"oops": 1}'), FailureKind.HTTP_STATUS, 403),
        (Reply(status=503, body="down"), FailureKind.HTTP_STATUS, 503),
        (
            Reply(status=302, headers={"Location": "http://elsewhere/"}),
            FailureKind.HTTP_STATUS,
            302,
        ),
        (Reply(body="<html>proxy login</html>"), FailureKind.BAD_RESPONSE, 200),
    ],
)
async def test_query_instant_failures(
    http: aiohttp.ClientSession,
    server: LocalServer,
    reply: Reply,
    kind: FailureKind,
    status: int,
) -> None:
    server.reply = reply
    with pytest.raises(FetchError) as caught:
        await query_instant(http, server.base_url, flagger_query(), OPTIONS)
    assert (caught.value.kind, caught.value.status_code) == (kind, status)
    assert str(caught.value) == f"{kind.value} {status}"
    assert len(server.requests) == 1  # a redirect is not followed


async def test_fetch_timeout_and_size_cap(http: aiohttp.ClientSession, server: LocalServer) -> None:
    server.reply = Reply(body="flagger_info 1\n", delay_s=0.3)
    with pytest.raises(FetchError) as caught:
        await fetch_text(http, server.url(), RequestOptions(timeout_s=0.05))
    assert caught.value.kind is FailureKind.TIMEOUT
    server.reply = Reply(body="flagger_info 1\n" * 100)
    with pytest.raises(FetchError) as caught:
        await fetch_text(http, server.url(), RequestOptions(timeout_s=1, max_body_bytes=1000))
    assert caught.value.kind is FailureKind.TOO_LARGE
    status, text = await fetch_text(http, server.url(), RequestOptions(timeout_s=1))
    assert (status, text.count("\n")) == (200, 100)


async def test_connection_refused_names_no_url(http: aiohttp.ClientSession) -> None:
    async with local_server() as gone:
        url = gone.url("/s3cret-path/metrics?token=abc")
    with pytest.raises(FetchError) as caught:
        await fetch_text(http, url, OPTIONS)
    assert caught.value.kind is FailureKind.CONNECTION
    assert str(caught.value) == "connection"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    # In plain words for /readyz, from the errno: still no address, path or token.
    assert caught.value.explain() == "connection refused"
    assert not caught.value.answered


async def test_failures_explained_in_plain_words(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    server.reply = Reply(body="flagger_info 1\n", delay_s=0.3)
    with pytest.raises(FetchError) as slow:
        await fetch_text(http, server.url(), RequestOptions(timeout_s=0.05))
    server.reply = Reply(status=404)
    with pytest.raises(FetchError) as missing:
        await fetch_text(http, server.url(), OPTIONS)
    with pytest.raises(FetchError) as unknown:
        await fetch_text(http, "http://no-such-host.invalid/metrics", OPTIONS)
    assert slow.value.explain() == "no answer within 0.05s"
    assert missing.value.explain() == "answered HTTP 404"
    assert missing.value.answered
    assert unknown.value.explain() == "host name not resolved"
    assert FetchError(FailureKind.NO_SERIES).explain() == (
        "answered without a single flagger_* series"
    )


async def test_query_at_a_time(http: aiohttp.ClientSession, server: LocalServer) -> None:
    server.reply = Reply(body=vector(({}, "3")), content_type="application/json")
    at = datetime(2026, 8, 4, 14, 4, 30, 250000, tzinfo=UTC)
    assert await query_instant(http, server.base_url, "sum(x)", OPTIONS, at=at) == (
        PromSample("", {}, "3"),
    )
    assert server.requests[0].query["time"] == "1785852270.250"
    assert server.requests[0].query["query"] == "sum(x)"


# -- credentials ------------------------------------------------------------------------------


async def test_credentials_go_on_the_wire_and_nowhere_else(
    http: aiohttp.ClientSession, server: LocalServer
) -> None:
    bearer = http_auth(Secret("bearer-s3cret"), None)
    basic = http_auth(None, BasicAuthSpec(username="cw", password=Secret("basic-s3cret")))
    assert bearer == BearerAuth(Secret("bearer-s3cret"))
    assert basic == BasicAuth("cw", Secret("basic-s3cret"))
    assert http_auth(None, None) is None
    for auth, header in ((bearer, "Bearer bearer-s3cret"), (basic, "Basic Y3c6YmFzaWMtczNjcmV0")):
        options = RequestOptions(timeout_s=2.0, auth=auth)
        assert "s3cret" not in repr(options)
        server.reply = Reply(status=401)
        with pytest.raises(FetchError) as caught:
            await query_instant(http, server.base_url, "up", options)
        assert server.requests[-1].headers["Authorization"] == header
        assert "s3cret" not in str(caught.value)
        assert "s3cret" not in caught.value.explain()


# -- TLS --------------------------------------------------------------------------------------


def test_tls_options_build_contexts(tmp_path: Path) -> None:
    insecure = TLSOptions(insecure_skip_verify=True).ssl_context()
    assert insecure.verify_mode == ssl.CERT_NONE
    assert not insecure.check_hostname
    assert TLSOptions().ssl_context().verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match=r"tls\.ca_file"):
        TLSOptions(ca_file=str(tmp_path / "missing.pem")).ssl_context()
    with pytest.raises(ConfigError, match=r"tls\.cert_file"):
        TLSOptions(cert_file=str(tmp_path / "missing.pem")).ssl_context()
    with pytest.raises(ConfigError, match=r"x\.key_file"):
        TLSOptions(key_file="k.pem").ssl_context(path="x")


def test_tls_options_from_config() -> None:
    assert TLSOptions.from_config(TLSSpec()) == TLSOptions()
    assert TLSOptions().request_ssl() is True
    spec = TLSSpec(ca_file=Path("/ca.pem"), cert_file=Path("/c.pem"), insecure_skip_verify=True)
    assert TLSOptions.from_config(spec) == TLSOptions(
        ca_file="/ca.pem", insecure_skip_verify=True, cert_file="/c.pem"
    )
    insecure = TLSOptions(insecure_skip_verify=True).request_ssl()
    assert isinstance(insecure, ssl.SSLContext)
    assert insecure.verify_mode == ssl.CERT_NONE


@pytest.mark.needs_binaries
async def test_tls_against_a_self_signed_server(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    args = [*OPENSSL_SELF_SIGNED, "-keyout", str(key), "-out", str(cert)]
    made = await asyncio.to_thread(
        subprocess.run,
        [openssl, *args],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with local_server(server_context) as server:
        server.reply = Reply(body="flagger_info 1\n")
        with pytest.raises(FetchError) as caught:
            await fetch_text(http, server.url(), RequestOptions(timeout_s=2))
        assert caught.value.kind is FailureKind.TLS
        assert caught.value.explain() == "TLS: self-signed certificate"
        for tls in (TLSOptions(ca_file=str(cert)), TLSOptions(insecure_skip_verify=True)):
            options = RequestOptions(timeout_s=2, ssl=tls.ssl_context())
            assert await fetch_text(http, server.url(), options) == (200, "flagger_info 1\n")


def test_require_binary_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "canarywatch-no-such-binary"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_binary(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_binary(missing)
    assert require_binary("sh").endswith("/sh")
