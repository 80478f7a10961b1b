"""The passed-with-no-traffic trap: how many requests did a promoted canary actually serve?

Flagger's metric checks pass on whatever sample they get. A canary that received (almost) no
traffic during its analysis has a perfect success rate and a fine latency, and is promoted
without ever having been tested. At each ``promoted`` this component asks Prometheus how many
requests the canary workload served during the rollout and, when that is fewer than
``min_requests``, emits one ``low-traffic-promotion`` warning for the same canary and rollout.

How it works:

- The window is the rollout's duration, from its ``revision-detected`` to its ``promoted``
  (both tracked here from the Runner's ``on_transitions``; the source's own time when it gives
  one), rounded up to whole seconds, at least one minute. A promotion whose start was not seen
  (canarywatch started mid-rollout), a promotion with ``skipAnalysis`` and a promotion older
  than :data:`STALE_AFTER` (start-up catch-up) are skipped: counted, logged, not guessed.
- The query is a PromQL template per mesh (``config.sources.MESH_QUERIES``, in the
  spirit of Flagger's MetricTemplates) or the configured ``query``, with ``{namespace}``,
  ``{target}``, ``{canary}``, ``{cluster}`` and ``{window}`` filled in. It is evaluated *at the
  promotion time* (``time=`` of the instant-query API) after waiting ``delay`` so that Prometheus
  has scraped the last requests; a late check still measures the right window.
- The answer is summed over its series and rounded to a whole number of requests. An empty
  answer means no matching series had samples in the window: that is Flagger's own "no values
  found … probably not receiving traffic", counted as 0 requests (the message says the query
  matched nothing, which also reveals a template that does not fit the mesh).
- A failed query (timeout, connection, TLS, HTTP status, query error, malformed or NaN answer)
  is logged as ``low_traffic_check_failed`` and counted in
  ``canarywatch_low_traffic_query_failures_total{reason}``; no event is emitted, no figure is
  invented.

The ``promoted`` notification has already gone out when the figure is known, so the figure is
**not** added to it: it is carried on the ``low-traffic-promotion`` event (``reason``,
``hints["requests"]``, ``hints["minimum"]``) and logged on every check (``low_traffic_checked``:
at debug level when the count is sufficient, nothing else is emitted then).
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Never

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock
from canarywatch.config.sources import PLACEHOLDER, LowTrafficSettings
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    SourceName,
    Transition,
)
from canarywatch.sources.base import EmitEvent
from canarywatch.sources.prometheus import (
    FailureKind,
    FetchError,
    RequestOptions,
    TLSOptions,
    http_auth,
    query_instant,
)

MIN_WINDOW_S: Final = 60
STALE_AFTER: Final = timedelta(minutes=15)
"""A promotion observed this long after it happened (start-up catch-up) is not checked."""
QUEUE_SIZE: Final = 256
ANALYSIS_SKIPPED: Final = "analysis-skipped"
"""The ``reason`` of a ``promoted`` whose analysis was skipped (``skipAnalysis: true``)."""
QUERY_FAILURES: Final = tuple(k for k in FailureKind if k is not FailureKind.NO_SERIES)
"""``reason`` of ``canarywatch_low_traffic_query_failures_total`` (an empty answer is 0)."""


class CheckOutcome(enum.StrEnum):
    """``outcome`` of ``canarywatch_low_traffic_checks_total`` (a fixed set)."""

    SUFFICIENT = "sufficient"
    LOW = "low"
    FAILED = "failed"
    SKIPPED = "skipped"
    DROPPED = "dropped"
    """The check queue was full (a burst of promotions larger than :data:`QUEUE_SIZE`)."""


@dataclass(frozen=True, slots=True)
class PendingCheck:
    """One promotion to check: the ``promoted`` event and the rollout's start."""

    promoted: CanaryEvent
    started_at: datetime
    ended_at: datetime
    target: str
    due: datetime
    """When to query (observed + ``delay``)."""

    @property
    def window_s(self) -> int:
        return window_seconds(self.started_at, self.ended_at)


@dataclass(frozen=True, slots=True)
class CheckResult:
    outcome: CheckOutcome
    requests: int | None = None
    matched_series: int = 0
    window_s: int = 0
    event: CanaryEvent | None = None
    """The ``low-traffic-promotion`` emitted, if any."""
    failure: str = ""
    """``FetchError.describe()`` for ``failed``; the skip reason for ``skipped``."""


@dataclass(slots=True)
class _RolloutStart:
    at: datetime
    target: str


def window_seconds(started_at: datetime, ended_at: datetime) -> int:
    """The rollout's duration rounded up to whole seconds, at least :data:`MIN_WINDOW_S`."""
    return max(MIN_WINDOW_S, math.ceil((ended_at - started_at).total_seconds()))


def render_query(template: str, values: Mapping[str, str]) -> str:
    """Fill ``{namespace}``-style placeholders; PromQL's own braces are left alone.

    Values go inside PromQL string literals, so backslashes and quotes are escaped.
    """

    def substitute(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return PLACEHOLDER.sub(substitute, template)


def happened_at(event: CanaryEvent) -> datetime:
    """When a transition happened: the source's own time when it says, else observed."""
    return event.occurred_at or event.observed_at


class LowTrafficChecker:
    """Feed it every new transition (``observe``); run ``run()`` as task ``low_traffic``."""

    name = "low_traffic"

    def __init__(
        self,
        settings: LowTrafficSettings,
        *,
        http: aiohttp.ClientSession,
        clock: Clock,
        log: FilteringBoundLogger,
        emit_event: EmitEvent,
        registry: CollectorRegistry,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.settings = settings
        self._http = http
        self._clock = clock
        self._log = log
        self._emit_event = emit_event
        self._template = settings.template()
        self._request = RequestOptions(
            timeout_s=settings.timeout,
            auth=http_auth(settings.bearer_token, settings.basic_auth),
            ssl=TLSOptions.from_config(settings.tls).request_ssl(path="low_traffic.tls"),
        )
        self._starts: dict[CanaryRef, _RolloutStart] = {}
        self._queue: asyncio.Queue[PendingCheck] = asyncio.Queue(maxsize=queue_size)
        self.checks = Counter(
            "canarywatch_low_traffic_checks",
            "Promotions checked for the passed-with-no-traffic trap, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.query_failures = Counter(
            "canarywatch_low_traffic_query_failures",
            "Request-count queries that failed, by reason.",
            ["reason"],
            registry=registry,
        )
        for outcome in CheckOutcome:
            self.checks.labels(outcome=outcome.value)
        for kind in QUERY_FAILURES:
            self.query_failures.labels(reason=kind.value)

    # -- intake (sync: called from the Runner's on_transitions) ---------------------------

    def observe(self, event: CanaryEvent) -> None:
        """Track rollout starts; queue a check at each ``promoted``. Never blocks."""
        if not self.settings.enabled:
            return
        ref = event.canary
        transition = event.transition
        if transition is Transition.REVISION_DETECTED:
            self._starts[ref] = _RolloutStart(happened_at(event), event.target)
            return
        start = self._starts.get(ref)
        if start is not None and event.target and not start.target:
            start.target = event.target
        if transition in (Transition.ROLLED_BACK, Transition.PROMOTION_FAILED):
            self._starts.pop(ref, None)
        elif transition is Transition.PROMOTED:
            self._starts.pop(ref, None)
            self._on_promoted(event, start)

    def on_transitions(self, events: list[CanaryEvent]) -> None:
        """``observe`` each event (the shape of the Runner's ``on_transitions``)."""
        for event in events:
            self.observe(event)

    def _on_promoted(self, event: CanaryEvent, start: _RolloutStart | None) -> None:
        now = self._clock.now()
        ended = min(happened_at(event), now)
        skip = ""
        if event.reason == ANALYSIS_SKIPPED:
            skip = "analysis skipped"
        elif start is None:
            skip = "rollout start not seen"
        elif now - ended > STALE_AFTER:
            skip = "promotion too old"
        if skip or start is None:
            self._count(CheckOutcome.SKIPPED)
            self._log.info(
                "low_traffic_check_skipped",
                canary=str(event.canary),
                rollout=event.rollout,
                reason=skip,
            )
            return
        pending = PendingCheck(
            promoted=event,
            started_at=min(start.at, ended),
            ended_at=ended,
            target=event.target or start.target or event.canary.name,
            due=now + timedelta(seconds=self.settings.delay),
        )
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self._count(CheckOutcome.DROPPED)
            self._log.warning(
                "low_traffic_check_dropped", canary=str(event.canary), reason="overflow"
            )

    # -- the task -------------------------------------------------------------------------

    async def run(self) -> Never:
        """Check queued promotions forever, each once its ``delay`` has passed."""
        self._log.info(
            "low_traffic_checker_started",
            mesh=self.settings.mesh,
            min_requests=self.settings.min_requests,
        )
        while True:
            pending = await self._queue.get()
            await self._clock.sleep_until(pending.due)
            try:
                await self.check(pending)
            except Exception:  # noqa: BLE001  per-item boundary: one check must not stop the task
                self._count(CheckOutcome.FAILED)
                self._log.exception(
                    "low_traffic_check_crashed", canary=str(pending.promoted.canary)
                )

    async def check(self, pending: PendingCheck) -> CheckResult:
        """Query, compare, emit at most one ``low-traffic-promotion``; never raises FetchError."""
        promoted = pending.promoted
        window_s = pending.window_s
        query = render_query(
            self._template,
            {
                "namespace": promoted.canary.namespace,
                "target": pending.target,
                "canary": promoted.canary.name,
                "cluster": promoted.canary.cluster,
                "window": f"{window_s}s",
            },
        )
        log = self._log.bind(canary=str(promoted.canary), rollout=promoted.rollout)
        try:
            total, series = await self._query(query, pending.ended_at)
        except FetchError as exc:
            self._count(CheckOutcome.FAILED)
            self.query_failures.labels(reason=exc.kind.value).inc()
            log.warning(
                "low_traffic_check_failed",
                reason=exc.describe(),
                error_type=exc.error_type,
                window_s=window_s,
            )
            return CheckResult(CheckOutcome.FAILED, window_s=window_s, failure=exc.describe())
        requests = round(total)
        minimum = self.settings.min_requests
        low = requests < minimum
        outcome = CheckOutcome.LOW if low else CheckOutcome.SUFFICIENT
        event = (
            self._event(pending, requests, matched_series=series, window_s=window_s)
            if low
            else None
        )
        self._count(outcome)
        (log.info if low else log.debug)(
            "low_traffic_checked",
            outcome=outcome.value,
            requests=requests,
            minimum=minimum,
            window_s=window_s,
            matched_series=series,
        )
        if event is not None:
            await self._emit_event(event)
        return CheckResult(
            outcome,
            requests=requests,
            matched_series=series,
            window_s=window_s,
            event=event,
        )

    # -- internals ------------------------------------------------------------------------

    async def _query(self, promql: str, at: datetime) -> tuple[float, int]:
        """``(sum of the answer's values, number of series)`` of an instant query at ``at``.

        A NaN, infinite or negative value is ``bad_response``: no request count is guessed.
        """
        samples = await query_instant(
            self._http, self.settings.prometheus_url, promql, self._request, at=at
        )
        total = 0.0
        for sample in samples:
            value = sample.number
            if not math.isfinite(value) or value < 0:
                raise FetchError(FailureKind.BAD_RESPONSE)
            total += value
        return total, len(samples)

    def _event(
        self, pending: PendingCheck, requests: int, *, matched_series: int, window_s: int
    ) -> CanaryEvent:
        promoted = pending.promoted
        minimum = self.settings.min_requests
        transition = Transition.LOW_TRAFFIC_PROMOTION
        message = (
            f"{promoted.canary} was promoted after serving {requests} requests during its "
            f"{window_s}s analysis (minimum {minimum}): the analysis may have tested nothing"
        )
        if matched_series == 0:
            message += " (the request-count query matched no series)"
        return CanaryEvent(
            canary=promoted.canary,
            transition=transition,
            observed_at=self._clock.now(),
            sources=(SourceName.FLAGGER_METRICS,),
            severity=TRANSITIONS[transition].severity,
            message=message,
            reason=f"served {requests} requests during analysis, minimum {minimum}",
            target=pending.target,
            rollout=promoted.rollout,
            occurred_at=pending.ended_at,
            hints=MappingProxyType({"requests": str(requests), "minimum": str(minimum)}),
        )

    def _count(self, outcome: CheckOutcome) -> None:
        self.checks.labels(outcome=outcome.value).inc()
