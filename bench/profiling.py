"""``python -m bench --profile NAME [--top N]``: a benchmark's hot path under cProfile.

``throughput`` profiles the replay of the throughput benchmark (not building its input, not the
floor); ``startup`` profiles the scale benchmark's start-up against 50,000 existing Events
(``BENCH_QUICK=1``: 5,000) from the daemon's start until every listed Event was processed. The
simulated API server runs in the same process and event loop, so its share shows up as its own
group. Threads are not profiled (cProfile sees the thread that enabled it): the state store's
writer thread (SQLite commits) is absent from the figures.

Printed: the top functions by cumulative and by own time, each tagged with its group, then the
own time summed per group (own times add up to the total; cumulative times do not). cProfile
makes call-heavy Python code two to three times slower, so read shares, not absolute seconds.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
from collections import defaultdict
from collections.abc import Callable
from typing import TypeAlias

Key: TypeAlias = tuple[str, int, str]
"""(file, line, function) as pstats names a function."""

OTHER = "other"
"""Builtins and generic stdlib (``dict.get``, ``sorted``, ``isinstance``, ``enum``, ``copy``, the
``re`` module): their own time is charged to the groups of their callers, in proportion, so a
regular expression's time counts where it is used (message classification, say)."""


GROUPS: list[tuple[str, tuple[str, ...]]] = [
    # (group, substrings of "file:function"); the first group with a match wins.
    ("message classification (normalise/messages.py)", ("normalise/messages.py",)),
    ("dataclasses.replace", ("dataclasses.py:replace", "dataclasses.py:_replace")),
    ("dataclass __init__/__eq__/__hash__ (generated)", ("<string>",)),
    ("dataclasses (other)", ("dataclasses.py",)),
    (
        "exposition parsing (scrapes)",
        (
            "prometheus_client/parser.py",
            "prometheus_client/openmetrics",
            "normalise/exposition.py",
            "normalise/flagger_metrics.py",
            "normalise/metric_tables.py",
            "sources/flagger_exposition.py",
        ),
    ),
    ("metrics (prometheus_client counters)", ("prometheus_client/", "canarywatch/metrics.py")),
    ("label matching (labels/, incl. re2)", ("canarywatch/labels/", "re2/")),
    ("routing, group keys, fingerprints", ("pipeline/route.py", "canarywatch/identity.py")),
    ("correlate", ("pipeline/correlate.py", "pipeline/recover.py")),
    ("inhibit / silence", ("pipeline/inhibit.py", "pipeline/silence.py")),
    ("group (aggregation groups)", ("pipeline/group.py",)),
    ("pipeline shell (core, runner, replay)", ("pipeline/",)),
    ("normalise (Events, status, webhook, timing)", ("canarywatch/normalise/",)),
    ("model types", ("canarywatch/model.py", "canarywatch/lru.py")),
    ("JSON decoding (json.loads)", ("json/decoder.py", "json/__init__.py:loads", "scanstring")),
    (
        "JSON encoding (json.dumps)",
        ("json/encoder.py", "json/__init__.py:dumps", "encode_basestring"),
    ),
    ("formats (public JSON shape, format_time)", ("canarywatch/formats/",)),
    ("kubernetes_asyncio (client, models)", ("kubernetes_asyncio/",)),
    ("watch / list loop (sources)", ("canarywatch/sources/",)),
    ("state store (Python side; commits run in a thread)", ("canarywatch/state/", "sqlite3")),
    ("views (live view, canary metrics)", ("canarywatch/views/",)),
    ("delivery (outbox, dispatch)", ("canarywatch/delivery/",)),
    ("simulator (API server in the same process)", ("canarywatch/simulator/",)),
    ("aiohttp / yarl / multidict (HTTP)", ("aiohttp/", "yarl/", "multidict/")),
    ("waiting for I/O (epoll)", ("'poll' of 'select.epoll'", "selectors.py")),
    ("asyncio event loop", ("asyncio/",)),
    ("logging (structlog)", ("structlog/", "canarywatch/logs.py", "logging/")),
    ("config loading (pydantic)", ("pydantic", "canarywatch/config/")),
    ("imports", ("<frozen importlib", "importlib/")),
    ("datetime", ("'datetime.", "_strptime", "datetime.py")),
    ("app (supervisor, commit after each batch)", ("canarywatch/app.py",)),
    ("benchmark driver", ("/bench/",)),
]


def group_of(key: Key) -> str:
    file, _, function = key
    where = f"{file.replace(chr(92), '/')}:{function}"
    for name, needles in GROUPS:
        if any(n in where for n in needles):
            return name
    return OTHER


def short(key: Key) -> str:
    file, line, function = key
    if file == "~":
        return function
    for marker in ("site-packages/", "daemon/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{file}:{line}({function})"


def charged_to(
    key: Key,
    table: dict[Key, tuple[int, int, float, float, object]],
    shares: dict[Key, dict[str, float]],
    visiting: set[Key],
) -> dict[str, float]:
    """Which groups ``key``'s own time belongs to (fractions adding up to 1)."""
    if key in shares:
        return shares[key]
    group = group_of(key)
    callers = table[key][4] if key in table else {}
    if group != OTHER or not isinstance(callers, dict) or not callers or key in visiting:
        return {group: 1.0}
    # pstats: callers[caller] = (primitive calls, calls, own s, cumulative s) along that edge.
    # A recursive edge (deepcopy -> _deepcopy_dict -> deepcopy) is left out.
    weights = {c: max(edge[2], 1e-9) for c, edge in callers.items() if c not in visiting}
    if not weights:
        return {}  # only reached through recursion: the outer call charges it
    visiting.add(key)
    total = sum(weights.values())
    result: dict[str, float] = defaultdict(float)
    for caller, weight in weights.items():
        for name, fraction in charged_to(caller, table, shares, visiting).items():
            result[name] += fraction * weight / total
    visiting.discard(key)
    charged = sum(result.values())
    if charged <= 0:
        return {group: 1.0}
    result = defaultdict(float, {name: f / charged for name, f in result.items()})
    if len(weights) == len(callers):  # a partial view (some edge left out) is not reused
        shares[key] = dict(result)
    return dict(result)


def tag(
    key: Key,
    table: dict[Key, tuple[int, int, float, float, object]],
    shares: dict[Key, dict[str, float]],
) -> str:
    """The function's group; for a builtin or generic one, the group charged most of it."""
    group = group_of(key)
    if group != OTHER:
        return group
    charged = charged_to(key, table, shares, set())
    return "-> " + max(charged, key=lambda name: charged[name]) if charged else OTHER


def report(profiler: cProfile.Profile, top: int) -> None:
    stats = pstats.Stats(profiler)
    # pstats keeps its table as a dict attribute without a public accessor.
    table: dict[Key, tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values())
    rows = [(key, row[1], row[2], row[3]) for key, row in table.items()]
    shares: dict[Key, dict[str, float]] = {}
    print(f"total own time under the profiler: {total:.2f} s")
    for title, index in (("cumulative", 3), ("own", 2)):
        ordered = sorted(rows, key=lambda r: -(r[3] if index == 3 else r[2]))
        print(f"\ntop {top} by {title} time: calls, own s, cum. s, % of total, function [group]")
        for key, calls, own, cum in ordered[:top]:
            share = (cum if index == 3 else own) / total * 100
            print(
                f"  {calls:>10,} {own:8.2f} {cum:8.2f} {share:5.1f}%  {short(key)}  "
                f"[{tag(key, table, shares)}]"
            )
    by_group: dict[str, float] = defaultdict(float)
    for key, _, own, _ in rows:
        for name, fraction in charged_to(key, table, shares, set()).items():
            by_group[name] += own * fraction
    print("\nown time by group (builtins and generic stdlib charged to their callers' groups):")
    for name, seconds in sorted(by_group.items(), key=lambda item: -item[1]):
        print(f"  {seconds:8.2f} s {seconds / total * 100:5.1f}%  {name}")


def _throughput(profiler: cProfile.Profile) -> None:
    from bench import throughput

    figures = throughput.run(profiler=profiler)
    print(
        f"throughput under cProfile: {figures['observations']:,.0f} observations in "
        f"{figures['seconds']:.2f} s ({figures['per_s']:,.0f}/s with the profiler on)"
    )


def _startup(profiler: cProfile.Profile) -> None:
    from bench import scale

    s = asyncio.run(scale.startup(profiler))
    print(
        f"start-up under cProfile: {s['events']:,.0f} Events, ready in {s['ready_s']:.2f} s, "
        f"all processed in {s['processed_s']:.2f} s (simulator alone serves the list in "
        f"{s['list_s']:.2f} s, not profiled); re-announced {s['announced']:.0f}"
    )


PROFILES: dict[str, Callable[[cProfile.Profile], None]] = {
    "throughput": _throughput,
    "startup": _startup,
}


def main(argv: list[str]) -> int:
    top = 25
    names: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--top":
            top = int(next(args, "25"))
        else:
            names.append(arg)
    unknown = [n for n in names if n not in PROFILES]
    if not names or unknown:
        print(f"usage: python -m bench --profile {{{','.join(PROFILES)}}} [--top N]")
        return 2
    for name in names:
        profiler = cProfile.Profile()
        PROFILES[name](profiler)
        print()
        report(profiler, top)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
