"""LeaderElector: kubernetes_asyncio's Lease election against the simulated API server, two
candidates at a time, with the library's minimum durations (lease 3 s, renew 2 s, retry 1 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from kubernetes_asyncio import client

from canarywatch.simulator import SimulatedApiServer
from canarywatch.sources.leader import LeaderElector, validate_durations

LEASE, RENEW, RETRY = 3.0, 2.0, 1.0


async def until(predicate: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.02)


def elector(api: SimulatedApiServer, identity: str, **kwargs: object) -> LeaderElector:
    return LeaderElector(
        client.Configuration(host=api.url),
        name="canarywatch",
        namespace="flagger",
        identity=identity,
        lease_duration_s=LEASE,
        renew_deadline_s=RENEW,
        retry_period_s=RETRY,
        **kwargs,  # type: ignore[arg-type]
    )


@asynccontextmanager
async def started(*electors: LeaderElector) -> AsyncIterator[dict[str, asyncio.Task[None]]]:
    tasks = {e.identity: asyncio.create_task(e.run(), name=e.identity) for e in electors}
    try:
        async with asyncio.timeout(25):
            yield tasks  # type: ignore[misc]
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.wait(tasks.values())
    for task in tasks.values():
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@pytest.fixture
async def api() -> AsyncIterator[SimulatedApiServer]:
    async with SimulatedApiServer() as server:
        yield server


@pytest.mark.parametrize("release", [False, True])
async def test_exactly_one_leads_and_the_other_takes_over(
    api: SimulatedApiServer, release: bool
) -> None:
    calls: list[str] = []

    async def started_b() -> None:
        calls.append("b-started")

    a = elector(api, "a", release_on_cancel=release)
    b = elector(api, "b", release_on_cancel=release, on_started_leading=started_b)
    async with started(a, b) as tasks:
        await until(lambda: a.is_leader or b.is_leader, within=RETRY * 3)
        await asyncio.sleep(RETRY * 1.5)  # a few renewal rounds: still exactly one
        assert [a.is_leader, b.is_leader].count(True) == 1
        leader, follower = (a, b) if a.is_leader else (b, a)
        assert leader.became_leader.is_set()
        assert not follower.became_leader.is_set()
        lease = api.store.get("leases", "flagger", "canarywatch")
        assert lease["spec"]["holderIdentity"] == leader.holder_identity
        # The leader's process goes away.
        stopped_at = time.monotonic()
        tasks[leader.identity].cancel()
        await asyncio.wait({tasks[leader.identity]})
        assert not leader.is_leader
        await until(lambda: follower.is_leader, within=LEASE + RETRY + 1)
        took = time.monotonic() - stopped_at
        lease = api.store.get("leases", "flagger", "canarywatch")
        assert lease["spec"]["holderIdentity"] == follower.holder_identity
        if follower is b:  # its callback runs as a task of its own, just after
            await until(lambda: calls == ["b-started"], within=1)
    if release:
        assert took < RETRY + 1  # handed over: the successor need not wait out the lease
    else:
        assert took < LEASE + RETRY + 0.5
    if release:  # the last leader handed the Lease back on shutdown too
        assert "holderIdentity" not in api.store.get("leases", "flagger", "canarywatch")["spec"]
    if follower is b:
        assert calls == ["b-started"]


async def test_a_restarted_leader_waits_out_its_predecessors_lease(
    api: SimulatedApiServer,
) -> None:
    """A leader killed and restarted under the same replica name (a container restarted in its
    pod) must not take its predecessor's unexpired Lease for its own: the standby, which watched
    while it was down, takes over first (issue 12, the fault matrix's ``leader_failover``)."""
    a = elector(api, "a", release_on_cancel=False)  # no release: as after SIGKILL
    b = elector(api, "b")
    async with started(a, b) as tasks:
        await until(lambda: a.is_leader, within=RETRY * 3)
        assert not b.is_leader
        tasks["a"].cancel()
        await asyncio.wait({tasks["a"]})
        await asyncio.sleep(RETRY * 1.5)  # a process takes a moment to start again
        restarted = elector(api, "a", release_on_cancel=False)
        assert restarted.holder_identity != a.holder_identity
        assert restarted.holder_identity.startswith("a_")
        async with started(restarted):
            await until(lambda: b.is_leader or restarted.is_leader, within=LEASE + 2 * RETRY)
            assert b.is_leader
            assert not restarted.is_leader
            lease = api.store.get("leases", "flagger", "canarywatch")
            assert lease["spec"]["holderIdentity"] == b.holder_identity
            await asyncio.sleep(RETRY * 1.5)  # and it stays so: the restarted one is a standby
            assert b.is_leader
            assert not restarted.is_leader


async def test_losing_the_api_steps_down_within_the_lease_and_re_enters(
    api: SimulatedApiServer,
) -> None:
    transitions: list[str] = []

    async def on_started() -> None:
        transitions.append("started")

    async def on_stopped() -> None:
        transitions.append("stopped")

    a = elector(api, "a", on_started_leading=on_started, on_stopped_leading=on_stopped)
    async with started(a):
        await until(lambda: a.is_leader, within=RETRY * 3)
        await until(lambda: transitions == ["started"], within=1)
        # The API server starts hanging on every lease call (a half-open connection).
        rule = api.faults.delay(30, resource="leases", times=None)
        lost_at = time.monotonic()
        await until(lambda: not a.is_leader, within=LEASE)
        assert time.monotonic() - lost_at <= LEASE
        await until(lambda: transitions == ["started", "stopped"], within=RENEW + RETRY)
        assert a.stopped_leading.is_set()
        api.faults.rules.remove(rule)
        await until(lambda: a.is_leader, within=LEASE + 3 * RETRY)
        await until(lambda: transitions == ["started", "stopped", "started"], within=1)
    assert a.terms == 2


def test_durations_are_validated() -> None:
    validate_durations(15, 10, 2)
    with pytest.raises(ValueError, match="renew_deadline"):
        validate_durations(10, 10, 2)
    with pytest.raises(ValueError, match=r"1\.2"):
        validate_durations(15, 2.4, 2)
    with pytest.raises(ValueError, match=">= 1 s"):
        validate_durations(3, 2, 0.5)
    with pytest.raises(ValueError, match="whole seconds"):
        validate_durations(3.5, 2, 1)
    with pytest.raises(ValueError, match="empty"):
        LeaderElector(client.Configuration(), name="", namespace="ns", identity="me")
