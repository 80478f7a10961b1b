"""What every source is: a never-ending ``run(emit)`` plus a "listed" marker.

A source turns one outside input into :class:`~canarywatch.model.Observation`\\ s and hands each
to ``emit``, which puts it on the bounded intake queue. Awaiting ``emit`` *is* the backpressure:
when the pipeline falls behind, sources stop reading instead of buffering without bound.

Self-events (``metrics-source-down``/``-recovered``, ``cluster-unreachable``/``-reachable``) are
facts canarywatch states about its own inputs, not observations of Flagger, so they bypass
normalisation: a source that produces them is given an :data:`EmitEvent` and hands over a
finished :class:`~canarywatch.model.CanaryEvent`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Never, Protocol, TypeAlias

from canarywatch.model import CanaryEvent, Observation

Emit: TypeAlias = Callable[[Observation], Awaitable[None]]
"""Put one observation on the intake queue; waits while the queue is full."""

EmitEvent: TypeAlias = Callable[[CanaryEvent], Awaitable[None]]
"""Put one self-event (``source`` ``canarywatch``) straight after normalisation."""


class Source(Protocol):
    """A long-lived input; ``app`` runs ``run`` as task ``source:<name>``.

    ``run`` never returns: it loops until cancelled, and lets anything it cannot handle
    propagate so the task group stops. ``listed`` is set once the source holds its initial state
    (a Kubernetes list, the first scrape round); ``/readyz`` waits for every source's.
    """

    name: str
    listed: asyncio.Event

    async def run(self, emit: Emit) -> Never:
        """Produce observations forever."""
        ...
