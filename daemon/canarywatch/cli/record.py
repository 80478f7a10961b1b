"""``canarywatch record``: write what the sources see, in the recording format.

The same sources as ``run`` (same config), but every observation goes to a file instead of the
pipeline, so a user can attach a reproduction to a bug report and anyone can ``replay`` it.
Self-events (cluster unreachable, metrics source down) are not observations and are not
recorded; the raw failures behind them are in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import aiohttp

from canarywatch.app import start_sources
from canarywatch.cli.common import STDIN, Interrupted, UsageError
from canarywatch.cli.exitcodes import EXIT_OK
from canarywatch.cli.progress import Progress, format_elapsed
from canarywatch.clock import Clock, SystemClock
from canarywatch.config import Config, load_config
from canarywatch.formats.recording import RecordingWriter
from canarywatch.logs import configure_logging, get_logger
from canarywatch.model import CanaryEvent, Observation
from canarywatch.signals import signal_handlers
from canarywatch.sources.build import Sources, build_sources


async def record(
    config: Config,
    output: Path,
    *,
    duration_s: float | None = None,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    stream: TextIO | None = None,
    on_observation: Callable[[int], None] | None = None,
) -> int:
    """Record until ``duration_s`` passes or ``stop`` is set; returns the count.

    Without ``stop``, SIGINT and SIGTERM stop it; a caller that passes ``stop`` owns the
    signals (the command line tells Ctrl-C from SIGTERM). ``output``'s directory must exist;
    with ``stream`` the lines go there instead (standard output) and ``output`` only names it.
    ``on_observation(count)`` is called after each line is written (a terminal's status line).
    """
    clock = clock or SystemClock()
    log = get_logger("record")
    own_signals = stop is None
    stop = stop or asyncio.Event()
    handlers = {signal.SIGINT: stop.set, signal.SIGTERM: stop.set} if own_signals else {}
    with signal_handlers(handlers):
        count = await _record(
            config,
            output,
            duration_s=duration_s,
            clock=clock,
            stop=stop,
            stream=stream,
            on_observation=on_observation,
        )
    log.info("recording_finished", output=str(output), observations=count)
    return count


async def _record(
    config: Config,
    output: Path,
    *,
    duration_s: float | None,
    clock: Clock,
    stop: asyncio.Event,
    stream: TextIO | None,
    on_observation: Callable[[int], None] | None,
) -> int:
    log = get_logger("record")
    sources = Sources()

    async def ignore_self_event(_: CanaryEvent) -> None:
        return None

    with contextlib.ExitStack() as closing:
        if stream is None:
            stream = closing.enter_context(output.open("a", encoding="utf-8"))
        writer = RecordingWriter(stream)

        async def emit(obs: Observation) -> None:
            writer.write(obs)
            if on_observation is not None:
                on_observation(writer.count)

        async with aiohttp.ClientSession() as http:
            await build_sources(
                config, sources, clock=clock, http=http, emit_event=ignore_self_event
            )
            async with asyncio.TaskGroup() as tasks:  # a source that fails ends the recording
                started = start_sources(tasks, sources, emit)
                log.info("recording_started", output=str(output), sources=len(started))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(duration_s):
                        await stop.wait()
                for task in started:
                    task.cancel()
    return writer.count


async def record_command(config_path: Path, output: Path, duration_s: float | None) -> int:
    """``canarywatch record``: until ``--duration``, SIGTERM (exit 0) or Ctrl-C (exit 130).

    ``--output -`` writes to standard output (``record ... --output - | replay -``). On a
    terminal, a status line counts the observations and the time.
    """
    to_stdout = output == STDIN
    if not to_stdout:
        _check_output(output)
    config = load_config(config_path)
    configure_logging(level=config.log.level, fmt=config.log.format, stream=sys.stderr)
    if not to_stdout:
        _open_output(output)
    target = "standard output" if to_stdout else str(output)
    stop = asyncio.Event()
    interrupted = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal interrupted
        interrupted = interrupted or sig == signal.SIGINT
        stop.set()

    loop = asyncio.get_running_loop()
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    with (
        signal_handlers({sig: functools.partial(on_signal, sig) for sig in stop_signals}),
        Progress(sys.stderr, unless=sys.stdout if to_stdout else None) as status,
    ):
        started = loop.time()
        written = 0

        def show(count: int | None = None, *, force: bool = False) -> None:
            nonlocal written
            written = written if count is None else count
            elapsed = format_elapsed(loop.time() - started)
            status.update(f"recording to {target}: {written} observations, {elapsed}", force=force)

        async def tick() -> None:
            while True:
                show(force=True)
                await asyncio.sleep(1.0)

        ticker = asyncio.ensure_future(tick()) if status.active else None
        try:
            count = await record(
                config,
                output,
                duration_s=duration_s,
                stop=stop,
                stream=sys.stdout if to_stdout else None,
                on_observation=show,
            )
        finally:
            if ticker is not None:
                ticker.cancel()
    summary = f"recorded {count} observations to {target}"
    if interrupted:
        raise Interrupted(summary)
    print(summary, file=sys.stderr)
    return EXIT_OK


def _check_output(output: Path) -> None:
    """Before anything else: ``--output`` must be a file in a directory that exists."""
    if output.is_dir():
        raise UsageError(f"{output}: cannot write the recording: it is a directory")
    parent = output.parent
    if not parent.is_dir():
        why = "not a directory" if parent.exists() else "no such directory"
        raise UsageError(f"{output}: cannot write the recording: {parent}: {why}")


def _open_output(output: Path) -> None:
    """Once the configuration loaded: the file opens for appending (permissions, disk)."""
    try:
        with output.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise UsageError(f"{output}: cannot write the recording: {exc.strerror or exc}") from None
