"""Collectors are declared once per registry, with fixed label sets pre-declared at 0."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from canarywatch.metrics import SOURCE_KINDS, SUPPRESS_REASONS, Metrics
from canarywatch.model import DeliveryReason, Outcome, SourceName


def value(reg: CollectorRegistry, name: str, **labels: str) -> float | None:
    return reg.get_sample_value(name, labels)


def test_fixed_label_sets_exist_at_zero() -> None:
    reg = CollectorRegistry()
    Metrics(reg, version="1.2.3")
    for source in SourceName:
        assert value(reg, "canarywatch_observations_total", source=source.value) == 0
        assert value(reg, "canarywatch_events_total", source=source.value) == 0
        for outcome in Outcome:
            assert (
                value(reg, "canarywatch_normalise_total", source=source.value, outcome=outcome) == 0
            )
    for reason in SUPPRESS_REASONS:
        assert value(reg, "canarywatch_events_suppressed_total", reason=reason) == 0
    assert value(reg, "canarywatch_events_dropped_total", stage="dispatch", reason="overflow") == 0
    assert value(reg, "canarywatch_build_info", version="1.2.3") == 1
    assert value(reg, "canarywatch_pipeline_latency_seconds_count") == 0


def test_declare_receiver_creates_delivery_series() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    labels = {"sink": "slack", "receiver": "team-payments"}
    assert value(reg, "canarywatch_deliveries_total", outcome="sent", reason="", **labels) is None
    m.declare_receiver("team-payments", "slack")
    assert value(reg, "canarywatch_deliveries_total", outcome="sent", reason="", **labels) == 0
    for reason in DeliveryReason:
        assert (
            value(reg, "canarywatch_deliveries_total", outcome="failed", reason=reason, **labels)
            == 0
        )
    assert (
        value(reg, "canarywatch_notifications_total", receiver="team-payments", status="resolved")
        == 0
    )
    assert value(reg, "canarywatch_delivery_latency_seconds_count", sink="slack") == 0
    assert value(reg, "canarywatch_notifications_spilled_total", receiver="team-payments") == 0


def test_counters_and_histograms_read_back() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    m.events_suppressed.labels(reason="duplicate").inc(3)
    m.delivery_latency.labels(sink="console").observe(0.2)
    m.pipeline_latency.observe(4.0)
    assert value(reg, "canarywatch_events_suppressed_total", reason="duplicate") == 3
    assert value(reg, "canarywatch_delivery_latency_seconds_sum", sink="console") == pytest.approx(
        0.2
    )
    assert value(reg, "canarywatch_pipeline_latency_seconds_bucket", le="5.0") == 1
    assert b"canarywatch_build_info{" in generate_latest(reg)


def test_each_registry_is_independent_and_double_declaration_fails() -> None:
    reg = CollectorRegistry()
    Metrics(reg)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Metrics(reg)
    other = CollectorRegistry()
    Metrics(other).observations.labels(source="canaries").inc()
    assert value(other, "canarywatch_observations_total", source="canaries") == 1
    assert value(reg, "canarywatch_observations_total", source="canaries") == 0


def test_source_up_names_the_sources_the_daemon_runs() -> None:
    from canarywatch.sources.canaries import CanariesSource
    from canarywatch.sources.kube_events import KubeEventsSource

    daemon_sources = (
        KubeEventsSource.name,
        CanariesSource.name,
        "flagger_metrics",  # FlaggerMetricsSource's default name
        "flagger_webhook",
    )
    assert daemon_sources == SOURCE_KINDS
    reg = CollectorRegistry()
    Metrics(reg)
    text = generate_latest(reg).decode()
    assert "# HELP canarywatch_source_up 1 while a source reaches its input" in text
    assert "source kube_events, canaries, flagger_metrics, flagger_webhook" in text
