"""Run the benchmarks: ``python -m bench [NAME ...]`` (default: all)."""

from __future__ import annotations

import importlib
import platform
import sys
from datetime import UTC, datetime

from canarywatch.logs import configure_logging

BENCHMARKS = ["throughput", "latency", "storm", "scale", "versus_alert_rule"]


def main(argv: list[str]) -> int:
    configure_logging(level="warning", stream=sys.stderr)
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})")
        return 2
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    summaries = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        summaries.append(module.main())
    print()
    for line in summaries:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
