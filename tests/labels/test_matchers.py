"""Alertmanager matcher syntax and semantics (cases follow pkg/labels/parse_test.go).

The ``needs_binaries`` tests at the end put the same strings through the real ``amtool``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import re2
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.amtool import AlertmanagerOracle

from canarywatch.labels.matchers import (
    Matcher,
    MatchOp,
    format_label_set,
    matches_all,
    parse_matcher,
    parse_matcher_set,
    parse_matchers,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo=bar", Matcher("foo", MatchOp.EQUAL, "bar")),
        ('foo="bar"', Matcher("foo", MatchOp.EQUAL, "bar")),
        ("foo!=bar", Matcher("foo", MatchOp.NOT_EQUAL, "bar")),
        ('foo=~"b.*"', Matcher("foo", MatchOp.REGEX, "b.*")),
        ("foo!~b.*", Matcher("foo", MatchOp.NOT_REGEX, "b.*")),
        ("  foo  =  bar  ", Matcher("foo", MatchOp.EQUAL, "bar")),
        ("foo=bar baz", Matcher("foo", MatchOp.EQUAL, "bar baz")),
        ('foo=" padded "', Matcher("foo", MatchOp.EQUAL, " padded ")),
        ("foo=", Matcher("foo", MatchOp.EQUAL, "")),
        ('foo=""', Matcher("foo", MatchOp.EQUAL, "")),
        ("foo==bar", Matcher("foo", MatchOp.EQUAL, "=bar")),
        ("foo=~=bar", Matcher("foo", MatchOp.REGEX, "=bar")),
        ("_:a1=x", Matcher("_:a1", MatchOp.EQUAL, "x")),
        (r'foo="a\"b"', Matcher("foo", MatchOp.EQUAL, 'a"b')),
        (r'foo="a\\b"', Matcher("foo", MatchOp.EQUAL, "a\\b")),
        (r'foo="a\nb"', Matcher("foo", MatchOp.EQUAL, "a\nb")),
        (r'foo="a\tb"', Matcher("foo", MatchOp.EQUAL, "a\\tb")),  # spurious escape is literal
        ("foo=bar\\", Matcher("foo", MatchOp.EQUAL, "bar\\")),  # trailing lone backslash
        ("foo=a\nb", Matcher("foo", MatchOp.EQUAL, "a\nb")),  # literal line feed tolerated
        ('foo="café ☕"', Matcher("foo", MatchOp.EQUAL, "café ☕")),
        ('"k8s.io/app"="x"', Matcher("k8s.io/app", MatchOp.EQUAL, "x")),
        ('"with \\"quote\\""!="x"', Matcher('with "quote"', MatchOp.NOT_EQUAL, "x")),
    ],
)
def test_parse_matcher(text: str, expected: Matcher) -> None:
    assert parse_matcher(text) == expected


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("", "empty"),
        ("foo", "expected one of"),
        ("foo~=bar", "expected one of"),
        ("=bar", "expected a label name"),
        ("1foo=bar", "expected a label name"),
        ("foo-bar=baz", "expected one of"),
        ('foo="bar', "closing double quote"),
        ('foo=bar"', "unescaped double quote"),
        ('foo="ba"r"', "unescaped double quote"),
        ('foo="bar\\"', "closing double quote"),
        ('""=x', "label name is empty"),
        ('"open=x', "closing double quote"),
        ('foo=~"(unclosed"', "regex"),
        ('foo=~"(?=x)"', "regex"),
        ("foo=\udcff", "UTF-8"),
        ('a="b", c="d"', "expected one matcher, found 2"),
        ("{}", "empty"),
    ],
)
def test_parse_matcher_rejects(text: str, fault: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fault)):
        parse_matcher(text)


def test_matcher_constructor_validates() -> None:
    with pytest.raises(ValueError, match="operator"):
        Matcher("a", "==", "b")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        Matcher("", MatchOp.EQUAL, "b")
    with pytest.raises(ValueError, match="regex"):
        Matcher("a", MatchOp.NOT_REGEX, "(")
    assert Matcher("a", "=~", "b").op is MatchOp.REGEX  # type: ignore[arg-type]


LABELS = {"severity": "warning", "namespace": "test", "empty": ""}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("severity=warning", True),
        ("severity=Warning", False),
        ("severity!=warning", False),
        ("severity!=critical", True),
        ('severity=~"warn.*"', True),
        ('severity=~"warn"', False),  # anchored at the end
        ('severity=~"arning"', False),  # anchored at the start
        ('severity=~"info|warning"', True),
        ('severity=~"info|warn"', False),  # the whole alternation is anchored
        ('severity=~"(?i)WARNING"', True),
        ('severity=~"[[:alpha:]]+"', True),  # a POSIX class, as in Go
        ('severity=~"\\w{7}"', True),
        ('severity!~"warn.*"', False),
        ('severity!~"crit.*"', True),
        # A missing label, or an empty one, is the empty string.
        ('team=""', True),
        ('team!=""', False),
        ('empty=""', True),
        ('team=~".*"', True),
        ('team=~".+"', False),
        ('team!~".+"', True),
        ("team!=platform", True),
        ('namespace!=""', True),
    ],
)
def test_matches(text: str, matches: bool) -> None:
    assert parse_matcher(text).matches(LABELS) is matches


def test_regex_does_not_match_trailing_newline() -> None:
    # Python's "$" would accept a trailing "\n"; Alertmanager's ^(?:re)$ does not.
    assert not parse_matcher('a=~"x"').matches({"a": "x\n"})


def test_regex_alternation_with_prefix_is_anchored_as_a_whole() -> None:
    m = parse_matcher("a=~ab|c")
    assert m.matches({"a": "ab"})
    assert m.matches({"a": "c"})
    assert not m.matches({"a": "abc"})
    assert not m.matches({"a": "ac"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("{}", ()),
        ("foo=bar", (Matcher("foo", MatchOp.EQUAL, "bar"),)),
        (
            '{foo = "bar", dings != "bums", }',
            (
                Matcher("foo", MatchOp.EQUAL, "bar"),
                Matcher("dings", MatchOp.NOT_EQUAL, "bums"),
            ),
        ),
        (
            "foo=bar,dings!=bums",
            (
                Matcher("foo", MatchOp.EQUAL, "bar"),
                Matcher("dings", MatchOp.NOT_EQUAL, "bums"),
            ),
        ),
        (
            '{quote="She said: \\"Hi, ladies! That\'s gender-neutral…\\""}',
            (Matcher("quote", MatchOp.EQUAL, 'She said: "Hi, ladies! That\'s gender-neutral…"'),),
        ),
        ('statuscode=~"5.."', (Matcher("statuscode", MatchOp.REGEX, "5.."),)),
        # Issue 16: all three pass amtool check-config.
        (
            'namespace="shop", severity="critical"',
            (
                Matcher("namespace", MatchOp.EQUAL, "shop"),
                Matcher("severity", MatchOp.EQUAL, "critical"),
            ),
        ),
        ('{namespace="shop"}', (Matcher("namespace", MatchOp.EQUAL, "shop"),)),
        ('namespace="shop",', (Matcher("namespace", MatchOp.EQUAL, "shop"),)),
        # Go's tokenizer, quirks included: one brace each side is dropped before trimming.
        ("a=b}}", (Matcher("a", MatchOp.EQUAL, "b}"),)),
        ("a=b, ", (Matcher("a", MatchOp.EQUAL, "b"),)),
        ("a=b,\u00a0c=d", (Matcher("a", MatchOp.EQUAL, "b"), Matcher("c", MatchOp.EQUAL, "d"))),
        (
            'a="x\\\\,",b="y"',
            (Matcher("a", MatchOp.EQUAL, "x\\,"), Matcher("b", MatchOp.EQUAL, "y")),
        ),
        (
            '{a=~"x,y", b="1"}',
            (Matcher("a", MatchOp.REGEX, "x,y"), Matcher("b", MatchOp.EQUAL, "1")),
        ),
    ],
)
def test_parse_matcher_set(text: str, expected: tuple[Matcher, ...]) -> None:
    assert parse_matcher_set(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a=b,,c=d",
        "{a=b, =c}",
        '{a="b}',
        ' {a="b"}',
        "{{a=b}",
        "\u00a0a=b,c=d",
        # As in Go, the escape stays pending over the quoted comma, so the next quote does not
        # close: one token, with an unescaped quote inside its value.
        'a="x\\,",b="y"',
    ],
)
def test_parse_matcher_set_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="matcher"):
        parse_matcher_set(text)


def test_parse_matchers_list_names_the_bad_item() -> None:
    assert parse_matchers(["a=b", '{c=~"d", e!="f"}']) == (
        Matcher("a", MatchOp.EQUAL, "b"),
        Matcher("c", MatchOp.REGEX, "d"),
        Matcher("e", MatchOp.NOT_EQUAL, "f"),
    )
    with pytest.raises(ValueError, match=r"matchers\[1\]"):
        parse_matchers(["a=b", "oops"])
    with pytest.raises(TypeError):
        parse_matchers("a=b")


def test_matches_all() -> None:
    ms = parse_matcher_set('{severity="warning", namespace=~"te.*"}')
    assert matches_all(ms, LABELS)
    assert not matches_all((*ms, parse_matcher("team=x")), LABELS)
    assert matches_all((), {})


@pytest.mark.parametrize(
    ("matcher", "text"),
    [
        (Matcher("foo", MatchOp.EQUAL, "bar"), 'foo="bar"'),
        (Matcher("foo", MatchOp.NOT_EQUAL, 'a"b\\c\nd'), r'foo!="a\"b\\c\nd"'),
        (Matcher("k8s.io/app", MatchOp.NOT_EQUAL, "x"), '"k8s.io/app"!="x"'),
    ],
)
def test_str(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text
    assert parse_matcher(text) == matcher


def test_format_label_set() -> None:
    assert format_label_set({"b": 'x"', "a": "1", "k.io": "v"}) == '{a="1",b="x\\"","k.io"="v"}'


_names = st.text(min_size=1, max_size=12)
_values = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    name=_names,
    op=st.sampled_from(list(MatchOp)),
    value=_values,
)
def test_str_round_trips(name: str, op: MatchOp, value: str) -> None:
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        value = re2.escape(value)
    m = Matcher(name, op, value)
    assert parse_matcher(str(m)) == m
    assert parse_matcher_set("{" + str(m) + ", " + str(m) + "}") == (m, m)


@settings(max_examples=200, deadline=None)
@given(value=_values, other=_values)
def test_escaped_regex_matches_exactly_its_literal(value: str, other: str) -> None:
    m = Matcher("a", MatchOp.REGEX, re2.escape(value))
    assert m.matches({"a": value})
    assert m.matches({"a": other}) is (other == value)


def test_parse_matcher_reads_one_matcher_in_any_list_spelling() -> None:
    expected = Matcher("namespace", MatchOp.EQUAL, "shop")
    for text in ('namespace="shop"', '{namespace="shop"}', 'namespace="shop",', "namespace=shop}"):
        assert parse_matcher(text) == expected


# --- the real Alertmanager decides ---------------------------------------------------------------

PARSER_CASES = [
    'namespace="shop", severity="critical"',
    '{namespace="shop"}',
    'namespace="shop",',
    "",
    "{}",
    "a=b}}",
    "a=b, ",
    " a=b ",
    "a=b,\u00a0c=d",
    "a=b,c=d\u00a0",
    "\u00a0a=b",
    "a=b\v",
    "a=b\n,c=d",
    'a="x\\,",b="y"',
    'a="x\\\\,",b="y"',
    '{a="b}"}',
    'a="b\\\\"',
    "a=b\\",
    'a=~"x,y"',
    'a="She said: \\"Hi, ladies!\\""',
    'a=" padded "',
    "a=1,b!=2,c=~3,d!~4",
    "b=1,a=2",
    "a!=1,a=1",
    "a==b",
    "_:a1=x",
    # refused by both
    ' {a="b"}',
    "{{a=b}",
    "a=b,,c=d",
    "\u00a0a=b,c=d",
    'a="b',
    'a=b"',
    'a="b"c"',
    "foo-bar=baz",
    "1a=b",
    "a~=b",
    "a",
    'a=~"(?=x)"',
]


def go_rendering(matchers: tuple[Matcher, ...]) -> str:
    """How ``amtool config routes`` prints a route's matchers (Alertmanager 0.25)."""
    if not matchers:
        return "default-route"  # a child without matchers prints like the root
    order = list(MatchOp)
    ordered = sorted(matchers, key=lambda m: (m.name, m.value, order.index(m.op)))
    return "{" + ",".join(str(m) for m in ordered) + "}"


def route_config(item: str, *, canarywatch: bool) -> dict[str, Any]:
    receiver: dict[str, Any] = {"name": "r", "sink": "console"} if canarywatch else {"name": "r"}
    return {
        "route": {"receiver": "r", "routes": [{"receiver": "r", "matchers": [item]}]},
        "receivers": [receiver],
    }


@pytest.fixture(scope="module")
def amtool(tmp_path_factory: pytest.TempPathFactory) -> AlertmanagerOracle:
    return AlertmanagerOracle(tmp_path_factory.mktemp("amtool"))


@pytest.mark.needs_binaries
@pytest.mark.parametrize("item", PARSER_CASES)
def test_config_matchers_item_parses_as_alertmanager_does(
    amtool: AlertmanagerOracle, item: str, tmp_path: Path
) -> None:
    """Accepted or refused alike, and when accepted, the same matchers."""
    from canarywatch.config import ConfigError, parse_config

    checked = amtool.check(route_config(item, canarywatch=False))
    try:
        parse_config(json.dumps(route_config(item, canarywatch=True)), filename="c.yaml")
    except ConfigError as exc:
        ours: str | None = None
        error = str(exc)
    else:
        ours = go_rendering(parse_matcher_set(item))
        error = ""
    if not checked.ok:
        assert ours is None, f"amtool refused {item!r} ({checked.output}); canarywatch read {ours}"
        return
    assert ours is not None, f"amtool accepted {item!r}; canarywatch: {error}"
    child = [line for line in amtool.tree(checked).splitlines() if line.strip()][-1]
    assert child.split("── ", 1)[1].rsplit("  receiver:", 1)[0] == ours, (item, child)


@pytest.mark.needs_binaries
def test_quoted_label_names_are_the_documented_extension(amtool: AlertmanagerOracle) -> None:
    """README: canarywatch reads ``"k8s.io/app"="x"``; Alertmanager 0.25's parser does not."""
    item = '"k8s.io/app"="x"'
    assert not amtool.check(route_config(item, canarywatch=False)).ok
    assert parse_matcher_set(item) == (Matcher("k8s.io/app", MatchOp.EQUAL, "x"),)
