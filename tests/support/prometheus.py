"""A real Prometheus on 127.0.0.1 for tests (``reference/alertmanager-loopback.md`` §4).

``run_prometheus(config_yaml, workdir)`` checks the config with promtool, starts Prometheus with
``--web.listen-address=127.0.0.1:0``, reads the port the kernel picked from its log (the
``msg="Listening on"`` line with a non-zero port), waits for ``/-/ready`` and, on exit, stops it
with SIGTERM on its own PID (SIGKILL only if it ignores that for 10 s).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import require_binary
from tests.support.process import stop, wait_ready

_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
_STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RunningPrometheus:
    url: str
    """``http://127.0.0.1:<port>``."""
    port: int
    pid: int
    log_path: Path

    def log_text(self) -> str:
        return _read(self.log_path)


class PrometheusStartError(RuntimeError):
    pass


@asynccontextmanager
async def run_prometheus(
    config_yaml: str,
    workdir: Path,
    *,
    ready_timeout_s: float = 20.0,
    extra_args: tuple[str, ...] = (),
) -> AsyncIterator[RunningPrometheus]:
    """Run Prometheus with ``config_yaml`` and storage under ``workdir`` until the block exits."""
    prometheus = require_binary("prometheus")
    promtool = require_binary("promtool")
    process, log_path = await asyncio.to_thread(
        _check_and_start, prometheus, promtool, config_yaml, workdir, extra_args
    )
    try:
        port = await _wait_for_port(process, log_path, ready_timeout_s)
        running = RunningPrometheus(
            url=f"http://127.0.0.1:{port}", port=port, pid=process.pid, log_path=log_path
        )
        await wait_ready(
            process, running.url, running.log_text, ready_timeout_s, PrometheusStartError
        )
        yield running
    finally:
        await stop(process)


def _check_and_start(
    prometheus: str, promtool: str, config_yaml: str, workdir: Path, extra_args: tuple[str, ...]
) -> tuple[subprocess.Popen[bytes], Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.yml"
    config_path.write_text(config_yaml, encoding="utf-8")
    check = subprocess.run(
        [promtool, "check", "config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if check.returncode != 0:
        raise PrometheusStartError(f"promtool rejected the config:\n{check.stdout}{check.stderr}")
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--web.listen-address=127.0.0.1:0",
                "--log.level=info",
                *extra_args,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return process, log_path


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


async def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> int:
    async with asyncio.timeout(timeout_s):
        while True:
            text = await asyncio.to_thread(_read, log_path)
            for match in _LISTENING.finditer(text):
                if match.group(1) != "0":
                    return int(match.group(1))
            if process.poll() is not None:
                raise PrometheusStartError(f"prometheus exited early:\n{text[-2000:]}")
            await asyncio.sleep(0.05)
