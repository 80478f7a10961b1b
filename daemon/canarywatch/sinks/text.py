"""Text every sink shows the same way: untrusted text made safe, the weight bar, verdicts, and
which option values are secrets.

Flagger messages, reasons and labels come from the cluster and may carry terminal escapes,
bidi overrides or mention syntax; ``clean_text`` is the first step every sink takes before its
own markup escaping (``canarywatch_sinks.escaping``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Final

from canarywatch.model import Notification, NotificationStatus, Transition

__all__ = [
    "VERDICTS",
    "clean_text",
    "is_verdict",
    "reveal_secret",
    "secret_values",
    "weight_bar",
]

_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor movement
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: titles, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
)
_KEEP_FORMAT = frozenset({"\u200d"})  # zero-width joiner: part of emoji sequences
_SPACE_RUNS = re.compile(r"\s+")


def clean_text(text: str, *, max_len: int | None = None) -> str:
    """Untrusted text made safe to show on one line.

    Removes ANSI/terminal escape sequences, control characters and invisible format characters
    (bidi overrides and the like, which can disguise text), turns line breaks and tabs into
    spaces, collapses runs of whitespace and trims. With ``max_len``, cuts the result to at most
    that many characters, ending in ``…`` when it cut.
    """
    text = _ANSI.sub("", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\t\n\r\v\f\x85\u2028\u2029":
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co") or (cat == "Cf" and ch not in _KEEP_FORMAT):
            continue
        else:
            out.append(ch)
    cleaned = _SPACE_RUNS.sub(" ", "".join(out)).strip()
    if max_len is not None and len(cleaned) > max_len:
        cleaned = cleaned[: max(max_len - 1, 0)].rstrip() + "…"
    return cleaned


def weight_bar(weight: int | None, *, cells: int = 10) -> str:
    """``▰▰▰▱▱▱▱▱▱▱ 30%``: the canary's share of traffic at a glance, the one bar every view draws.

    The weight is clamped to 0-100 and each cell stands for ``100 / cells`` percent; a cell that
    is half filled or more counts as filled (round half up, never Python's round-half-even), so
    with ten cells 25 % shows 3 cells, 5 % shows 1 and only 0 % shows none. An unknown weight
    (``None``) is an empty bar with ``–``.
    """
    if weight is None:
        return "▱" * cells + " –"
    pct = max(0, min(100, weight))
    filled = (pct * cells + 50) // 100
    return "▰" * filled + "▱" * (cells - filled) + f" {pct}%"


VERDICTS: Final = frozenset(
    {Transition.PROMOTED, Transition.ROLLED_BACK, Transition.PROMOTION_FAILED}
)
"""The transitions that end a rollout with its outcome."""


def is_verdict(n: Notification) -> bool:
    """A firing notification carrying the rollout's outcome (a verdict transition)."""
    return n.status is NotificationStatus.FIRING and any(e.transition in VERDICTS for e in n.events)


def reveal_secret(value: object) -> object:
    """A ``canarywatch.secrets.Secret`` to its plain text, anything else as given.

    For an option model's ``mode="before"`` validator: config hands secrets over as ``Secret``
    objects, tests as plain ``str``. Duck-typed on ``reveal()`` returning ``str``, so a plugin
    never needs to import ``canarywatch.secrets``.
    """
    reveal = getattr(value, "reveal", None)
    if callable(reveal):
        revealed = reveal()
        if isinstance(revealed, str):
            return revealed
    return value


def secret_values(
    options: Mapping[str, object], *, keys: re.Pattern[str], min_len: int = 1
) -> list[str]:
    """The plain text of every secret among a sink's ``options``: what must never be shown.

    A secret is a ``Secret`` (anything with ``reveal()``, or pydantic's ``get_secret_value()``)
    at any depth, or a string option whose key matches ``keys``. In a list only secrets count:
    a plain list (``urls``) holds addresses. Values shorter than ``min_len`` are left out: a
    caller that masks text would otherwise mask every chance occurrence of a two-letter value.
    ``test-sink`` masks its output with these; the sink contract kit looks for leaks of them.
    """
    return [value for value in _walk(options, keys) if len(value) >= min_len]


def _walk(options: Mapping[str, object], keys: re.Pattern[str]) -> Iterator[str]:
    for key, value in options.items():
        yield from _secrets_in(str(key), value, keys)


def _secrets_in(key: str, value: object, keys: re.Pattern[str]) -> Iterator[str]:
    reveal = getattr(value, "reveal", None) or getattr(value, "get_secret_value", None)
    if callable(reveal):
        revealed = reveal()
        if isinstance(revealed, str):
            yield revealed
    elif isinstance(value, str) and keys.search(key):
        yield value
    elif isinstance(value, Mapping):
        yield from _walk(value, keys)
    elif isinstance(value, list | tuple):
        for item in value:
            if not isinstance(item, str):
                yield from _secrets_in(key, item, keys)
