"""A real Alertmanager on 127.0.0.1 for tests (``reference/alertmanager-loopback.md`` §2–3).

``run_alertmanager(workdir)`` writes a temporary config (route to a ``"null"`` receiver, or to a
webhook receiver when ``webhook_url`` is given, ``send_resolved: true``; or ``config`` as given),
starts the binary with
``--web.listen-address=127.0.0.1:0`` and ``--cluster.listen-address=`` (no gossip, no :9094),
reads the port the kernel picked from the ``msg="Listening on"`` log line, waits for
``/-/ready`` and, on exit, stops it with SIGTERM on its own PID (SIGKILL only if it ignores that
for 10 s). Never stops anything it did not start.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from tests.support.binaries import require_binary
from tests.support.process import stop, wait_ready

_LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
_STOP_TIMEOUT_S = 10.0


class AlertmanagerStartError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class RunningAlertmanager:
    url: str
    """Base URL including the route prefix: what the sink's ``urls`` take."""
    port: int
    pid: int
    log_path: Path

    def log_text(self) -> str:
        return _read(self.log_path)

    async def alerts(self, http: aiohttp.ClientSession, **matchers: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` filtered by ``label="value"`` equality matchers."""
        query = "&".join(
            "filter=" + quote(f'{name}="{value}"', safe="") for name, value in matchers.items()
        )
        async with http.get(f"{self.url}/api/v2/alerts?{query}") as response:
            response.raise_for_status()
            data = await response.json()
        assert isinstance(data, list)
        return data


def alertmanager_config(webhook_url: str | None = None) -> str:
    """The YAML config: immediate grouping, one receiver (a webhook, or ``"null"``)."""
    receiver: dict[str, Any] = {"name": "null"}
    if webhook_url is not None:
        receiver = {
            "name": "capture",
            "webhook_configs": [{"url": webhook_url, "send_resolved": True}],
        }
    config = {
        "route": {
            "receiver": receiver["name"],
            "group_by": ["alertname", "namespace", "canary"],
            "group_wait": "100ms",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [receiver],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def alertmanager_binary() -> str:
    """Upstream ``alertmanager`` or Debian ``prometheus-alertmanager``; skip/fail if neither."""
    return shutil.which("alertmanager") or require_binary("prometheus-alertmanager")


@asynccontextmanager
async def run_alertmanager(
    workdir: Path,
    *,
    webhook_url: str | None = None,
    route_prefix: str = "",
    ready_timeout_s: float = 20.0,
    config: str | None = None,
) -> AsyncIterator[RunningAlertmanager]:
    """Run Alertmanager with a temporary config and storage under ``workdir``.

    ``config`` (YAML text) replaces the generated config; ``webhook_url`` is then ignored.
    """
    binary = alertmanager_binary()
    text = config if config is not None else alertmanager_config(webhook_url)
    process, log_path = await asyncio.to_thread(
        _spawn, binary, workdir, config=text, route_prefix=route_prefix
    )
    try:
        port = await _wait_for_port(process, log_path, ready_timeout_s)
        running = RunningAlertmanager(
            url=f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}",
            port=port,
            pid=process.pid,
            log_path=log_path,
        )
        await wait_ready(
            process, running.url, running.log_text, ready_timeout_s, AlertmanagerStartError
        )
        yield running
    finally:
        await stop(process)


def _spawn(
    binary: str, workdir: Path, *, config: str, route_prefix: str
) -> tuple[subprocess.Popen[bytes], Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "alertmanager.yml"
    config_path.write_text(config, encoding="utf-8")
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.path={workdir / 'data'}",
        "--web.listen-address=127.0.0.1:0",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    if route_prefix:
        args.append(f"--web.route-prefix={route_prefix}")
    log_path = workdir / "alertmanager.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return process, log_path


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


async def _wait_for_port(process: subprocess.Popen[bytes], log_path: Path, timeout_s: float) -> int:
    async with asyncio.timeout(timeout_s):
        while True:
            text = _read(log_path)
            for match in _LISTENING.finditer(text):
                if match.group(1) != "0":
                    return int(match.group(1))
            if process.poll() is not None:
                raise AlertmanagerStartError(f"alertmanager exited early:\n{text[-2000:]}")
            await asyncio.sleep(0.05)
