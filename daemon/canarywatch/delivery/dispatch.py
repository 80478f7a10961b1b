"""Per-receiver delivery of notifications to sinks, with timeouts and retries.

Each receiver has its own bounded queue and worker, so a slow or failing sink only delays its
own receiver. A worker renders a notification once and then attempts delivery: every attempt
runs under ``asyncio.timeout``; a retryable ``DeliveryError`` is retried after a capped,
jittered exponential backoff (or the sink's ``Retry-After``) until the retry budget is spent;
a permanent one stops at once. Sinks never retry; this module does. Backoff sleeps go through
the ``Clock``, so tests and ``replay`` run them in virtual time.

Each delivery ends in exactly one canonical log line, ``notification_sent`` or
``delivery_failed``, carrying receiver, sink, attempts, duration and reason. A sink that prints
its notifications where the operator reads the log (``Sink.prints_notifications``: the console)
gets ``notification_sent`` at debug, so a notification is not shown twice.

Sink health is decided here, once for every sink (:class:`SinkHealth`): a delivery that fails
for good for a reason about the destination marks the receiver's sink unhealthy until a delivery
succeeds; ``health()`` is what ``canarywatch_sink_up`` and ``/readyz`` show.

The in-memory queues are a window onto the outbox, not the queue of record. With a ``refill``
source (the daemon's outbox), a full queue *spills*: the notification stays in the outbox and the
worker reads it back, oldest first, once its queue is half empty again; until that backlog has
been read back, later notifications spill too, so none overtakes an older one. ``backlog()``
announces such a backlog from outside (after a restart, at a leader takeover). Without a refill
source (tools, tests) there is nothing to read back from, and a full queue drops its oldest.

What travels through a queue is an :class:`Envelope`: the notification and the id of the outbox
item it came from. The hooks get the envelope, so the outbox finds its item from the envelope
itself, never from a map on the side that could outlive the notification (one dropped on
overflow or at shutdown) or mistake a new notification for an old one. ``outbox_ids(receiver)``
says which outbox items a receiver holds in memory (queued or in flight), so ``refill`` never
reads one of them again; it is exact because every way out of memory (delivered, dropped,
handed back by ``release``) passes through here.

Seams for what comes later: ``on_delivered`` is awaited after every delivery with its outcome
(the notification log records there, "record after success"), ``on_retrying`` is awaited after
each failed attempt that will be retried (the outbox records the attempt, its error and when the
next one is due, so ``canarywatch outbox list`` shows a retry streak as it happens), and
``deliver_now`` is the single place a dedup check against that log would go.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Never, Self, TypeAlias

import aiohttp

from canarywatch.clock import Clock
from canarywatch.metrics import (
    DELIVERY_FAILED,
    DELIVERY_OK,
    DELIVERY_RETRIED,
    REASON_ERROR,
    REASON_NONE,
    Metrics,
)
from canarywatch.model import DeliveryOutcome, DeliveryReason, Notification
from canarywatch.sinks import (
    BoundLogger,
    DeliveryError,
    Payload,
    Sink,
    classify_exception,
)

STAGE = "dispatch"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A notification on its way through the dispatcher, with the outbox item it came from.

    The outbox id travels with the notification rather than in the public ``Notification``,
    which plugins see and which knows nothing of the daemon's state store."""

    notification: Notification
    outbox_id: int | None = None
    """The outbox item to mark delivered or dead; ``None`` for one not from an outbox (tools,
    ``deliver_now``)."""


OnDelivered: TypeAlias = Callable[[Envelope, DeliveryOutcome], Awaitable[None]]
"""Called after each delivery, successful or not; an exception from it propagates."""

Refill: TypeAlias = Callable[[str, int], Sequence[Envelope]]
"""``refill(receiver, room)``: at most ``room`` of the receiver's notifications that wait outside
its queue (spilled, or left from before a restart), oldest first, none of them already queued or
in flight (``Dispatcher.outbox_ids``). Fewer than ``room`` means there are no more. Synchronous on
purpose: nothing can slip in between reading the backlog and queueing what was read."""

OnRetrying: TypeAlias = Callable[[Envelope, int, str, datetime], Awaitable[None]]
"""``on_retrying(envelope, attempt, error, next_attempt_at)``: attempt number ``attempt`` of the
envelope's notification failed for a reason that may pass (``error``, in plain words:
``describe_failure``) and the next attempt is due at ``next_attempt_at``. Awaited once per failed
attempt that will be retried, never on a success, before the backoff sleep (the outbox records it
in one small write, durable off the event loop: only this receiver's worker waits for it). An
exception propagates."""


@dataclass(slots=True)
class SinkHealth:
    """Whether a receiver's sink delivers, judged by what its deliveries did.

    A notification that fails permanently for a reason about the destination (a not-retryable
    ``DeliveryError`` other than ``invalid_payload``: a deleted webhook's 404, revoked
    credentials, a file that cannot be opened; or the sink raising something else) marks the
    sink unhealthy; the next successful delivery marks it healthy again. ``invalid_payload``
    (one notification the far side refused) and a retryable failure that used up the retry
    budget change nothing: the deliveries and outbox metrics show those.
    """

    sink: Sink
    """The instance judged: a receiver given a new sink starts healthy."""
    healthy: bool = True
    problem: str = ""
    """The latest permanent failure, in plain words (no secret: see ``describe_failure``)."""
    since: datetime | None = None
    failed: int = 0
    """Notifications that failed permanently since ``since``."""
    outcomes: int = 0

    def detail(self) -> str:
        """What ``/readyz`` says about the sink."""
        if self.healthy:
            return "ok" if self.outcomes else "ok, nothing delivered yet"
        since = f"{self.since:%Y-%m-%dT%H:%M:%SZ}" if self.since is not None else "start"
        return (
            f"failing since {since}: {self.failed} notification(s) failed for good, the last "
            f"because {self.problem}; healthy again after a successful delivery"
        )


_REASON_WORDS: Mapping[DeliveryReason, str] = {
    DeliveryReason.CONNECTION: "it could not connect",
    DeliveryReason.TIMEOUT: "it got no answer in time",
    DeliveryReason.HTTP_4XX: "the destination refused it",
    DeliveryReason.HTTP_5XX: "the destination failed",
    DeliveryReason.RATE_LIMITED: "it was rate limited",
    DeliveryReason.INVALID_PAYLOAD: "the destination refused the message",
}


_GAVE_UP_WORDS: Mapping[str, str] = {
    "retry_budget": "gave up: the retry budget was spent",
    "render_failed": "gave up: the sink could not render it",
}


def describe_failure(error: Exception) -> str:
    """A failed delivery in plain words: the sink's ``detail`` when it gave one, else the
    reason and HTTP status (``the destination refused it (HTTP 404, not retryable)``). Built
    from ``DeliveryError``'s fields, which hold no secret, or the exception's class name."""
    if not isinstance(error, DeliveryError):
        return f"the sink raised {type(error).__name__} (a bug in the sink?)"
    words = error.detail or _REASON_WORDS.get(error.reason, error.reason.value)
    facts = [f"HTTP {error.status_code}"] if error.status_code is not None else []
    facts.append("retryable" if error.retryable else "not retryable")
    return f"{words} ({', '.join(facts)})"


class Dispatcher:
    """Delivers each notification to the sink of its receiver.

    Lifecycle: ``async with dispatcher:`` (or ``start()`` ... ``aclose()``) runs the workers in
    a background task; inside an app ``TaskGroup`` run ``dispatcher.run()`` as a task instead.
    On shutdown call ``drain(timeout_s)`` first, then ``aclose()``; whatever is still queued or
    in flight then is counted as dropped (``reason="shutdown"``).

    ``refill`` makes the queues a bounded window onto a queue of record (see the module
    docstring); ``submit`` then spills instead of dropping.
    """

    def __init__(
        self,
        sinks: Mapping[str, Sink],
        *,
        clock: Clock,
        metrics: Metrics,
        log: BoundLogger,
        attempt_timeout_s: float = 10,
        retry_budget_s: float = 300,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 60,
        queue_size: int = 1000,
        rng: random.Random | None = None,
        on_delivered: OnDelivered | None = None,
        refill: Refill | None = None,
        on_retrying: OnRetrying | None = None,
    ) -> None:
        if attempt_timeout_s <= 0 or retry_budget_s < 0 or queue_size < 1:
            raise ValueError("attempt_timeout_s > 0, retry_budget_s >= 0, queue_size >= 1")
        if backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        self._sinks = dict(sinks)
        self._clock = clock
        self._metrics = metrics
        self._log = log.bind(component=STAGE)
        self._attempt_timeout_s = attempt_timeout_s
        self._retry_budget_s = retry_budget_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._on_delivered = on_delivered
        self._refill = refill
        self._on_retrying = on_retrying
        self._queues: dict[str, asyncio.Queue[Envelope]] = {
            receiver: asyncio.Queue(maxsize=queue_size) for receiver in self._sinks
        }
        self._refill_at = queue_size // 2
        """A worker reads its backlog back once its queue holds no more than this (half empty),
        so each read fetches a batch rather than one item per delivery."""
        self._backlog: set[str] = set()
        """Receivers with notifications waiting in the refill source; theirs spill until read."""
        self._idle: dict[str, asyncio.Event] = {
            receiver: asyncio.Event() for receiver in self._sinks
        }
        """Set while a receiver has nothing queued, in flight or in its backlog (``drain``)."""
        for idle in self._idle.values():
            idle.set()
        self._in_flight: dict[str, Envelope] = {}
        self._outbox_ids: dict[str, set[int]] = {}
        """Per receiver, the outbox ids of the envelopes queued or in flight (``outbox_ids``)."""
        self._task: asyncio.Task[None] | None = None
        self._queue_size = queue_size
        self._retiring: dict[str, Sink] = {}
        """Receivers a reload removed whose workers still deliver what they hold (``release``)."""
        self._workers: dict[str, asyncio.Task[Never]] = {}
        self._workers_group: asyncio.TaskGroup | None = None
        self._attempting: dict[str, tuple[Sink, asyncio.Event]] = {}
        """Per receiver, the sink of the attempt under way and an event set when it ends."""
        self._health: dict[str, SinkHealth] = {}
        for receiver, sink in self._sinks.items():
            metrics.declare_receiver(receiver, sink.name)

    @property
    def sinks(self) -> Mapping[str, Sink]:
        """Receiver name -> its sink instance."""
        return self._sinks

    def health(self, receiver: str) -> SinkHealth:
        """The health of ``receiver``'s current sink (see ``SinkHealth``); ``KeyError`` for a
        receiver without a sink."""
        sink = self._sinks[receiver]
        record = self._health.get(receiver)
        if record is None or record.sink is not sink:
            record = self._health[receiver] = SinkHealth(sink)
            if not sink.healthy:  # a plugin that says so itself
                record.healthy = False
                record.problem = "the sink reports a permanent failure"
        return record

    def _judge(
        self, n: Notification, sink: Sink, log: BoundLogger, error: Exception | None
    ) -> None:
        """Update the receiver's ``SinkHealth`` with one delivery's outcome."""
        if self._sinks.get(n.receiver) is not sink:
            return  # the receiver was given another sink meanwhile
        record = self.health(n.receiver)
        record.outcomes += 1
        if error is None:
            if not record.healthy:
                log.info("sink_marked_healthy", failed=record.failed)
            record.healthy, record.problem, record.since, record.failed = True, "", None, 0
            return
        permanent = not isinstance(error, DeliveryError) or (
            not error.retryable and error.reason is not DeliveryReason.INVALID_PAYLOAD
        )
        if not permanent:
            return
        record.problem = describe_failure(error)
        record.failed += 1
        if record.healthy:
            record.healthy = False
            record.since = self._clock.now()
            log.error("sink_marked_unhealthy", problem=record.problem)

    # --- intake --------------------------------------------------------------------------------

    async def submit(self, n: Notification, *, outbox_id: int | None = None) -> bool:
        """Queue ``n`` (outbox item ``outbox_id``) for its receiver; never waits. ``True`` when
        it was queued.

        With a ``refill`` source, ``False`` means *spilled*: the queue is full, or older
        notifications still wait in the backlog. Nothing is dropped: the caller keeps ``n`` where
        ``refill`` finds it (the outbox), and the worker reads it back in order. Without one, a
        full queue drops its oldest entry (``reason="overflow"``) and ``n`` is queued. An unknown
        receiver is dropped (``False``).
        """
        envelope = Envelope(n, outbox_id)
        queue = self._queues.get(n.receiver)
        if queue is None:
            self._drop(envelope, "unknown_receiver")
            return False
        if self._refill is not None and (n.receiver in self._backlog or queue.full()):
            self._spill(n)
            return False
        if queue.full():  # no queue of record behind this one: make room
            oldest = queue.get_nowait()
            queue.task_done()
            self._drop(oldest, "overflow")
        self._put(envelope)
        return True

    def backlog(self, receiver: str) -> None:
        """Notifications for ``receiver`` wait in the refill source (after a restart, at a
        takeover, after ``outbox retry``): queue what fits now, the rest as the queue drains."""
        if self._refill is None:
            raise RuntimeError("backlog() needs a refill source")
        if receiver not in self._queues:
            raise KeyError(f"no sink for receiver {receiver!r}")
        self._backlog.add(receiver)
        self._read_back(receiver)

    def outbox_ids(self, receiver: str) -> frozenset[int]:
        """The outbox ids of ``receiver``'s envelopes queued or in flight: what a ``refill``
        must not read again."""
        return frozenset(self._outbox_ids.get(receiver, ()))

    def _put(self, envelope: Envelope) -> None:
        n = envelope.notification
        self._queues[n.receiver].put_nowait(envelope)
        if envelope.outbox_id is not None:
            self._outbox_ids.setdefault(n.receiver, set()).add(envelope.outbox_id)
        self._idle[n.receiver].clear()
        self._metrics.notifications.labels(receiver=n.receiver, status=n.status.value).inc()

    def _left(self, envelope: Envelope) -> None:
        """``envelope`` is out of memory (delivered, dropped or handed back)."""
        if envelope.outbox_id is not None:
            held = self._outbox_ids.get(envelope.notification.receiver)
            if held is not None:
                held.discard(envelope.outbox_id)

    def _spill(self, n: Notification) -> None:
        self._metrics.notifications_spilled.labels(receiver=n.receiver).inc()
        first = n.receiver not in self._backlog
        self._backlog.add(n.receiver)
        self._idle[n.receiver].clear()
        (self._log.warning if first else self._log.debug)(
            "queue_spilled",
            receiver=n.receiver,
            group_key=n.group_key,
            queue_size=self._queues[n.receiver].maxsize,
            detail="kept in the outbox; delivered in order once the queue has room",
        )

    def _read_back(self, receiver: str) -> None:
        """Queue the oldest of ``receiver``'s backlog that fits; forget the backlog once the
        refill source has no more."""
        if self._refill is None or receiver not in self._backlog:
            return
        queue = self._queues[receiver]
        room = queue.maxsize - queue.qsize()
        if room <= 0:
            return
        batch = self._refill(receiver, room)
        if len(batch) > room:
            raise RuntimeError(f"refill returned {len(batch)} notifications for room {room}")
        for envelope in batch:
            self._put(envelope)
        if len(batch) < room:
            self._backlog.discard(receiver)
            self._log.info("backlog_read_back", receiver=receiver, queued=queue.qsize())

    def _drop(self, envelope: Envelope, reason: str) -> None:
        self._left(envelope)
        n = envelope.notification
        self._metrics.events_dropped.labels(stage=STAGE, reason=reason).inc(max(len(n.events), 1))
        self._log.warning(
            "notification_dropped",
            receiver=n.receiver,
            group_key=n.group_key,
            events=len(n.events),
            reason=reason,
        )

    def pending(self) -> int:
        """Notifications queued or being delivered, over all receivers (a backlog still in the
        refill source is not counted: it is not in memory)."""
        return sum(q.qsize() for q in self._queues.values()) + len(self._in_flight)

    # --- workers -------------------------------------------------------------------------------

    async def run(self) -> Never:
        """Run one worker per receiver until cancelled (task names ``dispatch:<receiver>``);
        receivers added by ``reconfigure`` get theirs in the same group."""
        async with asyncio.TaskGroup() as tg:
            self._workers_group = tg
            try:
                for receiver in self._queues:
                    self._start_worker(receiver)
                await asyncio.Event().wait()  # workers come and go (reload): idle until cancelled
            finally:
                self._workers_group = None
        raise RuntimeError("dispatch workers exited")  # pragma: no cover - workers never return

    def _start_worker(self, receiver: str) -> None:
        if self._workers_group is None or receiver in self._workers:
            return  # not running yet: run() starts one for every queue
        task = self._workers_group.create_task(self._worker(receiver), name=f"{STAGE}:{receiver}")
        self._workers[receiver] = task

        def ended(done: asyncio.Task[Never]) -> None:
            if self._workers.get(receiver) is done:
                del self._workers[receiver]

        task.add_done_callback(ended)

    async def _worker(self, receiver: str) -> Never:
        queue = self._queues[receiver]
        idle = self._idle[receiver]
        while True:
            if queue.qsize() <= self._refill_at:
                self._read_back(receiver)
            if queue.empty():  # and so no backlog: _read_back forgets it only when exhausted
                idle.set()
            envelope = await queue.get()
            self._in_flight[receiver] = envelope
            try:
                await self._deliver(envelope)
            except BaseException:
                # Left in _in_flight on purpose: aclose() counts it as dropped.
                queue.task_done()
                raise
            del self._in_flight[receiver]
            self._left(envelope)
            queue.task_done()

    def start(self) -> None:
        """Start the workers in a background task (for use outside an app ``TaskGroup``)."""
        if self._task is not None:
            raise RuntimeError("dispatcher already started")
        self._task = asyncio.create_task(self.run(), name=STAGE)
        self._task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error(
                "task_exited_unexpectedly", task=task.get_name(), exc_info=task.exception()
            )

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` until every receiver has nothing queued, in flight or in its
        backlog; return how many are left in memory (a backlog left behind stays in the outbox)."""
        try:
            async with asyncio.timeout(timeout_s):
                for idle in self._idle.values():
                    await idle.wait()
        except TimeoutError:
            pass
        left = self.pending()
        self._log.info(
            "drain_finished",
            left=left,
            backlog_receivers=sorted(self._backlog),
            timeout_s=timeout_s,
        )
        return left

    async def aclose(self) -> None:
        """Stop the workers; count what is still queued or in flight as dropped (``shutdown``)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        for envelope in list(self._in_flight.values()):
            self._drop(envelope, "shutdown")
        self._in_flight.clear()
        for queue in self._queues.values():
            while not queue.empty():
                envelope = queue.get_nowait()
                queue.task_done()
                self._drop(envelope, "shutdown")
        self._backlog.clear()  # it stays in the outbox for the next start
        if task is not None and not task.cancelled():
            failure = task.exception()
            if failure is not None:
                raise failure

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- reload --------------------------------------------------------------------------------

    def reconfigure(self, sinks: Mapping[str, Sink]) -> list[tuple[str, Sink]]:
        """Make ``sinks`` (receiver -> sink) the receivers, in one step (a config reload).

        - A receiver whose sink is the same instance is untouched.
        - A new receiver gets a queue and a worker.
        - A receiver given a new sink keeps its queue, its order and the notification in
          flight: the next attempt (a retry included) renders and delivers with the new sink.
        - A removed receiver *retires*: routes no longer reach it, but its worker still
          delivers what it holds (``release``).

        Nothing here waits, so the caller swaps its routes in the same step and never routes to
        a receiver without a sink. Returns ``(receiver, old sink)`` for every sink no longer
        current: pass each to ``release``, then close it.
        """
        replaced: list[tuple[str, Sink]] = []
        for receiver, old in list(self._sinks.items()):
            if sinks.get(receiver) is old:
                continue
            replaced.append((receiver, old))
            if receiver not in sinks:
                del self._sinks[receiver]
                self._health.pop(receiver, None)
                self._retiring[receiver] = old
        for receiver, sink in sinks.items():
            if self._sinks.get(receiver) is sink:
                continue
            self._sinks[receiver] = sink
            self._metrics.declare_receiver(receiver, sink.name)
            if self._retiring.pop(receiver, None) is not None:
                continue  # removed by an earlier reload, back before it was released
            if receiver not in self._queues:
                self._queues[receiver] = asyncio.Queue(maxsize=self._queue_size)
                self._idle[receiver] = asyncio.Event()
                self._idle[receiver].set()
                self._start_worker(receiver)
        return replaced

    def retune(self, *, attempt_timeout_s: float, retry_budget_s: float) -> None:
        """New per-attempt timeout and retry budget (a reload); deliveries under way keep the
        deadline they started with."""
        if attempt_timeout_s <= 0 or retry_budget_s < 0:
            raise ValueError("attempt_timeout_s > 0, retry_budget_s >= 0")
        self._attempt_timeout_s = attempt_timeout_s
        self._retry_budget_s = retry_budget_s

    async def release(self, receiver: str, sink: Sink, *, timeout_s: float) -> list[Notification]:
        """Wait until ``sink``, which ``reconfigure`` returned for ``receiver``, is out of use.

        A replaced sink is out of use once its attempt under way ends (within the attempt
        timeout). A retired receiver's worker first delivers what it holds (queue, notification
        in flight, backlog) for up to ``timeout_s``, then stops. Returns the notifications it
        left undelivered: with a ``refill`` source they wait there (the outbox) until a receiver
        of that name is configured again (``outbox_ids`` no longer counts them, so ``refill``
        reads them then). Closing ``sink`` is the caller's.
        """
        left: list[Notification] = []
        if self._retiring.get(receiver) is sink:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._idle[receiver].wait()
            except TimeoutError:
                pass
            if self._retiring.get(receiver) is sink:  # not configured again meanwhile
                left = await self._retire(receiver)
        attempt = self._attempting.get(receiver)
        if attempt is not None and attempt[0] is sink:
            await attempt[1].wait()
        return left

    async def _retire(self, receiver: str) -> list[Notification]:
        """Stop a retired receiver's worker and forget its queue; what it still held."""
        task = self._workers.pop(receiver, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        left = [self._in_flight.pop(receiver)] if receiver in self._in_flight else []
        queue = self._queues.pop(receiver)
        while not queue.empty():
            left.append(queue.get_nowait())
            queue.task_done()
        self._outbox_ids.pop(receiver, None)  # all of it handed back: pending in the outbox
        del self._idle[receiver]
        del self._retiring[receiver]
        self._backlog.discard(receiver)
        if left:
            self._log.warning(
                "receiver_retired_with_backlog",
                receiver=receiver,
                notifications=len(left),
                detail="the receiver was removed by a reload: kept in the outbox, delivered if "
                "a receiver of that name is configured again",
            )
        return [envelope.notification for envelope in left]

    # --- one delivery --------------------------------------------------------------------------

    def backoff_s(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1-based): exponential, capped, with
        "equal jitter" (uniform between half and all of the capped exponential step)."""
        step = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** min(attempt - 1, 64))
        return step / 2 + self._rng.uniform(0, step / 2)

    async def _attempt(self, receiver: str, sink: Sink, payload: Payload) -> Exception | None:
        """One ``deliver`` under the per-attempt timeout; the error instead of raising it."""
        ended = asyncio.Event()
        self._attempting[receiver] = (sink, ended)  # ``release`` waits for it to end
        try:
            async with asyncio.timeout(self._attempt_timeout_s):
                await sink.deliver(payload)
        except DeliveryError as exc:
            return exc
        except TimeoutError:
            return DeliveryError(
                DeliveryReason.TIMEOUT,
                retryable=True,
                detail=f"no answer within the attempt timeout ({self._attempt_timeout_s:g}s)",
            )
        except (aiohttp.ClientError, OSError) as exc:  # a sink that did not classify
            return classify_exception(exc)
        except Exception as exc:  # noqa: BLE001 - per-delivery boundary: a sink bug fails one item
            return exc
        finally:
            ended.set()
            if self._attempting.get(receiver, (None, None))[1] is ended:
                del self._attempting[receiver]
        return None

    async def deliver_now(self, n: Notification) -> DeliveryOutcome:
        """Render and deliver ``n`` to its receiver's sink, retrying as configured (not from an
        outbox: the hooks get it in an envelope without an outbox id)."""
        return await self._deliver(Envelope(n))

    async def _deliver(self, envelope: Envelope) -> DeliveryOutcome:
        """Render and deliver the envelope's notification, retrying as configured.

        Each attempt goes to the receiver's sink of the moment: when a reload gave it a new one
        (``reconfigure``), the next attempt renders and delivers with that one."""
        n = envelope.notification
        sink = self._sinks.get(n.receiver) or self._retiring.get(n.receiver)
        if sink is None:
            raise KeyError(f"no sink for receiver {n.receiver!r}")
        log = self._log.bind(
            receiver=n.receiver,
            sink=sink.name,
            group_key=n.group_key,
            status=n.status.value,
            events=len(n.events),
        )
        started = self._clock.now()
        deadline = started + timedelta(seconds=self._retry_budget_s)
        attempts = 0
        error: Exception | None
        gave_up = ""
        try:
            payload = sink.render(n)
        except Exception as exc:  # noqa: BLE001 - per-delivery boundary: a render bug
            error = exc
            gave_up = "render_failed"
        else:
            while True:
                current = self._sinks.get(n.receiver, sink)
                if current is not sink:
                    sink, log = current, log.bind(sink=current.name)
                    try:
                        payload = sink.render(n)
                    except Exception as exc:  # noqa: BLE001 - per-delivery boundary: a render bug
                        error = exc
                        gave_up = "render_failed"
                        break
                attempts += 1
                error = await self._attempt(n.receiver, sink, payload)
                if error is None:
                    break
                if not isinstance(error, DeliveryError):
                    gave_up = "sink_error"
                    break
                if not error.retryable:
                    gave_up = "not_retryable"
                    break
                # Retry-After is a floor: never sooner than the sink asks, never a hot loop.
                delay = max(error.retry_after_s or 0.0, self.backoff_s(attempts))
                wake = self._clock.now() + timedelta(seconds=delay)
                if wake > deadline:
                    gave_up = "retry_budget"
                    break
                self._metrics.deliveries.labels(
                    sink=sink.name,
                    receiver=n.receiver,
                    outcome=DELIVERY_RETRIED,
                    reason=error.reason.value,
                ).inc()
                (log.warning if attempts == 1 else log.debug)(
                    "delivery_retrying",
                    attempt=attempts,
                    reason=error.reason.value,
                    status_code=error.status_code,
                    delay_s=round(delay, 3),
                )
                if self._on_retrying is not None:
                    await self._on_retrying(envelope, attempts, describe_failure(error), wake)
                await self._clock.sleep_until(wake)

        now = self._clock.now()
        duration_s = max((now - started).total_seconds(), 0.0)
        if error is None and n.events:
            observed = min(e.observed_at for e in n.events)
            latency_s = max((now - observed).total_seconds(), 0.0)
            self._metrics.delivery_latency.labels(sink=sink.name).observe(latency_s)
        outcome = self._finish(n, sink, log, error, attempts, duration_s, gave_up)
        if gave_up != "render_failed":  # a render bug says nothing about the destination
            self._judge(n, sink, log, error)
        if self._on_delivered is not None:
            await self._on_delivered(envelope, outcome)
        return outcome

    def _finish(
        self,
        n: Notification,
        sink: Sink,
        log: BoundLogger,
        error: Exception | None,
        attempts: int,
        duration_s: float,
        gave_up: str,
    ) -> DeliveryOutcome:
        """Count, log the canonical line, and build the outcome of one delivery."""
        if error is None:
            self._metrics.deliveries.labels(
                sink=sink.name, receiver=n.receiver, outcome=DELIVERY_OK, reason=REASON_NONE
            ).inc()
            # The console sink's notification is the record already: not twice on a terminal.
            quiet = sink.prints_notifications
            (log.debug if quiet else log.info)(
                "notification_sent",
                outcome=DELIVERY_OK,
                attempts=attempts,
                duration_s=round(duration_s, 3),
            )
            return DeliveryOutcome(n.receiver, sink.name, True, attempts, duration_s)

        reason: DeliveryReason | None
        if isinstance(error, DeliveryError):
            reason = error.reason
        elif gave_up == "render_failed":
            reason = DeliveryReason.INVALID_PAYLOAD
        else:
            reason = None
        self._metrics.deliveries.labels(
            sink=sink.name,
            receiver=n.receiver,
            outcome=DELIVERY_FAILED,
            reason=reason.value if reason is not None else REASON_ERROR,
        ).inc()
        fields: dict[str, object] = {
            "outcome": DELIVERY_FAILED,
            "attempts": attempts,
            "duration_s": round(duration_s, 3),
            "reason": reason.value if reason is not None else REASON_ERROR,
            "gave_up": gave_up,
        }
        if isinstance(error, DeliveryError):
            fields["status_code"] = error.status_code
            fields["retryable"] = error.retryable
            if error.detail:
                fields["detail"] = error.detail
            log.error("delivery_failed", **fields)
        else:
            log.error("delivery_failed", exc_info=error, **fields)
        detail = describe_failure(error)
        if gave_up in _GAVE_UP_WORDS:
            detail = f"{detail}; {_GAVE_UP_WORDS[gave_up]}"
        return DeliveryOutcome(n.receiver, sink.name, False, attempts, duration_s, reason, detail)
