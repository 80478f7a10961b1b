"""Build the replay recordings under tests/recordings/ from the Flagger fixtures.

Run from the repository root: ``.venv/bin/python tests/recordings/build.py``. The outputs are
committed; ``tests/test_recordings.py`` checks they are up to date with this script.

- ``<scenario>.jsonl``: the Event watch stream of one fixture, each line stamped with the time
  the watcher would have seen it (``lastTimestamp``; DELETED lines 1 h later, the Event TTL).
- ``rollback-status-only.jsonl``: the same rollback as seen by the ``canaries`` source alone
  (a Canary status the way Flagger writes it), to prove a rollback is notified from status.
- ``rollback-multisource.jsonl``: the rollback through all four sources at once: Events,
  Canary status, Flagger's event webhook and two ``/metrics`` scrapes.
- ``day.jsonl`` (also shipped as ``canarywatch/scenarios/day.jsonl`` for ``canarywatch demo``):
  the four Event scenarios of the fixture day in one recording.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "flagger"
OUT = Path(__file__).resolve().parent
PACKAGE_SCENARIOS = ROOT / "daemon" / "canarywatch" / "scenarios"

SCENARIOS = ["rollout-success", "manual-gate", "rollback", "no-traffic-halt"]
EVENT_TTL = timedelta(hours=1)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _fmt(at: datetime) -> str:
    at = at.astimezone(UTC)
    if at.microsecond:
        return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(at: datetime, source: str, data: Any) -> dict[str, Any]:
    return {"at": _fmt(at), "source": source, "data": data}


def event_lines(scenario: str) -> list[dict[str, Any]]:
    lines = []
    path = FIXTURES / f"events-{scenario}.jsonl"
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip():
            continue
        watch_event = json.loads(raw)
        obj = watch_event["object"]
        seen = _time(obj.get("lastTimestamp") or obj["metadata"]["creationTimestamp"])
        if watch_event["type"] == "DELETED":
            seen += EVENT_TTL
        lines.append(_line(seen, "kubernetes-events", watch_event))
    return lines


def _canary(
    rv: int, phase: str, *, spec: str, weight: int = 0, checks: int = 0, at: datetime
) -> dict[str, Any]:
    condition_reason = phase
    condition_status = {"Succeeded": "True", "Initialized": "True", "Failed": "False"}.get(
        phase, "Unknown"
    )
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {
            "name": "podinfo",
            "namespace": "test",
            "uid": "9d7f3c2e-5b1a-4e8f-a6d4-2c0b8e71f5a3",
            "resourceVersion": str(rv),
            "generation": 4,
            "labels": {"app.kubernetes.io/name": "podinfo", "team": "web"},
        },
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "analysis": {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50},
        },
        "status": {
            "phase": phase,
            "canaryWeight": weight,
            "failedChecks": checks,
            "iterations": 0,
            "lastAppliedSpec": spec,
            "lastPromotedSpec": "5d8f7c9b6",
            "lastTransitionTime": _fmt(at),
            "conditions": [
                {
                    "type": "Promoted",
                    "status": condition_status,
                    "reason": condition_reason,
                    "lastUpdateTime": _fmt(at),
                    "lastTransitionTime": _fmt(at),
                }
            ],
        },
    }


def status_lines() -> list[dict[str, Any]]:
    """The podinfo rollback of 14:00-14:08 as the ``canaries`` watch sees it."""
    day = datetime(2026, 8, 4, tzinfo=UTC)
    lag = timedelta(milliseconds=400)  # the status write follows the Event by a moment
    steps: list[tuple[str, str, str, int, int]] = [
        # (time, type, phase, weight, failed checks)
        ("13:59:00", "ADDED", "Succeeded", 0, 0),
        ("14:00:02", "MODIFIED", "Progressing", 0, 0),
        ("14:01:06", "MODIFIED", "Progressing", 10, 0),
        ("14:02:02", "MODIFIED", "Progressing", 20, 0),
        ("14:03:02", "MODIFIED", "Progressing", 20, 1),
        ("14:04:02", "MODIFIED", "Progressing", 20, 2),
        ("14:05:02", "MODIFIED", "Progressing", 20, 3),
        ("14:06:02", "MODIFIED", "Progressing", 20, 4),
        ("14:07:02", "MODIFIED", "Progressing", 20, 5),
        ("14:08:02", "MODIFIED", "Failed", 0, 5),
    ]
    lines = []
    for index, (clock, kind, phase, weight, checks) in enumerate(steps):
        hh, mm, ss = (int(x) for x in clock.split(":"))
        at = day.replace(hour=hh, minute=mm, second=ss) + lag
        spec = "5d8f7c9b6" if index == 0 else "7b9c4d2a1"
        obj = _canary(48376000 + index * 13, phase, spec=spec, weight=weight, checks=checks, at=at)
        lines.append(_line(at, "canaries", {"type": kind, "object": obj}))
    return lines


def webhook_lines(names: list[str]) -> list[dict[str, Any]]:
    lines = []
    for name in names:
        body = json.loads((FIXTURES / f"event-webhook-{name}.json").read_text(encoding="utf-8"))
        at = datetime.fromtimestamp(int(body["metadata"]["timestamp"]) / 1000, UTC)
        lines.append(_line(at, "flagger-webhook", body))
    return lines


def metrics_lines(snapshots: list[tuple[str, str]]) -> list[dict[str, Any]]:
    lines = []
    for name, clock in snapshots:
        text = (FIXTURES / f"metrics-{name}.prom").read_text(encoding="utf-8")
        lines.append(_line(_time(f"2026-08-04T{clock}Z"), "flagger-metrics", text))
    return lines


def _sorted(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(lines, key=lambda line: _time(line["at"]))


def _write(path: Path, header: str, lines: list[dict[str, Any]]) -> None:
    body = "".join(
        json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n" for line in lines
    )
    path.write_text(f"# {header}\n{body}", encoding="utf-8")


def build() -> dict[Path, str]:
    outputs: dict[Path, str] = {}

    def add(path: Path, header: str, lines: list[dict[str, Any]]) -> None:
        _write(path, header, lines)
        outputs[path] = path.read_text(encoding="utf-8")

    for scenario in SCENARIOS:
        add(
            OUT / f"{scenario}.jsonl",
            f"events-{scenario}.jsonl as a recording",
            event_lines(scenario),
        )
    add(
        OUT / "rollback-status-only.jsonl",
        "the podinfo rollback seen only through the Canary status",
        status_lines(),
    )
    multi = (
        event_lines("rollback")
        + status_lines()
        + webhook_lines(["halt-success-rate", "rollback-threshold", "canary-failed"])
        + metrics_lines([("rollback-halting", "14:04:30"), ("rollback-failed", "14:09:00")])
    )
    add(
        OUT / "rollback-multisource.jsonl",
        "the podinfo rollback through Events, Canary status, event webhook and /metrics",
        _sorted(multi),
    )
    day = _sorted([line for s in SCENARIOS for line in event_lines(s)])
    header = "the fixture day (2026-08-04): four Flagger scenarios, Kubernetes Events"
    add(OUT / "day.jsonl", header, day)
    PACKAGE_SCENARIOS.mkdir(parents=True, exist_ok=True)
    add(PACKAGE_SCENARIOS / "day.jsonl", header, day)
    return outputs


if __name__ == "__main__":
    for path in build():
        print(path.relative_to(ROOT), file=sys.stderr)
