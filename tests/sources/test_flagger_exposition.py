"""Flagger's series from a Prometheus query rendered back into exposition text."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.http_server import LocalServer, Reply, local_server
from tests.support.prometheus import run_prometheus

from canarywatch.sources.flagger_exposition import (
    flagger_query,
    render_exposition,
    restore_labels,
)
from canarywatch.sources.prometheus import (
    FailureKind,
    FetchError,
    PromSample,
    RequestOptions,
    query_instant,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "flagger"
OPTIONS = RequestOptions(timeout_s=2.0)

Series = set[tuple[str, tuple[tuple[str, str], ...], float]]


def series(text: str, *, prefix: str = "flagger_") -> Series:
    """Every sample of ``text`` named ``prefix*`` as (name, sorted labels, value)."""
    return {
        (s.name, tuple(sorted(s.labels.items())), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


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


def test_a_sample_without_a_name_is_a_bad_response() -> None:
    with pytest.raises(FetchError) as caught:
        render_exposition([PromSample("", {"namespace": "test"}, "1")])
    assert caught.value.kind is FailureKind.BAD_RESPONSE


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
