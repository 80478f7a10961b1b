"""Starting and stopping the real binaries tests run (Prometheus, Alertmanager)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable

import aiohttp

STOP_TIMEOUT_S = 10.0


async def wait_ready(
    process: subprocess.Popen[bytes],
    url: str,
    log_text: Callable[[], str],
    timeout_s: float,
    error: type[Exception],
    *,
    poll_s: float = 0.05,
) -> None:
    """Until ``url``/-/ready answers 200; ``error`` with the log's tail if the process exits."""
    async with aiohttp.ClientSession() as http, asyncio.timeout(timeout_s):
        while True:
            if process.poll() is not None:
                log = await asyncio.to_thread(log_text)
                raise error(f"{process.args[0]} exited:\n{log[-2000:]}")
            try:
                async with http.get(f"{url}/-/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(poll_s)


async def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started (never by name: another test's may be running)."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)
