"""Alertmanager label matchers: the one syntax routes, inhibit rules, silences and the CLI read.

The grammar is Alertmanager's (``pkg/labels/parse.go``), and ``parse_matcher_set`` is its
``ParseMatchers``, the only parser: every config ``matchers:`` item, ``source_matchers``/
``target_matchers`` item, silence matcher and control-API matcher goes through it, so a string
Alertmanager accepts is read the same way everywhere.

- A string is a comma-separated list of matchers. One leading ``{`` and one trailing ``}`` are
  dropped first (before any whitespace is trimmed, as Alertmanager does), then the rest is split
  on commas outside double quotes (``\\"`` does not open or close a quoted part). A trailing
  comma is allowed, an empty item between two commas is an error, and ``""`` or ``{}`` is no
  matcher at all.
- One matcher is a label name, one of ``=``, ``!=``, ``=~``, ``!~``, and a value that is either
  bare or enclosed in double quotes. Inside the value the OpenMetrics escapes apply (``\\"``,
  ``\\\\``, ``\\n``); any other backslash is literal, as is a lone trailing one. An
  unescaped ``"`` anywhere but at the two ends is an error. Whitespace around each of the three
  parts is dropped.
- A missing label matches as the empty string, so ``team=""`` selects events without a ``team``
  label and ``team!=""`` those with one.
- Regular expressions are Go's (RE2), fully anchored (``^(?:re)$``): see ``goregexp``.

Beyond the classic parser, a label name may be double-quoted (``"k8s.io/app"="x"``), as
Alertmanager's later UTF-8 matchers allow; ``str(matcher)`` quotes a name only when it has to, so
every matcher round-trips through ``parse_matcher(str(m))``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from canarywatch.labels.goregexp import GoRegexp, compile_matcher_regexp

__all__ = [
    "MatchOp",
    "Matcher",
    "escape_value",
    "format_label_set",
    "format_name",
    "matches_all",
    "parse_matcher",
    "parse_matcher_set",
    "parse_matchers",
]


class MatchOp(enum.StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


# Order matters: the two-character operators that start with "=" must be tried before "=".
_OPERATORS: tuple[MatchOp, ...] = (
    MatchOp.REGEX,
    MatchOp.EQUAL,
    MatchOp.NOT_EQUAL,
    MatchOp.NOT_REGEX,
)
_WHITESPACE = " \t\n\f\r"
"""Go RE2's ``\\s``: what the classic parser trims around tokens."""
_GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""Go's ``unicode.IsSpace`` (Unicode White_Space): what ``strings.TrimSpace`` trims."""
_CLASSIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def escape_value(text: str) -> str:
    """OpenMetrics escaping: backslash, line feed and double quote (nothing else)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_name(name: str) -> str:
    """A label name as the parser reads it back: bare when classic, quoted otherwise."""
    if _CLASSIC_NAME.fullmatch(name):
        return name
    return f'"{escape_value(name)}"'


def format_label_set(labels: Mapping[str, str]) -> str:
    """``{a="1",b="2"}`` with names sorted: a stable, unambiguous rendering of a label set."""
    inner = ",".join(f'{format_name(k)}="{escape_value(labels[k])}"' for k in sorted(labels))
    return "{" + inner + "}"


def _check_utf8(what: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"matcher {what} not valid UTF-8: {text!r}") from exc


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; ``matches`` treats a missing label as the empty string."""

    name: str
    op: MatchOp
    value: str
    _regex: GoRegexp | None = field(default=None, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        try:
            op = MatchOp(self.op)
        except ValueError:
            raise ValueError(f"unknown matcher operator {self.op!r}") from None
        object.__setattr__(self, "op", op)
        if not self.name:
            raise ValueError("matcher label name is empty")
        _check_utf8("label name", self.name)
        _check_utf8("value", self.value)
        if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            object.__setattr__(self, "_regex", compile_matcher_regexp(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        match self.op:
            case MatchOp.EQUAL:
                return actual == self.value
            case MatchOp.NOT_EQUAL:
                return actual != self.value
            case MatchOp.REGEX:
                return self._regex is not None and self._regex.matches(actual)
            case MatchOp.NOT_REGEX:
                return self._regex is None or not self._regex.matches(actual)

    def __str__(self) -> str:
        return f'{format_name(self.name)}{self.op}"{escape_value(self.value)}"'


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches (so an empty set matches everything)."""
    return all(m.matches(labels) for m in matchers)


def _unescape(raw: str, *, what: str, source: str) -> str:
    """The classic parser's value decoding: ``raw`` may start and end with ``"``."""
    quoted = raw.startswith('"')
    if quoted:
        raw = raw[1:]
    out: list[str] = []
    escaped = False
    last = len(raw) - 1
    for i, ch in enumerate(raw):
        if escaped:
            escaped = False
            if ch == "n":
                out.append("\n")
            elif ch in '"\\':
                out.append(ch)
            else:
                # A spurious escape: the backslash is literal.
                out.append("\\" + ch)
            continue
        if ch == "\\":
            if i < last:
                escaped = True
                continue
            out.append("\\")  # a trailing lone backslash is literal
        elif ch == '"':
            if not quoted or i < last:
                raise ValueError(f"matcher {what} contains unescaped double quote: {source!r}")
            quoted = False
        else:
            out.append(ch)
    if quoted:
        raise ValueError(f"matcher {what} is missing its closing double quote: {source!r}")
    return "".join(out)


def _quoted_prefix(text: str, start: int) -> int:
    """Index just past the double-quoted string starting at ``text[start]``."""
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise ValueError(f"matcher label name is missing its closing double quote: {text!r}")


def _parse_one(text: str) -> Matcher:
    """One matcher (Alertmanager's ``ParseMatcher``): a token of ``parse_matcher_set``."""
    rest = text.lstrip(_WHITESPACE)
    if not rest:
        raise ValueError(f"bad matcher format (empty matcher): {text!r}")
    if rest.startswith('"'):
        end = _quoted_prefix(rest, 0)
        name = _unescape(rest[:end], what="label name", source=text)
        if not name:
            raise ValueError(f"matcher label name is empty: {text!r}")
    else:
        found = _CLASSIC_NAME.match(rest)
        if found is None:
            raise ValueError(
                f"bad matcher format (expected a label name, [a-zA-Z_:][a-zA-Z0-9_:]* or "
                f"double-quoted): {text!r}"
            )
        name = found.group()
        end = found.end()
    rest = rest[end:].lstrip(_WHITESPACE)
    for candidate in _OPERATORS:
        if rest.startswith(candidate.value):
            op = candidate
            break
    else:
        raise ValueError(
            f"bad matcher format (expected one of =, !=, =~, !~ after {name!r}): {text!r}"
        )
    raw_value = rest[len(op.value) :].strip(_WHITESPACE)
    value = _unescape(raw_value, what="value", source=text)
    return Matcher(name, op, value)


def _split_outside_quotes(text: str) -> list[str]:
    """Alertmanager's ``ParseMatchers`` tokenizer, step for step.

    Commas outside double quotes separate tokens; a backslash escapes a following ``"`` (and
    only that), and a comma inside quotes leaves the escape pending, as Go's loop does. Every
    token before a separator is kept (an empty one is an error later); the last one only when
    something but whitespace is left, so a trailing comma is allowed.
    """
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = False
    escaped = False
    for ch in text:
        if ch == ",":
            if not inside_quotes:
                tokens.append("".join(token))
                token = []
                continue
        elif ch == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(ch)
    last = "".join(token).strip(_GO_SPACE)
    if last:
        tokens.append(last)
    return tokens


def parse_matcher_set(text: str) -> tuple[Matcher, ...]:
    """Parse ``{a="b", c=~"d"}`` exactly as Alertmanager's ``ParseMatchers`` does.

    Braces are optional, a trailing comma is allowed, ``""`` and ``{}`` are no matcher. This is
    the one matcher parser; ``ValueError`` names what is wrong.
    """
    _check_utf8("text", text)
    body = text.removeprefix("{").removesuffix("}")
    return tuple(_parse_one(token) for token in _split_outside_quotes(body))


def parse_matcher(text: str) -> Matcher:
    """Parse a string that must hold exactly one matcher, such as ``severity=~"warn|crit"``.

    The same grammar as ``parse_matcher_set`` (so ``{a="b"}`` and ``a="b",`` are one matcher).
    """
    found = parse_matcher_set(text)
    if not found:
        raise ValueError(f"matcher is empty: {text!r}")
    if len(found) > 1:
        raise ValueError(f"expected one matcher, found {len(found)}: {text!r}")
    return found[0]


def parse_matchers(texts: Sequence[str]) -> tuple[Matcher, ...]:
    """Parse a config ``matchers:`` list: each item is a ``parse_matcher_set`` string."""
    if isinstance(texts, str):
        raise TypeError("parse_matchers takes a list of strings; use parse_matcher_set")
    out: list[Matcher] = []
    for index, text in enumerate(texts):
        try:
            out.extend(parse_matcher_set(text))
        except ValueError as exc:
            raise ValueError(f"matchers[{index}]: {exc}") from exc
    return tuple(out)
