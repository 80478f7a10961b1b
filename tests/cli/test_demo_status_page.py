"""``canarywatch demo --keep-running`` (what ``make demo`` runs): the status page's address is
printed, the page answers while the scenarios play and after the last one, and Ctrl-C still
ends the demo cleanly (issue 18)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a local URL)
        body: bytes = response.read()
        return body.decode()


def test_the_demo_serves_the_page_and_keeps_it_up_until_ctrl_c(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "canarywatch",
        "demo",
        "--keep-running",
        "--port",
        "0",
        "--duration",
        "3s",
        "--scenario",
        "no_traffic_halt_then_rollback",
    ]
    proc = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if "until Ctrl-C" in line:
                break
        text = "".join(lines)
        page = re.search(r"status page: (http://127\.0\.0\.1:\d+/)", text)
        assert page is not None, text
        assert f"the status page stays at {page.group(1)} until Ctrl-C" in text, text
        listing = _get(page.group(1))
        assert 'data-canary="shop/checkout"' in listing
        checkout = _get(page.group(1) + "canaries/shop/checkout")
        assert "Rollout 1" in checkout
        assert "rolled back ✗" in checkout
        assert "delivered to default" in checkout  # who was told
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest
    assert "transitions ->" in rest  # the closing summary line
