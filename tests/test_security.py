"""Security properties of the whole daemon, not of one module.

- No secret in any log line, error, metric, ``/readyz`` body or ``repr`` across a demo-like run:
  the real daemon against the simulated cluster, with distinctive secret values in a webhook
  URL, a header, an HMAC key, a Slack webhook URL (delivering to a dead port, so its failures
  are logged), the listener token and the metrics source's bearer token.
- TLS verification is on by default for every outbound connection: a webhook sink pointed at a
  local HTTPS server with a self-signed certificate refuses to deliver; the metrics source's and
  the Alertmanager sink's contexts verify; the only places that turn it off are the explicit
  ``insecure_skip_verify`` / ``verify_ssl: false`` switches.
- The control API refuses requests without the token when one is configured, and a non-loopback
  listener without a token is a config error.
- Inbound payload limits: ``/api/v1/silences`` refuses bodies over 64 KiB, every route bodies over
  the app's ``client_max_size`` (1 MiB).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import structlog
from tests.support.binaries import require_binary
from tests.support.http_server import local_server
from tests.support.webhook_receiver import run_webhook_receiver

from canarywatch.app import App
from canarywatch.clock import SystemClock
from canarywatch.config import ConfigError, parse_config
from canarywatch.logs import configure_logging
from canarywatch.model import DeliveryReason
from canarywatch.simulator import SimulatedApiServer, Store
from canarywatch.simulator.flagger import FlaggerSimulator
from canarywatch.simulator.metrics_server import FlaggerMetricsServer
from canarywatch.simulator.scenarios import SCENARIOS, realtime_pace
from canarywatch.sinks import DeliveryError, build_sink
from canarywatch.sources.prometheus import TLSOptions
from canarywatch.testing import make_notification
from canarywatch.web.control import MAX_CONTROL_BODY_BYTES
from canarywatch.web.server import MAX_BODY_BYTES

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "url_token": "urltok-3f9a1c7e55",
    "header": "hdr-8d2b6e0f41",
    "hmac": "hmac-5c7e9a2d13",
    "slack_path": "slk-b41e07c9aa",
    "server_token": "srvtok-0e6a93f2d7",
    "bearer": "bearer-72d5c18e4b",
}


def secret_config(*, api_url: str, hook_url: str, metrics_url: str, state_dir: Path) -> str:
    s = SECRETS
    return f"""
receivers:
  - name: hook
    sink: webhook
    options:
      url: {{value: "{hook_url}?token={s["url_token"]}"}}
      headers: {{Authorization: {{value: "Bearer {s["header"]}"}}}}
      hmac_secret: {{value: "{s["hmac"]}"}}
  - name: chat
    sink: slack
    options:
      webhook_url: {{value: "http://127.0.0.1:9/services/T000/B000/{s["slack_path"]}"}}
route:
  receiver: hook
  group_by: ["..."]
  routes:
    - {{receiver: chat, matchers: ['severity=~"warning|critical"'], continue: true}}
    - {{receiver: hook}}
state: {{dir: {str(state_dir)!r}}}
server: {{listen: "127.0.0.1:0", token: {{value: "{s["server_token"]}"}}}}
clusters: [{{name: sim, connection: host, host: "{api_url}"}}]
metrics_source:
  mode: scrape
  targets: [{{name: flagger, url: "{metrics_url}", cluster: sim}}]
  bearer_token: {{value: "{s["bearer"]}"}}
  interval: 1s
  timeout: 1s
dispatch: {{attempt_timeout: 1s, retry_budget: 2s, drain_timeout: 2s}}
"""


def leaks(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


async def test_no_secret_in_logs_metrics_errors_or_reprs(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream)
    clock = SystemClock()
    store = Store(clock=clock)
    async with (
        SimulatedApiServer(store) as api,
        run_webhook_receiver(path="/") as receiver,
    ):
        sim = FlaggerSimulator(store, clock, cluster_name="sim")
        async with FlaggerMetricsServer(sim) as flagger:
            config = parse_config(
                secret_config(
                    api_url=api.url,
                    hook_url=receiver.url,
                    metrics_url=flagger.metrics_url,
                    state_dir=tmp_path,
                )
            )
            app = App(config, listen=("127.0.0.1", 0))
            daemon = asyncio.create_task(app.run())
            try:
                async with asyncio.timeout(20):
                    await app.ready.wait()
                await SCENARIOS["rollback_failed_checks"].run(sim, realtime_pace(600.0))
                async with asyncio.timeout(20):
                    while len(receiver.requests) < 6:
                        await asyncio.sleep(0.05)
                await asyncio.sleep(3.0)  # the dead Slack receiver's retries run out
                base = f"http://127.0.0.1:{app.port}"
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"{base}/metrics") as r:
                        metrics_text = await r.text()
                    async with http.get(f"{base}/readyz") as r:
                        readyz_text = await r.text()
                    auth = {"Authorization": f"Bearer {SECRETS['server_token']}"}
                    async with http.get(f"{base}/api/v1/outbox/dead", headers=auth) as r:
                        outbox_text = await r.text()
            finally:
                app.stop()
                await daemon
    # The in-process fake receiver logs its own access lines (with the query it was sent); the
    # daemon's listener has access logs off, so every ``aiohttp.access`` line is the fake's.
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    records = [r for r in records if r.get("logger") != "aiohttp.access"]
    logs = "\n".join(json.dumps(r) for r in records)
    assert any(r.get("event") == "delivery_failed" for r in records), "the dead sink never failed"
    assert any(r.get("event") == "notification_sent" for r in records)
    # What the receiver got was signed and carried the header: the secrets were used...
    assert all(r.verified is None for r in receiver.requests)  # receiver has no key to check
    assert all(SECRETS["header"] in r.headers.get("Authorization", "") for r in receiver.requests)
    # ...and appear nowhere else.
    assert leaks(logs) == []
    assert leaks(metrics_text) == []
    assert leaks(readyz_text) == []
    assert leaks(outbox_text) == []
    assert leaks(repr(config)) == []
    assert leaks(str(config)) == []
    for receiver_config in config.receivers:
        assert leaks(repr(receiver_config)) == []
    error = DeliveryError(DeliveryReason.HTTP_5XX, retryable=True, status_code=503)
    assert leaks(str(error)) == []


# -- TLS ----------------------------------------------------------------------------------------


def self_signed(tmp_path: Path) -> ssl.SSLContext:
    openssl = require_binary("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_webhook_sink_refuses_an_unverified_certificate(tmp_path: Path) -> None:
    server_context = self_signed(tmp_path)
    async with local_server(server_context) as server, aiohttp.ClientSession() as http:
        sink = build_sink(
            "webhook",
            {"url": server.url("/hook"), "timeout_s": 5},
            http=http,
            log=structlog.get_logger(),
        )
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(sink.render(make_notification(receiver="hook")))
    assert caught.value.reason is DeliveryReason.CONNECTION
    assert server.requests == []  # the handshake failed: nothing was sent


def test_metrics_source_tls_verifies_by_default() -> None:
    context = TLSOptions().ssl_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    insecure = TLSOptions(insecure_skip_verify=True).ssl_context()
    assert insecure.verify_mode is ssl.CERT_NONE  # only on explicit request


def test_verification_is_only_ever_turned_off_behind_an_explicit_switch() -> None:
    """Every place that disables verification sits under ``insecure_skip_verify`` or
    ``verify_ssl`` (a config switch), and no request passes ``ssl=False``."""
    offending = []
    for path in [*ROOT.glob("daemon/canarywatch/**/*.py"), *ROOT.glob("plugins/**/*.py")]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            code = line.split("#", 1)[0]
            if re.search(r"(?<![\w.])ssl\s*=\s*False", code):
                offending.append(f"{path}:{number + 1}: {line.strip()}")
            guard = "\n".join(lines[max(0, number - 3) : number])
            if re.search(r"CERT_NONE|check_hostname = False", code) and (
                "insecure_skip_verify" not in guard
            ):
                offending.append(f"{path}:{number + 1}: {line.strip()}")
            if re.search(r"\.verify_ssl = False", code) and "verify_ssl" not in guard:
                offending.append(f"{path}:{number + 1}: {line.strip()}")
    assert offending == []


# -- the control API and inbound limits ---------------------------------------------------------


async def test_control_api_needs_the_token_and_bodies_are_bounded(tmp_path: Path) -> None:
    token = SECRETS["server_token"]
    config = parse_config(
        "receivers: [{name: hook, sink: webhook, options: {url: {value: 'http://127.0.0.1:9/'}}}]\n"
        "route: {receiver: hook}\n"
        f"state: {{dir: {str(tmp_path)!r}}}\n"
        f'server: {{listen: "127.0.0.1:0", token: {{value: "{token}"}}}}\n'
    )
    app = App(config, listen=("127.0.0.1", 0))
    daemon = asyncio.create_task(app.run())
    try:
        async with asyncio.timeout(20):
            await app.ready.wait()
        base = f"http://127.0.0.1:{app.port}"
        good = {"Authorization": f"Bearer {token}"}
        silence = {"matchers": ['namespace="test"'], "duration": "1h", "created_by": "t"}
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                async with http.get(f"{base}/api/v1/silences", headers=headers) as r:
                    assert r.status == 401
                async with http.post(f"{base}/api/v1/silences", json=silence, headers=headers) as r:
                    assert r.status == 401
            async with http.get(f"{base}/api/v1/silences", headers=good) as r:
                assert r.status == 200
            # 64 KiB limit on the control API, with or without a valid token.
            big = {**silence, "comment": "x" * (MAX_CONTROL_BODY_BYTES + 1)}
            async with http.post(f"{base}/api/v1/silences", json=big, headers=good) as r:
                assert r.status == 413
            # 1 MiB limit on every route (client_max_size).
            huge = io.BytesIO(b"x" * (MAX_BODY_BYTES + 1))
            async with http.post(f"{base}/api/v1/silences", data=huge, headers=good) as r:
                assert r.status == 413
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200  # unauthenticated probes stay open
    finally:
        app.stop()
        await daemon


def test_non_loopback_listener_requires_a_token() -> None:
    text = (
        "receivers: [{name: hook, sink: webhook, options: {url: {value: 'http://127.0.0.1:9/'}}}]\n"
        "route: {receiver: hook}\n"
        "server: {listen: '0.0.0.0:9797'}\n"
    )
    with pytest.raises(ConfigError, match="token"):
        parse_config(text)
