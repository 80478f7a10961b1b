"""The Kubernetes sources of one cluster after an outage (issue 12, item 4): ``current`` and
``behind`` per source, the runner's marker ahead of a relist, and a peer's answer waking a
source out of its backoff. Real client, simulated API server with injected faults."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from kubernetes_asyncio import client
from structlog.testing import capture_logs

from canarywatch.model import Observation, SourceName
from canarywatch.simulator import SimulatedApiServer, StreamAction
from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.kube_events import KubeEventsSource
from canarywatch.sources.watch import WatchedSource, WatchSettings, link_peers

BACKOFF_S = 6.0
"""The Events watch's first backoff after its failure: a wake must end it well before."""

SETTINGS = WatchSettings(
    timeout_seconds=1,
    read_slack_s=0.5,
    connect_timeout_s=1.0,
    request_timeout_s=3.0,
    backoff_initial_s=BACKOFF_S,
    backoff_max_s=BACKOFF_S,
    backoff_jitter=0.0,
    caught_up_quiet_s=0.1,
)
"""Watches that end every second (so a fault takes effect at once) and a long first backoff."""


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.01)


def flagger_event(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "test"},
        "involvedObject": {"kind": "Canary", "namespace": "test", "name": "podinfo"},
        "reason": "Synced",
        "message": "Starting canary analysis for podinfo.test",
        "type": "Normal",
        "count": 1,
    }


def canary(phase: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {"targetRef": {"kind": "Deployment", "name": "podinfo"}},
        "status": {"phase": phase, "canaryWeight": 0, "lastAppliedSpec": "abc"},
    }


@dataclasses.dataclass
class Intake:
    """What the two sources handed on, in order: observations and the relist markers."""

    items: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    async def emit(self, obs: Observation) -> None:
        obj = obs.data["object"]
        self.items.append((obs.source.value, obj["metadata"]["name"]))

    def marker(self, source: str) -> Callable[[], Any]:
        async def catching_up() -> None:
            self.items.append(("catching-up", source))

        return catching_up


@asynccontextmanager
async def cluster(
    api: SimulatedApiServer, intake: Intake
) -> AsyncIterator[tuple[KubeEventsSource, CanariesSource]]:
    configuration = client.Configuration(host=api.url)
    events = KubeEventsSource(
        configuration,
        cluster="prod",
        namespaces=["test"],
        settings=SETTINGS,
        on_catch_up=intake.marker("kube_events"),
    )
    canaries = CanariesSource(
        configuration,
        cluster="prod",
        namespaces=["test"],
        settings=SETTINGS,
        on_catch_up=intake.marker("canaries"),
    )
    sources: list[WatchedSource] = [events, canaries]
    link_peers(sources)
    tasks = [asyncio.create_task(s.run(intake.emit)) for s in (events, canaries)]
    try:
        async with asyncio.timeout(30):
            await until(lambda: events.current.is_set() and canaries.current.is_set())
            yield events, canaries
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def test_a_relisting_peer_wakes_the_source_sleeping_out_its_backoff() -> None:
    async with SimulatedApiServer() as api:
        api.store.create("events", flagger_event("e1"))
        api.store.create("canaries", canary("Progressing"))
        intake = Intake()
        with capture_logs() as logs:
            async with cluster(api, intake) as (events, canaries):
                assert not events.is_behind()
                assert not canaries.is_behind()
                outage = api.faults.status(503, resource="events", times=None)
                await until(lambda: outage.fired > 0)  # the Events watch failed: backing off
                failed_at = time.monotonic()
                assert events.is_behind()
                assert not canaries.is_behind(), "a healthy peer is not behind"
                await asyncio.sleep(0.3)
                api.faults.rules.remove(outage)  # the API server is back...
                # ... and the Canary watch, told its RV is gone, relists first; the Canary
                # changed while it was away (between the 410 and its list).
                gone = api.faults.stream(StreamAction.ERROR, code=410, resource="canaries")
                api.faults.delay(0.5, verb="list", resource="canaries")
                await until(lambda: gone.fired > 0)
                api.store.patch("canaries", "test", "podinfo", {"status": {"phase": "Failed"}})
                await until(lambda: ("catching-up", "canaries") in intake.items)
                relisted_at = time.monotonic()
                await until(events.current.is_set, within=BACKOFF_S)
                caught_up_at = time.monotonic()
        # The Events watch retried at once, not when its backoff ended.
        assert caught_up_at - relisted_at < 1.0, caught_up_at - relisted_at
        assert caught_up_at - failed_at < BACKOFF_S / 2, caught_up_at - failed_at
        assert [e for e in logs if e["event"] == "watch_peer_woken"]
        assert [e for e in logs if e["event"] == "watch_backoff_woken"]
        # The marker came before the relisted item, so the runner's hold starts ahead of it.
        marker = intake.items.index(("catching-up", "canaries"))
        assert intake.items[marker + 1] == (SourceName.CANARIES.value, "podinfo")
        # The Events watch resumed from its RV: its replay is a backlog too, announced alike.
        assert ("catching-up", "kube_events") in intake.items[marker:]


async def test_a_compacted_watch_is_current_only_after_its_relist() -> None:
    """A watch from a compacted resourceVersion is answered 200 and then a 410 ``ERROR``: that
    is not "re-established"; the source stays behind until its relist has been handed on."""
    async with SimulatedApiServer() as api:
        api.store.create("events", flagger_event("e1"))
        api.store.create("canaries", canary("Progressing"))
        intake = Intake()
        async with cluster(api, intake) as (events, _):
            outage = api.faults.status(503, resource="events", times=None)
            await until(lambda: outage.fired > 0)
            api.store.create("events", flagger_event("e2"))
            api.compact()
            assert events.is_behind()

            async def when_current() -> list[tuple[str, str]]:
                await events.current.wait()
                return list(intake.items)

            watcher = asyncio.create_task(when_current())
            api.faults.rules.remove(outage)
            events.wake.set()  # as a peer's answer would: retry now, not after the backoff
            at_current = await asyncio.wait_for(watcher, BACKOFF_S)
        # e2 only comes with the relist (the watch's history was compacted): current after it.
        catching_up = at_current.index(("catching-up", "kube_events"))
        assert (SourceName.KUBERNETES_EVENTS.value, "e2") in at_current[catching_up:]
