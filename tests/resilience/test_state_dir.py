"""An unusable or full state directory: a clear error naming the path, nothing silently dropped.

Tests run as root in CI containers, where permission bits do not stop writes; an unusable
directory is therefore a path *under a regular file* (``mkdir`` fails with ENOTDIR for anyone),
and a full disk is ``SqliteStateStore(max_size_bytes=...)`` (SQLite's ``max_page_count``: the
same SQLITE_FULL a full filesystem gives).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs
from tests.fakes.webhook_receiver import run_webhook_receiver
from tests.resilience import (
    announced,
    config_text,
    daemon_config,
    diff,
    expected,
    running_daemon,
    wait_for_count,
)

from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.scenarios import SCENARIOS, realtime_pace
from canarywatch.state import DB_FILENAME, SqliteStateStore, StateError


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


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


def _capped_store(path: Path, spare_pages: int) -> SqliteStateStore:
    """A store that can grow by only ``spare_pages`` pages beyond its empty schema."""
    clock = SystemClock()
    with SqliteStateStore(path, clock=clock) as empty:
        size = empty.size_bytes()
    return SqliteStateStore(path, clock=clock, max_size_bytes=size + spare_pages * 4096)


async def test_full_state_store_stops_loudly_and_loses_nothing(tmp_path: Path) -> None:
    """The state store fills up mid-rollout. The daemon must not carry on as if notifications
    were safe: it reports the full store naming the path (error logged and counted, or the
    process stops non-zero for systemd to restart). After the space is freed and the daemon
    restarts, every expected transition is announced exactly once."""
    clock = SystemClock()
    store = Store(clock=clock)
    names = ["manual_approval_gate"]
    want = expected(names)
    db = tmp_path / DB_FILENAME
    state = _capped_store(db, spare_pages=2)
    async with SimulatedApiServer(store) as api, run_webhook_receiver(path="/") as receiver:
        config = daemon_config(api_url=api.url, hook_url=receiver.url, state_dir=tmp_path)
        failure: BaseException | None = None
        readyz: list[tuple[int, str]] = []
        with capture_logs() as logs:
            try:
                async with running_daemon(config, state=state) as app:
                    sim = FlaggerSimulator(store, clock, cluster_name="sim")
                    play = asyncio.create_task(
                        SCENARIOS[names[0]].run(sim, realtime_pace(600.0)), name="play"
                    )
                    async with aiohttp.ClientSession() as http:
                        while not play.done():
                            async with http.get(f"http://127.0.0.1:{app.port}/readyz") as r:
                                readyz.append((r.status, await r.text()))
                            await asyncio.sleep(0.05)
                    await play
                    await asyncio.sleep(0.5)
                    errors = app.registry.get_sample_value("canarywatch_state_store_errors_total")
            except BaseException as exc:  # noqa: BLE001 - the daemon's own failure is the subject
                failure = exc
                errors = None
        state.close()
        if failure is not None:
            # Stopped loudly: the error names the database path.
            assert any(str(db) in str(leaf) for leaf in _leaves(failure)), repr(failure)
        else:
            # Carried on: then every failed write was logged and counted, and /readyz said so.
            assert errors, "state writes failed silently"
            assert [e for e in logs if e["event"] == "state_write_failed"]
            assert any(status == 503 and "state" in body for status, body in readyz)
        before = len(receiver.requests)
        assert before < sum(want.values()), "the cap was not reached: raise the scenario size"

        # Space freed (no cap); the daemon starts again on the same state.
        with SqliteStateStore(db, clock=clock) as roomy:
            async with running_daemon(config, state=roomy):
                await wait_for_count(receiver.requests, sum(want.values()), timeout_s=10.0)
        got = announced(r.json() for r in receiver.requests)
    assert got == want, diff(got, want)
