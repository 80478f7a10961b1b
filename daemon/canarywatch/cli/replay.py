"""``canarywatch replay``: a recording through the whole pipeline on virtual time; also the
bundled Flagger day of ``canarywatch demo --replay``."""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from canarywatch.cli import stdio
from canarywatch.cli.common import (
    STDIN,
    STDIN_NAME,
    UsageError,
    load_optional_config,
    parse_transition,
    read_stdin,
)
from canarywatch.cli.exitcodes import EXIT_OK, EXIT_RUNTIME
from canarywatch.cli.progress import Progress
from canarywatch.clock import SystemClock
from canarywatch.config import Config, parse_config
from canarywatch.delivery.dispatch import Dispatcher
from canarywatch.formats import recording
from canarywatch.formats.jsonout import dumps, notification_to_json
from canarywatch.logs import configure_logging, get_logger
from canarywatch.metrics import Metrics
from canarywatch.model import Notification, Observation
from canarywatch.pipeline import policy
from canarywatch.pipeline.core import PipelineStats
from canarywatch.pipeline.replay import replay
from canarywatch.sinks.loader import build_sinks
from canarywatch.views.explain import DecisionRecorder, explanation, render_explanation

REPLAY_PER_CANARY = 100_000
"""``replay --explain`` keeps every trail of the recording (it is finite)."""


async def replay_command(
    path: Path,
    *,
    config_path: Path | None,
    send: bool,
    stats: bool,
    explain: tuple[tuple[str, str] | None, str | None] | None = None,
) -> int:
    """``canarywatch replay``: a recording (``-``: standard input) through the pipeline.

    ``explain`` (``--explain``, ``(canary, transition)`` filters): print every decision trail
    instead of the notifications (the same text as ``canarywatch explain``).
    """
    if path == STDIN and config_path == STDIN:
        raise UsageError("replay: the recording and --config cannot both be standard input (-)")
    transition = parse_transition(explain[1]) if explain is not None else None
    # Only delivering needs the secrets.
    config = load_optional_config(config_path, skip_secrets=not send)
    configure_logging(level=config.log.level if config else "warning", stream=sys.stderr)
    observations = read_recording(path)
    recorder = (
        DecisionRecorder(per_canary=REPLAY_PER_CANARY, max_age_s=None, max_trails=None)
        if explain
        else None
    )
    pipeline = policy.build_pipeline(config, log=get_logger("pipeline"), explain=recorder)
    # On a terminal, a status line, unless the notifications are printed to the same one.
    with Progress(sys.stderr, unless=None if send else sys.stdout) as status:
        sent = 0

        def show(done: int, total: int) -> None:
            status.update(f"replaying: {done}/{total} observations, {sent} notifications")

        def counted(notifications: Iterable[Notification]) -> Iterator[Notification]:
            nonlocal sent
            for n in notifications:
                sent += 1
                yield n

        notifications = counted(replay(observations, pipeline, progress=show))
        if send:
            failed = await deliver_all(config, notifications, explain=recorder)
        elif recorder is not None:
            for _ in notifications:
                pass  # the trails are the output
            failed = 0
        else:
            for n in notifications:
                sys.stdout.write(dumps(notification_to_json(n)) + "\n")
            sys.stdout.flush()
            failed = 0
    if explain is not None and recorder is not None:
        _print_explanations(recorder, explain[0], transition)
    if stats:
        print(json.dumps(_stats(pipeline.stats), sort_keys=True), file=sys.stderr)
    return EXIT_RUNTIME if failed else EXIT_OK


def _print_explanations(
    recorder: DecisionRecorder, canary: tuple[str, str] | None, transition: str | None
) -> None:
    """Every canary's trails (or ``canary``'s), as ``canarywatch explain`` prints them."""
    refs = sorted({(ref.namespace, ref.name) for ref in recorder.canaries()})
    if canary is not None:
        refs = [canary]
    texts = [
        render_explanation(explanation(recorder, namespace, name, transition=transition))
        for namespace, name in refs
    ]
    sys.stdout.write("\n".join(texts) if texts else "the recording has no transition\n")
    sys.stdout.flush()


def read_recording(path: Path) -> list[Observation]:
    """``recording.read`` of a command-line path, where ``-`` is standard input."""
    if path == STDIN:
        text = read_stdin("recording")
        return list(recording.iter_lines(io.StringIO(text), name=STDIN_NAME))
    return recording.read(path)


async def replay_demo_command(path: Path, *, config_path: Path | None, as_json: bool) -> int:
    """``demo --replay``: the bundled day of Flagger activity, replayed on virtual time."""
    config = load_optional_config(config_path)
    configure_logging(level="warning", stream=sys.stderr)
    observations = recording.read(path)
    pipeline = policy.build_pipeline(config, log=get_logger("pipeline"))
    print(
        f"canarywatch demo: replaying {len(observations)} observations of a Flagger day "
        f"({path.name}) on virtual time\n",
        file=sys.stderr,
    )
    notifications = list(replay(observations, pipeline))
    if as_json:
        for n in notifications:
            print(dumps(notification_to_json(n)))
        failed = 0
    else:
        failed = await deliver_all(config, notifications)
    stats = pipeline.stats
    suppressed = ", ".join(f"{k}={v}" for k, v in sorted(stats.suppressed.items())) or "none"
    print(
        f"\n{stats.observations} observations -> {stats.transitions} transitions -> "
        f"{len(notifications)} notifications (suppressed: {suppressed})",
        file=sys.stderr,
    )
    return EXIT_RUNTIME if failed else EXIT_OK


async def deliver_all(
    config: Config | None,
    notifications: Iterable[Notification],
    *,
    explain: DecisionRecorder | None = None,
) -> int:
    """Deliver through the configured sinks (one attempt loop each); returns failures.
    Without a config, through the built-in policy's receiver (the console). ``explain``
    records each outcome (``replay --send --explain``)."""
    log = get_logger("dispatch")
    metrics = Metrics(CollectorRegistry())
    failed = 0
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        sinks = await build_sinks(
            config if config is not None else parse_config(""), http=http, log=log
        )
        for sink in sinks.values():
            stack.push_async_callback(sink.aclose)
            await sink.check()
        dispatcher = Dispatcher(sinks, clock=SystemClock(), metrics=metrics, log=log)
        for n in notifications:
            _stop_if_stdout_gone()  # `demo --replay | head`: the console sink's reader left
            outcome = await dispatcher.deliver_now(n)
            if explain is not None:
                if outcome.ok:
                    explain.delivered(n, outcome, n.created_at)
                else:
                    explain.dead_lettered(n, outcome, n.created_at)
            if not outcome.ok:
                _stop_if_stdout_gone()
                failed += 1
    return failed


def _stop_if_stdout_gone() -> None:
    if stdio.stdout_gone():
        raise BrokenPipeError(errno.EPIPE, "stdout closed")


def _stats(stats: PipelineStats) -> Mapping[str, object]:
    return dataclasses.asdict(stats)
