"""``canarywatch tail`` against the daemon's real live API.

The daemon side is built as the daemon builds it: a simulated Flagger plays a scenario on a
``VirtualClock``, its Events and Canary status go through the real pipeline, every new
transition goes into a ``LiveState``, and the live routes are served by the daemon's real HTTP
app on a local port. ``tail`` runs in-process (``--once``, pipes) and as a real process on a
pseudo-terminal (the live redraw).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import os
import re
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import structlog
from tests.support.ports import free_port
from tests.views.test_live import play_into, serve_live

from canarywatch.cli.entry import main
from canarywatch.cli.exitcodes import EXIT_INTERRUPTED
from canarywatch.cli.tail import format_age, render_transition, tail, weight_bar
from canarywatch.clock import VirtualClock
from canarywatch.model import CanaryRef
from canarywatch.views.live import LiveState

START = datetime(2026, 8, 4, 9, 0, tzinfo=UTC)
ESC = "\x1b"
CURSOR_UP = re.compile(r"\x1b\[\d+A")


@pytest.fixture(autouse=True)
def _quiet_pipeline_logs() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -- formatting ----------------------------------------------------------------------------------


def test_weight_bar_and_age() -> None:
    assert weight_bar(30) == "▰▰▰▱▱▱▱▱▱▱ 30%"
    assert weight_bar(0) == "▱▱▱▱▱▱▱▱▱▱ 0%"
    assert weight_bar(100) == "▰▰▰▰▰▰▰▰▰▰ 100%"
    assert weight_bar(None) == "▱▱▱▱▱▱▱▱▱▱ –"
    assert [format_age(s) for s in (None, 4.9, 75, 3723, 90000)] == [
        "–",
        "4s",
        "1m15s",
        "1h02m",
        "1d01h",
    ]


def test_a_transition_line_is_cut_to_the_width_without_splitting_colour_codes() -> None:
    record = {
        "at": "2026-08-04T14:08:02Z",
        "canary": "test/podinfo",
        "transition": "rolled-back",
        "severity": "critical",
        "message": "Rolling back podinfo.test failed checks threshold reached 5",
    }
    plain = render_transition(record, color=False)
    assert plain == (
        "14:08:02  test/podinfo  rolled-back  "
        "Rolling back podinfo.test failed checks threshold reached 5"
    )
    cut = render_transition(record, color=True, width=30)
    assert re.sub(r"\x1b\[[0-9;]*m", "", cut) == plain[:30]
    assert cut.endswith("\x1b[0m")  # the style opened is reset


# -- --once ----------------------------------------------------------------------------------------


async def test_once_shows_every_canary_with_phase_weight_bar_and_last_transition() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    snapshots: list[str] = []

    async with serve_live(live, clock) as srv:

        async def at_30_percent() -> None:
            row = live.row(CanaryRef("test", "podinfo", "default"))
            if row is not None and row.weight == 30 and not snapshots:
                out = io.StringIO()
                assert await tail(srv.base, token=None, once=True, out=out) == 0
                snapshots.append(out.getvalue())

        await play_into(live, "parallel_canaries", clock, between_ticks=at_30_percent)
        out, err = io.StringIO(), io.StringIO()
        code = await tail(srv.base, token=None, once=True, out=out, err=err)
    assert (code, err.getvalue()) == (0, "")
    text = out.getvalue()
    assert ESC not in text  # not a terminal: plain text
    lines = text.splitlines()
    assert lines[0] == f"canarywatch · {srv.base} · 2 canaries"
    assert lines[1].split() == [
        "CLUSTER",
        "CANARY",
        "PHASE",
        "WEIGHT",
        "FAILED",
        "LAST",
        "TRANSITION",
        "AGE",
    ]
    checkout = next(
        line for line in lines if line.startswith("default") and "shop/checkout" in line
    )
    podinfo = next(line for line in lines if line.startswith("default") and "test/podinfo" in line)
    empty = "▱" * 10
    assert checkout.split() == [
        "default", "shop/checkout", "Failed", empty, "0%", "5", "rolled-back", "2m40s",
    ]  # fmt: skip
    assert podinfo.split() == [
        "default", "test/podinfo", "Succeeded", empty, "0%", "0", "promoted", "1m00s",
    ]  # fmt: skip
    assert "recent transitions (UTC):" in lines
    log = lines[lines.index("recent transitions (UTC):") + 1 :]
    assert len(log) == 10
    assert log[-1].startswith("09:11:00  test/podinfo  promoted")
    assert any("shop/checkout  rolled-back  Rolling back checkout.shop" in line for line in log)
    # Mid-rollout: the weight bar shows the canary's share.
    (mid,) = snapshots
    row = next(line for line in mid.splitlines() if "test/podinfo" in line)
    assert "Progressing" in row
    assert "▰▰▰▱▱▱▱▱▱▱ 30%" in row
    assert "weight-advanced" in row


async def test_once_with_colour_forced_colours_but_does_not_move_the_cursor() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    await play_into(live, "rollback_failed_checks", clock)
    async with serve_live(live, clock) as srv:
        out = io.StringIO()
        assert await tail(srv.base, token=None, once=True, out=out, color=True) == 0
    text = out.getvalue()
    assert "\x1b[1;31m" in text or "\x1b[1m\x1b[31m" in text  # critical: bold red
    assert "\x1b[31mFailed" in text
    assert not CURSOR_UP.search(text)


async def test_once_with_an_empty_daemon() -> None:
    clock = VirtualClock(START)
    async with serve_live(LiveState(), clock) as srv:
        out = io.StringIO()
        assert await tail(srv.base + "/", token=None, once=True, out=out) == 0
    assert out.getvalue().splitlines()[1:] == ["no canaries seen yet", "", "no transitions yet"]


async def test_the_token_is_sent_and_a_refusal_is_one_clear_line() -> None:
    clock = VirtualClock(START)
    async with serve_live(LiveState(), clock, token="t0ken") as srv:
        out, err = io.StringIO(), io.StringIO()
        refused = await tail(srv.base, token=None, once=True, out=out, err=err)
        refused_live = await tail(srv.base, token="wrong", once=False, out=out, err=err)
        accepted = await tail(srv.base, token="t0ken", once=True, out=io.StringIO())
    assert (refused, refused_live, accepted) == (1, 1, 0)
    assert out.getvalue() == ""
    assert (
        err.getvalue().splitlines()
        == [
            f"canarywatch tail: the daemon at {srv.base} refused the token (401): pass --token-file"
        ]
        * 2
    )
    assert "t0ken" not in err.getvalue()


@pytest.mark.parametrize("once", [True, False])
async def test_an_unreachable_daemon_is_one_line_and_exit_1(once: bool) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out, err = io.StringIO(), io.StringIO()
    code = await tail(url + "/some/path?x=1", token="secret", once=once, out=out, err=err)
    assert code == 1
    assert out.getvalue() == ""
    (line,) = err.getvalue().splitlines()
    assert line.startswith(f"canarywatch tail: cannot reach the daemon at {url}: ")
    assert "secret" not in line
    assert "some/path" not in line


def test_main_reports_an_unreachable_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    # One entry point: ``canarywatch tail`` (the module's own parser, with other options, is gone).
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["tail", "--url", url, "--once"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"canarywatch tail: cannot reach the daemon at {url}: ")


# -- live, not a terminal ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_tail(url: str, out: io.StringIO) -> AsyncIterator[asyncio.Task[int]]:
    task = asyncio.create_task(tail(url, token=None, once=False, out=out, interval_s=0.05))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.02)


async def test_live_into_a_pipe_prints_the_table_once_then_one_line_per_transition() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    out = io.StringIO()
    async with serve_live(live, clock) as srv, running_tail(srv.base, out):
        await wait_for(lambda: live.subscribers == 1)

        async def slowly() -> None:
            await asyncio.sleep(0.005)

        pipeline = await play_into(live, "rollback_failed_checks", clock, between_ticks=slowly)
        await wait_for(lambda: "rolled-back" in out.getvalue())
    text = out.getvalue()
    assert ESC not in text
    lines = text.splitlines()
    assert lines[:2] == [f"canarywatch · {srv.base} · 0 canaries · live", "no canaries seen yet"]
    log = [line for line in lines[2:] if line]
    assert len(log) == pipeline.stats.transitions == 6
    assert [line.split()[2] for line in log] == [
        "revision-detected",
        "analysis-started",
        "weight-advanced",
        "weight-advanced",
        "halted",
        "rolled-back",
    ]
    assert "weight-advanced 20%" in log[3]


async def test_live_follows_a_daemon_restart() -> None:
    clock = VirtualClock(START)
    first, second = LiveState(), LiveState()
    out = io.StringIO()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with contextlib.AsyncExitStack() as daemon:
        await daemon.enter_async_context(serve_on(first, clock, port))
        async with running_tail(base, out):
            await wait_for(lambda: first.subscribers == 1)
            await daemon.aclose()  # the daemon stops...
            await wait_for(lambda: "reconnecting" in out.getvalue())
            # ...and comes back on the same address as a new process, with news.
            async with serve_on(second, clock, port):
                await play_into(second, "no_traffic_halt_then_rollback", clock)
                await wait_for(lambda: "rolled-back" in out.getvalue())
    lines = out.getvalue().splitlines()
    assert lines.count(f"canarywatch tail: connection to {base} lost, reconnecting") == 1
    assert [line.split()[2] for line in lines if "shop/checkout" in line] == [
        "revision-detected",
        "analysis-started",
        "weight-advanced",
        "no-traffic",
        "rolled-back",
    ]


@contextlib.asynccontextmanager
async def serve_on(state: LiveState, clock: VirtualClock, port: int) -> AsyncIterator[None]:
    from prometheus_client import CollectorRegistry

    from canarywatch.web.live import live_routes
    from canarywatch.web.server import Readiness, WebServer, build_app

    app = build_app(
        registry=CollectorRegistry(),
        readiness=Readiness(),
        extra_routes=live_routes(state, clock=clock),
    )
    server = WebServer(app, "127.0.0.1", port)
    await server.start()
    try:
        yield
    finally:
        state.close()
        await server.close()


# -- live, on a pseudo-terminal ---------------------------------------------------------------


async def test_on_a_terminal_the_table_is_redrawn_in_place_and_the_log_scrolls() -> None:
    clock = VirtualClock(START)
    live = LiveState()
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.set_blocking(master, False)
    screen = bytearray()

    def pump() -> str:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(master, 65536):
                screen.extend(chunk)
        return screen.decode("utf-8", errors="replace")

    async with serve_live(live, clock) as srv:
        env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
        env.pop("NO_COLOR", None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "canarywatch",
            "tail",
            "--url",
            srv.base,
            "--interval",
            "100ms",
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
        )
        try:
            await wait_for(lambda: live.subscribers == 1 and "0 canaries" in pump(), 15)

            async def slowly() -> None:
                await asyncio.sleep(0.01)
                pump()

            await play_into(live, "parallel_canaries", clock, between_ticks=slowly)
            await wait_for(lambda: "promoted" in pump())
            await asyncio.sleep(0.3)  # a few timer redraws (ages move)
            pump()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGINT)
            async with asyncio.timeout(10):
                code = await proc.wait()
            pump()
            os.close(slave)
            os.close(master)
    text = screen.decode("utf-8", errors="replace")
    # ``canarywatch tail`` is the one entry point: Ctrl-C is 130, as tests/cli/test_signals.py
    # pins (the old ``python -m canarywatch.cli.tail`` said 0).
    assert code == EXIT_INTERRUPTED
    assert text.startswith("\x1b[?25l")  # cursor hidden while drawing...
    assert "\x1b[?25h" in text  # ...and given back on exit
    assert len(CURSOR_UP.findall(text)) >= 10  # the table is redrawn in place
    assert "\x1b[K" in text
    assert "\x1b[J" in text
    assert "\x1b[32m" in text  # coloured by severity/phase
    # The last frame shows both canaries in their final state.
    last_frame = text[text.rfind("canarywatch ·") :]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", last_frame)
    assert "2 canaries · live" in plain
    rows = {line.split()[1]: line for line in plain.splitlines() if line.startswith("default")}
    assert set(rows) == {"shop/checkout", "test/podinfo"}
    assert "Failed" in rows["shop/checkout"]
    assert "rolled-back" in rows["shop/checkout"]
    assert "Succeeded" in rows["test/podinfo"]
    assert "▱▱▱▱▱▱▱▱▱▱ 0%" in rows["test/podinfo"]
    # Each transition was printed once into the scrolling log.
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert log.count("shop/checkout  rolled-back") == 1
    assert log.count("test/podinfo  weight-advanced 30%") == 1
    # Mid-rollout frames showed the weight bar moving.
    assert "▰▰▰▱▱▱▱▱▱▱ 30%" in log


# -- suppressed transitions (issue 15, "Explain every decision") -----------------------------------


SILENCED_HALTS = """
receivers: [{name: oncall, sink: console}]
route: {receiver: oncall}
silences:
  - matchers: ['transition="halted"']
    starts_at: "2026-08-04T08:00:00Z"
    ends_at: "2026-08-04T12:00:00Z"
    created_by: alice
    comment: flaky metric
"""


async def test_a_suppressed_transition_is_marked_with_its_reason() -> None:
    from datetime import timedelta

    from canarywatch.config import parse_config
    from canarywatch.model import Transition
    from canarywatch.pipeline import policy
    from canarywatch.pipeline.silence import Silencer, config_silence_id
    from canarywatch.testing import make_event
    from canarywatch.views.explain import DecisionRecorder

    config = parse_config(SILENCED_HALTS)
    recorder = DecisionRecorder()
    pipeline = policy.build_pipeline(
        config, silencer=Silencer(None, config.silences), explain=recorder
    )
    clock = VirtualClock(START)
    live = LiveState(suppression=recorder.suppression)
    streamed = io.StringIO()
    async with serve_live(live, clock) as srv, running_tail(srv.base, streamed):
        await wait_for(lambda: live.subscribers == 1)
        for minute, transition in enumerate(
            (Transition.REVISION_DETECTED, Transition.HALTED, Transition.ROLLED_BACK)
        ):
            at = START + timedelta(minutes=minute)
            event = pipeline.offer_event(make_event(transition, at=at, cluster="default"), at)
            assert event is not None
            live.on_transitions([event])
        await wait_for(lambda: "rolled-back" in streamed.getvalue())
        out = io.StringIO()
        assert await tail(srv.base, token=None, once=True, out=out) == 0
    silence = config_silence_id(config.silences[0])
    for text in (out.getvalue(), streamed.getvalue()):
        lines = {line.split()[2]: line for line in text.splitlines() if line[:2].isdigit()}
        assert "[not sent: silenced]" in lines["halted"]
        assert f"silenced by silence {silence}" in lines["halted"]
        assert "not sent" not in lines["revision-detected"]
        assert "not sent" not in lines["rolled-back"]
    records = live.transitions()
    assert records[1].to_json()["suppressed"] == {
        "reason": "silenced",
        "detail": recorder.suppression(records[1].event)[1],  # type: ignore[index]
    }
    assert records[0].to_json()["suppressed"] is None


def test_a_suppressed_transition_line_puts_the_reason_before_the_message() -> None:
    record = {
        "at": "2026-08-04T14:08:02Z",
        "canary": "test/podinfo",
        "transition": "halted",
        "severity": "warning",
        "message": "Halt advancement",
        "suppressed": {"reason": "catch_up", "detail": "recorded as start-up state"},
    }
    plain = render_transition(record, color=False)
    assert plain == (
        "14:08:02  test/podinfo  halted  [not sent: catch-up]  "
        "recorded as start-up state · Halt advancement"
    )
    cut = render_transition(record, color=False, width=60)
    assert cut == "14:08:02  test/podinfo  halted  [not sent: catch-up]  record"
