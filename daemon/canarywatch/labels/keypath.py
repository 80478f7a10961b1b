"""Key paths as users read them in error messages: ``receivers[1].options.url``.

One spelling for every error that names a place in a mapping: the config loader, the sink
option checks and time-interval parsing. It sits in ``labels`` (the lowest layer, importing
nothing of canarywatch) because ``labels.timeintervals`` needs it and ``config`` imports
``labels``, never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["KeyPath", "format_key_path"]

KeyPath = tuple[str | int, ...]
"""A key path as a tuple: ``("receivers", 1, "options", "url")``; ints index lists."""


def format_key_path(path: Sequence[str | int]) -> str:
    """``("receivers", 1, "options", "url")`` -> ``receivers[1].options.url``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
