"""Observations per second through normalise + correlate + inhibit + route + group.

Fed from memory (no I/O, one core): the fixture day's Events, Canary status, webhook bodies and
metrics scrapes, replicated over many canaries (each copy renamed, so correlation state grows
like a real fleet's) and replayed on virtual time. Target: at least 20,000 observations/s.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from canarywatch.formats import recording
from canarywatch.model import Observation, SourceName
from canarywatch.pipeline import policy
from canarywatch.pipeline.replay import replay

ROOT = Path(__file__).resolve().parents[1]
TARGET_PER_S = 20_000


def _rename(obs: Observation, index: int) -> Observation:
    """A copy of ``obs`` about canary copy ``index`` (namespace suffixed)."""
    suffix = f"-{index}"
    data = copy.deepcopy(obs.data)
    if obs.source in (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES):
        obj = data["object"]
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = meta.get("namespace", "") + suffix
        meta["uid"] = str(meta.get("uid", "")) + suffix
        involved = obj.get("involvedObject")
        if isinstance(involved, dict):
            involved["namespace"] = involved.get("namespace", "") + suffix
            involved["uid"] = str(involved.get("uid", "")) + suffix
    elif obs.source is SourceName.FLAGGER_WEBHOOK:
        data["namespace"] = data["namespace"] + suffix
    else:
        data = data.replace('namespace="', f'namespace="x{index}')
    return replace(obs, data=data, at=obs.at + timedelta(microseconds=index))


def workload(copies: int) -> list[Observation]:
    base = recording.read(ROOT / "tests" / "recordings" / "day.jsonl") + recording.read(
        ROOT / "tests" / "recordings" / "rollback-multisource.jsonl"
    )
    return [_rename(obs, i) for i in range(copies) for obs in base]


def run(copies: int = 200) -> dict[str, float]:
    observations = workload(copies)
    pipeline = policy.build_pipeline(None)
    started = time.perf_counter()
    sent = sum(1 for _ in replay(observations, pipeline))
    elapsed = time.perf_counter() - started
    rate = len(observations) / elapsed
    return {
        "observations": len(observations),
        "transitions": pipeline.stats.transitions,
        "notifications": sent,
        "seconds": elapsed,
        "per_s": rate,
    }


def main() -> str:
    figures = run()
    print(
        f"throughput: {figures['observations']:.0f} observations -> "
        f"{figures['transitions']:.0f} transitions -> {figures['notifications']:.0f} "
        f"notifications in {figures['seconds']:.2f} s"
    )
    ratio = figures["per_s"] / TARGET_PER_S
    return (
        f"throughput: {figures['per_s']:,.0f} observations/s through the pipeline on one core "
        f"(target {TARGET_PER_S:,}/s: {ratio:.2f}x)"
    )
