"""``canarywatch explain`` (and ``tail``'s marks) against the real daemon and the simulated
cluster: why each transition of a rollback was, or was not, notified (issue 15)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.test_daemon import (
    SPEED,
    daemon_config,
    expected,
    running,
    settle,
    simulated_cluster,
)

from canarywatch.pipeline.silence import config_silence_id
from canarywatch.secrets import Secret
from canarywatch.simulator.scenarios import play_all, realtime_pace

TOKEN = "explain-token"


def _silence_halts() -> str:
    now = datetime.now(UTC)
    return f"""
silences:
  - matchers: ['transition="halted"']
    starts_at: "{(now - timedelta(hours=1)).isoformat()}"
    ends_at: "{(now + timedelta(hours=1)).isoformat()}"
    created_by: oncall
    comment: metric under repair
"""


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "canarywatch", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_explain_and_tail_say_why_a_transition_was_not_sent(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    async with simulated_cluster() as cluster:
        base = daemon_config(cluster, out, tmp_path / "state", extra=_silence_halts())
        server = base.server.model_copy(update={"token": Secret(TOKEN)})
        config = dataclasses.replace(base, server=server)  # the control API wants the token
        async with running(config) as app:
            await play_all(cluster.sim, realtime_pace(SPEED), names=["rollback_failed_checks"])
            want = expected(["rollback_failed_checks"]) - Counter(
                {("test/podinfo", "halted", ""): 1}
            )
            got = await settle(out, want)
            url = f"http://127.0.0.1:{app.port}"
            everything = await _cli(
                "explain", "test/podinfo", "--url", url, "--token-file", str(token_file)
            )
            halted = await _cli(
                "explain", "test/podinfo", "--transition", "halted",
                "--url", url, "--token-file", str(token_file),
            )  # fmt: skip
            refused = await _cli("explain", "test/podinfo", "--url", url)
            nobody = await _cli(
                "explain", "shop/nothing", "--url", url, "--token-file", str(token_file)
            )
            tail = await _cli("tail", "--once", "--url", url, "--token-file", str(token_file))
    assert got == want  # the silenced halt was not notified
    silence = config_silence_id(config.silences[0])

    assert everything.returncode == 0, everything.stderr
    text = everything.stdout
    assert text.startswith("test/podinfo: ")
    assert "(kept: the last 50 per canary, for 1d)" in text.splitlines()[0]
    verdict = text[text.index("\nrolled-back") :]
    assert "  => delivered to capture" in verdict
    assert "delivered to capture (sink jsonl) after 1 attempt" in verdict
    assert "seen by: kubernetes-events at " in verdict
    assert "routed to capture (group firing/" in verdict

    assert halted.returncode == 0, halted.stderr
    assert halted.stdout.startswith("test/podinfo: 1 transition 'halted'")
    assert "  => suppressed (silenced): nothing sent" in halted.stdout
    assert f'silenced by silence {silence} (matchers {{transition="halted"}}' in halted.stdout
    assert "by oncall, 'metric under repair'" in halted.stdout
    assert "rolled-back" not in halted.stdout

    assert refused.returncode == 1
    assert refused.stderr.strip() == "canarywatch: missing or wrong bearer token"
    assert nobody.returncode == 0, nobody.stderr
    assert nobody.stdout.startswith("shop/nothing: no transition recorded")

    assert tail.returncode == 0, tail.stderr
    log = {line.split()[2]: line for line in tail.stdout.splitlines() if line[:2].isdigit()}
    assert "[not sent: silenced]" in log["halted"]
    assert f"silenced by silence {silence}" in log["halted"]
    assert "not sent" not in log["rolled-back"]
