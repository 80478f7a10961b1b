"""What ``/readyz`` (and ``canarywatch_source_up``) asks of each source: ready or not, and why.

Each check is a call returning ``(ready, detail)`` (``web.server.ReadinessCheck``), read at each
request and scrape; the detail says what an operator should look at
(``not listed yet: forbidden (HTTP 403): check RBAC``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeAlias

from canarywatch.sources.canaries import CanariesSource
from canarywatch.sources.flagger_metrics import FlaggerMetricsSource, MetricsTarget
from canarywatch.sources.kube_events import KubeEventsSource

Check: TypeAlias = Callable[[], tuple[bool, str]]
"""``(ready, detail)``: the shape ``web.server.Readiness`` takes (sources do not import web)."""


def watch_check(source: KubeEventsSource | CanariesSource) -> Check:
    """Listed, and every watch current: one that cannot be re-established (a half-open
    stream replaced in vain, an API server out of reach) makes the source not ready. A source
    that has not listed yet says why (``not listed yet: forbidden (HTTP 403): check RBAC``)."""
    listed = _listed_check(source.listed, lambda: source.last_failure)

    def check() -> tuple[bool, str]:
        if not source.reachable:
            last = f" ({source.last_failure})" if source.last_failure else ""
            return (
                False,
                f"watch not current, API server out of reach: {source.unreachable_reason}{last}",
            )
        return listed()

    return check


def target_check(source: FlaggerMetricsSource, target: MetricsTarget) -> Check:
    """One Flagger metrics target: not ready until a fetch succeeded and while it is down
    (``flagger metrics target flagger (http://10.0.0.7:8080): never answered (connection
    refused)``)."""

    def check() -> tuple[bool, str]:
        health = source.health(target.name)
        return health.up, f"{source.where(target)}: {health.detail}"

    return check


def _listed_check(listed: asyncio.Event, last_failure: Callable[[], str]) -> Check:
    def check() -> tuple[bool, str]:
        if listed.is_set():
            return True, "listed"
        failure = last_failure()
        return False, f"not listed yet: {failure}" if failure else "initial list in progress"

    return check
