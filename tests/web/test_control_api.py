"""The control API over a real aiohttp server, and ``ControlClient`` end to end against it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs
from tests.support.ports import free_port
from tests.support.small_disk import small_disk

from canarywatch.cli.control_client import (
    ControlClient,
    ControlError,
    format_outbox,
    format_silences,
)
from canarywatch.clock import VirtualClock
from canarywatch.config import Silence as SilenceConfig
from canarywatch.errors import CanarywatchError
from canarywatch.pipeline.silence import Silencer, config_silence_id
from canarywatch.secrets import Secret
from canarywatch.state import (
    HoldingStateStore,
    MemoryStateStore,
    SqliteStateStore,
    StateHeld,
    StateStore,
)
from canarywatch.testing import T0, make_event, make_notification
from canarywatch.web.control import MAX_CONTROL_BODY_BYTES, control_routes
from canarywatch.web.server import Readiness, WebServer, build_app

TOKEN = "s3cret-control-token"
CONFIG_SILENCE = SilenceConfig(
    matchers=('namespace="legacy"',),
    starts_at=T0 - timedelta(hours=1),
    ends_at=T0 + timedelta(days=1),
    created_by="config-author",
    comment="legacy is being decommissioned",
)


@dataclass
class Daemon:
    base_url: str
    store: StateStore
    silencer: Silencer
    clock: VirtualClock
    token: str | None
    retried: list[int] = field(default_factory=list)
    pending_id: int = 0
    dead_id: int = 0

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self) -> ControlClient:
        return ControlClient(self.base_url, token=self.token)


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


async def _serve(
    store: StateStore, clock: VirtualClock, token: str | None
) -> AsyncIterator[Daemon]:
    pending = store.outbox_put(
        "team-payments", make_notification(make_event(canary="payments/checkout")), T0
    )
    dead = store.outbox_put(
        "team-search",
        make_notification(make_event(canary="search/api"), receiver="team-search"),
        T0,
    )
    store.outbox_attempted(dead, "http_4xx")
    store.outbox_dead(dead, "http_4xx")
    silencer = Silencer(store, [CONFIG_SILENCE])
    daemon = Daemon("", store, silencer, clock, token, pending_id=pending, dead_id=dead)

    async def on_retry(id_: int) -> None:
        daemon.retried.append(id_)

    routes = control_routes(store, silencer, clock=clock, on_outbox_retry=on_retry)
    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        token=Secret(token) if token is not None else None,
        extra_routes=routes,
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    daemon.base_url = f"http://127.0.0.1:{server.port}"
    try:
        yield daemon
    finally:
        await server.close()


@pytest.fixture(params=[None, TOKEN], ids=["no-token", "token"])
async def daemon(
    request: pytest.FixtureRequest, store: StateStore, clock: VirtualClock
) -> AsyncIterator[Daemon]:
    async for d in _serve(store, clock, request.param):
        yield d


@pytest.fixture
async def guarded(store: StateStore, clock: VirtualClock) -> AsyncIterator[Daemon]:
    async for d in _serve(store, clock, TOKEN):
        yield d


async def call(
    d: Daemon,
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    hdrs = d.headers() if headers is None else headers
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, d.base_url + path, data=data, headers=hdrs) as resp,
    ):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def silence_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "matchers": ['namespace="payments"', 'severity=~"warning|critical"'],
        "duration": "2h",
        "created_by": "bob",
        "comment": "checkout migration",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


# --- silences -------------------------------------------------------------------------------------


async def test_add_list_and_expire_a_silence(daemon: Daemon) -> None:
    status, listed = await call(daemon, "GET", "/api/v1/silences")
    assert status == 200
    [cfg] = listed["silences"]
    assert (cfg["id"], cfg["origin"], cfg["state"]) == (
        config_silence_id(CONFIG_SILENCE),
        "config",
        "active",
    )

    with capture_logs() as logs:
        status, added = await call(daemon, "POST", "/api/v1/silences", body=silence_body())
    assert status == 201
    assert added["matchers"] == ['namespace="payments"', 'severity=~"warning|critical"']
    assert (added["starts_at"], added["ends_at"]) == (
        "2025-01-02T14:08:02Z",
        "2025-01-02T16:08:02Z",
    )
    assert (added["created_by"], added["state"], added["origin"]) == ("bob", "active", "runtime")
    [log] = [e for e in logs if e["event"] == "silence_added"]
    assert (log["silence_id"], log["created_by"], log["comment"]) == (
        added["id"],
        "bob",
        "checkout migration",
    )
    # The pipeline's silencer sees it at once.
    assert daemon.silencer.mutes(make_event(canary="payments/checkout"), T0) == added["id"]

    _, listed = await call(daemon, "GET", "/api/v1/silences")
    assert [s["id"] for s in listed["silences"]] == [cfg["id"], added["id"]]

    daemon.clock.advance_by(60)
    with capture_logs() as logs:
        status, expired = await call(daemon, "DELETE", f"/api/v1/silences/{added['id']}")
    assert status == 200
    assert (expired["state"], expired["ends_at"]) == ("expired", "2025-01-02T14:09:02Z")
    assert [(e["event"], e["created_by"]) for e in logs if e["event"] == "silence_expired"] == [
        ("silence_expired", "bob")
    ]
    assert daemon.silencer.mutes(make_event(canary="payments/checkout"), daemon.clock.now()) is None

    _, listed = await call(daemon, "GET", "/api/v1/silences")
    assert [s["id"] for s in listed["silences"]] == [cfg["id"]]
    _, listed = await call(daemon, "GET", "/api/v1/silences?expired=true")
    assert [s["id"] for s in listed["silences"]] == [cfg["id"], added["id"]]

    status, again = await call(daemon, "DELETE", f"/api/v1/silences/{added['id']}")
    assert (status, again["field"]) == (409, "id")
    assert "already expired" in again["error"]


async def test_expire_refuses_unknown_and_config_silences(daemon: Daemon) -> None:
    status, body = await call(daemon, "DELETE", "/api/v1/silences/no-such-id")
    assert status == 404
    assert body["error"] == "no silence with id no-such-id"
    status, body = await call(
        daemon, "DELETE", f"/api/v1/silences/{config_silence_id(CONFIG_SILENCE)}"
    )
    assert status == 409
    assert "configuration file" in body["error"]
    assert daemon.silencer.mutes(make_event(canary="legacy/app"), T0) is not None


async def test_explicit_window_and_past_start(daemon: Daemon) -> None:
    status, added = await call(
        daemon,
        "POST",
        "/api/v1/silences",
        body=silence_body(
            duration=None,
            starts_at="2025-01-02T16:00:00+02:00",  # 14:00Z: in the past, so "now"
            ends_at="2025-01-02T15:00:00.123456789Z",
        ),
    )
    assert status == 201
    assert (added["starts_at"], added["ends_at"]) == (
        "2025-01-02T14:08:02Z",
        "2025-01-02T15:00:00.123Z",
    )
    status, pending = await call(
        daemon,
        "POST",
        "/api/v1/silences",
        body=silence_body(duration=3600, starts_at="2025-01-03T00:00:00Z"),
    )
    assert (status, pending["state"], pending["ends_at"]) == (
        201,
        "pending",
        "2025-01-03T01:00:00Z",
    )


@pytest.mark.parametrize(
    ("overrides", "field_name", "fragment"),
    [
        ({"matchers": []}, "matchers", "non-empty list"),
        ({"matchers": "namespace=x"}, "matchers", "non-empty list"),
        ({"matchers": ['namespace="a']}, "matchers", "matchers[0]"),
        ({"matchers": ["a=b", 7]}, "matchers", "matchers[1] must be a string"),
        ({"matchers": ['team=~".*"', 'x=""']}, "matchers", "empty string"),
        ({"matchers": ['a=~"("']}, "matchers", "invalid"),
        ({"duration": "2 hours"}, "duration", "invalid duration"),
        ({"duration": -5}, "duration", "positive"),
        ({"duration": True}, "duration", "duration"),
        ({"duration": None}, "ends_at", "exactly one"),
        ({"ends_at": "2025-01-03T00:00:00Z"}, "ends_at", "exactly one"),
        ({"duration": None, "ends_at": "2025-01-03"}, "ends_at", "RFC 3339"),
        ({"duration": None, "ends_at": "2025-01-03T00:00:00"}, "ends_at", "RFC 3339"),
        ({"duration": None, "ends_at": "2025-01-02T14:00:00Z"}, "ends_at", "past"),
        (
            {
                "duration": None,
                "starts_at": "2025-02-01T00:00:00Z",
                "ends_at": "2025-01-03T00:00:00Z",
            },
            "ends_at",
            "after starts_at",
        ),
        ({"starts_at": "yesterday"}, "starts_at", "RFC 3339"),
        ({"starts_at": "2025-13-01T00:00:00Z"}, "starts_at", "not a valid time"),
        ({"created_by": None}, "created_by", "non-empty"),
        ({"created_by": "  "}, "created_by", "non-empty"),
        ({"comment": ""}, "comment", "non-empty"),
        ({"comment": ["x"]}, "comment", "non-empty"),
        ({"id": "mine"}, "id", "unknown field"),
    ],
)
async def test_validation_errors_name_the_field(
    daemon: Daemon, overrides: dict[str, Any], field_name: str, fragment: str
) -> None:
    status, body = await call(daemon, "POST", "/api/v1/silences", body=silence_body(**overrides))
    assert status == 400
    assert body["field"] == field_name
    assert fragment in body["error"]
    assert daemon.store.silences(include_expired=True) == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'["a list"]', "JSON object"),
    ],
)
async def test_malformed_bodies_are_400(daemon: Daemon, raw: bytes, fragment: str) -> None:
    status, body = await call(daemon, "POST", "/api/v1/silences", raw=raw)
    assert status == 400
    assert fragment in body["error"]
    assert body["field"] is None


async def test_bodies_over_64_kib_are_413(daemon: Daemon) -> None:
    big = silence_body(comment="x" * MAX_CONTROL_BODY_BYTES)
    status, body = await call(daemon, "POST", "/api/v1/silences", body=big)
    assert status == 413
    assert "64" in body["error"] or str(MAX_CONTROL_BODY_BYTES) in body["error"]
    assert daemon.store.silences(include_expired=True) == []


async def test_bodies_over_64_kib_are_413_without_content_length(daemon: Daemon) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"comment": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}'

    async with (
        aiohttp.ClientSession() as http,
        http.post(
            daemon.base_url + "/api/v1/silences", data=chunks(), headers=daemon.headers()
        ) as resp,
    ):
        assert resp.status == 413
        assert "exceeds" in (await resp.json())["error"]


async def test_unknown_endpoints_and_bad_query_answer_json(daemon: Daemon) -> None:
    status, body = await call(daemon, "GET", "/api/v1/nothing")
    assert (status, body["error"]) == (404, "no such endpoint: GET /api/v1/nothing")
    status, body = await call(daemon, "PUT", "/api/v1/silences")
    assert status == 404
    status, body = await call(daemon, "GET", "/api/v1/silences?expired=perhaps")
    assert (status, body["field"]) == (400, "expired")
    status, body = await call(daemon, "GET", "/api/v1/outbox?limit=0")
    assert (status, body["field"]) == (400, "limit")


# --- the bearer token ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}],
    ids=["none", "wrong", "no-scheme"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/silences"),
        ("POST", "/api/v1/silences"),
        ("DELETE", "/api/v1/silences/x"),
        ("GET", "/api/v1/outbox"),
        ("GET", "/api/v1/outbox/dead"),
        ("POST", "/api/v1/outbox/1/retry"),
        ("DELETE", "/api/v1/outbox/1"),
    ],
)
async def test_401_without_the_token_when_one_is_configured(
    guarded: Daemon, method: str, path: str, headers: dict[str, str]
) -> None:
    body = silence_body() if method == "POST" else None
    status, answer = await call(guarded, method, path, body=body, headers=headers)
    assert status == 401
    assert TOKEN not in json.dumps(answer)
    assert guarded.store.silences(include_expired=True) == []
    assert len(guarded.store.outbox_dead_letters()) == 1
    assert len(guarded.store.outbox_pending()) == 1


# --- outbox -------------------------------------------------------------------------------------


async def test_outbox_list_retry_and_drop(daemon: Daemon) -> None:
    status, pending = await call(daemon, "GET", "/api/v1/outbox")
    assert status == 200
    [item] = pending["items"]
    assert (item["id"], item["state"], item["receiver"], item["canaries"]) == (
        daemon.pending_id,
        "pending",
        "team-payments",
        ["payments/checkout"],
    )
    _, dead = await call(daemon, "GET", "/api/v1/outbox/dead")
    [d] = dead["items"]
    assert (d["id"], d["state"], d["attempts"], d["last_error"]) == (
        daemon.dead_id,
        "dead",
        1,
        "http_4xx",
    )
    _, filtered = await call(daemon, "GET", "/api/v1/outbox?receiver=nobody")
    assert filtered["items"] == []

    status, body = await call(daemon, "POST", f"/api/v1/outbox/{daemon.pending_id}/retry")
    assert (status, body["field"]) == (409, "id")
    assert "not a dead letter" in body["error"]
    assert daemon.retried == []

    with capture_logs() as logs:
        status, body = await call(daemon, "POST", f"/api/v1/outbox/{daemon.dead_id}/retry")
    assert (status, body["state"]) == (200, "pending")
    assert daemon.retried == [daemon.dead_id]
    assert [(e["event"], e["receiver"]) for e in logs if e["event"] == "outbox_retried"] == [
        ("outbox_retried", "team-search")
    ]
    assert daemon.store.outbox_dead_letters() == []
    assert {i.id for i in daemon.store.outbox_pending()} == {daemon.pending_id, daemon.dead_id}

    with capture_logs() as logs:
        status, body = await call(daemon, "DELETE", f"/api/v1/outbox/{daemon.pending_id}")
    assert (status, body["dropped"], body["state"]) == (200, True, "pending")
    assert [(e["event"], e["outbox_id"]) for e in logs if e["event"] == "outbox_dropped"] == [
        ("outbox_dropped", daemon.pending_id)
    ]
    assert [i.id for i in daemon.store.outbox_pending()] == [daemon.dead_id]

    status, body = await call(daemon, "DELETE", f"/api/v1/outbox/{daemon.pending_id}")
    assert status == 404
    status, body = await call(daemon, "POST", "/api/v1/outbox/999/retry")
    assert status == 404
    status, body = await call(daemon, "POST", "/api/v1/outbox/abc/retry")
    assert (status, body["field"]) == (400, "id")


async def test_outbox_list_shows_attempts_the_next_attempt_and_held_notifications(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Issue 15: a pending item shows its failed attempts, why the last one failed (in plain
    words, whole) and when the next is due; notifications held in memory while the state disk
    is full are listed too, marked held (no id: not yet written), after the pending ones."""
    with small_disk("size-cap", tmp_path) as disk:
        store = HoldingStateStore(disk.store(clock), clock=clock, log=structlog.get_logger())
        first = store.outbox_put(
            "team-payments", make_notification(make_event(canary="payments/checkout")), T0
        )
        refused = "cannot connect to hooks.example.com:443: connection refused (retryable)"
        clock.advance_by(2)
        store.outbox_attempted(first, refused, next_attempt_at=T0 + timedelta(seconds=32))
        disk.fill()
        held = make_notification(make_event(canary="payments/cart", message="x" * 6000))
        with pytest.raises(StateHeld):
            store.outbox_put("team-payments", held, T0 + timedelta(seconds=3))
        app = build_app(
            registry=CollectorRegistry(),
            readiness=Readiness(),
            token=None,
            extra_routes=control_routes(store, Silencer(store, []), clock=clock),
        )
        server = WebServer(app, "127.0.0.1", 0)
        await server.start()
        try:
            client = ControlClient(f"http://127.0.0.1:{server.port}", token=None)
            rows = await client.outbox_list()
            assert [r["id"] for r in await client.outbox_list()] == [first, None]
        finally:
            await server.close()
        store.close()
    pending, waiting = rows
    assert (pending["state"], pending["attempts"], pending["last_error"]) == (
        "pending",
        1,
        refused,
    )
    assert (pending["last_attempt_at"], pending["next_attempt_at"]) == (
        "2025-01-02T14:08:04Z",
        "2025-01-02T14:08:34Z",
    )
    assert (waiting["state"], waiting["canaries"], waiting["attempts"]) == (
        "held",
        ["payments/cart"],
        0,
    )
    assert waiting["held_because"].startswith("not yet written to the state store: ")
    assert "full" in waiting["held_because"]

    header, first_line, held_line, note = format_outbox(rows).splitlines()
    assert header.split()[-3:] == ["CREATED", "NEXT_ATTEMPT", "LAST_ERROR"]
    assert first_line.split()[:2] == [str(first), "pending"]
    assert first_line.endswith(f"2025-01-02T14:08:34Z  {refused}")
    assert held_line.split()[:2] == ["-", "held"]
    assert note.startswith("held: not yet written to the state store: ")
    assert note.endswith("; delivered once written")


# --- the client end to end ----------------------------------------------------------------------


async def test_client_silences_end_to_end(daemon: Daemon) -> None:
    client = daemon.client()
    added = await client.add_silence(
        ['namespace="payments"'], created_by="carol", comment="db failover", duration_s=1800
    )
    assert added["ends_at"] == "2025-01-02T14:38:02Z"
    until = await client.add_silence(
        ["canary=search/api"],
        created_by="carol",
        comment="until tomorrow",
        ends_at=T0 + timedelta(days=1),
    )
    rows = await client.list_silences()
    assert [r["id"] for r in rows] == [config_silence_id(CONFIG_SILENCE), added["id"], until["id"]]

    table = format_silences(rows)
    lines = table.splitlines()
    assert lines[0].split() == [
        "ID",
        "MATCHERS",
        "STARTS",
        "ENDS",
        "CREATED_BY",
        "COMMENT",
        "STATE",
    ]
    assert 'namespace="payments"' in lines[2]
    assert "active (config)" in lines[1]
    assert "db failover" in lines[2]

    expired = await client.expire_silence(added["id"])
    assert expired["state"] == "expired"
    assert [r["id"] for r in await client.list_silences()] == [
        config_silence_id(CONFIG_SILENCE),
        until["id"],
    ]
    assert len(await client.list_silences(include_expired=True)) == 3

    with pytest.raises(ControlError) as info:
        await client.add_silence(["not a matcher"], created_by="carol", comment="x", duration_s=60)
    assert (info.value.status, info.value.field) == (400, "matchers")
    assert "matchers[0]" in str(info.value)
    with pytest.raises(ControlError, match="configuration file") as info:
        await client.expire_silence(config_silence_id(CONFIG_SILENCE))
    assert info.value.status == 409
    with pytest.raises(ValueError, match="exactly one"):
        await client.add_silence(["a=b"], created_by="c", comment="d")


async def test_client_outbox_end_to_end(daemon: Daemon) -> None:
    client = daemon.client()
    [pending] = await client.outbox_list()
    [dead] = await client.outbox_list(dead=True)
    assert (pending["id"], dead["id"]) == (daemon.pending_id, daemon.dead_id)

    table = format_outbox([pending, dead])
    header, first, second = table.splitlines()
    assert header.split()[:4] == ["ID", "STATE", "RECEIVER", "STATUS"]
    assert first.split()[:3] == [str(daemon.pending_id), "pending", "team-payments"]
    assert "http_4xx" in second
    assert format_outbox([]) == "outbox is empty"
    assert format_silences([]) == "no silences"

    assert (await client.outbox_retry(daemon.dead_id))["state"] == "pending"
    assert daemon.retried == [daemon.dead_id]
    assert await client.outbox_list(dead=True) == []
    await client.outbox_drop(daemon.dead_id)
    with pytest.raises(ControlError, match=f"no outbox item with id {daemon.dead_id}"):
        await client.outbox_drop(daemon.dead_id)


async def test_client_with_wrong_token_reports_the_server_reason(guarded: Daemon) -> None:
    client = ControlClient(guarded.base_url, token="not-the-token")
    with pytest.raises(ControlError) as info:
        await client.list_silences()
    assert info.value.status == 401
    assert str(info.value) == "missing or wrong bearer token"
    assert "not-the-token" not in str(info.value)
    assert TOKEN not in str(info.value)


async def test_client_connection_refused_names_only_host_and_port() -> None:
    port = free_port()
    client = ControlClient(f"http://user:pw@127.0.0.1:{port}/secret/path?q=1", token=TOKEN)
    with pytest.raises(ControlError) as info:
        await client.outbox_list()
    message = str(info.value)
    assert message == f"is the daemon running? could not reach http://127.0.0.1:{port}"
    assert isinstance(info.value, CanarywatchError)
    for leak in (TOKEN, "pw", "secret", "q=1"):
        assert leak not in message


@pytest.mark.parametrize("base_url", ["127.0.0.1:9797", "ftp://127.0.0.1:9797", ""])
def test_client_refuses_an_address_that_is_not_http(base_url: str) -> None:
    with pytest.raises(ControlError, match="http://HOST:PORT"):
        ControlClient(base_url, token=None)


# --- decision trails (issue 15, "Explain every decision") ---------------------------------------


async def test_explain_serves_a_canarys_trails_under_the_token(clock: VirtualClock) -> None:
    from canarywatch.model import Transition
    from canarywatch.views.explain import DecisionRecorder, SilencedBy, render_explanation
    from canarywatch.web.control import explain_routes

    recorder = DecisionRecorder()
    halted = make_event(Transition.HALTED, rollout="1", episode=1)
    recorder.seen(halted, T0)
    recorder.silenced(halted, T0, SilencedBy(id="config-0123456789abcdef"))
    other = make_event(Transition.PROMOTED, canary="shop/cart", rollout="1")
    recorder.seen(other, T0)
    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        token=Secret(TOKEN),
        extra_routes=[
            *control_routes(MemoryStateStore(clock=clock), Silencer(None, []), clock=clock),
            *explain_routes(recorder, clock=clock),
        ],
    )
    server = WebServer(app, "127.0.0.1", 0)
    await server.start()
    d = Daemon(
        f"http://127.0.0.1:{server.port}", MemoryStateStore(clock=clock), Silencer(), clock, TOKEN
    )
    try:
        status, body = await call(d, "GET", "/api/v1/explain/test/podinfo", headers={})
        assert (status, body["error"]) == (401, "missing or wrong bearer token")

        status, body = await call(d, "GET", "/api/v1/explain/test/podinfo")
        assert status == 200
        assert body["canary"] == "test/podinfo"
        assert body["kept"] == {"per_canary": 50, "max_age_s": 86400.0, "max_trails": 5000}
        [trail] = body["trails"]
        assert (trail["transition"], trail["suppressed"]["reason"]) == ("halted", "silenced")
        assert trail["steps"][-1]["silence_id"] == "config-0123456789abcdef"

        status, body = await call(d, "GET", "/api/v1/explain/test/podinfo?transition=promoted")
        assert (status, body["trails"]) == (200, [])
        status, body = await call(d, "GET", "/api/v1/explain/test/podinfo?transition=nope")
        assert (status, body["field"]) == (400, "transition")
        assert "neither a transition" in body["error"]
        status, body = await call(d, "GET", "/api/v1/explain/Test_/podinfo")
        assert (status, body["field"]) == (400, "namespace")

        status, body = await call(d, "GET", "/api/v1/explain")
        assert body["canaries"] == [
            {"canary": "shop/cart", "cluster": "", "transitions": 1},
            {"canary": "test/podinfo", "cluster": "", "transitions": 1},
        ]

        answer = await ControlClient(d.base_url, token=TOKEN).explain("test", "podinfo")
        assert "silenced by silence config-0123456789abcdef" in render_explanation(answer)
        with pytest.raises(ControlError, match="missing or wrong bearer token"):
            await ControlClient(d.base_url, token="wrong").explain("test", "podinfo")
    finally:
        await server.close()
