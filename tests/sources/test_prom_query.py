"""Prometheus' query API and its rendering back into exposition text; the HTTP helper."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers.binaries import require_binary
from tests.helpers.http_server import LocalServer, Reply, local_server
from tests.helpers.prometheus import run_prometheus

from canarywatch.errors import ConfigError
from canarywatch.sources.prom_query import (
    FailureKind,
    FetchError,
    PromSample,
    RequestOptions,
    TLSOptions,
    fetch_text,
    flagger_query,
    parse_vector,
    query_instant,
    render_exposition,
    restore_labels,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flagger"
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

Series = set[tuple[str, tuple[tuple[str, str], ...], float]]


def series(text: str, *, prefix: str = "flagger_") -> Series:
    """Every sample of ``text`` named ``prefix*`` as (name, sorted labels, value)."""
    return {
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


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


# -- rendering ---------------------------------------------------------------------------------


def test_render_is_sorted_escaped_and_parses_back() -> None:
    samples = [
        PromSample("flagger_canary_status", {"name": "podinfo", "namespace": "test"}, "2"),
        PromSample("flagger_info", {"version": "1.44.0", "mesh_provider": "istio"}, "1"),
        PromSample("flagger_canary_metric_analysis", {"metric": 'a"b\\c\nd', "name": "x"}, "NaN"),
        PromSample("flagger_canary_weight", {"workload": "podinfo", "namespace": "test"}, "+Inf"),
        PromSample("flagger_up", {}, "1e+06"),
    ]
    text = render_exposition(samples)
    assert text == render_exposition(list(reversed(samples)))
    assert text.splitlines() == [
        'flagger_canary_metric_analysis{metric="a\\"b\\\\c\\nd",name="x"} NaN',
        'flagger_canary_status{name="podinfo",namespace="test"} 2',
        'flagger_canary_weight{namespace="test",workload="podinfo"} +Inf',
        'flagger_info{mesh_provider="istio",version="1.44.0"} 1',
        "flagger_up 1e+06",
    ]
    parsed = {(name, labels): value for name, labels, value in series(text) if value == value}
    assert parsed[("flagger_canary_status", (("name", "podinfo"), ("namespace", "test")))] == 2
    metric_labels = next(
        labels for name, labels, _ in series(text) if name == "flagger_canary_metric_analysis"
    )
    assert dict(metric_labels)["metric"] == 'a"b\\c\nd'


def test_target_labels_are_taken_back_out() -> None:
    scraped = {
        "job": "flagger",
        "instance": "10.0.0.7:8080",
        "namespace": "flagger-system",
        "exported_namespace": "test",
        "name": "podinfo",
        "pod": "flagger-7d9",
    }
    assert restore_labels(scraped) == {"namespace": "test", "name": "podinfo", "pod": "flagger-7d9"}
    twice = [
        PromSample("flagger_canary_status", {"job": "a", "name": "p", "namespace": "t"}, "0"),
        PromSample("flagger_canary_status", {"job": "b", "name": "p", "namespace": "t"}, "0"),
    ]
    assert render_exposition(twice) == 'flagger_canary_status{name="p",namespace="t"} 0\n'


def test_flagger_query() -> None:
    assert flagger_query() == '{__name__=~"flagger_.+"}'
    assert flagger_query(' job="flagger",cluster="prod", ') == (
        '{__name__=~"flagger_.+",job="flagger",cluster="prod"}'
    )


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


# -- against a real Prometheus ---------------------------------------------------------------


@pytest.mark.needs_binaries
async def test_rendered_query_equals_the_scrape(
    http: aiohttp.ClientSession, server: LocalServer, tmp_path: Path
) -> None:
    """Prometheus scrapes the fixture twice: plainly, and under a ``namespace`` target label
    (as a ServiceMonitor adds), which makes Prometheus rename Flagger's own ``namespace``."""
    exposition = (FIXTURES / "metrics-rollback-failed.prom").read_text(encoding="utf-8")
    server.reply = Reply(body=exposition)
    config = f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: flagger
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: ["{server.hostport}"]
  - job_name: flagger-sm
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs:
      - targets: ["{server.hostport}"]
        labels: {{namespace: flagger-system}}
"""
    expected = series(exposition)
    async with run_prometheus(config, tmp_path / "prom") as prom:
        plain: tuple[PromSample, ...] = ()
        relabelled: tuple[PromSample, ...] = ()
        for _ in range(75):
            plain = await query_instant(http, prom.url, flagger_query('job="flagger"'), OPTIONS)
            relabelled = await query_instant(
                http, prom.url, flagger_query('job="flagger-sm"'), OPTIONS
            )
            if plain and relabelled:
                break
            await asyncio.sleep(0.2)
        bad = await asyncio.gather(
            query_instant(http, prom.url, "{__name__=~", OPTIONS), return_exceptions=True
        )
    assert any(s.labels.get("exported_namespace") == "test" for s in relabelled)
    assert series(render_exposition(plain)) == expected
    rendered = series(render_exposition(relabelled))
    namespaced = {s for s in expected if "namespace" in dict(s[1])}
    assert namespaced <= rendered
    assert isinstance(bad[0], FetchError)
    assert (bad[0].kind, bad[0].status_code) == (FailureKind.QUERY_ERROR, 400)


def test_require_binary_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "canarywatch-no-such-binary"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        require_binary(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_binary(missing)
    assert require_binary("sh").endswith("/sh")
