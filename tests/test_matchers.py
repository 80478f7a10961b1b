"""Alertmanager matcher syntax and semantics (cases follow pkg/labels/parse_test.go)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarywatch.matchers import (
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
        ("foo=~[[:alpha:]]", "regex"),
        ("foo=\udcff", "UTF-8"),
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
        (
            '{a=~"x,y", b="1"}',
            (Matcher("a", MatchOp.REGEX, "x,y"), Matcher("b", MatchOp.EQUAL, "1")),
        ),
    ],
)
def test_parse_matcher_set(text: str, expected: tuple[Matcher, ...]) -> None:
    assert parse_matcher_set(text) == expected


@pytest.mark.parametrize("text", ["a=b,,c=d", "{a=b, =c}", '{a="b}'])
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
        value = re.escape(value)
    m = Matcher(name, op, value)
    assert parse_matcher(str(m)) == m
    assert parse_matcher_set("{" + str(m) + ", " + str(m) + "}") == (m, m)


@settings(max_examples=200, deadline=None)
@given(value=_values, other=_values)
def test_escaped_regex_matches_exactly_its_literal(value: str, other: str) -> None:
    m = Matcher("a", MatchOp.REGEX, re.escape(value))
    assert m.matches({"a": value})
    assert m.matches({"a": other}) is (other == value)
