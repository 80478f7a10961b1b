"""Each source alone against real Flagger: what it can see is notified once, nothing else.

``docs/sources.md`` says, per transition and source, whether that source alone can see it (its
table "What each source sees"; the verdict is the bold text a cell starts with). This file
reads that table and checks it three ways:

- it covers the whole vocabulary with known verdicts (no binaries needed);
- the recordings of real Flagger (``tests/recordings/flagger-<version>/``: the Events, Canaries
  and metrics sources, not the webhook), replayed one source at a time, give exactly what the
  table derives from the scenario's expectation with all sources (no binaries needed);
- live: the eight scenarios of ``test_real_flagger.py`` run once against Flagger v1.44.0 with
  four canarywatch daemons watching the same run, one source each (the webhook one on the port
  Flagger posts its events to), each delivering to its own receiver with its own state.

``not-ready`` depends on timing (Flagger reading a Deployment before the stand-in updated its
status), as in ``test_real_flagger.py``: where the table says a source sees it, it may appear
at most once per rollout and once before; where it says ``no``, never.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_daemon import config_with, notified
from tests.realcluster.test_real_flagger import (
    NS,
    SCENARIOS,
    SECRET,
    Seen,
    flagger_cluster,
    iteration_oracle,
    running_on,
    sent,
)
from tests.support.flagger_rig import FLAGGER_VERSIONS
from tests.support.kube_apiserver import RealControlPlane

from canarywatch.config import Config, parse_config
from canarywatch.formats import recording
from canarywatch.model import Observation, SourceName, Transition
from canarywatch.pipeline import policy
from canarywatch.pipeline.replay import replay

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "sources.md"
RECORDINGS = REPO / "tests" / "recordings"
SOURCES = (
    SourceName.KUBERNETES_EVENTS,
    SourceName.CANARIES,
    SourceName.FLAGGER_METRICS,
    SourceName.FLAGGER_WEBHOOK,
)
"""The table's columns, in order."""
SELF_EVENTS = frozenset(
    {
        Transition.METRICS_SOURCE_DOWN,
        Transition.METRICS_SOURCE_RECOVERED,
        Transition.CLUSTER_UNREACHABLE,
        Transition.CLUSTER_REACHABLE,
    }
)
VERDICTS = frozenset(
    {"yes", "no", "as `halted`", "v1.42+", "mesh only", "not the traffic gate", "not a restart"}
)
AGGREGATED = "(combined from similar events): "
RESTART = "New revision detected! Restarting analysis for "
TIMING = "not-ready"
"""Seen or not depending on timing; never more than once per rollout (and once before)."""

MAY_MISS: dict[SourceName, Seen] = {source: Counter() for source in SOURCES}
MAY_MISS[SourceName.FLAGGER_METRICS] = Counter({("revision-detected", ""): 1})
"""Live only: the scenarios ship their revision as soon as the Canary is Initialized, and
Flagger often detects it in the same tick (real v1.44 recorded: 150 ms later), so the status
gauge reads 1 for too short a time for a scrape to see it, and the first rollout's start is
then not shown (the recordings' replay knows which; see ``first_scraped_progressing``)."""

Table = dict[str, dict[SourceName, str]]


def sources_table(text: str | None = None) -> Table:
    """``transition -> source -> verdict`` from docs/sources.md, "What each source sees"."""
    text = DOC.read_text(encoding="utf-8") if text is None else text
    section = text.split("## What each source sees", 1)[1].split("\n## ", 1)[0]
    table: Table = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([a-z-]+)`", cells[0])
        if name is None:
            continue
        assert len(cells) == 1 + len(SOURCES), f"row {name.group(1)}: {len(cells)} cells"
        verdicts = [re.match(r"\*\*(.+?)\*\*", cell) for cell in cells[1:]]
        table[name.group(1)] = {
            source: verdict.group(1) if verdict else ""
            for source, verdict in zip(SOURCES, verdicts, strict=True)
        }
    return table


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.lstrip("v").split("."))


def restarts(events: Iterable[dict[str, Any]]) -> Counter[str]:
    """Per canary, how often Flagger restarted an analysis for a newer revision, from its
    Event objects (the scenarios restart only while Progressing, which the status gauge does
    not show; a restart from WaitingPromotion would)."""
    found: Counter[str] = Counter()
    for event in events:
        if event.get("message", "").removeprefix(AGGREGATED).startswith(RESTART):
            found[event["involvedObject"]["name"]] += int(event.get("count") or 1)
    return found


def seen_alone(
    table: Table, source: SourceName, version: str, everything: Seen, *, restarted: int = 0
) -> Seen:
    """What ``source`` alone must report of a scenario that gives ``everything`` with all four
    sources: the table applied to each transition (every scenario uses provider kubernetes;
    ``restarted``: how many of its ``revision-detected`` restarted a running analysis)."""
    want: Seen = Counter()
    for (transition, detail), n in everything.items():
        verdict = table[transition][source]
        if verdict == "yes":
            want[(transition, detail)] += n
        elif verdict == "as `halted`":
            want[("halted", detail)] += n
        elif verdict == "v1.42+":
            if version_tuple(version) >= (1, 42):
                want[(transition, detail)] += n
        elif verdict == "not the traffic gate":
            if detail != "traffic":
                want[(transition, detail)] += n
        elif verdict == "not a restart":
            if n > restarted:
                want[(transition, detail)] += n - restarted
        else:
            assert verdict in ("no", "mesh only"), f"{transition}/{source}: {verdict!r}"
    return want


def compare(
    table: Table, source: SourceName, got: Seen, want: Seen, *, may_miss: Seen | None = None
) -> str | None:
    """``None`` when ``got`` is ``want`` (timing-dependent ``not-ready`` aside, and ``may_miss``
    missing, never repeated), else why not."""
    got = got.copy()
    not_ready = got.pop((TIMING, ""), 0)
    allowed = want[("revision-detected", "")] + 1 if table[TIMING][source] == "yes" else 0
    missed = want - got
    if not (missed - (may_miss or Counter())) and not (got - want) and not_ready <= allowed:
        return None
    return f"got {dict(got)} (+{not_ready} not-ready, allowed {allowed})\n    want {dict(want)}"


# -- the table itself ----------------------------------------------------------------------


def test_the_table_covers_the_vocabulary_with_known_verdicts() -> None:
    table = sources_table()
    assert sorted(table) == sorted(t.value for t in Transition if t not in SELF_EVENTS)
    unknown = {
        (transition, source.value, verdict)
        for transition, row in table.items()
        for source, verdict in row.items()
        if verdict not in VERDICTS
    }
    assert unknown == set(), "docs/sources.md cells must start with a verdict in bold"
    # What the daemon's design rests on: the status sees every verdict, and Events and webhook
    # carry the same messages.
    for verdict in ("promoted", "rolled-back", "promotion-failed"):
        assert table[verdict][SourceName.CANARIES] == "yes"
    for row in table.values():
        assert row[SourceName.KUBERNETES_EVENTS] == row[SourceName.FLAGGER_WEBHOOK]


def test_the_table_reader_reads_verdicts_and_refuses_short_rows() -> None:
    row = "| `promoted` | **yes**: a | **no**: b | **v1.42+**: c | **yes** |"
    table = sources_table(f"## What each source sees\n\n{row}\n\n## Next\n| `halted` | x |\n")
    assert table == {"promoted": dict(zip(SOURCES, ("yes", "no", "v1.42+", "yes"), strict=True))}
    with pytest.raises(AssertionError, match="row halted"):
        sources_table("## What each source sees\n| `halted` | **yes** |\n")


# -- the recordings of real Flagger, one source at a time ----------------------------------

RECORDED = (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES, SourceName.FLAGGER_METRICS)


def replayed(folder: Path, source: SourceName) -> dict[str, Seen]:
    config = parse_config(
        'receivers: [{name: capture, sink: jsonl, options: {path: "/dev/null"}}]\n'
        'route: {receiver: capture, group_by: ["..."]}\n'
    )
    observations = [
        obs for obs in recording.read(folder / "scenarios.jsonl") if obs.source is source
    ]
    got: dict[str, Seen] = {}
    for notification in replay(observations, policy.build_pipeline(config)):
        if notification.status.value != "firing":
            continue
        for event in notification.events:
            if event.canary.namespace == NS:
                got.setdefault(event.canary.name, Counter())[
                    (event.transition.value, event.detail)
                ] += 1
    return got


STATUS_SAMPLE = re.compile(r'flagger_canary_status\{name="([^"]+)",namespace="[^"]+"\} (\S+)')


def first_scraped_progressing(folder: Path) -> Counter[str]:
    """Canaries whose ``flagger_canary_status`` was first recorded already at 0: Flagger
    detected their revision in the tick that initialised them, the gauge read 1 for
    milliseconds between two scrapes, and their rollout's start could not be seen."""
    first: dict[str, str] = {}
    for obs in recording.read(folder / "scenarios.jsonl"):
        if obs.source is not SourceName.FLAGGER_METRICS or not isinstance(obs.data, str):
            continue
        for row in obs.data.splitlines():
            match = STATUS_SAMPLE.match(row)
            if match is not None:
                first.setdefault(match.group(1), match.group(2))
    return Counter({name: 1 for name, value in first.items() if value == "0"})


@pytest.mark.parametrize("source", RECORDED, ids=[s.value for s in RECORDED])
@pytest.mark.parametrize("version", FLAGGER_VERSIONS)
def test_replaying_one_recorded_source_gives_what_the_table_says(
    version: str, source: SourceName
) -> None:
    folder = RECORDINGS / f"flagger-{version}"
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    table = sources_table()
    got = replayed(folder, source)
    latest = {}  # each recorded Event object as last seen
    for obs in recording.read(folder / "scenarios.jsonl"):
        if obs.source is SourceName.KUBERNETES_EVENTS:
            event = obs.data["object"]
            latest[event["metadata"]["uid"]] = event
    restarted = restarts(latest.values())
    if source is SourceName.FLAGGER_METRICS:
        restarted += first_scraped_progressing(folder)
    failures = []
    for name, raw in sorted(expected["canaries"].items()):
        everything: Seen = Counter({tuple(k.split("|", 1)): n for k, n in raw.items()})
        want = seen_alone(table, source, version, everything, restarted=restarted[name])
        problem = compare(table, source, got.get(name, Counter()), want)
        if problem is not None:
            failures.append(f"{name}: {problem}")
    assert not failures, f"flagger {version}, {source.value} alone:\n" + "\n".join(failures)


def flagger_scrape(status: int, successes: int, failures: int) -> str:
    """Flagger v1.44's ``/metrics`` for one blue/green canary ``app`` (counters appear at 1)."""
    labels = 'analysis_status="completed",deployment_strategy="blue-green",name="app"'
    lines = [
        'flagger_info{mesh_provider="kubernetes",version="1.44.0"} 1',
        f'flagger_canary_status{{name="app",namespace="{NS}"}} {status}',
    ]
    if successes:
        lines.append(f'flagger_canary_successes_total{{{labels},namespace="{NS}"}} {successes}')
    if failures:
        lines.append(f'flagger_canary_failures_total{{{labels},namespace="{NS}"}} {failures}')
    return "\n".join(lines) + "\n"


def metrics_alone(verdicts: Iterable[str]) -> list[tuple[str, str]]:
    """``(transition, rollout)`` notified from nothing but the metrics of a canary that is
    initialised, then goes through one rollout per verdict (``promoted``/``rolled-back``)."""
    scrapes = [(1, 0, 0)]  # (status, successes, failures): Initialized
    for verdict in verdicts:
        _, successes, failures = scrapes[-1]
        scrapes.append((0, successes, failures))  # a new revision: Progressing
        if verdict == "promoted":
            scrapes.append((1, successes + 1, failures))
        else:
            scrapes.append((2, successes, failures + 1))
    start = recording.parse_time("2026-12-01T10:00:00Z")
    observations = [
        Observation(
            at=start + timedelta(minutes=5 * i),
            source=SourceName.FLAGGER_METRICS,
            data=flagger_scrape(*values),
            cluster="sim",
        )
        for i, values in enumerate(scrapes)
    ]
    config = parse_config(
        'receivers: [{name: capture, sink: jsonl, options: {path: "/dev/null"}}]\n'
        'route: {receiver: capture, group_by: ["..."]}\n'
    )
    return [
        (event.transition.value, event.rollout)
        for notification in replay(observations, policy.build_pipeline(config))
        if notification.status.value == "firing"
        for event in notification.events
    ]


def each_rollout(verdicts: list[str]) -> list[tuple[str, str]]:
    return [
        item
        for n, verdict in enumerate(verdicts, start=1)
        for item in (("revision-detected", str(n)), (verdict, str(n)))
    ]


def test_metrics_alone_tell_the_rollouts_of_a_canary_apart() -> None:
    """Each rollout is its own: ``revision-detected`` from status -> 0. Before, the metrics
    alone put every rollout of a canary in one, and a promotion after a promotion (or a
    rollback after a rollback, even with others in between) was a repeat, never notified."""
    verdicts = ["promoted", "rolled-back", "promoted", "rolled-back"]
    assert metrics_alone(verdicts) == each_rollout(verdicts)


@pytest.mark.parametrize("verdict", ["promoted", "rolled-back"])
def test_metrics_alone_notify_the_same_verdict_twice_in_a_row(verdict: str) -> None:
    assert metrics_alone([verdict, verdict]) == each_rollout([verdict, verdict])


# -- live: four daemons, one source each, watching one run of real Flagger -----------------


def single_source_config(
    source: SourceName, plane: RealControlPlane, metrics_url: str, folder: Path
) -> Config:
    kube = (
        "clusters:\n  - name: sim\n    connection: kubeconfig\n"
        f'    kubeconfig: "{plane.kubeconfig}"\n'
    )
    clusters = {
        SourceName.KUBERNETES_EVENTS: kube + "    watch_canaries: false\n",
        SourceName.CANARIES: kube + "    watch_events: false\n",
    }.get(source, "")
    webhook = f"webhook_intake: {{enabled: true, secret: {{value: {SECRET}}}}}\n"
    return config_with(
        clusters,
        folder / "out.jsonl",
        folder / "state",
        metrics_url=metrics_url if source is SourceName.FLAGGER_METRICS else None,
        extra=webhook if source is SourceName.FLAGGER_WEBHOOK else "",
    )


async def until_all_arrived(
    outs: dict[SourceName, Path], want: dict[SourceName, dict[str, Seen]], *, timeout_s: float
) -> None:
    """Until every daemon delivered at least what it must (bounded), then 3 s more so that a
    duplicate would show."""

    def missing() -> bool:
        for source, per_canary in want.items():
            got = notified(outs[source])
            for name, seen in per_canary.items():
                mine = Counter({(t, d): n for (c, t, d), n in got.items() if c == f"{NS}/{name}"})
                if seen - mine:
                    return True
        return False

    try:
        async with asyncio.timeout(timeout_s):
            while missing():
                await asyncio.sleep(0.5)
    except TimeoutError:
        pass
    await asyncio.sleep(3.0)


def by_canary(out: Path, names: Iterable[str]) -> dict[str, Seen]:
    got = notified(out)
    return {
        name: Counter({(t, d): n for (c, t, d), n in got.items() if c == f"{NS}/{name}"})
        for name in names
    }


@pytest.mark.needs_binaries
@pytest.mark.timeout(600)
async def test_each_source_alone_against_real_flagger(tmp_path: Path) -> None:
    version = FLAGGER_VERSIONS[0]
    table = sources_table()
    outs = {source: tmp_path / source.value / "out.jsonl" for source in SOURCES}

    @asynccontextmanager
    async def four_daemons(
        plane: RealControlPlane, metrics_url: str, port: int
    ) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for source in SOURCES:
                config = single_source_config(source, plane, metrics_url, tmp_path / source.value)
                # Flagger posts its events to ``port``: the webhook daemon listens there.
                listen = port if source is SourceName.FLAGGER_WEBHOOK else 0
                await stack.enter_async_context(running_on(config, listen))
            yield

    started = time.monotonic()
    async with flagger_cluster(version, tmp_path, daemon=four_daemons) as fc:
        for name in SCENARIOS:
            await fc.deploy(name, "1")
        results = await asyncio.gather(
            *(scenario(fc, name) for name, scenario in SCENARIOS.items()),
            return_exceptions=True,
        )
        events = await fc.events()
        everything: dict[str, Seen] = {}
        failures = []
        for (name, _), result in zip(SCENARIOS.items(), results, strict=True):
            if isinstance(result, BaseException):
                failures.append(f"{name}: scenario failed: {result!r}")
            else:
                everything[name] = result + iteration_oracle(events, name)
        restarted = restarts(events)
        want = {
            source: {
                name: seen_alone(table, source, version, seen, restarted=restarted[name])
                for name, seen in everything.items()
            }
            for source in SOURCES
        }
        await until_all_arrived(outs, want, timeout_s=30)
    for source in SOURCES:
        invented = {
            canary for canary, _, _ in notified(outs[source]) if canary.startswith(f"{NS}/")
        } - {f"{NS}/{name}" for name in SCENARIOS}
        if invented:
            failures.append(f"{source.value} alone: notified canaries no scenario has: {invented}")
        got = by_canary(outs[source], everything)
        for name in everything:
            problem = compare(
                table, source, got[name], want[source][name], may_miss=MAY_MISS[source]
            )
            if problem is not None:
                said = [e["message"] for e in events if e["involvedObject"]["name"] == name]
                failures.append(
                    f"{source.value} alone, {name}: {problem}\n    flagger said {said}"
                    f"\n    sent {sent(outs[source], name)}"
                )
    elapsed = time.monotonic() - started
    assert not failures, f"flagger {version} ({elapsed:.0f} s):\n" + "\n".join(failures)
