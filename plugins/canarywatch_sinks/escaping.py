"""Per-sink escaping of untrusted text, and truncation that never cuts an escape in half.

Event text (canary names, Flagger messages, metric reasons) comes from the cluster and is
untrusted. Each chat service has its own markup, so each gets its own escaper:

- Slack (``reference/sinks.md`` §1.3): only ``&``, ``<`` and ``>`` are control characters;
  they become ``&amp;``, ``&lt;``, ``&gt;`` (``&`` first). Every ping and every link needs ``<``,
  so this alone neutralises ``<!channel>``, ``<@U123>`` and ``<http://evil|click>``.
- Discord (§3.1): ``allowed_mentions: {"parse": []}`` is what stops pings; as defence in depth
  markdown-significant characters are backslash-escaped (no masked ``[text](url)`` links, no
  ``<@id>`` mentions) and a zero-width space goes after every ``@`` (``@everyone`` stays text).

Truncation happens *after* escaping, on whole units: an entity (``&amp;``), a backslash escape
(``\\*``), ``@`` with its zero-width space, or a character with the combining marks, variation
selectors and zero-width-joined characters that follow it (one emoji stays one emoji). Lengths
are counted in UTF-16 code units, which is never less than the code-point count: the result is
within the limit whichever of the two a vendor counts.
"""

from __future__ import annotations

import re
from typing import Final

from canarywatch.sinks import clean_text

__all__ = [
    "ELLIPSIS",
    "ZWSP",
    "discord_escape",
    "discord_text",
    "discord_truncate",
    "discord_url",
    "slack_escape",
    "slack_text",
    "slack_truncate",
    "slack_url",
    "utf16_len",
]

ELLIPSIS: Final = "…"
ZWSP: Final = "\u200b"
"""Zero-width space: put after ``@`` so no mention syntax can form."""

# A "grapheme-ish" unit: one character plus what visually belongs to it.
_TAIL = (
    r"(?:[\u0300-\u036f\u20d0-\u20ff\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]"
    r"|\u200d[^&\\@])*"
)
_SLACK_UNITS: Final = re.compile(r"&(?:amp|lt|gt);|." + _TAIL, re.DOTALL)
_DISCORD_UNITS: Final = re.compile(r"\\.|@" + ZWSP + "|." + _TAIL, re.DOTALL)

# Discord: characters that can start or end markdown anywhere (emphasis, code, spoilers,
# masked links, quotes, headings, mentions/emoji/timestamps in <...>).
_DISCORD_ALWAYS: Final = frozenset("\\*_~`|<>[]()#")
_DISCORD_LIST_MARKER: Final = re.compile(r"^([-+]|\d+\.)(?=\s)")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (characters outside the BMP count twice)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def _truncate_units(text: str, limit: int, units: re.Pattern[str], ellipsis: str) -> str:
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(ellipsis)
    if budget < 0:
        return ""
    end = 0
    used = 0
    for match in units.finditer(text):
        size = utf16_len(match.group())
        if used + size > budget:
            break
        used += size
        end = match.end()
    # Trailing whitespace units are single characters, so stripping them keeps units whole.
    return text[:end].rstrip() + ellipsis


def slack_escape(text: str) -> str:
    """Slack's three control characters as entities, ``&`` first; nothing else is touched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_truncate(escaped: str, limit: int, *, ellipsis: str = ELLIPSIS) -> str:
    """Cut already-escaped Slack text to ``limit`` UTF-16 units without splitting an entity."""
    return _truncate_units(escaped, limit, _SLACK_UNITS, ellipsis)


def slack_text(text: str, limit: int) -> str:
    """Untrusted text for any Slack text field: cleaned to one line, escaped, then truncated."""
    return slack_truncate(slack_escape(clean_text(text)), limit)


def slack_url(url: str) -> str:
    """A URL for ``<url|label>``: the control characters as entities, ``|`` percent-encoded."""
    return slack_escape(clean_text(url).replace(" ", "%20").replace("|", "%7C"))


def discord_escape(text: str) -> str:
    """Backslash-escape Discord markdown and put a zero-width space after every ``@``.

    List markers (``- ``, ``+ ``, ``1. ``) matter only at the start of a line, so only a
    leading one is escaped; sinks escape each line separately.
    """
    out: list[str] = []
    for ch in text:
        if ch in _DISCORD_ALWAYS:
            out.append("\\" + ch)
        elif ch == "@":
            out.append("@" + ZWSP)
        else:
            out.append(ch)
    escaped = "".join(out)
    return _DISCORD_LIST_MARKER.sub(lambda m: m.group()[:-1] + "\\" + m.group()[-1], escaped)


def discord_truncate(escaped: str, limit: int, *, ellipsis: str = ELLIPSIS) -> str:
    """Cut already-escaped Discord text to ``limit`` UTF-16 units, keeping escapes whole."""
    return _truncate_units(escaped, limit, _DISCORD_UNITS, ellipsis)


def discord_text(text: str, limit: int) -> str:
    """Untrusted text for any Discord text field: cleaned to one line, escaped, truncated."""
    return discord_truncate(discord_escape(clean_text(text)), limit)


def discord_url(url: str) -> str:
    """A URL for a masked link ``[label](url)``: characters that would end it are encoded."""
    cleaned = clean_text(url)
    for raw, encoded in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
        cleaned = cleaned.replace(raw, encoded)
    return cleaned
