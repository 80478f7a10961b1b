"""The supervisor: build everything from a ``Config``, run it in one ``TaskGroup``, drain.

Task names: ``source:<cluster>:kube_events``, ``source:<cluster>:canaries``,
``source:flagger_metrics``, ``pipeline``, ``dispatch``, ``web``, ``leader``, ``watchdog``,
``state`` (retries writes held while the disk is full). A long-lived task that *returns* is a
bug: it is logged as ``task_exited_unexpectedly`` and the group stops, so systemd (or the
kubelet) restarts the process. A state store that stops taking writes (disk full, read-only,
I/O error) does not stop the group: ``HoldingStateStore`` holds the writes, ``/readyz`` is 503.

Shutdown (SIGTERM/SIGINT, or ``App.stop()``): stop the sources, let the pipeline flush what is
due, let dispatch drain for ``dispatch.drain_timeout``, count what is left as dropped
(``reason="shutdown"``; it stays in the outbox and is delivered after the restart), snapshot
state, exit 0. A second signal cancels at once. SIGHUP reloads the config file, all of it or
nothing (``App.reload``): receivers (sinks rebuilt where they changed), routes, inhibit rules,
time intervals, silences, the log level and the dispatch timeouts are swapped in one step; a file
that does not load, or a sink that cannot be built, is rejected with a logged error and all that
runs stays; settings that only apply at start are named in one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import signal
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client as kube_client
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from canarywatch.clock import Clock, SystemClock
from canarywatch.config import Config, load_config
from canarywatch.delivery.dispatch import Dispatcher, describe_failure
from canarywatch.delivery.firing import has_heartbeat, heartbeat_loop
from canarywatch.delivery.housekeeping import housekeeping_loop
from canarywatch.delivery.outbox import DurableDelivery
from canarywatch.errors import CanarywatchError, DeliveryError
from canarywatch.logs import get_logger, set_level
from canarywatch.metrics import STATE_HELD_KINDS, Metrics
from canarywatch.model import CanaryEvent, CanaryRef, Notification
from canarywatch.normalise import Normaliser
from canarywatch.pipeline import policy
from canarywatch.pipeline.correlate import Correlator
from canarywatch.pipeline.runner import Runner
from canarywatch.pipeline.silence import Silencer
from canarywatch.sdnotify import SystemdNotifier, watchdog_interval_s, watchdog_loop
from canarywatch.signals import install_signal_handlers, remove_signal_handlers
from canarywatch.sinks import Sink
from canarywatch.sinks.loader import build_sinks
from canarywatch.sources.base import Emit
from canarywatch.sources.build import (
    Sources,
    build_leader,
    build_sources,
    lease_configuration,
)
from canarywatch.sources.flagger_webhook import (
    WEBHOOK_PATH,
    webhook_rejected_counter,
    webhook_routes,
)
from canarywatch.sources.leader import LeaderElector
from canarywatch.sources.low_traffic import LowTrafficChecker
from canarywatch.sources.readiness import target_check, watch_check
from canarywatch.state import (
    DB_FILENAME,
    HoldingStateStore,
    SqliteStateStore,
    StateError,
    StateStore,
    StateUnwritable,
)
from canarywatch.state.configmap import ConfigMapNotificationLog
from canarywatch.views.canary_metrics import CanaryStateMetrics
from canarywatch.views.explain import DecisionRecorder
from canarywatch.views.live import LiveState
from canarywatch.web.control import control_routes, explain_routes
from canarywatch.web.live import live_routes
from canarywatch.web.server import Readiness, ReadinessCheck, WebServer, build_app
from canarywatch.web.status_page import status_page_routes


class App:
    """One canarywatch daemon. ``run()`` returns after a graceful shutdown."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        clock: Clock | None = None,
        state: StateStore | None = None,
        notifier: SystemdNotifier | None = None,
        listen: tuple[str, int] | None = None,
        adapt_config: Callable[[Config], Config] | None = None,
    ) -> None:
        self.config = config
        self._config_path = config_path
        self._adapt_config = adapt_config
        """Applied to the file's config at each reload (the demo points it at its cluster)."""
        self._reload_lock = asyncio.Lock()
        self._running: _Running | None = None
        """What a reload swaps sinks in; set once dispatch is built."""
        self._tasks: asyncio.TaskGroup | None = None
        self._spawned: set[asyncio.Task[Any]] = set()
        """Tasks started after start-up (reloads, heartbeats): cancelled at shutdown."""
        self._heartbeats: dict[str, asyncio.Task[Any]] = {}
        self._open_sinks: list[Sink] = []
        """Every sink built and not closed yet (closed at exit; a reload closes replaced ones)."""
        self.clock: Clock = clock or SystemClock()
        self._log = get_logger("app")
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self._state_override = state
        self.state: StateStore | None = state
        self._notifier = notifier or SystemdNotifier()
        self._listen = listen or (config.server.host, config.server.port)
        self._stopping = asyncio.Event()
        self._stop_requests = 0
        self.readiness = Readiness()
        self.web: WebServer | None = None
        self.runner: Runner | None = None
        self.leader: LeaderElector | None = None
        self.explain = DecisionRecorder()
        """Recent transitions' decision trails (``canarywatch explain``, marks in ``tail``)."""
        self.live = LiveState(suppression=self.explain.suppression)
        self._dirty: set[CanaryRef] = set()
        self._state_error: str | None = None
        self.canary_metrics = CanaryStateMetrics(self.registry)
        self.low_traffic: LowTrafficChecker | None = None
        self.ready = asyncio.Event()
        """Set once every source has listed and the web server is up (READY=1 is sent)."""

    # -- public -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does)."""
        self._stop_requests += 1
        self._stopping.set()

    @property
    def port(self) -> int:
        return self.web.port if self.web is not None else self._listen[1]

    async def run(self) -> None:
        config = self.config
        log = self._log
        state = self._hold_writes(self._open_state())
        self.state = state
        correlator = self._restore_correlator(state)
        silencer = Silencer(state, config.silences, log=get_logger("stage.silence"))
        sources = Sources()
        normaliser = Normaliser(workload_to_canary=sources.canary_for_workload)
        pipeline = policy.build_pipeline(
            config,
            catch_up=True,
            metrics=self.metrics,
            log=get_logger("pipeline"),
            normaliser=normaliser,
            correlator=correlator,
            silencer=silencer,
            explain=self.explain,
        )
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(aiohttp.ClientSession())
            stack.push_async_callback(self._close_sinks)  # a reload may replace them
            sinks = await self._build_sinks(http, state, config, built=self._open_sinks)
            leader_ok = self._leader_predicate()
            shared_log = await self._shared_log(stack)
            delivery = DurableDelivery(
                state,
                clock=self.clock,
                metrics=self.metrics,
                log=get_logger("delivery"),
                is_leader=leader_ok,
                shared_log=shared_log,
                held_window_s=max(config.catch_up_window_s, config.leader_election.lease_duration),
                explain=self.explain,
            )
            dispatcher = Dispatcher(
                sinks,
                clock=self.clock,
                metrics=self.metrics,
                log=get_logger("dispatch"),
                attempt_timeout_s=config.dispatch.attempt_timeout,
                retry_budget_s=config.dispatch.retry_budget,
                queue_size=config.dispatch.queue_size,
                on_delivered=delivery.on_delivered,
                refill=delivery.refill,  # a full queue spills to the outbox, read back in order
                on_retrying=delivery.retrying,  # each failed attempt, for `outbox list`
            )
            delivery.attach(dispatcher)
            self._running = _Running(http, state, dispatcher, delivery)
            state.on_written = delivery.written  # held notifications reached the outbox
            runner = Runner(
                pipeline,
                clock=self.clock,
                commit=lambda due, new: self._commit(delivery, correlator, due, new),
                log=get_logger("pipeline.runner"),
            )
            self.runner = runner
            if config.low_traffic.enabled:
                self.low_traffic = LowTrafficChecker(
                    config.low_traffic,
                    http=http,
                    clock=self.clock,
                    log=get_logger("low_traffic"),
                    emit_event=runner.emit_event,
                    registry=self.registry,
                )
            await build_sources(
                config,
                sources,
                clock=self.clock,
                http=http,
                emit_event=runner.emit_event,
                on_catch_up=runner.catching_up,
            )
            runner.hold_until_listed(sources.listed_by_cluster())
            runner.regroup_after_gaps(sources.currency_by_cluster())  # the same after an outage
            await self._build_leader(delivery)
            self._add_readiness(sources, dispatcher, state)
            routes = control_routes(
                state, silencer, clock=self.clock, on_outbox_retry=delivery.retried
            )
            routes += live_routes(self.live, clock=self.clock)
            routes += explain_routes(self.explain, clock=self.clock)
            routes += status_page_routes(
                self.live,
                self.explain,
                state,
                silencer,
                clock=self.clock,
                token=config.server.token,
            )
            if config.webhook_intake.enabled:
                routes += webhook_routes(
                    runner.emit,
                    config.webhook_intake,
                    clock=self.clock,
                    rejected=webhook_rejected_counter(self.registry),
                    log=get_logger("source.flagger_webhook"),
                    default_cluster=config.clusters[0].name if config.clusters else config.cluster,
                )
            app = build_app(
                registry=self.registry,
                readiness=self.readiness,
                token=config.server.token,
                extra_routes=routes,
            )
            self.web = WebServer(app, *self._listen)
            await self.web.start()
            stack.push_async_callback(self.web.close)
            stack.callback(self.live.close)  # ends open tail streams before the server waits
            log.info("daemon_started", listen=f"{self._listen[0]}:{self.web.port}")
            await delivery.resume()
            await self._supervise(sources, runner, dispatcher, delivery, list(sinks))
            await dispatcher.aclose()  # what is still queued is counted as dropped (shutdown)
            state.on_written = _no_receivers  # written from now on: delivered after the restart
            await state.save_canary_states_async(correlator.snapshot())  # the web still serves
        self._notifier.status("stopped")
        # Blocking from here: everything that used the loop (web, tasks) has stopped.
        state.flush()  # a last attempt at what is held; close() reports what is lost
        state.close()
        log.info("drain_finished")

    # -- construction -----------------------------------------------------------------------

    def _open_state(self) -> StateStore:
        if self._state_override is not None:
            return self._state_override
        path = Path(self.config.state.dir) / DB_FILENAME
        return SqliteStateStore(path, clock=self.clock)

    def _hold_writes(self, store: StateStore) -> HoldingStateStore:
        """The store wrapped so that a disk that fills up (or goes read-only) makes the daemon
        hold writes in memory and retry them, not exit: not ready meanwhile (``/readyz``)."""
        if isinstance(store, HoldingStateStore):
            return store
        metrics = self.metrics

        def failed(exc: StateUnwritable) -> None:
            metrics.state_errors.inc()
            self._notifier.status(f"state store not writable, holding writes: {exc}")

        def dropped(n: Notification) -> None:
            metrics.events_dropped.labels(stage="outbox", reason="state_unwritable").inc(
                max(len(n.events), 1)
            )

        def recovered() -> None:
            self._notifier.status("state store writable again")

        holding = HoldingStateStore(
            store,
            clock=self.clock,
            log=get_logger("state"),
            max_held_notifications=self.config.state.max_held_notifications,
            retry_max_s=self.config.state.write_retry_max,
            on_failed=failed,
            on_dropped=dropped,
            on_recovered=recovered,
        )
        metrics.state_writable.set_function(lambda: 0.0 if holding.holding else 1.0)
        for kind in STATE_HELD_KINDS:
            metrics.state_held.labels(kind=kind).set_function(functools.partial(holding.held, kind))
        return holding

    def _restore_correlator(self, state: StateStore) -> Correlator:
        hints = policy.label_hints(self.config)
        waits = policy.spec_wait_clusters(self.config)
        names = policy.name_wait_clusters(self.config)
        saved = state.load_canary_states()
        try:
            return Correlator.restore(
                saved, label_hints=hints, spec_wait_clusters=waits, name_wait_clusters=names
            )
        except ValueError as exc:
            # A state file from an incompatible version: start fresh rather than not at all;
            # the notification log still prevents repeats.
            self._log.error("state_restore_failed", error=str(exc))
            return Correlator(label_hints=hints, spec_wait_clusters=waits, name_wait_clusters=names)

    async def _build_sinks(
        self,
        http: aiohttp.ClientSession,
        state: StateStore,
        config: Config,
        *,
        built: list[Sink],
        reuse: Mapping[str, Sink] | None = None,
    ) -> dict[str, Sink]:
        """A sink per receiver of ``config``, each built and checked; ``reuse`` (a reload)
        supplies the running instance of a receiver whose sink and options did not change.

        Every sink built is appended to ``built`` at once, so the caller closes it whatever
        happens next; ``ConfigError`` names the receiver that cannot be built or checked."""
        sinks = await build_sinks(
            config, http=http, log=get_logger("sinks"), memory=state.sink_memory, keep=reuse
        )
        new = {name: sink for name, sink in sinks.items() if reuse is None or name not in reuse}
        built.extend(new.values())
        for index, receiver in enumerate(config.receivers):
            if receiver.name not in new:
                continue
            try:
                await new[receiver.name].check()
            except DeliveryError as exc:  # say which receiver, and what happened
                raise config.error_at(
                    ("receivers", index, "options"),
                    f"the {receiver.sink} sink failed its start-up check: {describe_failure(exc)}",
                ) from None
        return sinks

    async def _shared_log(
        self, stack: contextlib.AsyncExitStack
    ) -> ConfigMapNotificationLog | None:
        """With leader election, the ConfigMap that tells a new leader what was sent."""
        le = self.config.leader_election
        if not le.enabled:
            return None
        configuration = await lease_configuration(self.config)
        api_client = await stack.enter_async_context(kube_client.ApiClient(configuration))
        return ConfigMapNotificationLog(
            api_client,
            namespace=le.lease_namespace,
            name=f"{le.lease_name}-nflog",
            retention_s=max(3600.0, 2 * self.config.catch_up_window_s),
            log=get_logger("state.configmap"),
        )

    async def _build_leader(self, delivery: DurableDelivery) -> None:
        async def started() -> None:
            self.metrics.leader.set(1)
            await delivery.take_over()

        async def stopped() -> None:
            self.metrics.leader.set(0)

        self.leader = await build_leader(
            self.config,
            clock=self.clock,
            on_started_leading=started,
            on_stopped_leading=stopped,
        )

    def _leader_predicate(self) -> Callable[[], bool]:
        if not self.config.leader_election.enabled:
            self.metrics.leader.set(1)
            return lambda: True
        return lambda: self.leader is not None and self.leader.is_leader

    def _add_readiness(self, sources: Sources, dispatcher: Dispatcher, state: StateStore) -> None:
        """The ``/readyz`` checks, and ``canarywatch_source_up``/``canarywatch_sink_up`` read
        from the very same checks at each scrape, so the two never disagree and every series
        exists (0 or 1) from start-up on: one per watch source (cluster and kind), per Flagger
        metrics target, for the webhook intake, per receiver."""
        up = self.metrics.source_up
        for cluster, source in sources.kube:
            check = watch_check(source)
            self.readiness.add(f"source:{cluster}:{source.name}", check)
            up.labels(source=source.name, cluster=cluster).set_function(_as_gauge(check))
        if sources.metrics is not None:
            for target in sources.metrics.settings.targets:
                check = target_check(sources.metrics, target)
                self.readiness.add(f"source:{sources.metrics.name}:{target.name}", check)
                up.labels(source=sources.metrics.name, cluster=target.cluster).set_function(
                    _as_gauge(check)
                )
        intake = self.config.webhook_intake
        if intake.enabled:
            cluster = intake.cluster or (
                self.config.clusters[0].name if self.config.clusters else self.config.cluster
            )
            check = self._webhook_check
            self.readiness.add("source:flagger_webhook", check)
            up.labels(source="flagger_webhook", cluster=cluster).set_function(_as_gauge(check))
        for receiver in dispatcher.sinks:
            self._add_sink_health(dispatcher, receiver)

        def state_ok() -> tuple[bool, str]:
            problem = state.problem() if isinstance(state, HoldingStateStore) else None
            if problem is not None:
                return False, problem
            if self._state_error is not None:
                return False, self._state_error
            try:
                self.metrics.state_size.set(state.size_bytes())
            except StateError as exc:
                return False, str(exc)
            return True, "writable"

        self.readiness.add("state", state_ok)

    def _add_sink_health(self, dispatcher: Dispatcher, receiver: str) -> None:
        """``/readyz`` check ``sink:<receiver>`` and ``canarywatch_sink_up``, both read from
        ``dispatcher.health`` (a permanent failure until a delivery succeeds)."""
        check = _sink_check(dispatcher, receiver)
        self.readiness.add(f"sink:{receiver}", check)
        sink = dispatcher.sinks[receiver].name
        self.metrics.sink_up.labels(receiver=receiver, sink=sink).set_function(_as_gauge(check))

    def _webhook_check(self) -> tuple[bool, str]:
        """The intake is up while the listener serves its route. Refused requests
        (``canarywatch_webhook_rejected_total``) never make it not ready: Flagger reaches the
        intake through the Service, which a not-ready pod leaves, so it could never post the
        request that would make it ready again."""
        if self.web is None:
            return False, "the HTTP listener is not up yet"
        return True, f"listening on {WEBHOOK_PATH}"

    # -- running ----------------------------------------------------------------------------

    async def _commit(
        self,
        delivery: DurableDelivery,
        correlator: Correlator,
        due: list[Notification],
        new: list[CanaryEvent],
    ) -> None:
        """After each intake batch (or a group timer): update the views, then write the due
        notifications and the changed canaries' correlation state in one transaction.

        A canary whose events still wait in a group (``group_wait``) is not written yet: its
        state would say "seen" of events the outbox does not hold. It stays dirty until they
        are flushed (and the outbox's own dedup covers a crash in between).
        """
        if new:
            self.canary_metrics.observe_all(new)
            self.live.on_transitions(new)
            if self.low_traffic is not None:
                self.low_traffic.on_transitions(new)
        self._dirty.update(e.canary for e in new)
        assert self.runner is not None  # noqa: S101 - called from the runner
        ready = self._dirty - self.runner.pipeline.grouper.pending_canaries()
        snapshots = {}
        for ref in ready:
            snap = correlator.snapshot_canary(ref)
            if snap is not None:
                snapshots[snap[0]] = snap[1]
        if not due and not snapshots:
            return
        try:
            await delivery.accept_batch(due, canary_states=snapshots)
        except StateError as exc:
            if due:
                raise  # the outbox cannot be written: nothing may be delivered unrecorded
            # Nothing to deliver: a restart would re-derive these canaries' transitions and
            # the notification log would drop the repeats.
            self.metrics.state_errors.inc()
            self._state_error = str(exc)
            self._log.error("state_write_failed", error=str(exc), canaries=len(snapshots))
            return
        self._state_error = None
        self._dirty -= ready

    async def _supervise(
        self,
        sources: Sources,
        runner: Runner,
        dispatcher: Dispatcher,
        delivery: DurableDelivery,
        receivers: list[str],
    ) -> None:
        state = self.state
        assert state is not None  # noqa: S101 - set before the tasks start
        loop = asyncio.get_running_loop()
        self._install_signals(loop)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg  # a reload starts tasks in it (``_spawn``)
                source_tasks = start_sources(tg, sources, runner.emit)
                pipeline_task = tg.create_task(runner.run(), name="pipeline")
                dispatch_task = tg.create_task(guarded(dispatcher.run()), name="dispatch")
                side_tasks = [
                    tg.create_task(self._announce_ready(sources), name="ready"),
                    tg.create_task(
                        housekeeping_loop(
                            delivery,
                            state,
                            dispatcher.sinks,
                            clock=self.clock,
                            metrics=self.metrics,
                            retention_s=lambda: self.config.state.retention,
                            log=self._log,
                        ),
                        name="housekeeping",
                    ),
                ]
                if isinstance(self.state, HoldingStateStore):
                    side_tasks.append(tg.create_task(guarded(self.state.run()), name="state"))
                for receiver, sink in dispatcher.sinks.items():
                    self._start_heartbeat(receiver, sink, delivery)
                if self.leader is not None:
                    side_tasks.append(tg.create_task(guarded(self.leader.run()), name="leader"))
                if self.low_traffic is not None:
                    side_tasks.append(
                        tg.create_task(guarded(self.low_traffic.run()), name="low_traffic")
                    )
                interval = watchdog_interval_s()
                if interval is not None:
                    side_tasks.append(
                        tg.create_task(
                            watchdog_loop(self._notifier, healthy=lambda: True), name="watchdog"
                        )
                    )
                await self._stopping.wait()
                self._notifier.stopping()
                self._log.info("shutdown_started")
                for task in [*source_tasks, *side_tasks, *self._spawned]:
                    task.cancel()
                await runner.stop(flush_all=True)  # nothing pending is left behind
                await pipeline_task
                if isinstance(self.state, HoldingStateStore):
                    await self.state.flush_async()  # writes held? if the disk has room, drain them
                left = await dispatcher.drain(self.config.dispatch.drain_timeout)
                if left:
                    self._log.warning("drain_incomplete", notifications=left)
                dispatch_task.cancel()
        finally:
            self._tasks = None
            self._remove_signals(loop)

    async def _announce_ready(self, sources: Sources) -> None:
        waits = [s.listed.wait() for _, s in sources.kube]
        if sources.metrics is not None:
            waits.append(sources.metrics.listed.wait())
        await asyncio.gather(*waits)
        self.ready.set()
        self._notifier.ready()
        self._log.info("sources_listed", sources=len(waits))

    # -- signals and reload -----------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        install_signal_handlers(
            loop,
            {
                signal.SIGTERM: self._on_stop_signal,
                signal.SIGINT: self._on_stop_signal,
                signal.SIGHUP: self._on_reload_signal,
            },
        )

    def _remove_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        remove_signal_handlers(loop, (signal.SIGTERM, signal.SIGINT, signal.SIGHUP))

    def _on_stop_signal(self) -> None:
        if self._stopping.is_set():
            self._log.warning("shutdown_forced")
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            return
        self.stop()

    def _on_reload_signal(self) -> None:
        if self._tasks is None or self._stopping.is_set():
            self._log.warning("config_reload_skipped", detail="the daemon is starting or stopping")
            return
        self._spawn(self.reload(), name="reload")

    def _spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """A task in the supervisor's group started after start-up (a reload, a heartbeat):
        cancelled at shutdown with the side tasks."""
        assert self._tasks is not None  # noqa: S101 - only called while supervising
        task = self._tasks.create_task(coro, name=name)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    def _start_heartbeat(self, receiver: str, sink: Sink, delivery: DurableDelivery) -> None:
        """The receiver's heartbeat (``delivery.firing``), if its sink has one."""
        if not has_heartbeat(sink):
            return
        self._heartbeats[receiver] = self._spawn(
            heartbeat_loop(
                receiver,
                sink,
                delivery.firing,
                clock=self.clock,
                is_leader=self._leader_predicate(),
                attempt_timeout_s=lambda: self.config.dispatch.attempt_timeout,
                log=self._log,
            ),
            name=f"heartbeat:{receiver}",
        )

    async def reload(self) -> bool:
        """Re-read the config file and apply it: all of it, or nothing (``False``).

        New and changed receivers' sinks are built and checked first; a file that does not
        load, or a sink that cannot be built or fails its check, rejects the whole file and the
        running configuration stays. Then receivers, routes, inhibit rules, time intervals,
        silences, the log level and the dispatch timeouts are swapped in one step, with nothing
        awaited in between, so no notification is ever routed to a receiver without a sink.
        Afterwards a removed receiver's old sink delivers what it holds (its groups' waiting
        events included) for up to ``dispatch.drain_timeout``, a replaced sink finishes its
        attempt under way, and both are closed; what they did not deliver stays in the outbox.
        Settings that only take effect at start are named in one ``config_reload_partial``.
        """
        if self._config_path is None:
            self._log.warning(
                "config_reload_skipped", detail="started without a config file: nothing to re-read"
            )
            return False
        running, runner = self._running, self.runner
        if running is None or runner is None:
            self._log.warning("config_reload_skipped", detail="not started yet")
            return False
        async with self._reload_lock:  # one at a time: a second SIGHUP waits for the first
            self._notifier.reloading()
            try:
                replaced = await self._apply_reload(self._config_path, runner, running)
            finally:
                self._notifier.ready()
            if replaced is None:
                return False
            await self._release_sinks(replaced, running)
        return True

    async def _apply_reload(
        self, path: Path, runner: Runner, running: _Running
    ) -> list[tuple[str, Sink]] | None:
        """Load, build, swap (see ``reload``); the replaced sinks, or ``None`` if rejected."""
        old = self.config
        dispatcher, delivery = running.dispatcher, running.delivery
        built: list[Sink] = []
        try:
            new = load_config(path)
            if self._adapt_config is not None:
                new = self._adapt_config(new)
            router = policy.build_router(new)
            inhibitor = policy.build_inhibitor(new)
            before = _sink_settings(old)
            after = _sink_settings(new)
            unchanged = {r: s for r, s in dispatcher.sinks.items() if before.get(r) == after.get(r)}
            sinks = await self._build_sinks(
                running.http, running.state, new, built=built, reuse=unchanged
            )
        except asyncio.CancelledError:
            await _close_all(built)
            raise
        except Exception as exc:  # noqa: BLE001 - one reload is the unit: any failure rejects it
            await _close_all(built)
            error = str(exc) if isinstance(exc, CanarywatchError) else repr(exc)
            self._log.error(
                "config_reload_rejected",
                error=error,
                detail="nothing was applied: the running configuration stays",
            )
            return None
        changes = _changed_settings(old, new)
        added = [r for r in sinks if r not in dispatcher.sinks]
        # -- one step: nothing is awaited until receivers, routes and the rest are swapped ----
        replaced = dispatcher.reconfigure(sinks)
        pipeline = runner.pipeline
        pipeline.router = router
        pipeline.inhibitor = inhibitor
        if pipeline.silencer is not None:
            pipeline.silencer.replace_config_silences(new.silences)
        removed = [r for r, _ in replaced if r not in sinks]
        # What removed receivers' groups still wait with goes to their old sinks, now.
        retired = pipeline.retire_receivers(removed, self.clock.now()) if removed else []
        dispatcher.retune(
            attempt_timeout_s=new.dispatch.attempt_timeout,
            retry_budget_s=new.dispatch.retry_budget,
        )
        self.config = _applied(old, new)
        self._open_sinks.extend(built)
        if new.log.level != old.log.level:
            set_level(new.log.level)
        # -- swapped ------------------------------------------------------------------------------
        if retired:
            # Into the outbox before anything else runs (the runner's next commit marks these
            # canaries' transitions as seen), then to the retiring sinks' queues.
            await delivery.accept_batch(retired)
        for receiver, old_sink in replaced:
            heartbeat = self._heartbeats.pop(receiver, None)
            if heartbeat is not None:
                heartbeat.cancel()
            current = sinks.get(receiver)
            if current is None:
                self.readiness.checks.pop(f"sink:{receiver}", None)
            if current is None or current.name != old_sink.name:
                with contextlib.suppress(KeyError):
                    self.metrics.sink_up.remove(receiver, old_sink.name)
        changed = [r for r, _ in replaced if r in sinks]
        for receiver in [*added, *changed]:
            self._add_sink_health(dispatcher, receiver)
            if self._tasks is not None:
                self._start_heartbeat(receiver, sinks[receiver], delivery)
        for receiver in added:
            delivery.receiver_added(receiver)  # what the outbox still holds for that name
        needs_restart = [c for c in changes if c not in RELOADABLE]
        if needs_restart:
            self._log.warning(
                "config_reload_partial",
                needs_restart=needs_restart,
                detail="everything else was applied; these keep their running values until the "
                "daemon restarts",
            )
        self._log.info(
            "config_reloaded",
            changed=changes,
            applied=[c for c in changes if c in RELOADABLE],
            receivers_added=added,
            receivers_changed=changed,
            receivers_removed=removed,
        )
        return replaced

    async def _release_sinks(self, replaced: list[tuple[str, Sink]], running: _Running) -> None:
        """Close each sink a reload replaced once it is out of use (``Dispatcher.release``)."""
        timeout_s = self.config.dispatch.drain_timeout

        async def release(receiver: str, sink: Sink) -> None:
            # What it left undelivered stays pending in the outbox, for a receiver of that name.
            await running.dispatcher.release(receiver, sink, timeout_s=timeout_s)
            await self._close_sink(sink)

        await asyncio.gather(*(release(receiver, sink) for receiver, sink in replaced))

    async def _close_sink(self, sink: Sink) -> None:
        self._open_sinks = [s for s in self._open_sinks if s is not sink]
        try:
            await sink.aclose()
        except Exception:  # noqa: BLE001 - one sink: the others are closed all the same
            self._log.exception("sink_close_failed", sink=sink.name)

    async def _close_sinks(self) -> None:
        """Close every sink still open (at exit)."""
        for sink in list(self._open_sinks):
            await self._close_sink(sink)


@dataclass(frozen=True, slots=True)
class _Running:
    """What a reload needs of the running daemon to swap sinks."""

    http: aiohttp.ClientSession
    state: StateStore
    dispatcher: Dispatcher
    delivery: DurableDelivery


RELOADABLE: Final = frozenset(
    {
        "receivers",
        "route",
        "time_intervals",
        "inhibit_rules",
        "silences",
        "log.level",
        "dispatch.attempt_timeout",
        "dispatch.retry_budget",
        "dispatch.drain_timeout",
        "state.retention",
    }
)
"""Settings a reload applies (``_changed_settings`` names); any other change needs a restart."""

_FILE_KEYS: Final = {"catch_up_window_s": "catch_up_window"}


def _changed_settings(old: Config, new: Config) -> list[str]:
    """The settings ``new`` changes, by their key in the file: ``route``, ``log.level``,
    ``server.listen``, ``clusters`` (a section a reload does not apply as a whole is named key
    by key)."""
    changed: list[str] = []
    for spec in dataclasses.fields(Config):
        before, after = getattr(old, spec.name), getattr(new, spec.name)
        if not spec.compare or before == after:
            continue
        key = _FILE_KEYS.get(spec.name, spec.name)
        if key not in RELOADABLE and isinstance(before, BaseModel) and type(before) is type(after):
            changed += [
                f"{key}.{name}"
                for name in type(before).model_fields
                if getattr(before, name) != getattr(after, name)
            ]
        else:
            changed.append(key)
    return changed


def _applied(old: Config, new: Config) -> Config:
    """The running configuration after a reload: ``new``'s values of the ``RELOADABLE``
    settings, ``old``'s of the rest (they keep their running values until a restart, and the
    next reload names them again)."""
    top: dict[str, Any] = {key: getattr(new, key) for key in RELOADABLE if "." not in key}
    sections: dict[str, dict[str, object]] = {}
    for key in RELOADABLE:
        if "." in key:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = getattr(getattr(new, section), name)
    for section, values in sections.items():
        top[section] = getattr(old, section).model_copy(update=values)
    return dataclasses.replace(old, **top, source=new.source)


def _sink_settings(config: Config) -> dict[str, tuple[str, Mapping[str, object]]]:
    """Receiver -> what its sink is built from (a receiver whose pair is unchanged keeps its
    running sink across a reload)."""
    return {receiver: (sink, options) for receiver, sink, options in policy.receivers(config)}


async def _close_all(sinks: list[Sink]) -> None:
    for sink in sinks:
        await sink.aclose()


def _no_receivers(receivers: frozenset[str]) -> None:
    """``HoldingStateStore.on_written`` once dispatch has stopped: nothing to read back."""


def _as_gauge(check: ReadinessCheck) -> Callable[[], float]:
    """A readiness check as the value of an ``_up`` gauge (``set_function``): 1 or 0."""
    return lambda: 1.0 if check()[0] else 0.0


def _sink_check(dispatcher: Dispatcher, receiver: str) -> ReadinessCheck:
    def check() -> tuple[bool, str]:
        try:
            health = dispatcher.health(receiver)
        except KeyError:
            return True, "no longer configured"
        return health.healthy, health.detail()

    return check


# -- shared with ``record``: starting the sources, guarding long-lived tasks, signals -----------


def start_sources(
    tasks: asyncio.TaskGroup, sources: Sources, emit: Emit
) -> list[asyncio.Task[None]]:
    """Each source's loop as a task of ``tasks``, handing its observations to ``emit``:
    ``source:<cluster>:<kind>`` per watch source, ``source:flagger_metrics``. They are stopped
    by cancelling them; one that returns is a bug (``guarded``) and stops the group."""
    started = [
        tasks.create_task(guarded(source.run(emit)), name=f"source:{cluster}:{source.name}")
        for cluster, source in sources.kube
    ]
    if sources.metrics is not None:
        started.append(
            tasks.create_task(guarded(sources.metrics.run(emit)), name="source:flagger_metrics")
        )
    return started


async def guarded(coro: Coroutine[Any, Any, Any]) -> None:
    """Await a loop that should run until cancelled: if it returns, log
    ``task_exited_unexpectedly`` and raise, so that the task group stops."""
    await coro
    task = asyncio.current_task()
    get_logger("app").error(
        "task_exited_unexpectedly", task=task.get_name() if task is not None else None
    )
    raise CanarywatchError("a long-lived task returned")
