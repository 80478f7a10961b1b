"""Run the benchmarks: ``python -m bench [NAME ...]`` (default: all).

``python -m bench --profile {throughput,startup} [--top N]`` runs one benchmark's hot path under
cProfile instead and prints its profile grouped by concern (``bench/profiling.py``).

Several benchmarks run one after the other, each in its own process, so that one's memory
(``ru_maxrss`` is a process-wide peak) or leftover tasks never colour the next one's figures.
"""

from __future__ import annotations

import importlib
import platform
import subprocess
import sys
from datetime import UTC, datetime

from canarywatch.logs import configure_logging

BENCHMARKS = ["throughput", "latency", "storm", "scale", "versus_alert_rule", "state_fsync"]


def run_one(name: str) -> str:
    configure_logging(level="warning", stream=sys.stderr)
    module = importlib.import_module(f"bench.{name}")
    summary: str = module.main()
    return summary


def main(argv: list[str]) -> int:
    if argv[:1] == ["--profile"]:
        from bench import profiling

        configure_logging(level="warning", stream=sys.stderr)
        return profiling.main(argv[1:])
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
        return 2
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{platform.machine()}",
        flush=True,
    )
    if len(names) == 1:
        print()
        print(run_one(names[0]))
        return 0
    summaries = []
    for name in names:
        done = subprocess.run(
            [sys.executable, "-m", "bench", name], capture_output=True, text=True, check=False
        )
        lines = done.stdout.splitlines()
        print("\n".join(lines[1:-1]).strip(), flush=True)  # its figures, without header/summary
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            summaries.append(f"{name}: FAILED (exit {done.returncode})")
        else:
            summaries.append(lines[-1] if lines else f"{name}: no output")
    print()
    for line in summaries:
        print(line)
    return 0 if all("FAILED" not in s for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
