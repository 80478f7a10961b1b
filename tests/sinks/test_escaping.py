"""Per-sink escaping and entity-safe truncation (``canarywatch_sinks.escaping``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarywatch_sinks.escaping import (
    ELLIPSIS,
    ZWSP,
    discord_escape,
    discord_text,
    discord_truncate,
    discord_url,
    slack_escape,
    slack_text,
    slack_truncate,
    slack_url,
    utf16_len,
)

ENTITY_CUT = re.compile(r"&(?!amp;|lt;|gt;)")
tricky = st.text(
    alphabet=st.sampled_from(list("&<>@\\*_[]()#-` a1é🙂\u200d\u0301|~")) | st.characters(),
    max_size=300,
)


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<http://evil|click>", "&lt;http://evil|click&gt;"),
        ("&lt;", "&amp;lt;"),  # & first: an existing entity is shown, not decoded
        ("a & b", "a &amp; b"),
        ("*bold* @channel 🙂", "*bold* @channel 🙂"),  # nothing else is touched
    ],
)
def test_slack_escape(raw: str, escaped: str) -> None:
    assert slack_escape(raw) == escaped


def test_slack_truncate_keeps_entities_whole() -> None:
    text = slack_escape("a&bc")  # a&amp;bc
    assert slack_truncate(text, 8) == text
    assert slack_truncate(text, 7) == "a&amp;…"
    assert slack_truncate(text, 6) == "a…"  # "a&amp…" would show garbage
    assert slack_truncate(text, 1) == "…"
    assert slack_truncate(text, 0) == ""


def test_truncation_counts_utf16_and_keeps_emoji_whole() -> None:
    family = "👩\u200d👩\u200d👧"
    assert utf16_len("🙂") == 2
    assert utf16_len(family) == 8
    assert slack_truncate(family * 3, 17) == family * 2 + ELLIPSIS
    assert slack_truncate(family * 3, 16) == family + ELLIPSIS
    assert slack_truncate("e\u0301" * 5, 4) == "e\u0301" + ELLIPSIS


def test_slack_text_cleans_then_escapes_then_truncates() -> None:
    assert slack_text("line\none \x1b[31m<!here>", 100) == "line one &lt;!here&gt;"
    assert slack_text("&" * 10, 12) == "&amp;&amp;…"


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("@everyone", f"@{ZWSP}everyone"),
        ("<@123>", f"\\<@{ZWSP}123\\>"),
        ("<@&42>", f"\\<@{ZWSP}&42\\>"),
        ("[click](https://evil)", "\\[click\\]\\(https://evil\\)"),
        (
            "**b** __u__ ~~s~~ ||x|| `c`",
            "\\*\\*b\\*\\* \\_\\_u\\_\\_ \\~\\~s\\~\\~ \\|\\|x\\|\\| \\`c\\`",
        ),
        ("> quote # h", "\\> quote \\# h"),
        ("- item - not", "\\- item - not"),
        ("12. item", "12\\. item"),
        ("a\\b", "a\\\\b"),
        ("podinfo.test 88.5%", "podinfo.test 88.5%"),
    ],
)
def test_discord_escape(raw: str, escaped: str) -> None:
    assert discord_escape(raw) == escaped


def test_discord_truncate_keeps_escapes_whole() -> None:
    text = discord_escape("a*@b")  # a\*@<zwsp>b
    assert discord_truncate(text, 3) == "a…"  # never "a\…": the backslash would escape "…"
    assert discord_truncate(text, 4) == "a\\*…"
    assert discord_truncate(text, 5) == "a\\*…"  # "@" without its zero-width space is not kept
    assert discord_truncate(text, 6) == text


def test_urls_cannot_break_out_of_links() -> None:
    assert slack_url("https://x/a?b=1&c=<2>|3 4") == "https://x/a?b=1&amp;c=&lt;2&gt;%7C3%204"
    assert discord_url("https://x/a_(b) <c>") == "https://x/a_%28b%29%20%3Cc%3E"


@settings(max_examples=300, deadline=None)
@given(text=tricky, limit=st.integers(min_value=0, max_value=400))
def test_slack_truncation_invariants(text: str, limit: int) -> None:
    escaped = slack_escape(text)
    out = slack_truncate(escaped, limit)
    assert utf16_len(out) <= limit
    assert not ENTITY_CUT.search(out)
    if utf16_len(escaped) <= limit:
        assert out == escaped
    elif out:
        assert out.endswith(ELLIPSIS)
        assert escaped.startswith(out.removesuffix(ELLIPSIS))


@settings(max_examples=300, deadline=None)
@given(text=tricky, limit=st.integers(min_value=0, max_value=400))
def test_discord_truncation_invariants(text: str, limit: int) -> None:
    escaped = discord_escape(text)
    out = discord_truncate(escaped, limit)
    assert utf16_len(out) <= limit
    body = out.removesuffix(ELLIPSIS) if out != escaped else out
    assert escaped.startswith(body)
    trailing = len(body) - len(body.rstrip("\\"))
    assert trailing % 2 == 0, "an escape was cut in half"
    assert all(out[m.end() : m.end() + 1] == ZWSP for m in re.finditer("@", out))


@settings(max_examples=200, deadline=None)
@given(text=tricky)
def test_text_helpers_yield_one_inert_line(text: str) -> None:
    s = slack_text(text, 3000)
    assert "\n" not in s
    assert "<" not in s
    assert ">" not in s
    d = discord_text(text, 1024)
    assert "\n" not in d
    assert "@everyone" not in d
    assert "@here" not in d
