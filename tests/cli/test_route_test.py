"""``canarywatch route-test``: the receivers a label set reaches, as ``amtool config routes test``
says for the same route tree. A seeded generator of route trees (all four matcher operators,
RE2 regexes, ``continue``, nesting, labels missing from the event) is compared case by case with
the real amtool; any difference fails with the case printed."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.amtool import AlertmanagerOracle

from canarywatch.cli.route_test import route_test_command

REPO = Path(__file__).resolve().parents[2]
NAMES = ("namespace", "severity", "transition", "team")
VALUES = {
    "namespace": ("shop", "payments", "test", "shop-eu"),
    "severity": ("info", "warning", "critical"),
    "transition": ("rolled-back", "halted", "promoted", "weight-advanced"),
    "team": ("a", "b", ""),
}
REGEXES = ("shop.*", "pay|test", "warning|critical", "rolled-.*", ".*", "", "[ab]", r"\w+")
RECEIVERS = tuple(f"r{i}" for i in range(5))
TREES = 30
LABEL_SETS = 10


def matcher(rng: random.Random) -> str:
    name = rng.choice(NAMES)
    op = rng.choice(("=", "!=", "=~", "!~"))
    value = rng.choice(REGEXES) if "~" in op else rng.choice((*VALUES[name], "other"))
    return f'{name}{op}"{value}"'


def route(rng: random.Random, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"receiver": rng.choice(RECEIVERS)}
    if depth > 0:
        node["matchers"] = [matcher(rng) for _ in range(rng.randint(1, 2))]
        node["continue"] = rng.random() < 0.4
    if depth < 3 and rng.random() < (0.9 if depth == 0 else 0.4):
        node["routes"] = [route(rng, depth + 1) for _ in range(rng.randint(1, 3))]
    return node


def label_set(rng: random.Random) -> dict[str, str]:
    return {name: rng.choice(VALUES[name]) for name in NAMES if rng.random() < 0.8}


def canarywatch_receivers(
    config: Path, labels: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> list[str]:
    args = [f"{name}={value}" for name, value in labels.items()] or ["unused="]
    assert route_test_command(config, args, verify=None) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    return [name for name in first_line.split(",") if name]


@pytest.mark.needs_binaries
def test_route_test_agrees_with_amtool_on_generated_trees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oracle = AlertmanagerOracle(tmp_path / "am")
    rng = random.Random(20261205)
    differences = []
    cases = 0
    for tree_index in range(TREES):
        tree = route(rng, 0)
        am = oracle.check({"route": tree, "receivers": [{"name": r} for r in RECEIVERS]})
        assert am.ok, am.output
        ours = tmp_path / f"cw-{tree_index}.yaml"
        ours.write_text(
            json.dumps(
                {"receivers": [{"name": r, "sink": "console"} for r in RECEIVERS], "route": tree}
            )
        )
        for _ in range(LABEL_SETS):
            labels = label_set(rng)
            want = list(dict.fromkeys(oracle.receivers(am, labels)))  # amtool lists repeats
            got = canarywatch_receivers(ours, labels, capsys)
            cases += 1
            if got != want:
                differences.append(
                    f"tree {json.dumps(tree)}\n  labels {labels}: amtool {want}, canarywatch {got}"
                )
    assert cases == TREES * LABEL_SETS
    assert not differences, "\n".join(differences[:10])


def test_route_test_from_the_command_line(tmp_path: Path) -> None:
    config = REPO / "config" / "policy.example.yaml"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "canarywatch", "route-test", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    labels = ("transition=rolled-back", "namespace=shop", "severity=critical", "canary=checkout")
    ok = run(str(config), *labels)
    assert ok.returncode == 0, ok.stderr
    receivers = ok.stdout.splitlines()[0].split(",")
    assert "on-call" in receivers
    assert all(line.startswith("  ") and ": group {" in line for line in ok.stdout.splitlines()[1:])
    mismatch = run(str(config), *labels, "--verify-receivers", "nobody")
    assert mismatch.returncode == 1
    assert "expected receivers nobody" in mismatch.stderr
    bad = run(str(config), "not-a-label")
    assert bad.returncode == 2
    assert "is not a label" in bad.stderr
    missing = run(str(tmp_path / "none.yaml"), "a=b")
    assert missing.returncode == 2
    for done in (ok, mismatch, bad, missing):
        assert "Traceback" not in done.stderr
