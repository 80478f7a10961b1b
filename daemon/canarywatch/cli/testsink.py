"""``canarywatch test-sink RECEIVER``: send one sample notification through a receiver's sink.

For the moment after configuring a receiver: does the webhook URL work, does the card look
right? The sample is a realistic rollback of ``test/podinfo`` (failed checks, weight, rollout,
Flagger's own message), rendered by the receiver's sink and either printed (``--dry-run``,
nothing leaves the machine) or delivered once through ``Dispatcher.deliver_now`` with a short
retry budget, so retries, timeouts and classification are exactly the daemon's. The answer is
one line::

    test-sink: receiver 'oncall' (sink slack): delivered in 0.12 s
    test-sink: receiver 'oncall' (sink slack): failed: http_4xx (status 404, not retryable)

Exit codes: 0 delivered (or rendered, in a dry run), 1 failed, 2 unknown receiver or a receiver
whose sink cannot be loaded or configured. Secrets never reach the output: option values that
are secrets are masked in a dry-run payload, and the report carries only names and the reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

import aiohttp
from prometheus_client import CollectorRegistry

from canarywatch.cli.common import load_config_arg
from canarywatch.cli.exitcodes import EXIT_CONFIG, EXIT_OK, EXIT_RUNTIME
from canarywatch.clock import SystemClock
from canarywatch.config import SECRET_OPTION_KEY, Config, parse_config
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.errors import ConfigError
from canarywatch.logs import configure_logging, get_logger
from canarywatch.metrics import Metrics
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    DeliveryOutcome,
    DeliveryReason,
    Notification,
    NotificationStatus,
    Phase,
    SourceName,
    Transition,
)
from canarywatch.sinks import DeliveryError, Payload, Sink
from canarywatch.sinks.loader import build_sinks
from canarywatch.sinks.text import secret_values

__all__ = ["RETRY_BUDGET_S", "sample_notification", "test_sink", "test_sink_command"]


RETRY_BUDGET_S = 10.0
"""How long a test delivery is retried (the daemon's budget is minutes; a person is waiting)."""
SAMPLE_ROLLOUT = "7"
MASK = "***"


def sample_notification(receiver: str, *, cluster: str, now: datetime) -> Notification:
    """A firing notification of a realistic rollback of ``test/podinfo`` for ``receiver``.

    Built as the pipeline builds one: Flagger's message, ``reason="failed-checks"``, 5 failed
    checks at 20 % weight, a rollout id, the routing labels, plus ``test_notification="true"``
    so routes and readers can tell it apart.
    """
    spec = TRANSITIONS[Transition.ROLLED_BACK]
    labels = {
        "canary": "podinfo",
        "cluster": cluster,
        "namespace": "test",
        "phase": Phase.FAILED.value,
        "rollout": SAMPLE_ROLLOUT,
        "severity": spec.severity.value,
        "target": "podinfo",
        "transition": Transition.ROLLED_BACK.value,
        "test_notification": "true",
    }
    event = CanaryEvent(
        canary=CanaryRef("test", "podinfo", cluster),
        transition=Transition.ROLLED_BACK,
        observed_at=now,
        occurred_at=now,
        sources=(SourceName.SELF,),
        severity=spec.severity,
        phase=Phase.FAILED,
        weight=20,
        failed_checks=5,
        message="Rolling back podinfo.test failed checks threshold reached 5",
        reason="failed-checks",
        target="podinfo",
        rollout=SAMPLE_ROLLOUT,
        episode=1,
        labels=labels,
    )
    group = {k: labels[k] for k in ("canary", "cluster", "namespace")}
    key = "test-sink/{" + ",".join(f'{k}="{v}"' for k, v in sorted(group.items())) + "}"
    return Notification(
        receiver=receiver,
        status=NotificationStatus.FIRING,
        group_key=f"{key}:{receiver}",
        group_labels=group,
        events=(event,),
        created_at=now,
    )


async def test_sink(
    config: Config,
    receiver: str,
    *,
    dry_run: bool,
    out: TextIO,
    now: datetime | None = None,  # noqa: PT028 - a command named test_sink, not a pytest test
    retry_budget_s: float = RETRY_BUDGET_S,  # noqa: PT028 - same
) -> int:
    """Render the sample through ``receiver``'s sink; print it (``dry_run``) or send it once.

    Writes to ``out`` only: the payload in a dry run, otherwise one line with the outcome.
    ``now`` stamps the sample (default: the system clock). The retry budget is the smaller
    of ``retry_budget_s`` and the config's ``dispatch.retry_budget``.
    """
    names = [r.name for r in config.receivers]
    if receiver not in names:
        known = ", ".join(sorted(names)) or "none configured"
        print(f"test-sink: unknown receiver {receiver!r}; known receivers: {known}", file=out)
        return EXIT_CONFIG
    spec = config.receivers[names.index(receiver)]
    prefix = f"test-sink: receiver {receiver!r} (sink {spec.sink})"
    secrets = sorted(
        set(secret_values(spec.options, keys=SECRET_OPTION_KEY, min_len=4)), key=len, reverse=True
    )
    log = get_logger("test-sink").bind(receiver=receiver)
    clock = SystemClock()
    n = sample_notification(receiver, cluster=config.cluster, now=now or clock.now())

    async with aiohttp.ClientSession() as http:
        try:
            sink = (await build_sinks(config, only=receiver, http=http, log=log))[receiver]
        except ConfigError as exc:
            print(_mask(f"{prefix}: {exc}", secrets), file=out)
            return EXIT_CONFIG
        try:
            if dry_run:
                return _print_rendered(sink, n, prefix=prefix, secrets=secrets, out=out)
            line, code = await _send(
                sink,
                n,
                http=http,
                clock=clock,
                attempt_timeout_s=config.dispatch.attempt_timeout,
                retry_budget_s=min(retry_budget_s, config.dispatch.retry_budget),
            )
        finally:
            await sink.aclose()
    print(_mask(f"{prefix}: {line}", secrets), file=out)
    return code


test_sink.__test__ = False  # type: ignore[attr-defined]  # a command, not a pytest test


def _print_rendered(
    sink: Sink, n: Notification, *, prefix: str, secrets: list[str], out: TextIO
) -> int:
    try:
        payload = sink.render(n)
    except Exception as exc:  # noqa: BLE001 - reported as the outcome: a render bug
        print(f"{prefix}: failed: render raised {type(exc).__name__}", file=out)
        return EXIT_RUNTIME
    print(f"{prefix}: dry run, payload not sent:", file=out)
    print(_mask(format_payload(payload), secrets), file=out)
    return EXIT_OK


def format_payload(payload: Payload) -> str:
    """Pretty JSON for mappings and arrays, text as it is, bytes decoded (UTF-8)."""
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload.removesuffix("\n")
    return json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True, default=str)


class _Observed(Sink):
    """Passes render/deliver through to ``inner`` and keeps the last exception it raised:
    ``DeliveryOutcome`` has the reason, the report also wants status and retryability."""

    def __init__(self, inner: Sink, *, http: aiohttp.ClientSession) -> None:
        super().__init__(inner.name, {}, http=http, log=inner.log)
        self.inner = inner
        self.error: Exception | None = None

    def render(self, n: Notification) -> Payload:
        try:
            return self.inner.render(n)
        except Exception as exc:
            self.error = exc
            raise

    async def deliver(self, payload: Payload) -> None:
        self.error = None
        try:
            await self.inner.deliver(payload)
        except Exception as exc:
            self.error = exc
            raise


async def _send(
    sink: Sink,
    n: Notification,
    *,
    http: aiohttp.ClientSession,
    clock: SystemClock,
    attempt_timeout_s: float,
    retry_budget_s: float,
) -> tuple[str, int]:
    """Self-check, then one delivery through the dispatcher; the report line and exit code."""
    try:
        async with asyncio.timeout(attempt_timeout_s):
            await sink.check()
    except DeliveryError as exc:
        return f"failed: {_describe(exc)} (self-check)", EXIT_RUNTIME
    except TimeoutError:
        return f"failed: timeout (self-check took over {attempt_timeout_s:g} s)", EXIT_RUNTIME
    observed = _Observed(sink, http=http)
    dispatcher = Dispatcher(
        {n.receiver: observed},
        clock=clock,
        metrics=Metrics(CollectorRegistry()),
        log=get_logger("dispatch"),
        attempt_timeout_s=attempt_timeout_s,
        retry_budget_s=retry_budget_s,
        backoff_initial_s=0.5,
        backoff_max_s=max(retry_budget_s / 2, 0.5),
    )
    outcome = await dispatcher.deliver_now(n)
    return _report(outcome, observed.error, attempt_timeout_s), (
        EXIT_OK if outcome.ok else EXIT_RUNTIME
    )


def _report(outcome: DeliveryOutcome, error: Exception | None, attempt_timeout_s: float) -> str:
    if outcome.ok:
        tries = f" ({outcome.attempts} attempts)" if outcome.attempts > 1 else ""
        return f"delivered in {outcome.duration_s:.2f} s{tries}"
    attempts = f" after {outcome.attempts} attempts" if outcome.attempts > 1 else ""
    if isinstance(error, DeliveryError):
        what = _describe(error)
    elif outcome.reason is DeliveryReason.TIMEOUT:
        what = f"timeout (no answer within {attempt_timeout_s:g} s, retryable)"
    elif error is not None:
        stage = "render" if outcome.reason is DeliveryReason.INVALID_PAYLOAD else "sink"
        what = f"{stage} raised {type(error).__name__}"
    else:
        what = outcome.reason.value if outcome.reason is not None else "error"
    return f"failed: {what}{attempts}"


def _describe(error: DeliveryError) -> str:
    """``http_4xx (status 404, not retryable)``: what ``str(DeliveryError)`` says, unprefixed."""
    return str(error).removeprefix("delivery failed: ")


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


async def test_sink_command(config_path: Path | None, receiver: str, *, dry_run: bool) -> int:
    """``canarywatch test-sink``: ``test_sink`` with ``--config`` (default: the built-in
    policy), answering on standard output."""
    config = load_config_arg(config_path) if config_path is not None else parse_config("")
    configure_logging(level="warning", stream=sys.stderr)
    return await test_sink(config, receiver, dry_run=dry_run, out=sys.stdout)


test_sink_command.__test__ = False  # type: ignore[attr-defined]  # a command, not a pytest test
