"""The Flagger metrics source: Flagger's series, every ``interval_s``, as exposition text.

Two modes, one output. ``scrape`` GETs each target's Flagger ``/metrics`` itself; ``prometheus``
asks a Prometheus that already scrapes Flagger (``GET /api/v1/query`` for every ``flagger_*``
series) and renders the answer back into exposition text (:mod:`.flagger_exposition` says why).
Either way each target yields ``Observation(source=flagger-metrics, data=<text>)`` for
:class:`canarywatch.normalise.flagger_metrics.FlaggerMetricsNormaliser`, and only when the text
differs from the last one emitted for that target: the normaliser reports value changes only, so
an identical scrape is work for nothing.

Each target must have its own ``cluster``: the normaliser diffs a scrape against the previous
one *of the same cluster*, so two Flaggers in one cluster name would be diffed against each other.

Staleness, with hysteresis so a flaky network is not a stream of notifications: after
``down_after`` consecutive failed fetches (connection error, TLS error, timeout, non-2xx, an
answer without a single ``flagger_*`` series) the source emits one ``metrics-source-down``
self-event for the target; after ``up_after`` consecutive successes while down, one
``metrics-source-recovered``. Self-events go through :data:`~.base.EmitEvent`, not the
normaliser. Their ``reason`` is a :class:`~.prometheus.FailureKind` (plus HTTP status): never a
URL, path, query or credential. Logs name the target by its configured ``name`` only.
"""

from __future__ import annotations

import asyncio
import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Never

import aiohttp
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock
from canarywatch.errors import ConfigError
from canarywatch.logs import strip_urls
from canarywatch.model import (
    Observation,
    SourceName,
)
from canarywatch.normalise.self_events import metrics_target_down, metrics_target_recovered
from canarywatch.sources.base import Emit, EmitEvent
from canarywatch.sources.flagger_exposition import flagger_query, render_exposition
from canarywatch.sources.prometheus import (
    DEFAULT_MAX_BODY_BYTES,
    FailureKind,
    FetchError,
    HttpAuth,
    RequestOptions,
    TLSOptions,
    fetch_text,
    query_instant,
)

_FLAGGER_SAMPLE: Final = re.compile(r"^flagger_", re.MULTILINE)


class MetricsMode(enum.StrEnum):
    SCRAPE = "scrape"
    PROMETHEUS = "prometheus"


@dataclass(frozen=True, slots=True)
class MetricsTarget:
    """One Flagger instance.

    ``url`` is its ``/metrics`` (mode ``scrape``); ``match`` narrows the Prometheus query to it
    (mode ``prometheus``: PromQL matchers without braces, ``job="flagger",cluster="prod"``).
    """

    name: str
    url: str = ""
    match: str = ""
    cluster: str = ""


@dataclass(frozen=True, slots=True)
class FlaggerMetricsSettings:
    targets: tuple[MetricsTarget, ...]
    mode: MetricsMode = MetricsMode.SCRAPE
    prometheus_url: str = ""
    auth: HttpAuth | None = None
    tls: TLSOptions = field(default_factory=TLSOptions)
    interval_s: float = 5.0
    timeout_s: float = 4.0
    down_after: int = 3
    up_after: int = 1
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, path: str = "sources.flagger_metrics") -> None:
        """Raise ``ConfigError`` naming the key path of the first problem."""
        if not self.targets:
            raise ConfigError("at least one target is needed", path=f"{path}.targets")
        for key, number in (("interval_s", self.interval_s), ("timeout_s", self.timeout_s)):
            if not number > 0:
                raise ConfigError("must be > 0", path=f"{path}.{key}")
        for key, count in (("down_after", self.down_after), ("up_after", self.up_after)):
            if count < 1:
                raise ConfigError("must be >= 1", path=f"{path}.{key}")
        if self.max_body_bytes < 1:
            raise ConfigError("must be >= 1", path=f"{path}.max_body_bytes")
        if self.mode is MetricsMode.PROMETHEUS and not self.prometheus_url:
            raise ConfigError("mode prometheus needs prometheus_url", path=f"{path}.prometheus_url")
        names: set[str] = set()
        clusters: set[str] = set()
        for index, target in enumerate(self.targets):
            where = f"{path}.targets[{index}]"
            if not target.name:
                raise ConfigError("a target needs a name", path=f"{where}.name")
            if target.name in names:
                raise ConfigError("target names must be unique", path=f"{where}.name")
            if target.cluster in clusters:
                raise ConfigError("each target needs its own cluster name", path=f"{where}.cluster")
            if self.mode is MetricsMode.SCRAPE and not target.url:
                raise ConfigError("mode scrape needs a url per target", path=f"{where}.url")
            names.add(target.name)
            clusters.add(target.cluster)


@dataclass(slots=True)
class _TargetState:
    failures: int = 0
    """Consecutive failed fetches."""
    successes: int = 0
    """Consecutive successful fetches."""
    down: bool = False
    last_text: str | None = None
    answered: bool = False
    """At least one fetch has succeeded since start."""
    last_error: FetchError | None = None
    """The latest failed fetch (kept after a success, for the detail)."""
    last_ok: datetime | None = None


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """One target as ``canarywatch_source_up`` and ``/readyz`` show it.

    ``up`` is false until a first fetch succeeds and while the target is down (``down_after``
    failures in a row, the ``metrics-source-down`` hysteresis); ``detail`` says why in plain
    words, naming the target by its name and ``scheme://host`` only (no path, query or
    credential)."""

    up: bool
    detail: str


class FlaggerMetricsSource:
    """Polls every target each ``interval_s``; see the module docstring for the rules.

    The session belongs to the app (not closed here); ``emit_event`` takes the self-events.
    """

    def __init__(
        self,
        settings: FlaggerMetricsSettings,
        *,
        http: aiohttp.ClientSession,
        clock: Clock,
        log: FilteringBoundLogger,
        emit_event: EmitEvent,
        name: str = "flagger_metrics",
    ) -> None:
        self.name = name
        self.listed = asyncio.Event()
        self.settings = settings
        self._http = http
        self._clock = clock
        self._emit_event = emit_event
        self._log = log.bind(component=f"source.{name}", mode=settings.mode.value)
        self._request = RequestOptions(
            timeout_s=settings.timeout_s,
            auth=settings.auth,
            ssl=settings.tls.request_ssl(path=f"sources.{name}.tls"),
            max_body_bytes=settings.max_body_bytes,
        )
        self._states = {target.name: _TargetState() for target in settings.targets}

    def is_down(self, target: str) -> bool:
        """Whether ``metrics-source-down`` was emitted for ``target`` and not yet recovered."""
        return self._states[target].down

    def where(self, target: MetricsTarget) -> str:
        """``flagger metrics target prod (http://flagger.flagger-system:8080)``: the name and
        ``scheme://host[:port]`` of what is fetched; paths, queries and user info (where
        tokens live) are left out."""
        if self.settings.mode is MetricsMode.PROMETHEUS:
            via = strip_urls(self.settings.prometheus_url)
            return f"flagger metrics target {target.name} (via Prometheus {via})"
        return f"flagger metrics target {target.name} ({strip_urls(target.url)})"

    def health(self, name: str) -> TargetHealth:
        """Whether target ``name`` delivers Flagger's series, and why not (see ``TargetHealth``)."""
        state = self._states[name]
        error = state.last_error
        why = error.explain() if error is not None else ""
        if not state.answered:
            if error is None:
                return TargetHealth(False, "first fetch not done yet")
            never = "never answered" if not error.answered else "no usable answer yet"
            return TargetHealth(False, f"{never} ({why})")
        if state.down and not state.failures:
            return TargetHealth(
                False,
                f"down, recovering: {state.successes} of {self.settings.up_after} fetches "
                f"in a row succeeded (before: {why})",
            )
        if state.down:
            return TargetHealth(
                False, f"down: {state.failures} fetches in a row failed, the last: {why}"
            )
        if state.failures and error is not None:
            return TargetHealth(
                True,
                f"ok, but the last {state.failures} fetch(es) failed ({why}); down after "
                f"{self.settings.down_after} in a row",
            )
        assert state.last_ok is not None  # noqa: S101 - answered implies a success time
        return TargetHealth(True, f"ok, last fetched {state.last_ok:%Y-%m-%dT%H:%M:%SZ}")

    async def run(self, emit: Emit) -> Never:
        """Poll forever on the clock: rounds start ``interval_s`` apart (never in a burst)."""
        self._log.info(
            "metrics_source_started",
            targets=[t.name for t in self.settings.targets],
            interval_s=self.settings.interval_s,
        )
        interval = timedelta(seconds=self.settings.interval_s)
        deadline = self._clock.now()
        while True:
            await self.poll_once(emit)
            self.listed.set()
            deadline += interval
            now = self._clock.now()
            if deadline <= now:  # a round took longer than the interval: skip, do not catch up
                deadline = now + interval
            await self._clock.sleep_until(deadline)

    async def poll_once(self, emit: Emit) -> None:
        """One round: every target fetched concurrently, each under its own timeout."""
        targets = self.settings.targets
        if len(targets) == 1:
            await self._poll_target(targets[0], emit)
            return
        async with asyncio.TaskGroup() as group:
            for target in targets:
                group.create_task(self._poll_target(target, emit), name=f"scrape:{target.name}")

    async def _poll_target(self, target: MetricsTarget, emit: Emit) -> None:
        state = self._states[target.name]
        started = asyncio.get_running_loop().time()
        try:
            text = await self._fetch(target)
        except FetchError as exc:
            await self._failed(target, state, exc)
            return
        duration_s = round(asyncio.get_running_loop().time() - started, 4)
        await self._succeeded(target, state, text, emit, duration_s)

    async def _fetch(self, target: MetricsTarget) -> str:
        if self.settings.mode is MetricsMode.PROMETHEUS:
            samples = await query_instant(
                self._http,
                self.settings.prometheus_url,
                flagger_query(target.match),
                self._request,
            )
            if not samples:
                raise FetchError(FailureKind.NO_SERIES)
            return render_exposition(samples)
        _, text = await fetch_text(self._http, target.url, self._request)
        if not _FLAGGER_SAMPLE.search(text):
            raise FetchError(FailureKind.NO_SERIES)
        return text

    async def _succeeded(
        self, target: MetricsTarget, state: _TargetState, text: str, emit: Emit, duration_s: float
    ) -> None:
        state.failures = 0
        state.successes += 1
        state.answered = True
        state.last_ok = self._clock.now()
        if state.down and state.successes >= self.settings.up_after:
            state.down = False
            self._log.info("metrics_source_recovered", target=target.name)
            await self._emit_event(
                metrics_target_recovered(target.name, target.cluster, at=self._clock.now())
            )
        changed = text != state.last_text
        self._log.debug(
            "metrics_fetched",
            target=target.name,
            changed=changed,
            size_bytes=len(text),
            duration_s=duration_s,
        )
        if changed:
            state.last_text = text
            await emit(
                Observation(
                    at=self._clock.now(),
                    source=SourceName.FLAGGER_METRICS,
                    data=text,
                    cluster=target.cluster,
                )
            )

    async def _failed(self, target: MetricsTarget, state: _TargetState, exc: FetchError) -> None:
        state.successes = 0
        state.failures += 1
        state.last_error = exc
        fields = {
            "target": target.name,
            "reason": exc.kind.value,
            "status_code": exc.status_code,
            "error_type": exc.error_type,
            "failures": state.failures,
        }
        if state.failures == 1 and not state.down:
            self._log.warning("metrics_fetch_failed", **fields)
        else:
            self._log.debug("metrics_fetch_failed", **fields)
        if state.down or state.failures < self.settings.down_after:
            return
        state.down = True
        self._log.warning("metrics_source_down", **fields)
        await self._emit_event(
            metrics_target_down(
                target.name,
                target.cluster,
                at=self._clock.now(),
                failures=state.failures,
                reason=exc.describe(),
            )
        )
