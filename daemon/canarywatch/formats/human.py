"""Short renderings for people, shared by ``canarywatch tail`` and the status page."""

from __future__ import annotations


def format_age(seconds: float | None) -> str:
    """``4s``, ``1m15s``, ``1h02m``, ``1d01h``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
