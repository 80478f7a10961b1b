"""``canarywatch plugins``: every discovered sink plugin, and why one cannot be used."""

from __future__ import annotations

from canarywatch.cli.exitcodes import EXIT_OK, EXIT_RUNTIME
from canarywatch.logs import get_logger
from canarywatch.sinks import discover_sinks


def plugins_command() -> int:
    """One line per entry point: name, distribution, target and capabilities, or FAILED and
    why; exit 1 when any failed."""
    infos = discover_sinks(log=get_logger("sinks"))
    width = max((len(i.name) for i in infos), default=4)
    for info in sorted(infos, key=lambda i: i.name):
        dist = f"{info.distribution or '?'} {info.version or ''}".strip()
        if info.ok:
            caps = ", ".join(info.capabilities) or "-"
            print(f"{info.name:<{width}}  {dist:<24}  {info.target}  [{caps}]")
        else:
            print(f"{info.name:<{width}}  {dist:<24}  FAILED: {info.error}")
    return EXIT_OK if all(i.ok for i in infos) else EXIT_RUNTIME
