"""Health that tells the truth, through the real daemon process (``python -m canarywatch run``).

- Every source has a ``canarywatch_source_up`` series, 1 or 0, from start-up on: per cluster and
  kind, per Flagger metrics target, the webhook intake; ``/readyz`` names a metrics target that
  never answered in plain words, without the credentials or token of its URL.
- A sink whose deliveries fail permanently (a webhook answering 404) is ``sink_up 0`` and not
  ready until a delivery succeeds, whatever the sink.
- A ``jsonl`` path that cannot be opened is reported with the path and the system's words.
- Logs go to stderr (or ``log.file``), the console sink's notifications to stdout, each once.

The simulated API server and the webhook receiver run in the test's event loop, so the daemon
is watched with ``asyncio`` (never a blocking sleep).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from tests.support.ports import free_port
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.simulator import SimulatedApiServer, Store

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
TOKEN = "intake-secret-7"


class Process:
    """``canarywatch run`` with stdout and stderr in files of their own."""

    def __init__(self, config: Path) -> None:
        directory = config.parent
        self.out_path = directory / "stdout"
        self.err_path = directory / "stderr"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "canarywatch", "run", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=ENV,
            )
        self.url = ""

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]

    async def started(self, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                for record in self.records():
                    if record.get("event") == "daemon_started":
                        self.url = f"http://{record['listen']}"
                        return
                assert self.process.poll() is None, self.stderr()[-3000:]
                await asyncio.sleep(0.05)

    async def stop(self) -> int:
        """SIGTERM to the process we started (never by name); its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        return self.process.returncode


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "canarywatch.yaml"
    path.write_text(
        text
        + f"state: {{dir: {json.dumps(str(tmp_path / 'state'))}}}\n"
        + 'server: {listen: "127.0.0.1:0"}\n',
        encoding="utf-8",
    )
    return path


async def _metrics(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, frozenset[Any]], float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _up(samples: dict[tuple[str, frozenset[Any]], float], name: str) -> dict[str, float]:
    """``{"<source or receiver>@<cluster or sink>": value}`` of one ``_up`` gauge."""
    out = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            d = dict(labels)
            first, second = ("source", "cluster") if "source" in d else ("receiver", "sink")
            out[f"{d[first]}@{d[second]}"] = value
    return out


async def _readyz(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{url}/readyz") as resp:
        body: dict[str, Any] = await resp.json()
        return resp.status, body["checks"]


async def _post_event(http: aiohttp.ClientSession, url: str, name: str) -> None:
    body = {
        "name": name,
        "namespace": "test",
        "phase": "Progressing",
        "metadata": {
            "eventMessage": f"New revision detected! Scaling up {name}.test",
            "eventType": "Normal",
        },
    }
    async with http.post(f"{url}/v1/flagger/events?token={TOKEN}", json=body) as resp:
        assert resp.status == 202, await resp.text()


async def test_every_source_has_a_source_up_series_and_readyz_names_the_dead_target(
    tmp_path: Path,
) -> None:
    dead = free_port()
    secret_url = f"http://watcher:pw-s3cret@127.0.0.1:{dead}/private/metrics?token=tok-123"
    async with SimulatedApiServer(Store()) as api:
        config = _write(
            tmp_path,
            f"""
cluster: sim
clusters: [{{name: sim, connection: host, host: "{api.url}"}}]
metrics_source:
  mode: scrape
  interval: 1s
  timeout: 1s
  targets: [{{name: flagger, url: "{secret_url}", cluster: sim}}]
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json}}
""",
        )
        daemon = Process(config)
        try:
            await daemon.started()
            async with aiohttp.ClientSession() as http:
                # Every series exists from the first scrape on (0 until its source is up).
                first = _up(await _metrics(http, daemon.url), "canarywatch_source_up")
                assert set(first) == {
                    "kube_events@sim",
                    "canaries@sim",
                    "flagger_metrics@sim",
                    "flagger_webhook@sim",
                }, first
                assert set(first.values()) <= {0.0, 1.0}
                async with asyncio.timeout(20):
                    while True:
                        up = _up(await _metrics(http, daemon.url), "canarywatch_source_up")
                        if up["kube_events@sim"] == up["canaries@sim"] == 1:
                            break
                        await asyncio.sleep(0.1)
                assert up["flagger_metrics@sim"] == 0  # nothing ever answered there
                assert up["flagger_webhook@sim"] == 1
                status, checks = await _readyz(http, daemon.url)
        finally:
            assert await daemon.stop() == 0, daemon.stderr()[-3000:]
    assert status == 503
    assert checks["source:sim:kube_events"] == {"ready": True, "detail": "listed"}
    assert checks["source:flagger_webhook"]["ready"]
    target = checks["source:flagger_metrics:flagger"]
    assert not target["ready"]
    assert target["detail"] == (
        f"flagger metrics target flagger (http://127.0.0.1:{dead}): "
        "never answered (connection refused)"
    )
    everything = json.dumps(checks) + daemon.stderr() + daemon.stdout()
    for secret in ("pw-s3cret", "tok-123", "watcher", "/private", TOKEN):
        assert secret not in everything


async def test_a_sink_failing_permanently_is_down_until_a_delivery_succeeds(
    tmp_path: Path,
) -> None:
    async with run_webhook_receiver(path="/") as receiver:
        for _ in range(20):
            receiver.script(404)  # the webhook was deleted
        config = _write(
            tmp_path,
            f"""
receivers:
  - name: hook
    sink: webhook
    options: {{url: {{value: "{receiver.url}"}}}}
route: {{receiver: hook, group_by: ["..."], group_wait: 0s}}
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json}}
""",
        )
        daemon = Process(config)
        try:
            await daemon.started()
            async with aiohttp.ClientSession() as http:
                assert _up(await _metrics(http, daemon.url), "canarywatch_sink_up") == {
                    "hook@webhook": 1
                }
                for i in range(20):
                    await _post_event(http, daemon.url, f"app{i}")
                await receiver.wait_for(20, timeout_s=30)
                async with asyncio.timeout(10):
                    while (await _readyz(http, daemon.url))[1]["sink:hook"]["ready"]:
                        await asyncio.sleep(0.05)
                down = _up(await _metrics(http, daemon.url), "canarywatch_sink_up")
                status, checks = await _readyz(http, daemon.url)
                # The webhook is back (the receiver answers 200 from now on): one delivery
                # succeeds and the sink is healthy again.
                await _post_event(http, daemon.url, "app-after")
                await receiver.wait_for(21, timeout_s=30)
                async with asyncio.timeout(10):
                    while (await _readyz(http, daemon.url))[0] != 200:
                        await asyncio.sleep(0.05)
                up = _up(await _metrics(http, daemon.url), "canarywatch_sink_up")
        finally:
            assert await daemon.stop() == 0, daemon.stderr()[-3000:]
    assert down == {"hook@webhook": 0}
    assert status == 503
    detail = checks["sink:hook"]["detail"]
    assert "20 notification(s) failed for good" in detail, detail
    assert "HTTP 404, not retryable" in detail, detail
    assert "healthy again after a successful delivery" in detail
    assert up == {"hook@webhook": 1}
    events = [r["event"] for r in daemon.records() if r.get("receiver") == "hook"]
    assert events.count("sink_marked_unhealthy") == 1
    assert events.count("sink_marked_healthy") == 1


async def test_run_logs_to_stderr_and_prints_each_notification_once(tmp_path: Path) -> None:
    config = _write(
        tmp_path,
        f"""
receivers: [{{name: screen, sink: console}}]
route: {{receiver: screen, group_by: ["..."], group_wait: 0s}}
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json}}
""",
    )
    daemon = Process(config)
    try:
        await daemon.started()
        async with aiohttp.ClientSession() as http:
            await _post_event(http, daemon.url, "podinfo")
        async with asyncio.timeout(20):
            while "revision-detected" not in daemon.stdout():
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a log line about it would have been written by now
    finally:
        assert await daemon.stop() == 0, daemon.stderr()[-3000:]
    stdout = daemon.stdout().splitlines()
    assert len(stdout) == 1, stdout  # the notification, nothing else
    assert "test/podinfo" in stdout[0]
    assert not stdout[0].startswith("{")
    events = [r["event"] for r in daemon.records()]
    assert "daemon_started" in events
    assert "drain_finished" in events
    # The notification is on the terminal already: no info line repeats it.
    assert "notification_sent" not in events
    said = [line for line in daemon.stderr().splitlines() if line.strip()]
    assert all(line.startswith("{") for line in said), said


async def test_run_writes_its_log_to_log_file_when_configured(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "canarywatch.log"
    config = _write(
        tmp_path,
        f"""
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json, file: {json.dumps(str(log_file))}}}
""",
    )
    daemon = Process(config)
    try:
        async with asyncio.timeout(30):
            while not (log_file.exists() and '"daemon_started"' in log_file.read_text()):
                assert daemon.process.poll() is None, daemon.stderr()
                await asyncio.sleep(0.05)
    finally:
        assert await daemon.stop() == 0, daemon.stderr()[-3000:]
    assert daemon.stderr() == ""
    assert daemon.stdout() == ""
    events = [json.loads(line)["event"] for line in log_file.read_text().splitlines()]
    assert events[0] == "daemon_started"
    assert events[-1] == "drain_finished"


async def test_an_unwritable_jsonl_path_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory\n", encoding="utf-8")
    path = tmp_path / "a-file" / "out.jsonl"
    config = _write(
        tmp_path,
        f"""
receivers: [{{name: archive, sink: jsonl, options: {{path: {json.dumps(str(path))}}}}}]
route: {{receiver: archive}}
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json}}
""",
    )
    daemon = Process(config)
    code = await asyncio.to_thread(daemon.process.wait, 30)
    said = [line for line in daemon.stderr().splitlines() if not line.startswith("{")]
    assert code == 2, daemon.stderr()
    assert said == [
        f"canarywatch: configuration error: {config}:2: receivers[0].options: the jsonl sink "
        f"failed its start-up check: cannot open {path} for appending: {tmp_path / 'a-file'}: "
        "not a directory (not retryable)"
    ]


async def test_outbox_list_shows_a_retry_streak_with_its_reason_and_next_attempt(
    tmp_path: Path,
) -> None:
    """``canarywatch outbox list`` against the running daemon while a webhook refuses every
    connection: the attempts climb, the last error names the host and port and the system's
    reason (never the URL's path, where a secret lives), and the next attempt is shown."""
    port = free_port()
    config = _write(
        tmp_path,
        f"""
receivers:
  - name: hook
    sink: webhook
    options: {{url: {{value: "http://127.0.0.1:{port}/hooks/SECRET-PATH"}}}}
route: {{receiver: hook, group_by: ["..."], group_wait: 0s}}
webhook_intake: {{enabled: true, secret: {{value: {TOKEN}}}}}
log: {{level: info, format: json}}
""",
    )
    daemon = Process(config)
    try:
        await daemon.started()
        async with aiohttp.ClientSession() as http:
            await _post_event(http, daemon.url, "podinfo")
        async with asyncio.timeout(30):
            while True:
                listed = await asyncio.to_thread(
                    subprocess.run,
                    [sys.executable, "-m", "canarywatch", "outbox", "list", "--url", daemon.url],
                    capture_output=True,
                    text=True,
                    env=ENV,
                    check=False,
                )
                assert listed.returncode == 0, listed.stderr
                rows = [line.split(None, 9) for line in listed.stdout.splitlines()[1:]]
                if rows and int(rows[0][6]) >= 2:
                    break
                await asyncio.sleep(0.2)
    finally:
        assert await daemon.stop() == 0, daemon.stderr()[-3000:]
    header = listed.stdout.splitlines()[0].split()
    assert header[6:] == ["ATTEMPTS", "CREATED", "NEXT_ATTEMPT", "LAST_ERROR"]
    [row] = rows
    assert row[1:3] == ["pending", "hook"]
    assert row[8].endswith("Z")  # the next attempt is due then
    assert row[9] == f"cannot connect to 127.0.0.1:{port}: connection refused (retryable)"
    assert "SECRET" not in listed.stdout
