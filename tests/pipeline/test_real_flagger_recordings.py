"""What real Flagger produced, replayed: machines without Go still test against it.

``tests/realcluster/test_real_flagger.py`` ran Flagger's own controller (v1.44.0 and v1.37.0)
against the real kube-apiserver and recorded what canarywatch's Events, Canaries and
``/metrics`` sources saw (``CANARYWATCH_RERECORD=1``) into ``tests/recordings/flagger-<version>/``,
with the transitions each canary had to produce (``expected.json``: the scenario's own list plus
one ``iteration-advanced`` per iteration Flagger announced). The whole pipeline on virtual time
must produce exactly those; ``not-ready`` depends on timing and may appear at most once per
rollout.

One documented difference from the live run: ``record`` keeps the watches and scrapes, not the
event webhook, and without the webhook the Canary status ("a check failed") often arrives
before the Event that says why. The analysis episode is then named ``halted`` where Flagger
said "no values found" (``no-traffic``): the same condition and severity, a less specific name
(README, "Sources"). So ``halted`` and ``no-traffic`` are compared as one here.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from canarywatch.config import parse_config
from canarywatch.formats import recording
from canarywatch.pipeline import policy
from canarywatch.pipeline.replay import replay

RECORDINGS = Path(__file__).parents[1] / "recordings"
VERSIONS = sorted(p.name for p in RECORDINGS.glob("flagger-v*") if p.is_dir())


def test_there_are_recordings_of_real_flagger() -> None:
    assert VERSIONS == ["flagger-v1.37.0", "flagger-v1.44.0"]


@pytest.mark.parametrize("version", VERSIONS)
def test_replaying_real_flagger_gives_each_transition_once(version: str) -> None:
    folder = RECORDINGS / version
    expected = json.loads((folder / "expected.json").read_text())
    namespace = expected["namespace"]
    config = parse_config(
        'receivers: [{name: capture, sink: jsonl, options: {path: "/dev/null"}}]\n'
        'route: {receiver: capture, group_by: ["..."]}\n'
    )
    got: dict[str, Counter[tuple[str, str]]] = {}
    for notification in replay(
        recording.read(folder / "scenarios.jsonl"), policy.build_pipeline(config)
    ):
        if notification.status.value != "firing":
            continue
        for event in notification.events:
            if event.canary.namespace != namespace:
                continue
            got.setdefault(event.canary.name, Counter())[
                (event.transition.value, event.detail)
            ] += 1
    failures = []
    for name, want_raw in expected["canaries"].items():
        want = analysis_as_one(Counter({tuple(k.split("|", 1)): n for k, n in want_raw.items()}))
        seen = analysis_as_one(got.get(name, Counter()))
        not_ready = seen.pop(("not-ready", ""), 0)
        if seen != want or not_ready > want[("revision-detected", "")] + 1:
            failures.append(f"{name}: got {dict(seen)} (+{not_ready} not-ready), want {dict(want)}")
    assert not failures, "\n".join(failures)


def analysis_as_one(seen: Counter[tuple[str, str]]) -> Counter[tuple[str, str]]:
    merged: Counter[tuple[str, str]] = Counter()
    for (transition, detail), n in seen.items():
        key = "halted|no-traffic" if transition in ("halted", "no-traffic") else transition
        merged[(key, detail)] += n
    return merged
