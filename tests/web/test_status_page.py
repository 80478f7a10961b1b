"""The status page without a browser: what each view holds, escaping, the step chart, and who may
read or change what (the loopback and token rule), over the daemon's real HTTP app."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from unittest import mock

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client import CollectorRegistry

from canarywatch.clock import VirtualClock
from canarywatch.model import CanaryEvent, CanaryRef, Transition
from canarywatch.pipeline.silence import Silencer
from canarywatch.secrets import Secret
from canarywatch.state import MemoryStateStore
from canarywatch.testing import T0, make_event, make_notification
from canarywatch.views.explain import DecisionRecorder, SilencedBy
from canarywatch.views.live import LiveState
from canarywatch.views.timeline import StepKind, rollouts
from canarywatch.web.control import control_routes
from canarywatch.web.server import Readiness, WebServer, build_app
from canarywatch.web.status_page import is_loopback_client, render_canaries, status_page_routes
from canarywatch.web.timeline_svg import HEIGHT, TOP, step_chart

TOKEN = "page-s3cret-token"
HOSTILE = '<script>alert("x")</script>'


def _feed(live: LiveState, recorder: DecisionRecorder, events: list[CanaryEvent]) -> None:
    for ev in events:
        recorder.seen(ev, ev.observed_at)
        live.observe(ev)


def _checkout_rollouts() -> list[CanaryEvent]:
    """shop/checkout: rollout "a1" promoted in two steps, then rollout "b2" halted and rolled
    back (a rolled-back transition says no weight: it is 0 % after it)."""
    canary, cluster = "shop/checkout", "prod"
    steps: list[tuple[str, Transition, dict[str, object]]] = [
        ("a1", Transition.REVISION_DETECTED, {}),
        ("a1", Transition.WEIGHT_ADVANCED, {"weight": 20, "detail": "20"}),
        ("a1", Transition.WEIGHT_ADVANCED, {"weight": 40, "detail": "40"}),
        ("a1", Transition.PROMOTED, {}),
        ("b2", Transition.REVISION_DETECTED, {}),
        ("b2", Transition.WEIGHT_ADVANCED, {"weight": 10, "detail": "10"}),
        ("b2", Transition.HALTED, {"message": "Halt advancement: request-success-rate 91.4 < 99"}),
        ("b2", Transition.ROLLED_BACK, {"message": "Rolling back checkout.shop failed checks"}),
    ]
    return [
        make_event(
            t, canary=canary, cluster=cluster, at=T0 + timedelta(seconds=10 * i), rollout=r, **f
        )
        for i, (r, t, f) in enumerate(steps)
    ]


def test_rollouts_are_numbered_and_fill_the_weight_a_verdict_implies() -> None:
    live, recorder = LiveState(), DecisionRecorder()
    _feed(live, recorder, _checkout_rollouts())
    found = rollouts(recorder, CanaryRef("shop", "checkout", "prod"), now=T0)
    assert [(r.number, r.label) for r in found] == [(1, "a1"), (2, "b2")]
    assert [s.weight for s in found[0].steps] == [0, 20, 40, 0]
    assert [s.weight for s in found[1].steps] == [0, 10, 10, 0]
    assert found[0].succeeded is True
    assert found[1].succeeded is False
    assert [s.kind for s in found[1].steps][-2:] == [StepKind.HALT, StepKind.VERDICT]
    # Another cluster's canary of the same name is not this one's rollout.
    assert rollouts(recorder, CanaryRef("shop", "checkout", "staging"), now=T0) == []


def _y_values(d: str) -> list[float]:
    """The y of the start point then of each vertical step of a path."""
    first = re.match(r"M[\d.]+,([\d.]+)", d)
    assert first is not None
    return [float(first.group(1)), *(float(v) for v in re.findall(r"V([\d.]+)", d))]


def test_the_step_chart_steps_to_each_weight_in_order() -> None:
    live, recorder = LiveState(), DecisionRecorder()
    _feed(live, recorder, _checkout_rollouts())
    first = rollouts(recorder, CanaryRef("shop", "checkout", "prod"), now=T0)[0]
    svg = step_chart(first, "c1")
    assert 'data-weights="0 20 40 0"' in svg
    d = re.search(r'<path class="weight" d="([^"]+)"', svg)
    assert d is not None
    ys = _y_values(d.group(1))
    top = 50  # the scale's top: at least 50 %, rounded up to 10
    plot = HEIGHT - TOP - 26
    weights = [round((1 - (y - TOP) / plot) * top) for y in ys]
    assert weights == [0, 20, 40, 0]
    assert "verdict: promoted ✓" in svg  # said in words, not only by colour


def test_the_canaries_view_lists_each_canary_and_escapes_what_the_cluster_said() -> None:
    live, recorder = LiveState(), DecisionRecorder()
    _feed(live, recorder, _checkout_rollouts())
    _feed(
        live,
        recorder,
        [make_event(Transition.HALTED, canary="test/podinfo", detail=HOSTILE, weight=30)],
    )
    page = render_canaries(live.canaries(), {}, now_seq=live.last_seq, clock=VirtualClock(T0))
    assert HOSTILE not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert 'href="/canaries/shop/checkout?cluster=prod"' in page
    assert "✗</span> Failed" in page  # rolled back: a symbol and a word, not a colour only
    assert '<span class="num">30%</span>' in page
    filtered = render_canaries(
        live.canaries(), {"namespace": "shop"}, now_seq=0, clock=VirtualClock(T0)
    )
    assert "1 of 2 canaries" in filtered
    assert "podinfo</a>" not in filtered


def _mocked(remote: str, headers: dict[str, str] | None = None) -> aiohttp.web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        (remote, 40000) if key == "peername" else default
    )
    return make_mocked_request("GET", "/", headers=headers or {}, transport=transport)


def test_only_a_direct_loopback_peer_counts_as_loopback() -> None:
    assert is_loopback_client(_mocked("127.0.0.1"))
    assert is_loopback_client(_mocked("::1"))
    assert not is_loopback_client(_mocked("10.1.2.3"))
    assert not is_loopback_client(_mocked("127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}))
    assert not is_loopback_client(_mocked("127.0.0.1", {"Forwarded": "for=10.1.2.3"}))


# -- over HTTP ---------------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    store: MemoryStateStore
    dead_id: int


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = VirtualClock(T0)
    store = MemoryStateStore(clock=clock)
    dead = store.outbox_put(
        "team-search",
        make_notification(make_event(canary="search/api"), receiver="team-search"),
        T0,
    )
    store.outbox_attempted(dead, "http_4xx")
    store.outbox_dead(dead, "http_4xx")
    store.add_silence(['canary="shop/checkout"'], T0, T0 + timedelta(hours=2), "ana", HOSTILE)
    silencer = Silencer(store, [])
    recorder = DecisionRecorder()
    live = LiveState(suppression=recorder.suppression)
    events = _checkout_rollouts()
    _feed(live, recorder, events)
    recorder.silenced(events[-1], T0, SilencedBy("abc123", ('canary="shop/checkout"',)))
    routes = control_routes(store, silencer, clock=clock)
    routes += status_page_routes(live, recorder, store, silencer, clock=clock, token=Secret(TOKEN))
    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        token=Secret(TOKEN),
        extra_routes=routes,
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        yield Served(f"http://127.0.0.1:{server.port}", store, dead)
    finally:
        await server.close()
        store.close()


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, await r.text()


PROXIED = {"X-Forwarded-For": "203.0.113.9"}
"""A request a proxy on this host forwarded: not a loopback client."""


async def test_loopback_reads_the_page_without_the_token(served: Served) -> None:
    for path in ("/", "/canaries/shop/checkout", "/silences", "/outbox", "/static/page.js"):
        status, _ = await _get(served.url + path)
        assert status == 200, path
    async with aiohttp.ClientSession() as session, session.get(served.url + "/") as r:
        policy = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy  # no script from anywhere else, none inline
        assert "frame-ancestors 'none'" in policy


async def test_beyond_loopback_the_page_wants_the_token(served: Served) -> None:
    status, body = await _get(served.url + "/", PROXIED)
    assert status == 401
    assert TOKEN not in body
    wrong = {**PROXIED, "Authorization": "Bearer nope"}
    assert (await _get(served.url + "/silences", wrong))[0] == 401
    bearer = {**PROXIED, "Authorization": f"Bearer {TOKEN}"}
    assert (await _get(served.url + "/silences", bearer))[0] == 200
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert (await _get(served.url + "/", {**PROXIED, "Authorization": f"Basic {basic}"}))[0] == 200


async def test_changes_want_the_token_even_from_loopback(served: Served) -> None:
    body = {
        "matchers": ['canary="test/podinfo"'],
        "duration": "1h",
        "created_by": "ana",
        "comment": "flaky metric",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(served.url + "/api/v1/silences", json=body) as r:
            assert r.status == 401
        async with session.post(served.url + f"/api/v1/outbox/{served.dead_id}/retry") as r:
            assert r.status == 401
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with session.post(served.url + "/api/v1/silences", json=body, headers=headers) as r:
            assert r.status == 201, await r.text()


async def test_one_canary_shows_each_rollout_its_chart_and_its_decision_trail(
    served: Served,
) -> None:
    status, page = await _get(served.url + "/canaries/shop/checkout?cluster=prod")
    assert status == 200
    assert page.index('id="rollout-2"') < page.index('id="rollout-1"')  # newest first
    assert "rolled back ✗" in page
    assert "promoted ✓" in page
    assert page.count("<svg") == 2
    assert "Rolling back checkout.shop failed checks" in page  # Flagger's own words
    assert "silenced" in page
    assert "abc123" in page
    assert 'data-canary="shop/checkout"' in page  # the live region knows whose page it is


async def test_an_unknown_canary_is_a_404_page_naming_it(served: Served) -> None:
    status, page = await _get(served.url + "/canaries/shop/%3Cb%3Enope")
    assert status == 404
    assert "No canary shop/&lt;b&gt;nope" in page
    assert "<b>nope" not in page
    assert "Traceback" not in page


async def test_silences_and_outbox_views(served: Served) -> None:
    _, silences = await _get(served.url + "/silences")
    assert "<code>canary=&quot;shop/checkout&quot;</code>" in silences
    assert HOSTILE not in silences  # the comment, escaped
    assert 'data-action="expire"' in silences
    assert '<label for="s-matchers">' in silences
    _, outbox = await _get(served.url + "/outbox")
    assert f'data-action="retry" data-id="{served.dead_id}"' in outbox
    assert "team-search" in outbox


def test_the_script_and_style_sheet_ship_in_the_package() -> None:
    static = resources.files("canarywatch.web").joinpath("static")
    script = static.joinpath("page.js").read_text(encoding="utf-8")
    assert "/api/v1/transitions?after=" in script  # the endpoint `tail` reads
    assert "sessionStorage" in script
    assert static.joinpath("page.css").is_file()
    assert "http" not in re.sub(r"//.*", "", script)  # no CDN: nothing fetched from elsewhere
