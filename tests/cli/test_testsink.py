"""``canarywatch test-sink``: one sample rollback through a configured receiver's sink."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tests.support.webhook_receiver import WebhookReceiver, run_webhook_receiver

from canarywatch.cli import testsink
from canarywatch.config import Config, load_config
from canarywatch.model import Transition

NOW = datetime(2026, 8, 4, 14, 8, 2, tzinfo=UTC)
HOOK_TOKEN = "hook-token-s3cr3t"
HMAC_KEY = "whsec-test-sink-key"


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with run_webhook_receiver(HMAC_KEY.encode()) as receiver:
        yield receiver


def make_config(tmp_path: Path, hook_url: str) -> Config:
    path = tmp_path / "canarywatch.yaml"
    path.write_text(
        f"""
route:
  receiver: hook
receivers:
  - name: hook
    sink: webhook
    options:
      url: {{value: "{hook_url}?token={HOOK_TOKEN}"}}
      hmac_secret: {{value: {HMAC_KEY}}}
  - name: file
    sink: jsonl
    options:
      path: {tmp_path / "out" / "sent.jsonl"}
  - name: broken
    sink: no-such-sink
  - name: misconfigured
    sink: webhook
    options:
      url: ftp://example.invalid/x
""",
        encoding="utf-8",
    )
    return load_config(path)


async def run(config: Config, receiver: str, *, dry_run: bool = False) -> tuple[int, str]:
    out = io.StringIO()
    code = await testsink.test_sink(
        config, receiver, dry_run=dry_run, out=out, now=NOW, retry_budget_s=1.0
    )
    return code, out.getvalue()


def assert_sample(event: dict[str, object]) -> None:
    assert event["canary"] == "test/podinfo"
    assert event["transition"] == Transition.ROLLED_BACK.value
    assert event["severity"] == "critical"
    assert event["phase"] == "Failed"
    assert event["reason"] == "failed-checks"
    assert event["failed_checks"] == 5
    assert event["weight"] == 20
    assert event["rollout"] == testsink.SAMPLE_ROLLOUT
    assert event["message"] == "Rolling back podinfo.test failed checks threshold reached 5"
    labels = event["labels"]
    assert isinstance(labels, dict)
    assert labels["namespace"] == "test"
    assert labels["test_notification"] == "true"


async def test_webhook_delivery_reports_one_line(tmp_path: Path, hook: WebhookReceiver) -> None:
    config = make_config(tmp_path, hook.url)
    code, output = await run(config, "hook")
    assert code == 0, output
    assert re.fullmatch(
        r"test-sink: receiver 'hook' \(sink webhook\): delivered in \d+\.\d\d s\n", output
    )
    (request,) = hook.requests
    assert request.verified is True  # signed with the configured HMAC key
    assert request.path == f"/hook?token={HOOK_TOKEN}"
    body = request.json()
    assert body["notification"]["receiver"] == "hook"
    assert body["notification"]["at"] == "2026-08-04T14:08:02Z"
    (event,) = body["notification"]["events"]
    assert_sample(event)


async def test_jsonl_delivery_writes_the_sample(tmp_path: Path, hook: WebhookReceiver) -> None:
    config = make_config(tmp_path, hook.url)
    code, output = await run(config, "file")
    assert code == 0, output
    assert output.startswith("test-sink: receiver 'file' (sink jsonl): delivered in ")
    (line,) = (tmp_path / "out" / "sent.jsonl").read_text(encoding="utf-8").splitlines()
    record = json.loads(line)
    (event,) = record["events"]
    assert_sample(event)
    assert not hook.requests


async def test_dry_run_prints_the_payload_and_sends_nothing(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    code, output = await run(config, "hook", dry_run=True)
    assert code == 0
    header, _, rest = output.partition("\n")
    assert header == "test-sink: receiver 'hook' (sink webhook): dry run, payload not sent:"
    assert rest.startswith('{\n  "key": ')  # pretty, keys sorted ("key": the idempotency key)
    payload = json.loads(rest)
    assert payload["version"] == "1"
    assert_sample(payload["notification"]["events"][0])
    assert not hook.requests
    assert HOOK_TOKEN not in output
    assert HMAC_KEY not in output

    code, output = await run(config, "file", dry_run=True)
    assert code == 0
    header, _, rest = output.partition("\n")
    assert header == "test-sink: receiver 'file' (sink jsonl): dry run, payload not sent:"
    assert "\n" not in rest.rstrip("\n")  # the jsonl sink's payload is one line of text
    assert json.loads(rest)["events"][0]["reason"] == "failed-checks"
    assert not (tmp_path / "out" / "sent.jsonl").exists()


async def test_unknown_receiver_exits_2_listing_the_known_ones(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    code, output = await run(config, "nope")
    assert code == 2
    assert output == (
        "test-sink: unknown receiver 'nope'; known receivers: broken, file, hook, misconfigured\n"
    )


async def test_unloadable_or_misconfigured_sink_exits_2(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    code, output = await run(config, "broken")
    assert code == 2
    assert "receivers[2].sink: unknown sink 'no-such-sink'" in output
    code, output = await run(config, "misconfigured")
    assert code == 2
    assert "receivers[3].options.url: must be an http(s) URL" in output
    assert "ftp://example.invalid" not in output


async def test_a_failing_server_exits_1_with_the_reason(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    for _ in range(20):
        hook.script(500)
    with capture_logs() as logs:
        code, output = await run(config, "hook")
    assert code == 1
    match = re.fullmatch(
        r"test-sink: receiver 'hook' \(sink webhook\): failed: http_5xx "
        r"\(status 500, retryable\) after (\d+) attempts\n",
        output,
    )
    assert match, output
    assert int(match.group(1)) == len(hook.requests) >= 2  # retried within the short budget
    failed = [e for e in logs if e["event"] == "delivery_failed"]
    assert [e["gave_up"] for e in failed] == ["retry_budget"]
    for secret in (HOOK_TOKEN, HMAC_KEY):
        assert secret not in output
        assert secret not in repr(logs)


async def test_a_permanent_error_is_reported_after_one_attempt(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    hook.script(404)
    code, output = await run(config, "hook")
    assert code == 1
    assert output == (
        "test-sink: receiver 'hook' (sink webhook): failed: http_4xx (status 404, not retryable)\n"
    )
    assert len(hook.requests) == 1


async def test_a_rate_limit_longer_than_the_budget_is_reported(
    tmp_path: Path, hook: WebhookReceiver
) -> None:
    config = make_config(tmp_path, hook.url)
    hook.script(429, {"Retry-After": "30"})
    code, output = await run(config, "hook")
    assert code == 1
    assert output.endswith("failed: rate_limited (status 429, retry after 30s, retryable)\n"), (
        output
    )
    assert len(hook.requests) == 1


async def test_an_unreachable_endpoint_is_a_connection_failure(tmp_path: Path) -> None:
    async with run_webhook_receiver() as gone:
        url = gone.url
    config = make_config(tmp_path, url)
    code, output = await run(config, "hook")
    assert code == 1
    assert re.search(
        r"failed: cannot connect to 127\.0\.0\.1:\d+: connection refused "
        r"\(reason connection, retryable\)( after \d+ attempts)?\n$",
        output,
    ), output
    assert HOOK_TOKEN not in output


def test_sample_notification_is_the_rollback_it_claims() -> None:
    n = testsink.sample_notification("oncall", cluster="prod-eu", now=NOW)
    (event,) = n.events
    assert n.receiver == "oncall"
    assert event.canary.cluster == "prod-eu"
    assert event.labels["cluster"] == "prod-eu"
    assert event.transition is Transition.ROLLED_BACK
    assert n.group_key.endswith(":oncall")
    assert testsink.format_payload(b"caf\xc3\xa9") == "café"
    assert testsink.format_payload("line\n") == "line"
