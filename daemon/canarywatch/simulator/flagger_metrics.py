"""The Prometheus collector of the simulated Flagger: the series ``pkg/metrics/recorder.go`` writes.

The simulator's scenario driver (:mod:`canarywatch.simulator.flagger`) updates the plain
dictionaries here as Flagger's recorder would; :meth:`FlaggerMetrics.collect` renders them the
way client_golang does (families in name order, series in label order, labels sorted), plus a
few families of Go's default registry, so the ``/metrics`` text matches a real Flagger's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from canarywatch.simulator.gofmt import go_float

DEF_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""client_golang's ``prometheus.DefBuckets``, which Flagger's duration histogram uses."""


class FlaggerMetrics:
    """The series Flagger's recorder has written so far; rendered on collect()."""

    def __init__(self, version: str, mesh: str, started_at: float) -> None:
        self.info = {"mesh_provider": mesh, "version": version}
        self.started_at = started_at
        self.total: dict[str, int] = {}
        self.status: dict[tuple[str, str], int] = {}
        self.weight: dict[tuple[str, str], int] = {}
        self.analysis: dict[tuple[str, str, str], float] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.successes: dict[tuple[str, str, str, str], int] = {}
        self.failures: dict[tuple[str, str, str, str], int] = {}
        self.scrapes: dict[str, int] = {"200": 0, "500": 0, "503": 0}

    def collect(self) -> Iterator[Metric]:
        """Families in name order, series in label order, labels sorted: client_golang's."""
        duration = HistogramMetricFamily(
            "flagger_canary_duration_seconds",
            "Seconds spent performing canary analysis.",
            labels=["name", "namespace"],
        )
        for (name, ns), values in sorted(self.durations.items()):
            buckets = [(go_float(b), float(sum(v <= b for v in values))) for b in DEF_BUCKETS]
            buckets.append(("+Inf", float(len(values))))
            duration.add_metric([name, ns], buckets, sum_value=sum(values))
        yield duration
        yield self._counter(
            "flagger_canary_failures", "Total number of canary failures", self.failures
        )
        analysis = GaugeMetricFamily(
            "flagger_canary_metric_analysis",
            "Last canary analysis result per metric",
            labels=["metric", "name", "namespace"],
        )
        for (name, ns, metric), value in sorted(
            self.analysis.items(), key=lambda kv: (kv[0][2], kv[0][0], kv[0][1])
        ):
            analysis.add_metric([metric, name, ns], value)
        yield analysis
        status = GaugeMetricFamily(
            "flagger_canary_status", "Last canary analysis result", labels=["name", "namespace"]
        )
        for (name, ns), code in sorted(self.status.items()):
            status.add_metric([name, ns], float(code))
        yield status
        yield self._counter(
            "flagger_canary_successes", "Total number of canary successes", self.successes
        )
        total = GaugeMetricFamily(
            "flagger_canary_total", "Total number of canary object", labels=["namespace"]
        )
        for ns, count in sorted(self.total.items()):
            total.add_metric([ns], float(count))
        yield total
        weight = GaugeMetricFamily(
            "flagger_canary_weight",
            "The virtual service destination weight current value",
            labels=["namespace", "workload"],
        )
        for (ns, workload), value in sorted(self.weight.items()):
            weight.add_metric([ns, workload], float(value))
        yield weight
        info = GaugeMetricFamily(
            "flagger_info",
            "Flagger version and mesh provider information",
            labels=["mesh_provider", "version"],
        )
        info.add_metric([self.info["mesh_provider"], self.info["version"]], 1.0)
        yield info
        # A few of the default registry's families, so consumers must skip what is not theirs.
        yield GaugeMetricFamily(
            "go_goroutines", "Number of goroutines that currently exist.", value=120.0
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=self.started_at,
        )
        scrapes = CounterMetricFamily(
            "promhttp_metric_handler_requests",
            "Total number of scrapes by HTTP status code.",
            labels=["code"],
        )
        for http_code, count in sorted(self.scrapes.items()):
            scrapes.add_metric([http_code], float(count))
        yield scrapes

    @staticmethod
    def _counter(
        name: str, help_text: str, values: Mapping[tuple[str, str, str, str], int]
    ) -> CounterMetricFamily:
        family = CounterMetricFamily(
            name,
            help_text,
            labels=["analysis_status", "deployment_strategy", "name", "namespace"],
        )
        for (target, ns, strategy, analysis_status), count in sorted(
            values.items(), key=lambda kv: (kv[0][3], kv[0][2], kv[0][0], kv[0][1])
        ):
            family.add_metric([analysis_status, strategy, target, ns], float(count))
        return family
