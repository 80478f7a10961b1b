"""An unusable or full state directory.

Unusable at start: a clear error naming the path, exit non-zero. Tests run as root in CI
containers, where permission bits do not stop writes; an unusable directory is therefore a path
*under a regular file* (``mkdir`` fails with ENOTDIR for anyone).

Full while running: the daemon keeps running, not ready, holding what it cannot write, and
catches up when there is room. The full disk is a real tmpfs filled with a file (when this
process may mount one) and a database capped with SQLite's ``max_page_count`` (the same
SQLITE_FULL; ``tests.support.small_disk``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs
from tests.resilience import (
    announced,
    config_text,
    daemon_config,
    diff,
    expected,
    running_daemon,
    wait_for_count,
)
from tests.support.small_disk import KINDS, SmallDisk, small_disk
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.config import Config, parse_config
from canarywatch.model import SELF_NAMESPACE
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import SCENARIOS, realtime_pace
from canarywatch.state import StateError


async def test_state_dir_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    state_dir = blocker / "state"
    config = daemon_config(
        api_url="http://127.0.0.1:9", hook_url="http://127.0.0.1:9/", state_dir=state_dir
    )
    with pytest.raises(StateError) as caught:
        await App(config, listen=("127.0.0.1", 0)).run()
    assert str(state_dir) in str(caught.value)
    assert not state_dir.exists()


def test_cli_exits_non_zero_naming_the_state_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    state_dir = blocker / "state"
    config = tmp_path / "canarywatch.yaml"
    config.write_text(
        config_text(
            api_url="http://127.0.0.1:9", hook_url="http://127.0.0.1:9/", state_dir=state_dir
        )
        + 'server: {listen: "127.0.0.1:0"}\nlog: {level: info, format: json}\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [sys.executable, "-m", "canarywatch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode not in (0, 2), done.stderr  # a runtime error, not a config error
    assert str(state_dir) in done.stdout + done.stderr


def _config(disk: SmallDisk, api_url: str, hook_url: str, extra: str = "") -> Config:
    """The resilience config on ``disk``, retrying held writes at least every second."""
    text = config_text(api_url=api_url, hook_url=hook_url, state_dir=disk.dir)
    plain = f"state: {{dir: {str(disk.dir)!r}}}"
    assert plain in text
    return parse_config(
        text.replace(plain, f"state: {{dir: {str(disk.dir)!r}, write_retry_max: 1s{extra}}}")
    )


async def _readyz(http: aiohttp.ClientSession, port: int) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
        return r.status, await r.json()


def _in_order(bodies: list[Any]) -> dict[str, list[tuple[str, str]]]:
    """Per canary, the ``(transition, detail)`` sequence in the order the receiver got them."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for body in bodies:
        for event in body["notification"]["events"]:
            if event["namespace"] != SELF_NAMESPACE:
                seen.setdefault(event["canary"], []).append(
                    (event["transition"], event["detail"] or "")
                )
    return seen


@pytest.mark.parametrize("kind", KINDS)
async def test_full_disk_keeps_the_daemon_running_and_loses_nothing(
    kind: str, tmp_path: Path
) -> None:
    """The state disk fills up before a rollout. The daemon keeps running: /readyz is 503
    naming the database and the reason, the rollout's notifications are held in memory (not
    delivered: they are not durable yet). When room is freed, all of them are written and
    delivered exactly once, in order, and /readyz is 200 again; a restart repeats nothing."""
    clock = SystemClock()
    cluster = Store(clock=clock)
    names = ["manual_approval_gate"]
    want = expected(names)
    total = sum(want.values())
    with small_disk(kind, tmp_path) as disk:
        # On the tmpfs the daemon opens state.dir itself, exactly as in production.
        state = disk.store(clock) if kind == "size-cap" else None
        async with (
            SimulatedApiServer(cluster) as api,
            run_webhook_receiver(path="/") as receiver,
            aiohttp.ClientSession() as http,
        ):
            config = _config(disk, api.url, receiver.url)
            with capture_logs() as logs:
                async with running_daemon(config, state=state) as app:
                    status, body = await _readyz(http, app.port)
                    assert status == 200, body
                    disk.fill()
                    sim = FlaggerSimulator(cluster, clock, cluster_name="sim")
                    await SCENARIOS[names[0]].run(sim, realtime_pace(600.0))

                    def held() -> int:
                        value = app.registry.get_sample_value(
                            "canarywatch_state_held_writes", {"kind": "notification"}
                        )
                        return int(value or 0)

                    # Every transition is either delivered (it became durable before the
                    # database ran out of room) or held; held ones are not delivered.
                    async with asyncio.timeout(20):
                        while len(receiver.requests) + held() < total:
                            await asyncio.sleep(0.05)
                    await asyncio.sleep(1.0)
                    before = len(receiver.requests)
                    assert held() > 0
                    assert before + held() == total, (before, held())

                    # Still running, not ready, and saying why.
                    status, body = await _readyz(http, app.port)
                    assert status == 503, body
                    detail = body["checks"]["state"]["detail"]
                    assert body["checks"]["state"]["ready"] is False
                    assert str(disk.db) in detail
                    assert "full" in detail
                    if kind == "tmpfs":
                        assert before == 0  # the first write after the fill already failed
                        assert "ENOSPC: No space left on device" in detail
                    assert f"holding {held()} notification(s)" in detail
                    assert app.registry.get_sample_value("canarywatch_state_store_writable") == 0
                    errors = app.registry.get_sample_value("canarywatch_state_store_errors_total")
                    assert errors is not None
                    assert errors >= 1
                    assert len(receiver.requests) == before  # nothing held was delivered

                    # Room again: everything held is written, then delivered.
                    disk.free()
                    await wait_for_count(receiver.requests, total, timeout_s=20.0)
                    async with asyncio.timeout(10):
                        while (await _readyz(http, app.port))[0] != 200:
                            await asyncio.sleep(0.1)
                    assert app.registry.get_sample_value("canarywatch_state_store_writable") == 1
                    assert (
                        app.registry.get_sample_value(
                            "canarywatch_state_held_writes", {"kind": "notification"}
                        )
                        == 0
                    )
                    dropped = app.registry.get_sample_value(
                        "canarywatch_events_dropped_total",
                        {"stage": "outbox", "reason": "state_unwritable"},
                    )
                    assert dropped == 0
            bodies = [r.json() for r in receiver.requests]
            got = announced(bodies)
            assert got == want, diff(got, want)
            expected_order = {
                canary: list(steps) for canary, steps in SCENARIOS[names[0]].expected.items()
            }
            assert _in_order(bodies) == expected_order
            made = [body["notification"]["at"] for body in bodies]
            assert made == sorted(made)
            events = [e["event"] for e in logs]
            assert "state_write_failed" in events
            assert "state_writes_flushed" in events

            # A restart on the same state repeats nothing.
            again = disk.store(clock) if kind == "size-cap" else None
            async with running_daemon(config, state=again):
                await asyncio.sleep(2.0)
            assert len(receiver.requests) == total


@pytest.mark.parametrize("kind", KINDS)
async def test_past_the_hold_limit_the_oldest_are_dropped_and_counted(
    kind: str, tmp_path: Path
) -> None:
    """``state.max_held_notifications: 3`` and a rollout of 14 transitions on a full disk:
    the daemon keeps the newest 3 and counts every dropped one; none is lost silently."""
    clock = SystemClock()
    cluster = Store(clock=clock)
    names = ["manual_approval_gate"]
    want = expected(names)
    total = sum(want.values())
    with small_disk(kind, tmp_path) as disk:
        state = disk.store(clock) if kind == "size-cap" else None
        async with (
            SimulatedApiServer(cluster) as api,
            run_webhook_receiver(path="/") as receiver,
            aiohttp.ClientSession() as http,
        ):
            config = _config(disk, api.url, receiver.url, extra=", max_held_notifications: 3")
            async with running_daemon(config, state=state) as app:
                disk.fill()
                sim = FlaggerSimulator(cluster, clock, cluster_name="sim")
                await SCENARIOS[names[0]].run(sim, realtime_pace(600.0))

                def dropped() -> int:
                    value = app.registry.get_sample_value(
                        "canarywatch_events_dropped_total",
                        {"stage": "outbox", "reason": "state_unwritable"},
                    )
                    return int(value or 0)

                async with asyncio.timeout(20):
                    while len(receiver.requests) + 3 + dropped() < total:
                        await asyncio.sleep(0.05)
                before = len(receiver.requests)
                assert dropped() == total - before - 3
                assert dropped() > 0
                status, body = await _readyz(http, app.port)
                assert status == 503
                assert "holding 3 notification(s)" in body["checks"]["state"]["detail"]
                assert "notification(s) dropped past the limit" in body["checks"]["state"]["detail"]

                disk.free()
                await wait_for_count(receiver.requests, before + 3, timeout_s=20.0)
                async with asyncio.timeout(10):
                    while (await _readyz(http, app.port))[0] != 200:
                        await asyncio.sleep(0.1)
            got = announced(r.json() for r in receiver.requests)
            assert len(receiver.requests) == before + 3
            assert not got - want, diff(got, want)  # nothing twice, nothing made up
            # The newest three were kept, and delivered last, in order.
            assert _flat_bodies(r.json() for r in receiver.requests)[-3:] == _flat(names)[-3:]


def _flat(names: list[str]) -> list[tuple[str, str, str]]:
    """The scenario's transitions in order, as ``(canary, transition, detail)``."""
    return [
        (canary, transition, detail)
        for name in names
        for canary, steps in SCENARIOS[name].expected.items()
        for transition, detail in steps
    ]


def _flat_bodies(bodies: Any) -> list[tuple[str, str, str]]:
    return [
        (event["canary"], event["transition"], event["detail"] or "")
        for body in bodies
        for event in body["notification"]["events"]
        if event["namespace"] != SELF_NAMESPACE
    ]
