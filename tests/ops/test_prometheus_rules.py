"""``config/prometheus/canarywatch-rules.yaml``: valid for promtool, firing when it should, built
on metrics canarywatch exports, and identical to the PrometheusRule in ``config/kubernetes``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import require_binary

from canarywatch.app import App
from canarywatch.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "prometheus" / "canarywatch-rules.yaml"
PROMETHEUS_RULE = ROOT / "config" / "kubernetes" / "base" / "prometheusrule.yaml"

CANARY_STATE_METRICS = frozenset(
    {
        "canarywatch_canary_phase",
        "canarywatch_canary_weight",
        "canarywatch_canary_failed_checks",
        "canarywatch_canary_transitions_total",
        "canarywatch_canary_last_transition_timestamp_seconds",
    }
)
"""The canary-state series (``canarywatch.views.canary_metrics``) the rules and dashboard build
on."""

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def exported_series_names() -> set[str]:
    """Every series name the daemon's registry can expose (labelled families without samples
    yet included): the self-metrics and the canary-state metrics."""
    registry = App(parse_config("")).registry
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def load_groups(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    groups = data["groups"] if "groups" in data else data["spec"]["groups"]
    assert isinstance(groups, list)
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_groups(RULES) for rule in group["rules"]]


def test_prometheus_rule_carries_identical_groups() -> None:
    document = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["spec"]["groups"] == load_groups(RULES)


def test_rules_use_only_exported_metrics() -> None:
    known = exported_series_names()
    for rule in rules():
        names = set(re.findall(r"\bcanarywatch_[a-z0-9_]+", rule["expr"]))
        if rule["alert"] == "CanarywatchDown":
            assert rule["expr"].startswith('up{job="canarywatch"}')  # Prometheus' own series
            continue
        assert names, f"{rule['alert']} uses no canarywatch metric"
        assert names <= known, f"{rule['alert']}: unknown {names - known}"


def test_rule_shape() -> None:
    alerts = [rule["alert"] for rule in rules()]
    assert len(alerts) == len(set(alerts))
    for rule in rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description"} <= set(rule["annotations"])
    assert {
        "CanaryRolledBack",
        "CanaryRolloutStuck",
        "CanarywatchOutboxBacklog",
        "CanarywatchDeliveriesFailing",
        "CanarywatchSourceDown",
    } <= set(alerts)


@pytest.mark.needs_binaries
def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


# --- promtool test rules -------------------------------------------------------------------


def _annotations(alert: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in (for rules without $value)."""
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    out = {}
    for key, template in rule["annotations"].items():
        assert "$value" not in template, "this helper only renders $labels"
        out[key] = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m[1]], template)
    return out


def _expected(alert: str, labels: dict[str, str]) -> dict[str, Any]:
    (rule,) = [r for r in rules() if r.get("alert") == alert]
    return {
        "exp_labels": {**labels, **rule["labels"]},
        "exp_annotations": _annotations(alert, labels),
    }


def _case(alert: str, at: str, fires: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [_expected(alert, labels) for labels in fires],
    }


PODINFO = {"namespace": "test", "canary": "podinfo"}


def _backlog_alert(labels: dict[str, str], age: str) -> dict[str, Any]:
    """``CanarywatchOutboxBacklog`` as promtool should report it (its description has
    ``$value``, rendered by ``humanizeDuration`` as ``age``)."""
    (rule,) = [r for r in rules() if r.get("alert") == "CanarywatchOutboxBacklog"]
    sink, instance = labels["sink"], labels["instance"]
    return {
        "exp_labels": {**labels, "job": "canarywatch", **rule["labels"]},
        "exp_annotations": {
            "summary": f"canarywatch notifications for sink {sink} are not going out",
            "description": f"The oldest undelivered notification for sink {sink} on {instance} "
            f"is {age} old.",
        },
    }


def unit_tests() -> dict[str, Any]:
    replica = {"job": "canarywatch", "namespace": "test"}
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                # Seen by both replicas: one alert per canary, not per replica.
                "interval": "1m",
                "input_series": [
                    {
                        "series": "canarywatch_canary_transitions_total"
                        f'{{namespace="test",canary="podinfo",transition="rolled-back",pod="{pod}"}}',
                        "values": "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                    }
                    for pod in ("a", "b")
                ],
                "alert_rule_test": [
                    _case("CanaryRolledBack", "2m", []),
                    _case("CanaryRolledBack", "5m", [PODINFO]),
                    _case("CanaryRolledBack", "19m", []),  # the increase left the window
                ],
            },
            {
                # A rollback right after a restart: no increase, but the phase is Failed.
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'canarywatch_canary_phase{namespace="test",canary="podinfo",'
                        f'phase="{phase}"}}',
                        "values": values,
                    }
                    for phase, values in (("Failed", "0 0 1 1 1"), ("Progressing", "1 1 0 0 0"))
                ],
                "alert_rule_test": [
                    _case("CanaryRolledBack", "1m", []),
                    _case("CanaryRolledBack", "3m", [PODINFO]),
                ],
            },
            {
                # Progressing since t=0 with the last transition at t=0 (epoch 0).
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'canarywatch_canary_phase{namespace="test",canary="podinfo",'
                        'phase="Progressing"}',
                        "values": "1+0x60",
                    },
                    {
                        "series": "canarywatch_canary_last_transition_timestamp_seconds"
                        '{namespace="test",canary="podinfo"}',
                        "values": "0+0x60",
                    },
                    {
                        # Advancing every minute: never stuck.
                        "series": 'canarywatch_canary_phase{namespace="test",canary="busy",'
                        'phase="Progressing"}',
                        "values": "1+0x60",
                    },
                    {
                        "series": "canarywatch_canary_last_transition_timestamp_seconds"
                        '{namespace="test",canary="busy"}',
                        "values": "0+60x60",
                    },
                ],
                "alert_rule_test": [
                    _case("CanaryRolloutStuck", "20m", []),
                    _case("CanaryRolloutStuck", "33m", []),  # stale, but not for 5m yet
                    _case("CanaryRolloutStuck", "40m", [PODINFO]),
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "canarywatch_source_up"
                        '{source="kube_events",cluster="prod",instance="10.0.0.1:9797",'
                        'job="canarywatch"}',
                        "values": "1 1 0 0 0 0 0 0 0 0",
                    },
                ],
                "alert_rule_test": [
                    _case("CanarywatchSourceDown", "4m", []),
                    _case(
                        "CanarywatchSourceDown",
                        "9m",
                        [
                            {
                                "source": "kube_events",
                                "cluster": "prod",
                                "instance": "10.0.0.1:9797",
                                "job": "canarywatch",
                            }
                        ],
                    ),
                ],
            },
            {
                # Issue 12: a standby holds what it would have sent (canarywatch_outbox_held);
                # its backlog gauges read 0, so an idle standby never looks stuck. The
                # leader's backlog, 60 s older every minute, fires once past 600 s for 5m.
                "interval": "1m",
                "input_series": [
                    {
                        "series": "canarywatch_outbox_held"
                        '{sink="oncall",instance="standby",job="canarywatch"}',
                        "values": "40+0x30",
                    },
                    {
                        "series": "canarywatch_outbox_oldest_age_seconds"
                        '{sink="oncall",instance="standby",job="canarywatch"}',
                        "values": "0+0x30",
                    },
                    {
                        "series": "canarywatch_outbox_oldest_age_seconds"
                        '{sink="oncall",instance="leader",job="canarywatch"}',
                        "values": "0+60x30",
                    },
                ],
                "alert_rule_test": [
                    {"eval_time": "15m", "alertname": "CanarywatchOutboxBacklog", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "CanarywatchOutboxBacklog",
                        "exp_alerts": [
                            _backlog_alert({"sink": "oncall", "instance": "leader"}, "20m 0s")
                        ],
                    },
                ],
            },
            {
                # Two replicas, neither leader, for longer than 5m.
                "interval": "1m",
                "input_series": [
                    {
                        "series": "canarywatch_leader"
                        f'{{job="canarywatch",namespace="test",pod="{pod}",instance="{pod}"}}',
                        "values": values,
                    }
                    for pod, values in (("a", "1 1 0 0 0 0 0 0 0 0"), ("b", "0 0 0 0 0 0 0 0 0 0"))
                ],
                "alert_rule_test": [
                    _case("CanarywatchNoLeader", "1m", []),
                    _case("CanarywatchNoLeader", "9m", [replica]),
                ],
            },
        ],
    }


@pytest.mark.needs_binaries
def test_promtool_unit_tests(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    spec = tmp_path / "canarywatch-rules.test.yaml"
    spec.write_text(yaml.safe_dump(unit_tests(), sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [promtool, "test", "rules", str(spec)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
