"""Replay a recording through the whole pipeline on virtual time.

Time is the recording's: before each observation, every group timer due by its ``at`` fires
(at its own deadline), then the observation is processed "at" its stamp. After the last line the
remaining timers fire in order. Nothing sleeps, so an hour-long rollout replays in milliseconds,
and the same recording always yields the same notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta

from canarywatch.clock import VirtualClock
from canarywatch.formats.recording import in_time_order
from canarywatch.model import Notification, Observation
from canarywatch.pipeline.core import Pipeline

DRAIN_HORIZON = timedelta(days=1)
"""After the recording ends, waiting groups are flushed at their deadlines up to this far."""


def replay(
    observations: Iterable[Observation],
    pipeline: Pipeline,
    *,
    clock: VirtualClock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Notification]:
    """Yield each notification the pipeline would send, in the order it would send them.

    ``progress(done, total)`` is called after each observation (a terminal's status line).
    """
    ordered = in_time_order(observations)
    if not ordered:
        return
    clock = clock or VirtualClock(ordered[0].at)
    for done, obs in enumerate(ordered, start=1):
        yield from _fire_timers_until(pipeline, clock, obs.at)
        clock.advance_to(obs.at)
        pipeline.observe(obs, clock.now())
        yield from pipeline.due(clock.now())
        if progress is not None:
            progress(done, len(ordered))
    # After the last line: the timers of groups still waiting fire (at their own deadlines);
    # repeats of still-firing groups are not followed beyond that.
    limit = clock.now() + DRAIN_HORIZON
    while len(pipeline.grouper) > 0:
        deadline = pipeline.next_deadline()
        if deadline is None or deadline > limit:
            break
        clock.advance_to(deadline)
        yield from pipeline.due(clock.now())
    yield from pipeline.flush_all(clock.now())


def _fire_timers_until(
    pipeline: Pipeline, clock: VirtualClock, limit: datetime
) -> Iterator[Notification]:
    while True:
        deadline = pipeline.next_deadline()
        if deadline is None or deadline > limit:
            return
        clock.advance_to(deadline)
        yield from pipeline.due(clock.now())
