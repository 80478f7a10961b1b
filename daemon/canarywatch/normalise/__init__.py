"""Observation -> CanaryEvent candidates, one normaliser per source.

Each normaliser is total: odd input becomes ``Outcome.MALFORMED``/``UNKNOWN`` with a note, never
an exception. Some keep small bounded state (which Event occurrences were seen, the previous
Canary status, the previous metric values), because "a change" needs a "before".
"""

from __future__ import annotations

from collections.abc import Callable

from canarywatch.model import Normalised, Observation, Outcome, SourceName
from canarywatch.normalise.flagger_metrics import FlaggerMetricsNormaliser
from canarywatch.normalise.kube_events import KubeEventNormaliser
from canarywatch.normalise.status import CanaryStatusNormaliser
from canarywatch.normalise.webhook import WebhookNormaliser


class Normaliser:
    """Routes each observation to the normaliser of its source."""

    def __init__(
        self,
        *,
        workload_to_canary: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.kube_events = KubeEventNormaliser()
        self.canaries = CanaryStatusNormaliser()
        self.metrics = FlaggerMetricsNormaliser(workload_to_canary=workload_to_canary)
        self.webhook = WebhookNormaliser()
        self._by_source: dict[SourceName, Callable[[Observation], Normalised]] = {
            SourceName.KUBERNETES_EVENTS: self.kube_events,
            SourceName.CANARIES: self.canaries,
            SourceName.FLAGGER_METRICS: self.metrics,
            SourceName.FLAGGER_WEBHOOK: self.webhook,
        }

    def __call__(self, obs: Observation) -> Normalised:
        normalise = self._by_source.get(obs.source)
        if normalise is None:
            return Normalised(Outcome.IGNORED, note=f"no normaliser for source {obs.source}")
        return normalise(obs)
