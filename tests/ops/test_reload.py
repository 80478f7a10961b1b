"""SIGHUP on the real daemon process: a reload applies all of a file or none of it, and loses
nothing.

``canarywatch run`` (and ``canarywatch demo``) run as subprocesses; the simulated cluster
(``SimulatedApiServer`` + ``FlaggerSimulator``) and the webhook receivers run in the test process.
Each phase plays one Flagger scenario and reads back what each receiver got, so every
notification is accounted for: at the receiver the routes of the moment name, exactly once. One
test runs ``App`` in-process, to compare what runs before and after a rejected file.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs
from tests.cli import Started
from tests.resilience import Key, announced, diff, expected
from tests.support.webhook_receiver import WebhookReceiver, run_webhook_receiver

from canarywatch.app import App
from canarywatch.cli.exitcodes import EXIT_OK
from canarywatch.clock import SystemClock
from canarywatch.config import load_config
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import play_all, realtime_pace

SPEED = 200.0
"""One Flagger minute is 0.3 s: a scenario takes a few seconds."""


class Daemon:
    """``canarywatch run --config`` as our child process; its log (JSON lines) goes to a file."""

    def __init__(self, config: Path, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "canarywatch", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def records(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    async def wait_for(self, name: str, count: int = 1, *, timeout_s: float = 30.0) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while len(self.events(name)) < count:
                    if self.process.poll() is not None:
                        raise AssertionError(f"the daemon exited:\n{self.tail()}")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"no {name} (x{count}) in {timeout_s} s:\n{self.tail()}") from None

    async def reload(self, text: str) -> None:
        """Write the config file and send SIGHUP (to our child, by its pid); wait until the
        daemon says it reloaded or rejected the file."""
        done = len(self.events("config_reloaded")) + len(self.events("config_reload_rejected"))
        self.config.write_text(text, encoding="utf-8")
        self.process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(30):
            while (
                len(self.events("config_reloaded")) + len(self.events("config_reload_rejected"))
                <= done
            ):
                assert self.process.poll() is None, self.tail()
                await asyncio.sleep(0.05)

    def tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    async def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def hook(name: str, receiver: WebhookReceiver) -> str:
    return (
        f"  - name: {name}\n"
        "    sink: webhook\n"
        f'    options: {{url: {{value: "{receiver.url}"}}, timeout_s: 5}}\n'
    )


def config(
    receivers: str,
    route: str,
    *,
    api_url: str,
    state_dir: Path,
    listen: str = "127.0.0.1:0",
    log: str = "{level: info, format: json}",
    namespaces: str = "[]",
    extra: str = "",
) -> str:
    return (
        f"receivers:\n{receivers}"
        f"route: {route}\n"
        f"state: {{dir: {json.dumps(str(state_dir))}}}\n"
        f'server: {{listen: "{listen}"}}\n'
        f"log: {log}\n"
        f'clusters: [{{name: sim, connection: host, host: "{api_url}", '
        f"namespaces: {namespaces}}}]\n"
        "dispatch: {attempt_timeout: 5s, retry_budget: 30s, drain_timeout: 5s}\n" + extra
    )


ALL = '{group_by: ["..."], group_wait: 0s, group_interval: 0s, receiver: '


@asynccontextmanager
async def cluster() -> AsyncIterator[tuple[SimulatedApiServer, FlaggerSimulator]]:
    clock = SystemClock()
    store = Store(clock=clock)
    async with SimulatedApiServer(store) as api:
        yield api, FlaggerSimulator(store, clock, cluster_name="sim")


async def play(sim: FlaggerSimulator, name: str, *to: WebhookReceiver) -> Counter[Key]:
    """Play scenario ``name``; wait until the receivers ``to`` got all it announces (one
    request per transition: every route here sends each at once, on its own)."""
    before = sum(len(r.requests) for r in to)
    want = expected([name])
    await play_all(sim, realtime_pace(SPEED), names=[name])
    try:
        async with asyncio.timeout(20):
            while to and sum(len(r.requests) for r in to) - before < sum(want.values()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass  # the caller's comparison says what is missing
    await asyncio.sleep(0.5)  # stragglers (a duplicate would show)
    return want


def got(receiver: WebhookReceiver) -> Counter[Key]:
    return announced(r.json() for r in receiver.requests)


async def test_sighup_adds_changes_and_removes_receivers_and_loses_nothing(tmp_path: Path) -> None:
    async with cluster() as (api, sim), AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(run_webhook_receiver(path="/")) for _ in "abc"]
        text = functools.partial(config, api_url=api.url, state_dir=tmp_path / "state")
        path = tmp_path / "canarywatch.yaml"
        path.write_text(text(hook("a", a), ALL + "a}"), encoding="utf-8")
        daemon = Daemon(path, tmp_path / "daemon.log")
        try:
            await daemon.wait_for("sources_listed")
            first = await play(sim, "rollback_failed_checks", a)

            # A receiver added and routed to: its sink is built and swapped in with the route.
            await daemon.reload(text(hook("a", a) + hook("b", b), ALL + "b}"))
            second = await play(sim, "no_traffic_halt_then_rollback", b)

            # b's URL changed (a new sink for the same receiver), a removed.
            b_moved = hook("b", c)
            await daemon.reload(text(b_moved, ALL + "b}"))
            third = await play(sim, "progress_deadline_failure", c)
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.tail()

    assert not diff(got(a), first), f"a: {diff(got(a), first)}"
    assert not diff(got(b), second), f"b: {diff(got(b), second)}"
    assert not diff(got(c), third), f"b moved to c: {diff(got(c), third)}"
    assert not daemon.events("notification_dropped"), daemon.tail()
    assert not daemon.events("config_reload_partial"), daemon.tail()
    added, moved = daemon.events("config_reloaded")
    assert added["receivers_added"] == ["b"]
    assert added["receivers_changed"] == added["receivers_removed"] == []
    assert added["changed"] == ["receivers", "route"]
    assert moved["receivers_added"] == []
    assert moved["receivers_changed"] == ["b"]
    assert moved["receivers_removed"] == ["a"]


async def test_a_file_whose_new_sink_fails_its_check_is_rejected_whole(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("", encoding="utf-8")
    bad = (
        "  - name: b\n    sink: jsonl\n"
        f"    options: {{path: {json.dumps(str(blocked / 'out.jsonl'))}}}\n"
    )
    async with cluster() as (api, sim), run_webhook_receiver(path="/") as a:
        text = functools.partial(config, api_url=api.url, state_dir=tmp_path / "state")
        path = tmp_path / "canarywatch.yaml"
        path.write_text(text(hook("a", a), ALL + "a}"), encoding="utf-8")
        app = App(load_config(path), config_path=path, listen=("127.0.0.1", 0))
        task = asyncio.create_task(app.run(), name="daemon")
        try:
            async with asyncio.timeout(20):
                await app.ready.wait()
            assert app.runner is not None
            running = app.config, app.runner.pipeline.router
            path.write_text(text(hook("a", a) + bad, ALL + "b}"), encoding="utf-8")
            with capture_logs() as logs:
                assert await app.reload() is False
            assert (app.config, app.runner.pipeline.router) == running
            want = await play(sim, "progress_deadline_failure", a)  # still a's
        finally:
            app.stop()
            async with asyncio.timeout(30):
                await task
    assert not diff(got(a), want), diff(got(a), want)
    (rejected,) = [e for e in logs if e["event"] == "config_reload_rejected"]
    assert "receivers[1].options" in rejected["error"]
    assert "jsonl sink failed its start-up check" in rejected["error"]
    assert not [e for e in logs if e["event"] == "config_reloaded"]


async def test_what_a_removed_receiver_still_waits_with_is_delivered_before_its_sink_closes(
    tmp_path: Path,
) -> None:
    async with cluster() as (api, sim), AsyncExitStack() as stack:
        a, b = [await stack.enter_async_context(run_webhook_receiver(path="/")) for _ in "ab"]
        text = functools.partial(
            config, api_url=api.url, state_dir=tmp_path / "state", extra="inhibit_rules: []\n"
        )
        path = tmp_path / "canarywatch.yaml"
        waits = '{group_by: ["..."], group_wait: 1h, receiver: a}'
        path.write_text(text(hook("a", a), waits), encoding="utf-8")
        daemon = Daemon(path, tmp_path / "daemon.log")
        try:
            await daemon.wait_for("sources_listed")
            first = await play(sim, "rollback_failed_checks")
            assert not a.requests  # all of it waits in a's groups (group_wait: 1h)

            await daemon.reload(text(hook("b", b), ALL + "b}"))
            async with asyncio.timeout(20):
                while first - got(a):
                    await asyncio.sleep(0.05)
            second = await play(sim, "no_traffic_halt_then_rollback", b)
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.tail()

    assert not diff(got(a), first), f"a: {diff(got(a), first)}"
    assert not diff(got(b), second), f"b: {diff(got(b), second)}"
    (reloaded,) = daemon.events("config_reloaded")
    assert reloaded["receivers_added"] == ["b"]
    assert reloaded["receivers_removed"] == ["a"]


async def test_sighup_applies_the_log_level_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    async with cluster() as (api, sim), run_webhook_receiver(path="/") as a:
        text = functools.partial(config, api_url=api.url, state_dir=tmp_path / "state")
        path = tmp_path / "canarywatch.yaml"
        path.write_text(text(hook("a", a), ALL + "a}"), encoding="utf-8")
        daemon = Daemon(path, tmp_path / "daemon.log")
        try:
            await daemon.wait_for("daemon_started")
            await daemon.wait_for("sources_listed")
            assert not daemon.events("event_normalised")  # a debug line: not logged at info
            changed = text(
                hook("a", a),
                ALL + "a}",
                listen="127.0.0.1:1",
                log="{level: debug, format: console}",
                namespaces="[test]",
            )
            await daemon.reload(changed)
            want = await play(sim, "rollback_failed_checks", a)
        finally:
            code = await daemon.stop()
        assert code == 0, daemon.tail()

    assert not diff(got(a), want), diff(got(a), want)
    (partial,) = daemon.events("config_reload_partial")
    assert partial["level"] == "warning"
    assert partial["needs_restart"] == ["server.listen", "log.format", "clusters"]
    (reloaded,) = daemon.events("config_reloaded")
    assert reloaded["changed"] == ["server.listen", "log.level", "log.format", "clusters"]
    assert reloaded["applied"] == ["log.level"]
    assert daemon.events("event_normalised"), "log.level: debug was not applied"
    # The listener and the format keep their running values until a restart.
    (started,) = daemon.events("daemon_started")
    assert not str(started["listen"]).endswith(":1")


def test_sighup_reloads_the_demo_and_reports_a_broken_file(tmp_path: Path) -> None:
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    def jsonl(name: str, out: Path) -> str:
        return f"  - name: {name}\n    sink: jsonl\n    options: {{path: {json.dumps(str(out))}}}\n"

    path = tmp_path / "demo.yaml"
    path.write_text(f"receivers:\n{jsonl('a', out_a)}route: {ALL}a}}\n", encoding="utf-8")
    demo = Started(["demo", "--config", str(path), "--port", "0", "--duration", "60s"], tmp_path)
    try:
        demo.wait_for("playing 6 Flagger scenario(s)")
        path.write_text("route: [\n", encoding="utf-8")
        demo.process.send_signal(signal.SIGHUP)
        demo.wait_for("config_reload_rejected")

        path.write_text(
            f"receivers:\n{jsonl('a', out_a)}{jsonl('b', out_b)}route: {ALL}b}}\n",
            encoding="utf-8",
        )
        demo.process.send_signal(signal.SIGHUP)
        demo.wait_for("canarywatch demo: configuration reloaded (receivers: a, b)")
        deadline = time.monotonic() + 30
        while not (out_b.exists() and out_b.read_text(encoding="utf-8").strip()):
            assert time.monotonic() < deadline, f"nothing reached b:\n{demo.text()[-3000:]}"
            time.sleep(0.1)
    finally:
        done = demo.stop(signal.SIGINT)
    assert done.returncode == EXIT_OK, done.explain()
    assert "notification_dropped" not in done.stderr, done.explain()
    assert out_a.read_text(encoding="utf-8").strip(), "a got the notifications before the reload"
