"""Small HTML helpers for the status page: escaping, the page frame, phase and weight badges.

Everything that comes from a cluster (names, messages, matchers) goes through ``esc``; the frame
never holds a secret (the token, when a person gives it, stays in the browser's sessionStorage).
Meaning is never colour alone: a phase badge says its phase in words and a symbol, a weight bar
says its percentage.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["esc", "frame", "phase_badge", "table", "weight_bar"]

_PHASE_SYMBOLS: Final[Mapping[str, str]] = {
    "Succeeded": "✓",
    "Failed": "✗",
    "Terminated": "✗",
    "Progressing": "▶",
    "Promoting": "▶",
    "Finalising": "▶",
    "Waiting": "⏸",
    "WaitingPromotion": "⏸",
    "Initializing": "…",
    "Initialized": "•",
}
_NAV: Final = (("/", "Canaries"), ("/silences", "Silences"), ("/outbox", "Outbox"))


def esc(value: object) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def phase_badge(phase: str | None) -> str:
    text = phase or "unknown"
    symbol = _PHASE_SYMBOLS.get(text, "?")
    return (
        f'<span class="phase phase-{esc(text.lower())}">'
        f'<span aria-hidden="true">{symbol}</span> {esc(text)}</span>'
    )


def weight_bar(weight: int | None) -> str:
    if weight is None:
        return '<span class="muted">–</span>'
    width = max(0, min(100, weight))
    return (
        f'<span class="bar" aria-hidden="true"><span style="width:{width}%"></span></span>'
        f' <span class="num">{weight}%</span>'
    )


def table(caption: str, headers: Iterable[str], rows: Iterable[str], *, empty: str) -> str:
    """A table with a caption and column headers; ``rows`` are ready ``<tr>`` strings."""
    body = "".join(rows)
    heads = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    return (
        f"<table><caption>{esc(caption)}</caption><thead><tr>{heads}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def frame(
    title: str,
    body: str,
    *,
    active: str,
    live: Mapping[str, str] | None = None,
    lead: str = "",
) -> str:
    """The whole document: header with navigation and the token form, ``lead`` (controls that
    live updates must not replace), then ``body`` inside ``<main>``. ``live``: ``data-*``
    attributes for the live-updating region (``main#live``)."""
    nav = "".join(
        f'<a href="{href}"{" aria-current=page" if href == active else ""}>{name}</a>'
        for href, name in _NAV
    )
    attrs = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (live or {}).items())
    main_id = ' id="live"' if live is not None else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · canarywatch</title>
<link rel="stylesheet" href="/static/page.css">
<script src="/static/page.js" defer></script>
</head>
<body>
<a class="skip" href="#content">Skip to content</a>
<header>
<span class="brand">canarywatch</span>
<nav aria-label="Views">{nav}</nav>
<form id="token-form" class="token">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off"
 placeholder="needed to change silences or the outbox">
<button type="submit">Use</button>
<span id="token-state" role="status"></span>
</form>
</header>
<div id="content">
<h1>{esc(title)}</h1>
{lead}
<main{main_id}{attrs}>
{body}
</main>
</div>
</body>
</html>
"""
