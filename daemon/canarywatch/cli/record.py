"""``canarywatch record``: write what the sources see, in the recording format.

The same sources as ``run`` (same config), but every observation goes to a file instead of the
pipeline, so a user can attach a reproduction to a bug report and anyone can ``replay`` it.
Self-events (cluster unreachable, metrics source down) are not observations and are not
recorded; the raw failures behind them are in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import aiohttp

from canarywatch.app import Sources, build_sources
from canarywatch.clock import Clock, SystemClock
from canarywatch.config import Config
from canarywatch.formats.recording import RecordingWriter
from canarywatch.logs import get_logger
from canarywatch.model import CanaryEvent, Observation


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
    loop = asyncio.get_running_loop()
    signals = () if stop is not None else (signal.SIGINT, signal.SIGTERM)
    stop = stop or asyncio.Event()
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        count = await _record(
            config,
            output,
            duration_s=duration_s,
            clock=clock,
            stop=stop,
            stream=stream,
            on_observation=on_observation,
        )
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
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
            tasks = [
                asyncio.create_task(source.run(emit), name=f"source:{cluster}:{source.name}")
                for cluster, source in sources.kube
            ]
            if sources.metrics is not None:
                tasks.append(
                    asyncio.create_task(sources.metrics.run(emit), name="source:flagger_metrics")
                )
            log.info("recording_started", output=str(output), sources=len(tasks))
            waiter = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    [waiter, *tasks], timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in tasks:
                    if task.done() and not task.cancelled():
                        error = task.exception()
                        if error is not None:
                            raise error
            finally:
                waiter.cancel()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    return writer.count
