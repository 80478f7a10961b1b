"""The sink contract module: the stevedore loader and the shared helpers plugins use."""

from __future__ import annotations

import errno
import importlib.metadata
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
import structlog
from stevedore import ExtensionManager
from stevedore.extension import Extension
from structlog.testing import capture_logs

from canarywatch.config import parse_config
from canarywatch.errors import ConfigError
from canarywatch.model import DeliveryReason, Notification
from canarywatch.sinks import (
    NAMESPACE,
    DeliveryError,
    Payload,
    Sink,
    SinkLoadError,
    SinkRegistry,
    build_sink,
    classify_exception,
    classify_http,
    clean_text,
    discover_sinks,
    load_sink_class,
    parse_retry_after,
    redact_urls,
    validate_sink_options,
)
from canarywatch.sinks.loader import build_sinks, receiver_problems
from canarywatch.testing import SinkContractError, check_sink_contract
from canarywatch_sinks.console import ConsoleSink
from canarywatch_sinks.jsonl import JsonlSink


class GoodSink(Sink):
    supports_edit = True

    def render(self, n: Notification) -> Payload:
        return n.group_key

    async def deliver(self, payload: Payload) -> None:
        return None


class FutureSink(GoodSink):
    api_version = 2


class NotASink:
    pass


class HalfSink(Sink):  # forgets deliver
    def render(self, n: Notification) -> Payload:
        return ""


def ext(name: str, plugin: type) -> Extension[object]:
    ep = importlib.metadata.EntryPoint(name, f"thirdparty.{name}:{plugin.__name__}", NAMESPACE)
    return Extension(name, ep, plugin, None)


@pytest.fixture
def registry() -> SinkRegistry:
    manager: ExtensionManager[object] = ExtensionManager.make_test_instance(
        [
            ext("good", GoodSink),
            ext("future", FutureSink),
            ext("notasink", NotASink),
            ext("half", HalfSink),
        ],
        namespace=NAMESPACE,
    )
    return SinkRegistry(manager)


def test_registry_checks_each_plugin_and_reports_instead_of_raising() -> None:
    manager: ExtensionManager[object] = ExtensionManager.make_test_instance(
        [ext("good", GoodSink), ext("future", FutureSink), ext("notasink", NotASink)],
        namespace=NAMESPACE,
    )
    with capture_logs() as logs:
        reg = SinkRegistry(manager)
    infos = {p.name: p for p in reg.plugins()}
    assert [p.name for p in reg.plugins()] == ["future", "good", "notasink"]
    assert infos["good"].ok
    assert infos["good"].capabilities == ("supports_edit",)
    assert infos["good"].api_version == 1
    assert infos["good"].target == "thirdparty.good:GoodSink"
    assert not infos["future"].ok
    assert infos["future"].api_version == 2
    assert "api_version 2 is not supported" in (infos["future"].error or "")
    assert not infos["notasink"].ok
    assert reg.names() == ["good"]
    failed = sorted(e["sink"] for e in logs if e["event"] == "sink_load_failed")
    assert failed == ["future", "notasink"]
    assert all(e["log_level"] == "warning" for e in logs)


def test_load_names_the_problem(registry: SinkRegistry) -> None:
    assert registry.load("good") is GoodSink
    with pytest.raises(SinkLoadError, match=r"'future'.*api_version 2"):
        registry.load("future")
    with pytest.raises(SinkLoadError, match=r"'half'.*abstract methods not implemented: deliver"):
        registry.load("half")
    with pytest.raises(SinkLoadError, match=r"unknown sink 'slak'; known sinks: good"):
        registry.load("slak")


def test_installed_builtin_sinks_are_discovered_with_their_distribution() -> None:
    infos = {p.name: p for p in discover_sinks()}
    version = importlib.metadata.version("canarywatch")
    for name, target in (
        ("console", "canarywatch_sinks.console:ConsoleSink"),
        ("jsonl", "canarywatch_sinks.jsonl:JsonlSink"),
    ):
        assert infos[name].ok, infos[name].error
        assert infos[name].distribution == "canarywatch"
        assert infos[name].version == version
        assert infos[name].target == target
    assert load_sink_class("console") is ConsoleSink
    assert load_sink_class("jsonl") is JsonlSink
    with pytest.raises(SinkLoadError, match=r"known sinks: .*console.*jsonl"):
        load_sink_class("nope")


def test_broken_third_party_plugin_is_listed_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cw_broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = list(importlib.metadata.entry_points(group=NAMESPACE))
    fake = [
        importlib.metadata.EntryPoint("broken", "cw_broken_plugin:Sink", NAMESPACE),
        importlib.metadata.EntryPoint("missing", "cw_no_such_module:Sink", NAMESPACE),
    ]
    # Stand in for a third-party distribution: stevedore's own entry-point cache is the seam.
    monkeypatch.setattr(ExtensionManager, "ENTRY_POINT_CACHE", {NAMESPACE: fake + real})
    with capture_logs() as logs:
        infos = {p.name: p for p in discover_sinks()}
    assert infos["console"].ok
    assert infos["jsonl"].ok
    assert not infos["broken"].ok
    assert infos["broken"].error == "RuntimeError: boom at import"
    assert infos["broken"].distribution is None
    assert "ModuleNotFoundError" in (infos["missing"].error or "")
    failed = {e["sink"] for e in logs if e["event"] == "sink_load_failed"}
    assert failed == {"broken", "missing"}
    with capture_logs(), pytest.raises(SinkLoadError, match="boom at import"):
        load_sink_class("broken")


def test_options_are_validated_without_echoing_values() -> None:
    validate_sink_options(ConsoleSink, {"stream": "stderr", "color": "never"})
    with pytest.raises(SinkLoadError, match="colour") as err:
        validate_sink_options(ConsoleSink, {"colour": "always"})
    with pytest.raises(SinkLoadError, match="stream") as err:
        validate_sink_options(ConsoleSink, {"stream": "hunter2-not-a-stream"})
    assert "hunter2" not in str(err.value)
    with pytest.raises(SinkLoadError, match="takes no options"):
        validate_sink_options(GoodSink, {"x": 1})


async def test_build_sink_validates_and_binds_the_logger() -> None:
    async with aiohttp.ClientSession() as http:
        sink = build_sink("console", {"color": "never"}, http=http, log=structlog.get_logger())
        assert isinstance(sink, ConsoleSink)
        assert sink.name == "console"
        assert repr(sink) == "<ConsoleSink name='console'>"
        with pytest.raises(SinkLoadError, match="sink 'console': invalid options"):
            build_sink("console", {"color": "mauve"}, http=http, log=structlog.get_logger())


@pytest.mark.parametrize(
    ("status", "retryable", "reason"),
    [
        (500, True, DeliveryReason.HTTP_5XX),
        (502, True, DeliveryReason.HTTP_5XX),
        (429, True, DeliveryReason.RATE_LIMITED),
        (408, True, DeliveryReason.TIMEOUT),
        (400, False, DeliveryReason.HTTP_4XX),
        (403, False, DeliveryReason.HTTP_4XX),
        (404, False, DeliveryReason.HTTP_4XX),
        (410, False, DeliveryReason.HTTP_4XX),
    ],
)
def test_classify_http(status: int, retryable: bool, reason: DeliveryReason) -> None:
    err = classify_http(status, {}, body="invalid_token https://hooks.example/T0/B0/secret")
    assert err is not None
    assert err.retryable is retryable
    assert err.reason is reason
    assert err.status_code == status
    assert "secret" not in str(err)


def test_classify_http_success_and_retry_after() -> None:
    assert classify_http(200, {}) is None
    assert classify_http(204, {}) is None
    err = classify_http(429, {"retry-after": "7"})
    assert err is not None
    assert err.retry_after_s == 7
    now = datetime(2025, 1, 2, 14, 8, 2, tzinfo=UTC)
    err = classify_http(429, {"Retry-After": "Thu, 02 Jan 2025 14:08:32 GMT"}, now=now)
    assert err is not None
    assert err.retry_after_s == 30
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0
    assert parse_retry_after("99999999") == 3600
    assert parse_retry_after("Thu, 02 Jan 2025 14:00:00 GMT", now=now) == 0


def test_classify_exception() -> None:
    assert classify_exception(TimeoutError()).reason is DeliveryReason.TIMEOUT
    conn = classify_exception(aiohttp.ClientConnectionError("https://x.example/hook/SECRET"))
    assert conn.reason is DeliveryReason.CONNECTION
    assert conn.retryable
    assert "SECRET" not in str(conn)
    assert not classify_exception(TypeError("not JSON serialisable")).retryable
    original = DeliveryError(DeliveryReason.HTTP_4XX, retryable=False)
    assert classify_exception(original) is original


async def test_a_failed_connection_names_the_host_and_the_systems_words() -> None:
    """``connection refused to which host``: the host and port, never the URL's path (where a
    webhook's secret lives), and the operating system's reason."""
    with socket.socket() as sock:  # bound, not listening: the port refuses connections
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                await http.post(f"http://127.0.0.1:{port}/hooks/SECRET-TOKEN")
    error = classify_exception(caught.value)
    assert (error.reason, error.retryable) == (DeliveryReason.CONNECTION, True)
    assert error.detail == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert "SECRET" not in str(error)
    broken = classify_exception(BrokenPipeError(errno.EPIPE, "Broken pipe"))
    assert broken.detail == "connection failed: broken pipe"


def test_clean_text_strips_escapes_and_controls() -> None:
    evil = "ok\x1b[31mred\x1b[0m \x1b]0;title\x07next\nline\ttab \u202eevil\x00 👩\u200d💻"
    assert clean_text(evil) == "okred next line tab evil 👩\u200d💻"
    assert clean_text("abcdef", max_len=4) == "abc…"
    assert clean_text("  spaced   out  ") == "spaced out"


def test_redact_urls_keeps_only_scheme_and_host() -> None:
    text = "POST https://user:pw@hooks.slack.com/services/T0/B0/XYZ?x=1 failed; see http://h:8080"
    assert redact_urls(text) == "POST https://…@hooks.slack.com/… failed; see http://h:8080"


class LeakySink(GoodSink):
    """Breaks the contract three ways: leaks its token in repr, logs and errors."""

    options_model = None

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.token = "xoxb-very-secret"

    def __repr__(self) -> str:
        return f"<LeakySink {self.token}>"

    async def deliver(self, payload: Payload) -> None:
        self.log.info("posting", url=f"https://hooks.example/{self.token}")
        raise DeliveryError(DeliveryReason.HTTP_4XX, retryable=False)


class RandomSink(GoodSink):
    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.calls = 0

    def render(self, n: Notification) -> Payload:
        self.calls += 1
        return f"{n.group_key}#{self.calls}"


async def test_contract_check_catches_leaks_and_impure_render() -> None:
    with pytest.raises(SinkContractError) as err:
        await check_sink_contract(LeakySink, {}, secrets=["xoxb-very-secret"], deliver=True)
    assert "repr(sink)" in str(err.value)
    assert "log event" in str(err.value)
    with pytest.raises(SinkContractError, match="not deterministic"):
        await check_sink_contract(RandomSink, {})
    assert await check_sink_contract(GoodSink, {})


def test_option_errors_name_each_key_in_our_words() -> None:
    """Issue 15: not pydantic's ``Extra inputs are not permitted`` at the options as a whole."""
    with pytest.raises(SinkLoadError) as err:
        validate_sink_options(ConsoleSink, {"colour": "always", "stream": 5})
    problems = dict(err.value.option_problems)
    assert set(problems) == {("colour",), ("stream",)}
    assert problems[("colour",)].startswith("unknown option 'colour' (did you mean 'color'?")
    assert "Extra inputs" not in str(err.value)
    assert "Input should be" not in str(err.value)
    with pytest.raises(SinkLoadError) as none_taken:
        validate_sink_options(GoodSink, {"x": 1})
    assert none_taken.value.option_problems == (
        (("x",), "unknown option 'x': this sink takes no options"),
    )


# --- the sinks of a configuration: one mapping of load errors to key paths -----------------------

TWO_RECEIVERS = """\
receivers:
  - name: screen
    sink: console
  - name: file
    sink: jsonl
    options:
      colour: red
  - name: pager
    sink: slak
route: {receiver: screen}
"""


def test_receiver_problems_name_each_bad_option_and_sink_at_its_own_key_and_line() -> None:
    config = parse_config(TWO_RECEIVERS, filename="c.yaml")
    problems = receiver_problems(config)
    assert [(p.file, p.line, p.path) for p in problems] == [
        ("c.yaml", 7, "receivers[1].options.colour"),
        ("c.yaml", 9, "receivers[2].sink"),
    ]
    assert problems[0].message.startswith("unknown option 'colour'")
    assert problems[1].message.startswith("unknown sink 'slak'; known sinks: ")
    only = receiver_problems(config, only="file")
    assert [p.path for p in only] == ["receivers[1].options.colour"]


async def test_build_sinks_reports_every_problem_with_the_check_config_key_paths() -> None:
    config = parse_config(TWO_RECEIVERS, filename="c.yaml")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ConfigError) as caught:
            await build_sinks(config, http=http, log=structlog.get_logger())
    assert [e.describe() for e in caught.value.all_errors] == [
        p.describe() for p in receiver_problems(config)
    ]
    assert caught.value.path == "receivers[1].options.colour"


async def test_build_sinks_builds_only_what_is_asked_and_keeps_what_is_running() -> None:
    config = parse_config(TWO_RECEIVERS, filename="c.yaml")
    fine = parse_config(
        "receivers: [{name: screen, sink: console}, {name: out, sink: jsonl}]\n"
        "route: {receiver: screen}\n"
    )
    async with aiohttp.ClientSession() as http:
        screen = await build_sinks(config, http=http, log=structlog.get_logger(), only="screen")
        assert list(screen) == ["screen"]
        assert isinstance(screen["screen"], ConsoleSink)
        both = await build_sinks(fine, http=http, log=structlog.get_logger(), keep=screen)
    assert both["screen"] is screen["screen"]
    assert isinstance(both["out"], JsonlSink)


async def test_build_sinks_closes_what_it_built_when_a_constructor_raises() -> None:
    closed: list[str] = []

    class Closing(GoodSink):
        async def aclose(self) -> None:
            closed.append(self.name)

    class Exploding(GoodSink):
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("boom")

    manager: ExtensionManager[object] = ExtensionManager.make_test_instance(
        [ext("closing", Closing), ext("exploding", Exploding)], namespace=NAMESPACE
    )
    config = parse_config(
        "receivers: [{name: a, sink: closing}, {name: b, sink: exploding}]\nroute: {receiver: a}\n"
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(RuntimeError, match="boom"):
            await build_sinks(
                config, http=http, log=structlog.get_logger(), registry=SinkRegistry(manager)
            )
    assert closed == ["closing"]
