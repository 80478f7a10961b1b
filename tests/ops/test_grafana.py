"""``config/grafana/canarywatch.json``: a well-formed dashboard whose queries use metrics the
daemon exports (the canary-state ones are tracked separately until they land)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.ops.test_prometheus_rules import CANARY_STATE_METRICS, exported_series_names
from tests.support.binaries import require_binary

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "config" / "grafana" / "canarywatch.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_METRIC = re.compile(r"\bcanarywatch_[a-z0-9_]+")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep theirs inside


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["definition"]


def referenced(dashboard: dict[str, Any]) -> set[str]:
    return {name for _, expr in queries(dashboard) for name in _METRIC.findall(expr)}


def test_dashboard_metadata(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] == "canarywatch"
    assert dashboard["title"]
    (ds,) = [v for v in dashboard["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds["type"] == "datasource"
    assert ds["query"] == "prometheus"


def test_every_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


def test_layout(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def _panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in panels(dashboard) if p["title"] == title]
    return found


def test_required_panels(dashboard: dict[str, Any]) -> None:
    phase = _panel(dashboard, "Canary phase")
    assert phase["type"] == "state-timeline"
    assert "canarywatch_canary_phase" in phase["targets"][0]["expr"]
    mapped = phase["fieldConfig"]["defaults"]["mappings"][0]["options"]
    texts = {m["text"] for m in mapped.values()}
    assert {"Progressing", "Succeeded", "Failed", "WaitingPromotion"} <= texts

    assert "canarywatch_canary_weight" in _panel(dashboard, "Canary weight")["targets"][0]["expr"]
    transitions = _panel(dashboard, "Transitions")["targets"][0]["expr"]
    assert "sum by (transition)" in transitions
    assert "rate(canarywatch_canary_transitions_total" in transitions
    rollbacks = _panel(dashboard, "Rollbacks per namespace (dashboard range)")["targets"][0]["expr"]
    assert 'transition="rolled-back"' in rollbacks
    assert "sum by (namespace)" in rollbacks

    latency = " ".join(t["expr"] for t in _panel(dashboard, "Notification latency")["targets"])
    quantile = "histogram_quantile(0.95, sum by (le) (rate({}_bucket"
    assert quantile.format("canarywatch_delivery_latency_seconds") in latency
    assert quantile.format("canarywatch_pipeline_latency_seconds") in latency
    outcomes = _panel(dashboard, "Deliveries by outcome")["targets"][0]["expr"]
    assert "by (receiver, outcome)" in outcomes
    suppressed = _panel(dashboard, "Suppressed by reason")["targets"][0]["expr"]
    assert "sum by (reason) (rate(canarywatch_events_suppressed_total" in suppressed
    assert "canarywatch_outbox_depth" in _panel(dashboard, "Outbox depth")["targets"][0]["expr"]


def test_operational_metrics_are_exported(dashboard: dict[str, Any]) -> None:
    """Every referenced metric that is not a canary-state metric exists today."""
    missing = referenced(dashboard) - CANARY_STATE_METRICS - exported_series_names()
    assert missing == set()


def test_only_known_canary_state_metrics(dashboard: dict[str, Any]) -> None:
    canary = {name for name in referenced(dashboard) if name.startswith("canarywatch_canary_")}
    assert canary <= CANARY_STATE_METRICS, canary - CANARY_STATE_METRICS
    assert canary == CANARY_STATE_METRICS  # the dashboard shows all five


def test_canary_state_metrics_are_exported(dashboard: dict[str, Any]) -> None:
    missing = sorted((referenced(dashboard) & CANARY_STATE_METRICS) - exported_series_names())
    assert missing == [], f"not exported by the daemon: {', '.join(missing)}"


def _as_promql(expr: str) -> str:
    """Grafana's variables replaced by values Prometheus accepts."""
    for variable, value in (
        ("$__rate_interval", "5m"),
        ("$__range", "6h"),
        ("$namespace", ".*"),
        ("$canary", ".*"),
    ):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unhandled variable in {expr!r}"
    return expr


@pytest.mark.needs_binaries
def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each panel query (as a recording rule)."""
    promtool = require_binary("promtool")
    rules = [
        {"record": f"dashboard:query_{i}", "expr": _as_promql(expr)}
        for i, (_, expr) in enumerate(queries(dashboard))
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
