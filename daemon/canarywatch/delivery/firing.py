"""The still-firing set and the heartbeat that re-pushes it.

Some sinks keep state on the far side that expires: Alertmanager drops an alert at its
``endsAt`` unless it is posted again. Such a sink overrides ``Sink.heartbeat``
(``supports_heartbeat``); every ``resend_interval_s``, the leader hands it what was delivered to
its receiver and still fires (``FiringTracker``, fed by the outbox on each delivery).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from datetime import timedelta

import structlog

from canarywatch.clock import Clock
from canarywatch.errors import DeliveryError
from canarywatch.identity import fingerprint
from canarywatch.model import Notification, NotificationStatus
from canarywatch.sinks import Sink


class FiringTracker:
    """Per receiver, the delivered notifications whose conditions still fire.

    Sinks that keep state on the far side (Alertmanager: an alert expires at ``endsAt``) need
    the still-firing set re-pushed on a heartbeat; a resolved notification removes its events.

    One of three still-firing records, each a different fact: the correlator's openers are
    what is open in Flagger (notified or not: episodes, resolutions, inhibition); the grouper's
    firing events are what a group re-sends on ``repeat_interval`` (as notified, in the group
    it was routed to); this is what a sink acknowledged, per receiver (a delivery may fail, or
    have been made by another replica), which is what a heartbeat may re-push.
    """

    def __init__(self) -> None:
        self._firing: dict[str, dict[str, Notification]] = {}

    def delivered(self, n: Notification) -> None:
        per = self._firing.setdefault(n.receiver, {})
        for event in n.events:
            key = fingerprint(event)
            if n.status is NotificationStatus.RESOLVED:
                per.pop(key, None)
            elif event.spec.opens is not None:
                per[key] = dataclasses.replace(n, events=(event,))

    def firing(self, receiver: str) -> list[Notification]:
        return list(self._firing.get(receiver, {}).values())


def has_heartbeat(sink: Sink) -> bool:
    """Whether ``sink`` wants the still-firing set re-pushed (``heartbeat_loop``)."""
    return sink.supports_heartbeat


async def heartbeat_loop(
    receiver: str,
    sink: Sink,
    firing: FiringTracker,
    *,
    clock: Clock,
    is_leader: Callable[[], bool],
    attempt_timeout_s: Callable[[], float],
    log: structlog.typing.FilteringBoundLogger,
) -> None:
    """Every ``sink.resend_interval_s`` (on ``clock``), while leading, hand ``sink`` what still
    fires for ``receiver``; a failed push is logged and the next interval tries again.

    ``attempt_timeout_s`` is read at each push (a reload changes ``dispatch.attempt_timeout``).
    Never returns: the caller cancels it (shutdown, or a reload that replaces the sink)."""
    interval = sink.resend_interval_s
    while True:
        await clock.sleep_until(clock.now() + timedelta(seconds=interval))
        if not is_leader():
            continue
        notifications = firing.firing(receiver)
        if not notifications:
            continue
        try:
            async with asyncio.timeout(attempt_timeout_s()):
                await sink.heartbeat(notifications, clock.now())
        except (DeliveryError, TimeoutError) as exc:
            log.warning("heartbeat_failed", receiver=receiver, error=str(exc))
