"""The one list-then-watch loop both Kubernetes sources use.

Layered as in kopf (``kopf/_cogs/clients/watching.py``) and client-go's Reflector
(``reference/kubernetes-watch.md`` §2):

1. **reconnect loop** (:meth:`ListWatch._run_scope`): never ends; classifies every failure and
   sleeps (through the injected :class:`~canarywatch.clock.Clock`) before the next attempt, so it
   never spins: jittered backoff 0.8 s doubling to 30 s, reset after 2 min without failures;
   ``429`` honours ``Retry-After``; ``401``/``403`` log an error naming RBAC and ``404`` (CRD not
   installed) a warning, both retried slowly. A backoff sleep ends early when ``wake`` is set:
   another source of the same cluster got an answer, the API server is back (``WatchedSource``).
2. **list + watch**: a paged LIST (``limit`` + ``continue``, buffered until complete so a
   failed page never half-delivers a snapshot) whose items are passed on as synthetic ``ADDED``
   events flagged ``initial`` (the first list of the scope) or ``relisted`` (a later one, after
   410 Gone), then a WATCH from the list's resourceVersion.
3. **single stream** (:meth:`ListWatch._stream`): one watch request with ``timeoutSeconds``
   (random 300-600 s unless fixed) and ``allowWatchBookmarks=true``, whose response headers must
   arrive within ``watch_start_timeout_s``; the RV advances with every event and BOOKMARK. A
   clean end at the expected time re-watches at once from the last RV; so does a stream that
   stays silent for ``silent_stream_s``; anything else goes through step 1. ``410`` (an
   ``ERROR`` event or an HTTP 410) drops the RV and relists quietly (``debug``).

**Silence is not death, and it is not proof of life either.** A watch on a quiet resource sends
nothing for as long as nothing changes: the real kube-apiserver (1.34) sends no periodic
BOOKMARK, not even when asked for them (none in 75 s to a namespaced Events watch while other
namespaces were written, none before a 5-75 s ``timeoutSeconds``; only the
``k8s.io/initial-events-end`` marker is reliable). A half-open connection (the peer or a NAT/load
balancer on the way is gone, no FIN, no bytes) looks exactly the same, and would otherwise go
unnoticed until the client read timeout, ``timeoutSeconds`` + slack: up to ten minutes. So no
stream may stay silent longer than ``silent_stream_s`` (60 s): it is then closed and replaced by
a new watch from the same resourceVersion, which the watch cache serves cheaply and which
neither loses nor repeats a change. The stall itself is normal churn (``debug``); the
replacement decides health: established (200 and headers in time) means the source is current,
a replacement that cannot be established (connect or header timeout, refused, 5xx) is a
connectivity failure like any other. After ``unreachable_after`` consecutive ones in a scope the
watch reports itself unreachable (``on_reachability``), and reachable again on the first
success. A half-open stream is therefore noticed within ``silent_stream_s`` and, when the API
server stays out of reach, reported within about ``silent_stream_s + unreachable_after x
(watch_start_timeout_s + backoff)`` (about 95 s with the defaults).

Why raw HTTP (``_preload_content=False``) instead of ``kubernetes_asyncio.watch.Watch``: the
Watch turns HTTP errors into ``ApiException`` without headers (no ``Retry-After``), yields a
non-JSON error body as a plain string and then reconnects in a tight loop, and deserialises into
models that crash on Flagger's ``eventTime: null`` (§3). Reading the lines ourselves gives the
status code, the headers and the Kubernetes JSON exactly as on the wire, which is what the
normalisers and the recording format want. List items of built-in kinds carry no
``kind``/``apiVersion``; they are filled in from the list's kind so a relisted object is
byte-for-byte the object a watch would deliver.

Namespaces: ``None`` watches all namespaces with one loop; a list of names runs one loop per
namespace (for a Role per namespace instead of a ClusterRole). A label selector *on namespaces*
is not supported: list the namespaces explicitly.

Consumers get every item and decide what is news; this loop only marks where an item came from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, Never, TypeAlias

import aiohttp
import structlog
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock, SystemClock

ListCall: TypeAlias = Callable[..., Awaitable[Any]]
"""A kubernetes_asyncio list method with its positional arguments already bound, e.g.
``functools.partial(core.list_namespaced_event, "test")`` or ``core.list_event_for_all_namespaces``.
It is called with keyword arguments only (``limit``, ``watch``, ``_preload_content``, ...)."""

CallFor: TypeAlias = Callable[[str | None], ListCall]
"""Given a namespace (``None``: all namespaces), the list call for that scope."""

WATCH_TYPES: Final = frozenset({"ADDED", "MODIFIED", "DELETED"})
_MAX_ERROR_BODY: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One object change as the consumer sees it; ``object`` is the raw Kubernetes JSON."""

    type: str
    """``ADDED``, ``MODIFIED`` or ``DELETED`` (list items are synthetic ``ADDED``)."""
    object: dict[str, Any]
    initial: bool = False
    """From the first LIST of this scope since start: state, not news."""
    relisted: bool = False
    """From a later LIST (after 410 Gone): may re-deliver what was already seen."""
    scope: str | None = None
    """The namespace of the loop that saw it (``None``: all namespaces)."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A complete LIST was delivered; ``keys`` are the ``(namespace, name)`` of its items."""

    scope: str | None
    resource_version: str
    keys: frozenset[tuple[str, str]]
    relist: bool


OnEvent: TypeAlias = Callable[[WatchEvent], Awaitable[None]]
OnListed: TypeAlias = Callable[[Listed], Awaitable[None]]
OnCatchUp: TypeAlias = Callable[[], Awaitable[None]]
"""Awaited when a scope that was behind starts delivering its backlog, before any of it is
passed on: a relist (a LIST after the first one of a scope) has been received, or a watch was
re-established after a failure (it replays what it missed). The runner puts its regroup marker
on the intake there, so that the hold starts ahead of the backlog (``Runner.catching_up``)."""
OnFailure: TypeAlias = Callable[[str], None]
"""Called with a plain-words description of every failed list or watch request
(``forbidden (HTTP 403): check RBAC``), and with ``""`` when a request succeeds again."""
OnReachability: TypeAlias = Callable[[bool, str], Awaitable[None]]
"""Called with ``(reachable, reason)`` on each transition: ``False`` once a scope has had
``unreachable_after`` consecutive connection failures (a list, or a watch that could not be
established, including the replacement of a silent stream), ``True`` once every scope has
succeeded again."""


class SourceHealth:
    """What a watch-based source shows ``/readyz``: the last reachability its
    :class:`ListWatch` reported, passed on to ``forward`` (the app's ``source_up`` metric and
    ``cluster-unreachable`` self-event).

        health = SourceHealth(on_reachability)
        ListWatch(..., on_reachability=health.changed)
        health.reachable, health.reason       # True, "" until a scope is down
    """

    def __init__(self, forward: OnReachability | None = None) -> None:
        self._forward = forward
        self.reachable = True
        self.reason = ""
        self.last_failure = ""
        """The latest failed request in plain words, until one succeeds (``ListWatch``'s
        ``on_failure``): why a source that has not listed yet has not."""

    def failed(self, description: str) -> None:
        self.last_failure = description

    async def changed(self, reachable: bool, reason: str) -> None:
        self.reachable = reachable
        self.reason = "" if reachable else reason
        if self._forward is not None:
            await self._forward(reachable, reason)


class WatchedSource:
    """What the two Kubernetes sources (Events, Canaries) share around their :class:`ListWatch`:
    scope and settings, the ``listed`` and ``current`` markers, and the reachability ``/readyz``
    shows (through a :class:`SourceHealth` that forwards to ``on_reachability``).

    **Current or behind.** ``current`` is set while everything that happened to the watched
    objects has been passed on (a list of every scope completed, or a watch re-established and
    past the replay of what it missed) and cleared by the first failure of a streak (or a 410,
    which means a relist is coming). A source that has listed once and is not current is
    ``behind``: what it passes on next is a backlog, older than what its peers are reporting.
    The runner uses this after an outage exactly as at start-up: when one source of a cluster
    catches up (relists, or resumes its watch after a failure, which replays what it missed)
    while another is behind, it holds the cluster's observations until the laggard is
    current again and replays them in the order they happened (``Runner.catching_up``).

    **Peers.** The sources of one cluster are linked (:func:`link_peers`): the first answer one
    of them gets after failing proves the API server is back, so it wakes the peers that are
    still sleeping out a backoff (up to ``backoff_max_s``) to retry at once, which keeps that
    hold short.

    A subclass names itself (``name``, also its logger's ``component="source.<name>"``) and
    builds its watch with :meth:`_list_watch`.
    """

    name: ClassVar[str]

    def __init__(
        self,
        *,
        cluster: str,
        namespaces: Sequence[str] | None,
        label_selector: str | None,
        clock: Clock | None,
        settings: WatchSettings | None,
        log: FilteringBoundLogger | None,
        on_reachability: OnReachability | None,
        on_catch_up: OnCatchUp | None = None,
    ) -> None:
        self.cluster = cluster
        self._namespaces = None if namespaces is None else tuple(namespaces)
        self._label_selector = label_selector
        self._clock: Clock = clock or SystemClock()
        self._settings = settings
        self._log: FilteringBoundLogger = log or structlog.get_logger(
            component=f"source.{self.name}"
        )
        self._health = SourceHealth(on_reachability)
        self._on_catch_up = on_catch_up
        self.listed = asyncio.Event()
        self.current = asyncio.Event()
        """Set while the source is up to date (see the class docstring); cleared on failure."""
        self.wake = asyncio.Event()
        """Set by a peer that got an answer: ends this source's backoff sleep at once."""
        self._peers: tuple[WatchedSource, ...] = ()

    def is_behind(self) -> bool:
        """Listed once, and failed (or got 410) since it was last current: what it delivers
        next is older than what a current peer delivers. A source that never listed is not
        behind (the start-up hold covers it)."""
        return self.listed.is_set() and not self.current.is_set()

    def _recovered(self) -> None:
        """A request of this source was answered after a failure: wake the peers that are
        behind (sleeping out a backoff, or about to)."""
        for peer in self._peers:
            if not peer.current.is_set() and not peer.wake.is_set():
                peer.wake.set()
                self._log.debug("watch_peer_woken", peer=peer.name)

    @property
    def reachable(self) -> bool:
        """``False`` while a watch of this source cannot be (re-)established, see
        ``sources.watch``: ``/readyz`` names the source then."""
        return self._health.reachable

    @property
    def unreachable_reason(self) -> str:
        """The failure that made the source unreachable (``timeout``, ``connection``,
        ``http``...); empty while reachable."""
        return self._health.reason

    @property
    def last_failure(self) -> str:
        """The latest failed list/watch request in plain words, until one succeeds (what
        ``/readyz`` shows for a source that has not listed yet); empty otherwise."""
        return self._health.last_failure

    def _list_watch(
        self, call_for: CallFor, *, resource: str, field_selector: str | None = None
    ) -> ListWatch:
        """The source's watch: its scope, selector, settings, clock and logger, setting
        ``listed`` and reporting to its health."""
        return ListWatch(
            call_for,
            resource=resource,
            namespaces=self._namespaces,
            field_selector=field_selector,
            label_selector=self._label_selector,
            settings=self._settings,
            clock=self._clock,
            log=self._log,
            listed=self.listed,
            current=self.current,
            wake=self.wake,
            on_reachability=self._health.changed,
            on_failure=self._health.failed,
            on_catch_up=self._on_catch_up,
            on_recovered=self._recovered,
        )


def link_peers(sources: Sequence[WatchedSource]) -> None:
    """Make the Kubernetes sources of one cluster each other's peers (see
    :class:`WatchedSource`): an answer to one ends the others' backoff."""
    for source in sources:
        source._peers = tuple(p for p in sources if p is not source)


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timing knobs; the defaults are client-go's. Tests shrink them."""

    page_size: int = 500
    timeout_seconds: int | None = None
    """Fixed watch ``timeoutSeconds``; ``None`` picks one in ``[min, max]`` per request."""
    min_timeout_seconds: int = 300
    max_timeout_seconds: int = 600
    read_slack_s: float = 15.0
    """A stream still open ``read_slack_s`` after its ``silent_stream_s`` (socket read) or
    ``2 x read_slack_s`` after its ``timeoutSeconds`` (whole stream) is cut: backstops only."""
    silent_stream_s: float = 60.0
    """The longest one watch stream may send nothing (no event, no BOOKMARK) before it is
    closed and replaced by a watch from the same resourceVersion. Silence is normal (the real
    API server sends no timed BOOKMARKs), so this is not a failure by itself; it bounds how
    long a half-open connection goes unnoticed. Keep it well below ``timeoutSeconds``."""
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    """Whole-request bound for one LIST page."""
    watch_start_timeout_s: float = 10.0
    """Bound for a watch request up to its response headers (the API server answers a watch at
    once; it waits at most ~3 s for a resourceVersion it has not reached yet)."""
    backoff_initial_s: float = 0.8
    backoff_max_s: float = 30.0
    backoff_reset_s: float = 120.0
    """A failure this long after the previous one starts a new streak at ``backoff_initial_s``."""
    backoff_jitter: float = 0.2
    """Each delay is stretched by up to this fraction, at random."""
    slow_retry_s: float = 60.0
    """Delay after 401/403 (RBAC) and 404 (resource not served)."""
    max_retry_after_s: float = 300.0
    unreachable_after: int = 3
    caught_up_quiet_s: float = 0.25
    """A watch re-established after a failure (or a 410) counts as current again at its first
    pause this long: a watch from an older resourceVersion first replays what it missed, in
    one burst, and a compacted one answers 200 and then a 410 ``ERROR`` at once; neither is
    current yet (see ``WatchedSource``)."""
    expected_end_fraction: float = 0.9
    """A stream ending cleanly before this fraction of ``timeoutSeconds`` counts as a failure
    (a server that accepts and closes at once must not be hammered)."""

    def __post_init__(self) -> None:
        if self.page_size < 1:
            raise ValueError("page_size must be at least 1")
        if not 1 <= self.min_timeout_seconds <= self.max_timeout_seconds:
            raise ValueError("need 1 <= min_timeout_seconds <= max_timeout_seconds")
        if self.timeout_seconds is not None and self.timeout_seconds < 1:
            raise ValueError("timeout_seconds must be at least 1")
        if self.backoff_initial_s <= 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if self.silent_stream_s <= 0:
            raise ValueError("silent_stream_s must be positive")
        if self.watch_start_timeout_s <= 0:
            raise ValueError("watch_start_timeout_s must be positive")
        if self.unreachable_after < 1:
            raise ValueError("unreachable_after must be at least 1")
        if self.caught_up_quiet_s <= 0:
            raise ValueError("caught_up_quiet_s must be positive")


class Backoff:
    """client-go's exponential backoff manager: ``initial`` doubling to ``maximum``, jittered,
    reset when the previous failure is older than ``reset_after``."""

    def __init__(self, settings: WatchSettings, rng: random.Random) -> None:
        self._s = settings
        self._rng = rng
        self._current = settings.backoff_initial_s
        self._last: float | None = None
        self.attempt = 0

    def next(self, now: float) -> tuple[float, bool]:
        """The delay before the next attempt and whether this failure starts a new streak."""
        new_streak = self._last is None or now - self._last >= self._s.backoff_reset_s
        if new_streak:
            self._current = self._s.backoff_initial_s
            self.attempt = 0
        self.attempt += 1
        jitter = 1.0 + self._s.backoff_jitter * self._rng.random()
        delay = min(self._s.backoff_max_s, self._current * jitter)
        self._current = min(self._s.backoff_max_s, self._current * 2)
        self._last = now
        return delay, new_streak


class _Gone(Exception):
    """410: the resourceVersion (or continue token) is too old; relist."""


class _Silent(Exception):
    """The stream sent nothing for ``silent_stream_s``: replace it (not a failure)."""


@dataclass
class _Failure(Exception):
    """A failed request or stream, classified for the reconnect loop."""

    reason: str
    """``http``, ``stream_error``, ``connection``, ``timeout``, ``malformed``, ``closed_early``."""
    status_code: int | None = None
    message: str = ""
    retry_after_s: float | None = None

    @property
    def connectivity(self) -> bool:
        """Does this failure suggest the cluster is unreachable (vs. answering "no")?"""
        if self.reason in ("connection", "timeout"):
            return True
        return self.status_code is not None and self.status_code >= 500


@dataclass(slots=True)
class _Health:
    """Reachability of one ListWatch. Each scope counts its own consecutive connectivity
    failures, so a healthy namespace re-watching every minute cannot hide one whose watch
    cannot be re-established; the watch is reachable only while no scope is down."""

    unreachable_after: int
    on_change: OnReachability | None
    failures: dict[str | None, int] = field(default_factory=dict)
    down: dict[str | None, str] = field(default_factory=dict)
    """Scopes at or past ``unreachable_after`` failures, with the latest failure's reason."""
    reachable: bool = True

    @property
    def reason(self) -> str:
        """Why the watch is unreachable (the reasons of the scopes that are down); empty while
        reachable."""
        return ",".join(sorted(set(self.down.values())))

    async def failed(self, scope: str | None, reason: str) -> None:
        failures = self.failures.get(scope, 0) + 1
        self.failures[scope] = failures
        if failures >= self.unreachable_after:
            self.down[scope] = reason
            await self._update(reason)

    async def succeeded(self, scope: str | None) -> None:
        self.failures[scope] = 0
        if self.down.pop(scope, None) is not None:
            await self._update("ok")

    async def _update(self, reason: str) -> None:
        reachable = not self.down
        if reachable != self.reachable:
            self.reachable = reachable
            if self.on_change is not None:
                await self.on_change(reachable, reason)


@dataclass(slots=True)
class _ScopeState:
    scope: str | None
    backoff: Backoff
    rv: str | None = None
    lists: int = 0
    warned: bool = False
    gone_without_progress: int = 0


class ListWatch:
    """List-then-watch one resource in one or more namespaces, forever.

    ``call_for(namespace)`` returns the list call of a scope; ``resource`` names the resource in
    logs (``events``, ``canaries``). ``listed`` is set once every scope finished its first LIST;
    ``current`` while every scope is up to date (cleared by a failure or a 410, set again when
    the scope's relist completed or its re-established watch caught up); ``wake`` ends a backoff
    sleep early (a peer got an answer: the API server is back). ``on_catch_up`` is awaited before
    a backlog is passed on (a relist's items, or what a watch resumed after a failure replays);
    ``on_recovered`` is called on the first answer to a scope that was not current.

        lw = ListWatch(lambda ns: partial(core.list_namespaced_event, ns), namespaces=["test"],
                       field_selector="involvedObject.kind=Canary", resource="events")
        await lw.run(on_event, on_listed)   # never returns
    """

    def __init__(
        self,
        call_for: CallFor,
        *,
        resource: str,
        namespaces: Sequence[str] | None = None,
        field_selector: str | None = None,
        label_selector: str | None = None,
        settings: WatchSettings | None = None,
        clock: Clock | None = None,
        log: FilteringBoundLogger | None = None,
        listed: asyncio.Event | None = None,
        current: asyncio.Event | None = None,
        wake: asyncio.Event | None = None,
        on_reachability: OnReachability | None = None,
        on_failure: OnFailure | None = None,
        on_catch_up: OnCatchUp | None = None,
        on_recovered: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if namespaces is not None and not namespaces:
            raise ValueError("namespaces must be None (all) or a non-empty list")
        self._call_for = call_for
        self.resource = resource
        self._namespaces: tuple[str | None, ...] = (
            (None,) if namespaces is None else tuple(dict.fromkeys(namespaces))
        )
        self._selectors: dict[str, str] = {}
        if field_selector:
            self._selectors["field_selector"] = field_selector
        if label_selector:
            self._selectors["label_selector"] = label_selector
        self.settings = settings or WatchSettings()
        self._clock: Clock = clock or SystemClock()
        self._log: FilteringBoundLogger = log or structlog.get_logger(
            component=f"source.watch.{resource}"
        )
        self.listed = listed if listed is not None else asyncio.Event()
        self._listed_scopes: set[str | None] = set()
        self.current = current if current is not None else asyncio.Event()
        self.wake = wake if wake is not None else asyncio.Event()
        self._behind: set[str | None] = set(self._namespaces)
        """Scopes not current (see ``WatchedSource``): ``current`` is set while this is empty."""
        self._on_catch_up = on_catch_up
        self._on_recovered = on_recovered
        self._health = _Health(self.settings.unreachable_after, on_reachability)
        self._on_failure = on_failure
        self._failing = False
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    @property
    def reachable(self) -> bool:
        """``False`` while some scope cannot confirm its watch is current (see the module
        docstring); what ``/readyz`` and ``canarywatch_source_up`` show."""
        return self._health.reachable

    @property
    def unreachable_reason(self) -> str:
        """``timeout``, ``connection``, ``http``... (comma-separated if scopes differ)."""
        return self._health.reason

    async def run(self, on_event: OnEvent, on_listed: OnListed | None = None) -> Never:
        """Run one reconnect loop per scope until cancelled; an error from a callback
        propagates (it is a bug, not churn)."""
        async with asyncio.TaskGroup() as group:
            for scope in self._namespaces:
                group.create_task(
                    self._run_scope(scope, on_event, on_listed),
                    name=f"watch:{self.resource}:{scope or '*'}",
                )
        raise AssertionError("watch loops never return")  # pragma: no cover

    # -- layer 1: the reconnect loop ---------------------------------------------------------

    async def _run_scope(
        self, scope: str | None, on_event: OnEvent, on_listed: OnListed | None
    ) -> Never:
        state = _ScopeState(scope, Backoff(self.settings, self._rng))
        log = self._log.bind(resource=self.resource, namespace=scope or "*")
        while True:
            try:
                if state.rv is None:
                    await self._list(state, on_event, on_listed, log)
                await self._stream(state, on_event, log)
            except _Gone as gone:
                # The last version this scope passed on: what was written after it and is
                # overwritten before the relist was never seen (logged for the fault matrix).
                seen = state.rv
                state.rv = None
                state.gone_without_progress += 1
                self._fell_behind(scope)
                log.debug("watch_relisted", reason=str(gone), resource_version=seen)
                if state.gone_without_progress > 1:
                    await self._backoff_sleep(state.backoff.next(time.monotonic())[0])
            except _Failure as failure:
                self._fell_behind(scope)
                await self._handle_failure(state, failure, log)

    def _fell_behind(self, scope: str | None) -> None:
        self._behind.add(scope)
        self.current.clear()

    def _caught_up(self, scope: str | None) -> None:
        self._behind.discard(scope)
        if not self._behind:
            self.current.set()
            self.wake.clear()  # a wake that came while this scope was not sleeping: moot now

    async def _handle_failure(
        self, state: _ScopeState, failure: _Failure, log: FilteringBoundLogger
    ) -> None:
        s = self.settings
        delay, new_streak = state.backoff.next(time.monotonic())
        if new_streak:
            state.warned = False
        code = failure.status_code
        fields: dict[str, Any] = {
            "reason": failure.reason,
            "status_code": code,
            "message": failure.message[:300],
            "attempt": state.backoff.attempt,
        }
        if code in (401, 403):
            delay = max(delay, s.slow_retry_s)
            if not state.warned:
                log.error(
                    "watch_forbidden",
                    hint=f"check RBAC: the ServiceAccount needs get/list/watch on "
                    f"{self.resource}; see reference/kubernetes-watch.md §4",
                    delay_s=round(delay, 3),
                    **fields,
                )
        elif code == 404:
            delay = max(delay, s.slow_retry_s)
            if not state.warned:
                log.warning(
                    "watch_resource_missing",
                    hint=f"{self.resource} is not served (CRD not installed?)",
                    delay_s=round(delay, 3),
                    **fields,
                )
        else:
            if code == 429 and failure.retry_after_s is not None:
                delay = min(s.max_retry_after_s, max(0.0, failure.retry_after_s))
            if not state.warned:
                log.warning("watch_failed", delay_s=round(delay, 3), **fields)
            else:
                log.debug("watch_failed", delay_s=round(delay, 3), **fields)
        state.warned = True
        self._failing = True
        if self._on_failure is not None:
            self._on_failure(_describe(failure, self.resource))
        if failure.connectivity:
            await self._health.failed(state.scope, failure.reason)
        await self._backoff_sleep(delay, log)

    async def _backoff_sleep(self, delay: float, log: FilteringBoundLogger | None = None) -> None:
        """Sleep ``delay`` on the clock, or until ``wake`` is set (a peer of the same cluster
        got an answer: the API server is evidently back, waiting out up to ``backoff_max_s``
        would only leave this source behind). The backoff itself goes on doubling: a woken
        retry that fails sleeps longer next time."""
        timer = asyncio.ensure_future(
            self._clock.sleep_until(self._clock.now() + timedelta(seconds=delay))
        )
        woken = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait({timer, woken}, return_when=asyncio.FIRST_COMPLETED)
            early = not timer.done()
        finally:
            for task in (timer, woken):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.wake.is_set():
            self.wake.clear()
            if early and log is not None:
                log.debug("watch_backoff_woken", delay_s=round(delay, 3))

    async def _succeeded(self, state: _ScopeState, log: FilteringBoundLogger) -> None:
        if state.scope in self._behind and self._on_recovered is not None:
            self._on_recovered()
        if state.warned and state.backoff.attempt:
            log.info("watch_recovered", attempts=state.backoff.attempt)
            state.backoff.attempt = 0
        if self._failing and self._on_failure is not None:
            self._on_failure("")
        self._failing = False
        await self._health.succeeded(state.scope)

    # -- layer 2: list -----------------------------------------------------------------------

    async def _list(
        self,
        state: _ScopeState,
        on_event: OnEvent,
        on_listed: OnListed | None,
        log: FilteringBoundLogger,
    ) -> None:
        call = self._call_for(state.scope)
        items: list[dict[str, Any]] = []
        token: str | None = None
        list_rv = ""
        while True:
            kwargs: dict[str, Any] = {"limit": self.settings.page_size, **self._selectors}
            if token:
                kwargs["_continue"] = token
            body = await self._request_json(call, kwargs)
            metadata = _mapping(body.get("metadata"))
            kind = body.get("kind")
            api_version = body.get("apiVersion")
            raw_items = body.get("items") or []
            if not isinstance(raw_items, list):
                raise _Failure("malformed", 200, "list items is not an array")
            for item in raw_items:
                if isinstance(item, dict):
                    if isinstance(kind, str) and kind.endswith("List"):
                        item.setdefault("kind", kind[: -len("List")])
                    if isinstance(api_version, str):
                        item.setdefault("apiVersion", api_version)
                    items.append(item)
            if not list_rv:
                list_rv = str(metadata.get("resourceVersion") or "")
            token = metadata.get("continue") or None
            if not token:
                break
        if not list_rv:
            raise _Failure("malformed", 200, "list has no metadata.resourceVersion")
        await self._succeeded(state, log)
        initial = state.lists == 0
        state.lists += 1
        if not initial and self._on_catch_up is not None:
            await self._on_catch_up()
        for item in items:
            await on_event(
                WatchEvent("ADDED", item, initial=initial, relisted=not initial, scope=state.scope)
            )
        state.rv = list_rv
        log.debug("watch_listed", items=len(items), resource_version=list_rv, initial=initial)
        if on_listed is not None:
            keys = frozenset(_key(item) for item in items)
            await on_listed(Listed(state.scope, list_rv, keys, relist=not initial))
        if state.scope not in self._listed_scopes:
            self._listed_scopes.add(state.scope)
            if len(self._listed_scopes) == len(self._namespaces):
                self.listed.set()
        self._caught_up(state.scope)

    async def _request_json(self, call: ListCall, kwargs: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        with _request_failures():
            async with asyncio.timeout(s.request_timeout_s):
                resp = await call(
                    **kwargs,
                    _preload_content=False,
                    _request_timeout=aiohttp.ClientTimeout(
                        total=s.request_timeout_s, sock_connect=s.connect_timeout_s
                    ),
                )
                try:
                    if resp.status != 200:
                        raise await _http_failure(resp)
                    data = await resp.read()
                finally:
                    resp.release()
        return _json_object(data, "list body")

    # -- layer 3: one watch stream -----------------------------------------------------------

    def _timeout_seconds(self) -> int:
        s = self.settings
        if s.timeout_seconds is not None:
            return s.timeout_seconds
        return self._rng.randint(s.min_timeout_seconds, s.max_timeout_seconds)

    async def _stream(
        self, state: _ScopeState, on_event: OnEvent, log: FilteringBoundLogger
    ) -> None:
        """One WATCH from ``state.rv``; returns on the expected clean end and after
        ``silent_stream_s`` of silence (the caller re-watches from ``state.rv`` at once), raises
        otherwise."""
        s = self.settings
        timeout_s = self._timeout_seconds()
        call = self._call_for(state.scope)
        started = time.monotonic()
        resp: Any = None
        try:
            with _request_failures():
                async with asyncio.timeout(s.watch_start_timeout_s):
                    resp = await call(
                        watch=True,
                        resource_version=state.rv,
                        allow_watch_bookmarks=True,
                        timeout_seconds=timeout_s,
                        _preload_content=False,
                        _request_timeout=(s.connect_timeout_s, s.silent_stream_s + s.read_slack_s),
                        **self._selectors,
                    )
                    if resp.status != 200:
                        raise await _http_failure(resp)
                await self._succeeded(state, log)
                log.debug("watch_started", resource_version=state.rv, timeout_s=timeout_s)
                on_quiet = None
                if state.scope in self._behind:
                    # Resumed after a failure: what it replays first is a backlog, as a relist.
                    on_quiet = functools.partial(self._caught_up, state.scope)
                    if self._on_catch_up is not None:
                        await self._on_catch_up()
                async with (
                    asyncio.timeout(timeout_s + 2 * s.read_slack_s),
                    contextlib.aclosing(
                        _lines(resp.content, s.silent_stream_s, on_quiet, s.caught_up_quiet_s)
                    ) as lines,
                ):
                    async for line in lines:
                        await self._line(state, line, on_event)
        except _Silent:
            # Normal on a quiet resource, and what a half-open connection looks like: replace
            # the stream from the same RV; only a replacement that fails counts against health.
            state.gone_without_progress = 0
            log.debug(
                "watch_stalled",
                resource_version=state.rv,
                silent_s=s.silent_stream_s,
                duration_s=round(time.monotonic() - started, 3),
            )
            return
        finally:
            if resp is not None:
                resp.close()
        lasted = time.monotonic() - started
        if lasted < s.expected_end_fraction * timeout_s:
            raise _Failure("closed_early", 200, f"stream ended after {lasted:.1f}s of {timeout_s}s")
        state.gone_without_progress = 0
        log.debug("watch_expired", resource_version=state.rv, duration_s=round(lasted, 3))

    async def _line(self, state: _ScopeState, line: bytes, on_event: OnEvent) -> None:
        event = _json_object(line, "watch line")
        kind, obj = event.get("type"), event.get("object")
        if not isinstance(obj, dict):
            raise _Failure("malformed", 200, f"watch {kind} event has no object")
        if kind == "ERROR":
            code = obj.get("code")
            message = str(obj.get("message", ""))
            if code == 410:
                raise _Gone(message)
            raise _Failure(
                "stream_error",
                code if isinstance(code, int) else None,
                message,
                _retry_after_details(obj),
            )
        rv = _mapping(obj.get("metadata")).get("resourceVersion")
        if kind == "BOOKMARK":
            if isinstance(rv, str) and rv:
                state.rv = rv
            return
        if kind not in WATCH_TYPES:
            self._log.debug("watch_event_skipped", type=str(kind)[:32], resource=self.resource)
            return
        await on_event(WatchEvent(str(kind), obj, scope=state.scope))
        state.gone_without_progress = 0
        if isinstance(rv, str) and rv:
            state.rv = rv


async def _lines(
    content: aiohttp.StreamReader,
    silent_s: float | None = None,
    on_quiet: Callable[[], None] | None = None,
    quiet_s: float = 0.0,
) -> AsyncGenerator[bytes, None]:
    """Newline-framed chunks of the body; a trailing partial line is a truncated stream, and
    ``silent_s`` (``None``: no bound) without a single byte raises :class:`_Silent`.
    ``on_quiet`` is called once, at the first pause of ``quiet_s`` between whole lines (the
    watch has caught up); the silence clock starts again after it.

    Not ``readline()``: aiohttp caps a line at 128 KiB and big objects exist. The silence clock
    runs only while waiting for bytes, never while the consumer holds a line (backpressure from
    a full intake queue is not a silent stream)."""
    buffer = bytearray()
    while True:
        if on_quiet is not None and not buffer:
            try:
                async with asyncio.timeout(quiet_s):
                    chunk = await content.readany()
            except TimeoutError:
                on_quiet()
                on_quiet = None
                continue
        else:
            try:
                async with asyncio.timeout(silent_s):
                    chunk = await content.readany()
            except TimeoutError:
                raise _Silent from None
        if not chunk:
            break
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.strip():
                yield line
    if bytes(buffer).strip():
        raise _Failure("malformed", 200, "watch stream ended inside a JSON line")


@contextlib.contextmanager
def _request_failures() -> Iterator[None]:
    """Turn what a request to the API server raises in transit into a :class:`_Failure`
    (``timeout``, ``connection``); classified failures, ``_Gone`` and the rest pass unchanged."""
    try:
        yield
    except (_Failure, _Gone):
        raise
    except TimeoutError as error:
        raise _Failure("timeout", None, type(error).__name__) from None
    except (aiohttp.ClientError, OSError) as error:
        raise _Failure("connection", None, f"{type(error).__name__}: {error}") from None


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """``data`` parsed as a JSON object; ``malformed`` failure naming ``what`` otherwise."""
    try:
        body = json.loads(data)
    except ValueError:
        raise _Failure("malformed", 200, f"{what} is not JSON") from None
    if not isinstance(body, dict):
        raise _Failure("malformed", 200, f"{what} is not an object")
    return body


async def _http_failure(resp: Any) -> _Failure | _Gone:
    """Classify a non-2xx answer from its Status body (or its bare code when not JSON)."""
    status = int(resp.status)
    try:
        raw = await resp.content.read(_MAX_ERROR_BODY)
    except (aiohttp.ClientError, OSError, TimeoutError):
        raw = b""
    body: Any = None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    message = ""
    details_retry: float | None = None
    if isinstance(body, dict):
        message = str(body.get("message", ""))
        details_retry = _retry_after_details(body)
    else:
        message = raw[:200].decode("utf-8", "replace")
    if status == 410:
        return _Gone(message or "410 Gone")
    retry_after = _retry_after_header(resp.headers.get("Retry-After")) or details_retry
    return _Failure("http", status, message, retry_after)


def _describe(failure: _Failure, resource: str) -> str:
    """A failed request in plain words for ``/readyz``: the kind, the HTTP status and what to
    check; never the server's message (it can quote names) or the URL."""
    code = failure.status_code
    if code == 401:
        return "unauthorized (HTTP 401): check the kubeconfig's or ServiceAccount's credentials"
    if code == 403:
        return f"forbidden (HTTP 403): check RBAC (get/list/watch on {resource})"
    if code == 404:
        return f"{resource} not served (HTTP 404): CRD not installed?"
    if code == 429:
        return "throttled by the API server (HTTP 429)"
    if failure.reason == "http" and code is not None:
        return f"the API server {'failed' if code >= 500 else 'refused'} (HTTP {code})"
    words = {
        "connection": "cannot connect to the API server",
        "timeout": "the API server did not answer in time",
        "closed_early": "the watch stream closed early",
        "malformed": "the API server's answer was malformed",
    }.get(failure.reason, failure.reason.replace("_", " "))
    return f"{words} (HTTP {code})" if code is not None else words


def _retry_after_header(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare from the apiserver; fall back to backoff


def _retry_after_details(status: Mapping[str, Any]) -> float | None:
    seconds = _mapping(status.get("details")).get("retryAfterSeconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return max(0.0, float(seconds))
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _mapping(obj.get("metadata"))
    return (str(meta.get("namespace", "")), str(meta.get("name", "")))
