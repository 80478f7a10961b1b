"""Logging: JSON off a TTY, console on one, levels, and redaction that keeps secrets out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from canarywatch.logs import (
    Redactor,
    configure_logging,
    get_logger,
    reset_logging,
    set_level,
    strip_urls,
)
from canarywatch.secrets import Secret

TOKEN = "tok-9f8e7d6c5b4a"
HOOK = f"https://hooks.slack.com/services/T000/B000/{TOKEN}?x=1"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    reset_logging()
    yield
    reset_logging()


def _connect() -> None:
    raise ConnectionError(f"cannot reach {HOOK}")


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HOOK, "https://hooks.slack.com"),
        ("POST http://user:pw@10.0.0.1:8080/a/b#frag failed", "POST http://10.0.0.1:8080 failed"),
        ("url='https://x.example/p?q=1')", "url='https://x.example')"),
        ("HTTPS://X.example/Path", "HTTPS://X.example"),
        ("no url here", "no url here"),
        ("https://host:443", "https://host:443"),
    ],
)
def test_strip_urls_keeps_scheme_host_port(text: str, expected: str) -> None:
    assert strip_urls(text) == expected


def test_redactor_masks_keys_secrets_and_urls() -> None:
    event = {
        "event": "delivery_failed",
        "api_token": TOKEN,
        "Authorization": f"Bearer {TOKEN}",
        "webhook_url": HOOK,
        "headers": {"X-Password": TOKEN, "accept": "json"},
        "secret_missing": None,
        "options": [Secret(TOKEN), {"nested": Secret(TOKEN)}],
        "error": RuntimeError(f"POST {HOOK} returned 404"),
        "target": HOOK,
        "attempt": 2,
    }
    out = Redactor()(None, "info", event)
    assert TOKEN not in repr(out)
    assert out["api_token"] == out["Authorization"] == out["webhook_url"] == "***"
    assert out["headers"] == {"X-Password": "***", "accept": "json"}
    assert out["secret_missing"] is None
    assert out["options"] == ["***", {"nested": "***"}]
    assert out["error"] == "RuntimeError: POST https://hooks.slack.com returned 404"
    assert out["target"] == "https://hooks.slack.com"
    assert out["attempt"] == 2


def test_json_output_off_a_tty_never_contains_the_secret() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream)
    log = get_logger("sink.slack")
    log.info("notification_sent", receiver="team", token=Secret(TOKEN), url=HOOK)
    log.info("config_loaded", option=Secret(TOKEN))
    try:
        _connect()
    except ConnectionError:
        log.exception("delivery_failed", attempt=1)
    assert TOKEN not in stream.getvalue()
    sent, loaded, failed = json_lines(stream)
    assert sent["component"] == "sink.slack"
    assert sent["event"] == "notification_sent"
    assert sent["level"] == "info"
    assert sent["url"] == "https://hooks.slack.com"
    assert loaded["option"] == "***"
    assert failed["level"] == "error"
    assert "ConnectionError: cannot reach https://hooks.slack.com" in str(failed["exception"])


def test_level_filters_lower_levels() -> None:
    stream = io.StringIO()
    configure_logging("warning", "json", stream)
    log = get_logger("test")
    log.info("ignored")
    log.warning("kept")
    assert [line["event"] for line in json_lines(stream)] == ["kept"]


def test_set_level_reaches_loggers_bound_before_it() -> None:
    """A reload's ``log.level``: components bound their loggers at start-up."""
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    bound = get_logger("dispatch").bind(receiver="team")
    bound.debug("hidden")
    set_level("debug")
    bound.debug("shown")
    logging.getLogger("aiohttp.client").debug("stdlib too")
    set_level("error")
    bound.warning("hidden again")
    bound.error("kept")
    events = [line["event"] for line in json_lines(stream)]
    assert events == ["shown", "stdlib too", "kept"]
    with pytest.raises(ValueError, match="must be one of"):
        set_level("verbose")


def test_console_rendering_on_a_tty_is_redacted_too() -> None:
    stream = FakeTTY()
    configure_logging("debug", "auto", stream)
    get_logger("test").debug("watch_started", token=TOKEN, server=HOOK)
    text = stream.getvalue()
    assert "watch_started" in text
    assert TOKEN not in text
    assert not text.startswith("{")


def test_explicit_format_wins_over_tty_detection() -> None:
    stream = FakeTTY()
    configure_logging("info", "json", stream)
    get_logger("test").info("event_normalised")
    assert json_lines(stream)[0]["event"] == "event_normalised"


def test_stdlib_logging_goes_through_the_same_redaction() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    logging.getLogger("aiohttp.client").warning("request to %s failed", HOOK)
    (line,) = json_lines(stream)
    assert line["event"] == "request to https://hooks.slack.com failed"
    assert line["logger"] == "aiohttp.client"
    assert TOKEN not in stream.getvalue()


def test_configuring_twice_is_idempotent() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    configure_logging("info", "json", stream)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "canarywatch"]
    assert len(ours) == 1
    logging.getLogger("x").warning("once")
    assert len(json_lines(stream)) == 1


def test_reconfiguring_replaces_the_previous_setup() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("debug", "json", second)
    get_logger("test").debug("moved")
    assert first.getvalue() == ""
    assert json_lines(second)[0]["event"] == "moved"


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "json"), ("info", "xml")])
def test_bad_settings_are_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(level, fmt, io.StringIO())


def test_get_logger_binds_component_for_capture() -> None:
    with capture_logs() as logs:
        get_logger("stage.inhibit").info("event_inhibited", canary="ns/web")
    assert logs == [
        {
            "component": "stage.inhibit",
            "canary": "ns/web",
            "event": "event_inhibited",
            "log_level": "info",
        }
    ]


def test_the_log_goes_to_stderr_by_default_never_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", "json")
    get_logger("app").info("daemon_started")
    logging.getLogger("aiohttp.server").warning("stdlib too")
    out, err = capsys.readouterr()
    assert out == ""  # stdout is the console sink's and command output's
    assert [json.loads(line)["event"] for line in err.splitlines()] == [
        "daemon_started",
        "stdlib too",
    ]


def test_the_log_can_go_to_a_file_instead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "logs" / "canarywatch.log"
    configure_logging("info", "json", io.StringIO(), file=path)
    get_logger("app").info("daemon_started", token=TOKEN)
    configure_logging("debug", "json", file=path)  # reconfigured: the same file, appended to
    get_logger("app").debug("watch_started")
    reset_logging()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [line["event"] for line in lines] == ["daemon_started", "watch_started"]
    assert lines[0]["token"] == "***"
    assert capsys.readouterr() == ("", "")
