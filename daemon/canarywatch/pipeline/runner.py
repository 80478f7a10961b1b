"""The thin async shell around the synchronous pipeline.

It pulls observations (and self-events) from the bounded intake queue, calls the pure stages,
sleeps on the clock until the next group deadline, and hands due notifications to dispatch.
Everything that decides anything lives in ``pipeline.core``; this module only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, NamedTuple, TypeAlias

import structlog

from canarywatch.clock import Clock
from canarywatch.model import CanaryEvent, Notification, Observation, SourceName
from canarywatch.normalise.timing import backlog_order
from canarywatch.pipeline.core import Pipeline


@dataclass(frozen=True, slots=True)
class StopIntake:
    """Sentinel put on the intake queue at shutdown: flush what is due and return."""

    flush_all: bool = False
    """Also flush groups still waiting (``group_wait``) instead of leaving them unsent."""


class _Hold(NamedTuple):
    """One cluster held: at start-up (``Runner.hold_until_listed``) or after a gap
    (``Runner.catching_up``)."""

    cluster: str
    listed: Sequence[asyncio.Event]
    """What releases it once all set: the sources' ``listed`` (start-up) or ``current``."""
    deadline: datetime
    max_wait_s: float
    names: tuple[str, ...] = ()
    """A regroup's sources, in the order of ``listed`` (the one catching up first)."""
    started: datetime | None = None
    """When a regroup began; ``None`` for the start-up hold."""


@dataclass(frozen=True, slots=True)
class _Listed:
    """Put on the intake when a held cluster's sources are listed (or current again): release
    what is held of it."""

    cluster: str
    hold: _Hold | None = None


@dataclass(frozen=True, slots=True)
class _Regroup:
    """Put on the intake by a source about to pass on a backlog while a peer is behind: hold
    the cluster from here (ahead of the backlog) until ``hold`` is released."""

    hold: _Hold


IntakeItem = Observation | CanaryEvent | StopIntake | _Listed | _Regroup
SourceCurrency: TypeAlias = tuple[str, asyncio.Event, Callable[[], bool]]
"""One Kubernetes source of a cluster as the runner sees it: its name, its ``current`` marker
(set while it is up to date) and whether it is ``behind`` (listed once, failed since). Handed
over by the app (``pipeline`` never imports ``sources``)."""
Commit = Callable[[list[Notification], list[CanaryEvent]], Awaitable[None]]
"""Hands a batch's due notifications and its new transitions on, together (the daemon writes
the notifications to the outbox and the correlation state in one transaction)."""

INTAKE_SIZE: Final = 10_000
START_HOLD_LIMIT: Final = 200_000
"""Observations held at start-up (to be replayed in the order they happened) at most; past
this they are processed in arrival order."""
START_HOLD_MAX_S: Final = 30.0
"""How long start-up holds observations for a source that has not listed yet (a cluster that
is unreachable at start must not delay every other cluster's news)."""
REGROUP_MAX_S: Final = 10.0
"""How long a regroup after a gap (``Runner.catching_up``) holds a cluster for a source still
behind. The laggard is woken as soon as its peer gets an answer (``WatchedSource``), so it
normally takes one request and one list (well under a second); 10 s also covers a woken watch
attempt that hangs until ``watch_start_timeout_s`` (10 s). A source that stays behind longer
(still refused, RBAC revoked) is not worth delaying the cluster's live news any further: its
backlog then goes through as it arrives, as without a regroup."""
BATCH: Final = 500
"""Intake items processed before their notifications are sent and their state written."""


class Runner:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        clock: Clock,
        commit: Commit,
        intake: asyncio.Queue[IntakeItem] | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.pipeline = pipeline
        self._held: dict[str, list[Observation]] = {}
        """Per cluster still holding (until its sources have listed), what arrived of it."""
        self._holds: list[_Hold] = []
        """Per held cluster, what releases it (``hold_until_listed``): waited for in ``run``."""
        self._pending: dict[str, int] = {}
        """Per held cluster, the holds not released yet (a regroup can overlap another)."""
        self._currency: dict[str, Sequence[SourceCurrency]] = {}
        self._regroup_max_s = REGROUP_MAX_S
        self._releases: asyncio.TaskGroup | None = None
        self._release_tasks: list[asyncio.Task[None]] = []
        self.intake: asyncio.Queue[IntakeItem] = intake or asyncio.Queue(maxsize=INTAKE_SIZE)
        self._clock = clock
        self._commit = commit
        self._log = log or structlog.get_logger().bind(component="pipeline.runner")

    def hold_until_listed(
        self,
        listed: Mapping[str, Sequence[asyncio.Event]],
        *,
        max_wait_s: float = START_HOLD_MAX_S,
    ) -> None:
        """Per cluster, hold every observation until all of its sources have listed (or
        ``max_wait_s`` passed), then process them in the order they happened
        (``normalise.timing``).

        A cluster's sources list concurrently, and each list is a backlog of what happened while
        the daemon was down: the Canary list can show a rollout's verdict and the next revision
        before the Events list shows the steps that led there. Processed in arrival order, the
        older Events would look like news about the newer rollout (steps and verdicts it never
        had). Clusters are held apart: one that cannot be reached delays no other.

        Call it before ``run``: holding (and ``max_wait_s``) starts now; the waits run as tasks
        of ``run``'s own (an error in one ends ``run``; they end with it).
        """
        deadline = self._clock.now() + timedelta(seconds=max_wait_s)
        for cluster, events in listed.items():
            self._held[cluster] = []
            self._pending[cluster] = self._pending.get(cluster, 0) + 1
            self._holds.append(_Hold(cluster, events, deadline, max_wait_s))

    def regroup_after_gaps(
        self,
        currency: Mapping[str, Sequence[SourceCurrency]],
        *,
        max_wait_s: float = REGROUP_MAX_S,
    ) -> None:
        """After an outage, regroup a cluster as at start-up: see :meth:`catching_up`.

        ``currency`` is each cluster's Kubernetes sources as ``(name, current, behind)``."""
        self._currency = dict(currency)
        self._regroup_max_s = max_wait_s

    async def catching_up(self, cluster: str, source: str) -> None:
        """What a Kubernetes source awaits before passing on a backlog (a relist, or what its
        watch replays when it resumes after a failure): if another source of ``cluster`` is
        behind, hold the cluster's observations from here
        until they are all current again (or ``regroup_after_gaps``' ``max_wait_s``), then
        replay them in the order they happened, exactly as :meth:`hold_until_listed` does.

        Why: after an outage the sources come back one by one (each sleeps out its own
        backoff). The first to catch up shows the present (a new rollout from the Canary status,
        its weight steps live), the laggard's backlog comes later and is older (the previous
        rollout's rollback, the new one's first steps); processed in arrival order, that older
        news would be announced after newer news, and taken for part of a later episode. The
        marker goes on the intake before the backlog, so the hold starts ahead of it.
        Nothing is held when no other source is behind: a routine 410 relist of one watch on a
        healthy cluster must not delay news.
        """
        sources = self._currency.get(cluster, ())
        behind = [(n, c) for n, c, is_behind in sources if n != source and is_behind()]
        if not behind:
            return
        waited = [(n, c) for n, c, _ in sources if n == source] + behind
        now = self._clock.now()
        hold = _Hold(
            cluster,
            [c for _, c in waited],
            now + timedelta(seconds=self._regroup_max_s),
            self._regroup_max_s,
            tuple(n for n, _ in waited),
            now,
        )
        await self.intake.put(_Regroup(hold))

    async def _release_when_listed(self, hold: _Hold) -> None:
        """Once ``hold.listed`` are all set (or at its deadline), queue the release of its
        cluster."""
        cluster, events, deadline, max_wait_s = (
            hold.cluster,
            hold.listed,
            hold.deadline,
            hold.max_wait_s,
        )

        async def all_listed() -> None:
            for event in events:
                await event.wait()

        waiting = asyncio.ensure_future(all_listed())
        timer = asyncio.ensure_future(self._clock.sleep_until(deadline))
        try:
            await asyncio.wait({waiting, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, timer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        late = [n for n, e in zip(hold.names, events, strict=False) if not e.is_set()]
        if hold.started is not None and late:
            self._log.warning(
                "sources_not_current",
                cluster=cluster,
                sources=late,
                waited_s=max_wait_s,
                detail="replaying what arrived; the rest as it arrives",
            )
        elif not all(e.is_set() for e in events):
            self._log.warning(
                "sources_not_listed",
                cluster=cluster,
                waited_s=max_wait_s,
                detail="processing what was listed; the rest as it arrives",
            )
        await self.intake.put(_Listed(cluster, hold))

    async def emit(self, obs: Observation) -> None:
        """What sources call: waits when the intake is full (backpressure)."""
        await self.intake.put(obs)

    async def emit_event(self, event: CanaryEvent) -> None:
        """Self-events (metrics-source-down, cluster-unreachable) skip normalisation."""
        await self.intake.put(event)

    async def stop(self, *, flush_all: bool = False) -> None:
        await self.intake.put(StopIntake(flush_all=flush_all))

    async def run(self) -> None:
        """Process intake until a ``StopIntake`` arrives; then flush and return.

        Items are taken in batches (what is already queued, up to ``BATCH``): the due
        notifications of a batch and its new transitions are committed together
        (``commit``: the daemon writes both in one transaction). So state that says "seen" is
        never durable without what was seen, nor the other way round, and a busy start-up
        writes state once per batch, not once per event.

        The waits of ``hold_until_listed`` run as tasks of this call: cancelling ``run``
        cancels them, and one that fails ends ``run`` with its error.
        """
        async with asyncio.TaskGroup() as releases:
            self._releases = releases
            self._release_tasks = [
                releases.create_task(
                    self._release_when_listed(hold), name=f"pipeline:hold:{hold.cluster}"
                )
                for hold in self._holds
            ]
            self._holds = []
            try:
                await self._process_until_stopped()
            finally:
                self._releases = None
            for release in self._release_tasks:
                release.cancel()  # a cluster still not listed: nothing more to release

    async def _process_until_stopped(self) -> None:
        while True:
            first = await self._next_item()
            batch = [first]
            while len(batch) < BATCH and not self.intake.empty():
                batch.append(self.intake.get_nowait())
            now = self._clock.now()
            new: list[CanaryEvent] = []
            due: list[Notification] = []
            stop: StopIntake | None = None
            for item in batch:
                if isinstance(item, StopIntake):
                    stop = item
                    break
                # Each item's due groups flush as of that item, exactly as without batching
                # (a later item of the batch must not change what an earlier one sends).
                made, flushed = self._process(item, now)
                new.extend(made)
                due.extend(flushed)
            if stop is not None:
                # Nothing stays held (for a spec, for a name): it would be neither sent nor
                # saved (``Correlator`` holds are not snapshotted).
                new.extend(self.pipeline.release_held(now, everything=True))
                due.extend(
                    self.pipeline.flush_all(now) if stop.flush_all else self.pipeline.due(now)
                )
            await self._commit(due, new)
            if stop is not None:
                self._log.info("pipeline_stopped", flushed=len(due))
                return

    def _process(
        self, item: IntakeItem | None, now: datetime
    ) -> tuple[list[CanaryEvent], list[Notification]]:
        """The new transitions ``item`` made and the notifications due after it."""
        if isinstance(item, _Regroup):
            self._regroup(item.hold)
            return [], []
        if isinstance(item, _Listed):
            pending = self._pending.get(item.cluster, 1) - 1
            if pending > 0:  # another hold of the cluster is still waiting
                self._pending[item.cluster] = pending
                return [], []
            self._pending.pop(item.cluster, None)
            return self._release(item.cluster, now, item.hold)
        new: list[CanaryEvent] = []
        if isinstance(item, Observation):
            if self._holding(item):
                return [], []
            new = self.pipeline.observe(item, now)
        elif isinstance(item, CanaryEvent):
            new = self.pipeline.offer_events(item, now)
        new.extend(self.pipeline.release_held(now))
        return new, self.pipeline.due(now)

    def _regroup(self, hold: _Hold) -> None:
        """Start holding ``hold.cluster`` (or hold it longer) until ``hold`` is released."""
        if self._releases is None:  # pragma: no cover - markers are only taken by ``run``
            return
        self._held.setdefault(hold.cluster, [])
        self._pending[hold.cluster] = self._pending.get(hold.cluster, 0) + 1
        self._release_tasks = [t for t in self._release_tasks if not t.done()]
        self._release_tasks.append(
            self._releases.create_task(
                self._release_when_listed(hold), name=f"pipeline:regroup:{hold.cluster}"
            )
        )

    def _release(
        self, cluster: str, now: datetime, hold: _Hold | None = None
    ) -> tuple[list[CanaryEvent], list[Notification]]:
        """Replay what was held of ``cluster`` in the order it happened; from here on, its
        observations are processed in arrival order.

        Groups flush after each held observation, as they would have live: flushed once at
        the end, a step that happened before its rollout's rollback (both in the backlog of a
        restart) was re-checked at flush against the rollback firing by then, and the default
        inhibit rule muted it (issue 12, the fault matrix's ``kill_9_slow_disk``: a ``halted``
        lost). Missed steps a listed Canary's status shows are recovered after the whole
        backlog (``Pipeline.recover_missed``).
        """
        held = backlog_order(self._held.pop(cluster, []))
        if hold is not None and hold.started is not None:
            self._log.info(
                "sources_regrouped",
                cluster=cluster,
                caught_up=hold.names[0],
                waited_for=list(hold.names[1:]),
                duration_s=round((self._clock.now() - hold.started).total_seconds(), 3),
                held=len(held),
            )
        new: list[CanaryEvent] = []
        due: list[Notification] = []
        for obs in held:
            new.extend(self.pipeline.observe(obs, now, recover_missed=False))
            due.extend(self.pipeline.due(now))
        for obs in held:  # what only a listed Canary's status shows, after what was listed
            if obs.source is SourceName.CANARIES:
                new.extend(self.pipeline.recover_missed(obs, now))
                due.extend(self.pipeline.due(now))
        new.extend(self.pipeline.release_held(now))
        due.extend(self.pipeline.due(now))
        return new, due

    def _holding(self, obs: Observation) -> bool:
        held = self._held.get(obs.cluster or self.pipeline.cluster)
        if held is None:
            return False
        if len(held) >= START_HOLD_LIMIT:
            return False  # bounded: past this, process in arrival order rather than hold
        held.append(obs)
        return True

    async def _next_item(self) -> IntakeItem | None:
        """The next intake item, or ``None`` after firing the group timers that came due."""
        while True:
            deadline = self.pipeline.next_deadline()
            if deadline is None:
                return await self.intake.get()
            if not self.intake.empty():
                return self.intake.get_nowait()
            getter = asyncio.ensure_future(self.intake.get())
            sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
            try:
                await asyncio.wait({getter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                if not getter.done():
                    getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sleeper
            if getter.done() and not getter.cancelled():
                return getter.result()
            now = self._clock.now()
            released = self.pipeline.release_held(now)  # a spec or a name that did not come
            await self._commit(self.pipeline.due(now), released)
