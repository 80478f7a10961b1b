"""Lease-based leader election (kubernetes_asyncio's own), re-entered after every loss.

Several canarywatch replicas may watch the same cluster; only the leader dispatches
notifications (``dispatch`` reads :attr:`LeaderElector.is_leader`). This wraps
``kubernetes_asyncio.leaderelection`` (``LeaseLock`` on ``coordination.k8s.io/v1`` Leases,
``electionconfig.Config``, ``LeaderElection``) and fixes what it leaves to the caller
(``reference/kubernetes-watch.md`` §3):

- ``LeaderElection.run()`` returns once leadership is lost and never competes again: the
  wrapper starts a fresh election after ``retry_period``.
- Its lock calls have no timeout (a half-open connection would hang renewals forever and the
  old leader would keep believing it leads): every lock call here is bounded, and a connection
  error or timeout counts as a failed attempt instead of escaping ``run()``. A non-JSON error
  body (a proxy's 5xx page) is given a JSON Status body, since the library parses it.
- ``is_leader`` is also bounded by time: it turns ``False`` when the last successful renewal is
  older than ``renew_deadline`` (< ``lease_duration``), so a successor that waits out
  ``lease_duration`` never overlaps with an old leader that still thinks it leads.
- There is no release on shutdown upstream: on cancellation a leader gives the Lease up
  (holder cleared, duration 1 s) so a successor takes over at its next retry instead of
  waiting out the lease.
- The Lease names the *process*, not only the replica: ``holderIdentity`` is
  ``<identity>_<random>``, new in every process (as kube-controller-manager and kube-scheduler
  do, ``hostname_<uuid>``). With the bare replica name, a leader killed and restarted in the
  same pod (same name) found its own unexpired Lease and led again at once, without what
  happened while it was down: an Event folded and overwritten meanwhile is gone from the API
  server, and only the standby, which watched throughout, had seen it (the fault matrix's
  ``leader_failover``). Now the restarted process waits out the lease like any other
  candidate, and the standby, which saw the last renewal a restart earlier, wins it first and
  sends what it held. The cost: a single replica restarted after a crash waits
  ``lease_duration`` before it delivers (a graceful stop hands the Lease back, no wait).

Quirk: the library writes ``acquireTime``/``renewTime`` as *naive local time* suffixed ``Z``;
run the pod in UTC (``TZ=UTC``, the default of distroless/python images) or other tools reading
the Lease see skewed times. Expiry itself is judged locally from when a change was observed,
so election correctness does not depend on it. Durations must satisfy
``lease_duration > renew_deadline > 1.2 * retry_period`` and all be >= 1 s (the library's rule);
``lease_duration`` must be whole seconds (the library writes it with ``int(str(duration))``).

RBAC (§4): ``create`` on leases plus ``get``/``update`` on the named Lease, in its namespace.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Never

import aiohttp
import structlog
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.leaderelection import electionconfig, leaderelection
from kubernetes_asyncio.leaderelection.resourcelock.leaselock import LeaseLock
from structlog.typing import FilteringBoundLogger

from canarywatch.clock import Clock, SystemClock

Callback = Callable[[], Awaitable[None]]


def validate_durations(
    lease_duration_s: float, renew_deadline_s: float, retry_period_s: float
) -> None:
    """Raise ``ValueError`` unless ``lease > renew > 1.2 * retry`` and all are >= 1 s."""
    if lease_duration_s != int(lease_duration_s):
        raise ValueError("lease_duration must be whole seconds (Lease.leaseDurationSeconds)")
    if min(lease_duration_s, renew_deadline_s, retry_period_s) < 1:
        raise ValueError("lease_duration, renew_deadline and retry_period must be >= 1 s")
    if lease_duration_s <= renew_deadline_s:
        raise ValueError("lease_duration must be greater than renew_deadline")
    if renew_deadline_s <= 1.2 * retry_period_s:
        raise ValueError("renew_deadline must be greater than 1.2 * retry_period")


class _BoundedLeaseLock(LeaseLock):
    """``LeaseLock`` whose calls time out and which reports each successful write."""

    def __init__(
        self,
        name: str,
        namespace: str,
        identity: str,
        api_client: client.ApiClient,
        *,
        timeout_s: float,
        on_written: Callable[[], None],
    ) -> None:
        super().__init__(name, namespace, identity, api_client)
        self._timeout_s = timeout_s
        self._on_written = on_written

    async def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            async with asyncio.timeout(self._timeout_s):
                ok, record = await super().get(name, namespace)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            return False, _status_exception(503, f"{type(error).__name__}")
        if not ok and isinstance(record, ApiException):
            try:
                body: Any = record.body
                json.loads(body)["code"]  # what the library will do with it
            except (TypeError, ValueError, KeyError):
                return False, _status_exception(record.status or 503, str(record.reason))
        return bool(ok), record

    async def create(self, name: str, namespace: str, election_record: Any) -> bool:
        return await self._write(super().create(name, namespace, election_record))

    async def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        return await self._write(super().update(name, namespace, updated_record))

    async def _write(self, call: Awaitable[bool]) -> bool:
        try:
            async with asyncio.timeout(self._timeout_s):
                ok = bool(await call)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
        if ok:
            self._on_written()
        return ok


def _status_exception(code: int, message: str) -> ApiException:
    error = ApiException(status=code, reason=message)
    error.body = json.dumps({"kind": "Status", "code": code, "message": message}).encode()
    return error


class LeaderElector:
    """Compete for Lease ``namespace/name`` as ``identity`` forever (in the Lease:
    :attr:`holder_identity`, the identity and a per-process suffix; see the module docstring).

        elector = LeaderElector(configuration, name="canarywatch", namespace="flagger",
                                identity=pod_name)
        tg.create_task(elector.run(), name="leader")
        if elector.is_leader: ...                 # dispatch gate
        await elector.became_leader.wait()        # set while leading, cleared on loss

    ``on_started_leading``/``on_stopped_leading`` are awaited from ``run`` on each transition
    (an exception there propagates out of ``run``); keep them short.
    """

    name = "leader"

    def __init__(
        self,
        configuration: client.Configuration,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_duration_s: float = 15.0,
        renew_deadline_s: float = 10.0,
        retry_period_s: float = 2.0,
        on_started_leading: Callback | None = None,
        on_stopped_leading: Callback | None = None,
        release_on_cancel: bool = True,
        clock: Clock | None = None,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        validate_durations(lease_duration_s, renew_deadline_s, retry_period_s)
        if not (name and namespace and identity):
            raise ValueError("name, namespace and identity must not be empty")
        self._configuration = configuration
        self.lease_name = name
        self.namespace = namespace
        self.identity = identity
        """This replica's configured name (the pod's)."""
        self.holder_identity = f"{identity}_{secrets.token_hex(4)}"
        """What this process writes into the Lease: ``identity`` and a suffix new in every
        process, so a restarted replica does not take its predecessor's lease for its own."""
        self.lease_duration_s = lease_duration_s
        self.renew_deadline_s = renew_deadline_s
        self.retry_period_s = retry_period_s
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._release_on_cancel = release_on_cancel
        self._clock: Clock = clock or SystemClock()
        self._log: FilteringBoundLogger = (log or structlog.get_logger(component="leader")).bind(
            lease=f"{namespace}/{name}", identity=self.holder_identity
        )
        self.became_leader = asyncio.Event()
        """Set while this replica leads; cleared when it stops."""
        self.stopped_leading = asyncio.Event()
        """Set while this replica does not lead (initially set)."""
        self.stopped_leading.set()
        self._leading = False
        self._announced = False
        self._renewed_at = float("-inf")
        self._wake = asyncio.Event()
        self.terms = 0
        """How many times this replica became leader."""

    @property
    def is_leader(self) -> bool:
        """Leading, with a renewal younger than ``renew_deadline`` (judged on the monotonic
        clock, so it flips to ``False`` in time even while a renewal call hangs)."""
        return self._leading and time.monotonic() - self._renewed_at < self.renew_deadline_s

    def _written(self) -> None:
        self._renewed_at = time.monotonic()

    async def _library_started(self) -> None:
        self._leading = True
        self._wake.set()

    async def _library_stopped(self) -> None:
        self._leading = False
        self._wake.set()

    async def run(self) -> Never:
        async with client.ApiClient(self._configuration) as api_client:
            while True:
                lock = _BoundedLeaseLock(
                    self.lease_name,
                    self.namespace,
                    self.holder_identity,
                    api_client,
                    timeout_s=max(1.0, self.retry_period_s),
                    on_written=self._written,
                )
                config = electionconfig.Config(
                    lock,
                    int(self.lease_duration_s),  # the library does int(str(duration))
                    self.renew_deadline_s,
                    self.retry_period_s,
                    onstarted_leading=self._library_started,
                    onstopped_leading=self._library_stopped,
                )
                election = leaderelection.LeaderElection(config)
                task = asyncio.create_task(election.run(), name="leader:election")
                try:
                    await self._supervise(task)
                except asyncio.CancelledError:
                    await self._shutdown(task, api_client)
                    raise
                await _stop(task)
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]  # a library bug: fail loudly
                self._leading = False
                await self._announce()
                self._log.debug("leader_election_restarted")
                await self._sleep(self.retry_period_s)

    async def _supervise(self, task: asyncio.Task[None]) -> None:
        """Publish transitions until the election returns or the lease is overdue."""
        tick = max(0.1, self.retry_period_s / 4)
        while not task.done():
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({task, waiter}, timeout=tick, return_when="FIRST_COMPLETED")
            finally:
                waiter.cancel()
                await asyncio.wait({waiter})
            await self._announce()
            if self._leading and not self.is_leader:
                self._log.warning(
                    "leader_lease_lost",
                    renew_deadline_s=self.renew_deadline_s,
                    since_renewal_s=round(time.monotonic() - self._renewed_at, 3),
                )
                return

    async def _announce(self) -> None:
        leading = self.is_leader
        if leading == self._announced:
            return
        self._announced = leading
        if leading:
            self.terms += 1
            self.stopped_leading.clear()
            self.became_leader.set()
            self._log.info("leader_elected", term=self.terms)
            if self._on_started is not None:
                await self._on_started()
        else:
            self.became_leader.clear()
            self.stopped_leading.set()
            self._log.info("leader_stepped_down")
            if self._on_stopped is not None:
                await self._on_stopped()

    async def _shutdown(self, task: asyncio.Task[None], api_client: client.ApiClient) -> None:
        """On cancellation: stop competing and, if leading, hand the Lease back."""
        was_leading = self._leading
        await _stop(task)
        self._leading = False
        self.became_leader.clear()
        self.stopped_leading.set()
        self._announced = False
        if was_leading and self._release_on_cancel:
            await self._release(api_client)

    async def _release(self, api_client: client.ApiClient) -> None:
        api: Any = client.CoordinationV1Api(api_client)
        try:
            async with asyncio.timeout(max(1.0, self.retry_period_s)):
                lease = await api.read_namespaced_lease(self.lease_name, self.namespace)
                if lease.spec is None or lease.spec.holder_identity != self.holder_identity:
                    return
                lease.spec.holder_identity = None
                lease.spec.lease_duration_seconds = 1
                await api.replace_namespaced_lease(self.lease_name, self.namespace, lease)
        except (TimeoutError, aiohttp.ClientError, OSError, ApiException) as error:
            self._log.warning("leader_release_failed", error=type(error).__name__)
            return
        self._log.info("leader_released")

    async def _sleep(self, seconds: float) -> None:
        await self._clock.sleep_until(self._clock.now() + timedelta(seconds=seconds))


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` if still running and wait for it, without swallowing our own cancel."""
    if not task.done():
        task.cancel()
    await asyncio.wait({task})
