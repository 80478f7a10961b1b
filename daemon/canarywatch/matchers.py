"""Alertmanager label matchers: the one syntax routes, inhibit rules and silences use.

The grammar is Alertmanager's classic matcher parser (``pkg/labels/parse.go``): a label name, one
of ``=``, ``!=``, ``=~``, ``!~``, and a value that is either bare or enclosed in double quotes.
Inside the value the OpenMetrics escapes apply (``\\"``, ``\\\\``, ``\\n``); any other backslash
is literal, as is a lone trailing one. An unescaped ``"`` anywhere but at the two ends is an
error. Whitespace around each of the three parts is dropped. Regular expressions are fully
anchored (``^(?:re)$``). A missing label matches as the empty string, so ``team=""`` selects
events without a ``team`` label and ``team!=""`` those with one.

Beyond the classic parser, a label name may be double-quoted (``"k8s.io/app"="x"``), as
Alertmanager's UTF-8 matchers allow; ``str(matcher)`` quotes a name only when it has to, so
every matcher round-trips through ``parse_matcher(str(m))``.

Python's ``re`` stands in for Go's RE2. For the expressions routes use in practice (literals,
alternations, classes, ``.*``) the two agree; a pattern whose meaning would differ in a way
Python itself warns about (``[[:alpha:]]``) is rejected rather than silently misread.
"""

from __future__ import annotations

import enum
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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


def _compile(value: str) -> re.Pattern[str]:
    try:
        with warnings.catch_warnings():
            # Python warns (FutureWarning) where a set such as ``[[:alpha:]]`` will change
            # meaning; RE2 reads those differently today, so refuse rather than guess.
            warnings.simplefilter("error")
            return re.compile(value)
    except (re.error, FutureWarning) as exc:
        raise ValueError(f"matcher regex {value!r} is invalid: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; ``matches`` treats a missing label as the empty string."""

    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

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
            object.__setattr__(self, "_regex", _compile(self.value))

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        match self.op:
            case MatchOp.EQUAL:
                return actual == self.value
            case MatchOp.NOT_EQUAL:
                return actual != self.value
            case MatchOp.REGEX:
                return self._regex is not None and self._regex.fullmatch(actual) is not None
            case MatchOp.NOT_REGEX:
                return self._regex is None or self._regex.fullmatch(actual) is None

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


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher such as ``severity=~"warning|critical"``.

    Raises ``ValueError`` naming what is wrong.
    """
    _check_utf8("text", text)
    rest = text.lstrip(_WHITESPACE)
    if not rest:
        raise ValueError("matcher is empty")
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
    """Split on commas outside double quotes, as Alertmanager's ``ParseMatchers`` does."""
    tokens: list[str] = []
    token: list[str] = []
    inside_quotes = False
    escaped = False
    for ch in text:
        if ch == "," and not inside_quotes:
            tokens.append("".join(token))
            token = []
            continue
        if ch == '"':
            if escaped:
                escaped = False
            else:
                inside_quotes = not inside_quotes
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(ch)
    last = "".join(token).strip(_WHITESPACE)
    if last:
        tokens.append(last)
    return tokens


def parse_matcher_set(text: str) -> tuple[Matcher, ...]:
    """Parse ``{a="b", c=~"d"}`` (braces optional, a trailing comma allowed; ``{}`` is empty)."""
    _check_utf8("text", text)
    body = text.strip(_WHITESPACE)
    body = body.removeprefix("{").removesuffix("}")
    return tuple(parse_matcher(token) for token in _split_outside_quotes(body))


def parse_matchers(texts: Sequence[str]) -> tuple[Matcher, ...]:
    """Parse a config ``matchers:`` list; each item may itself be a ``{...}`` set."""
    if isinstance(texts, str):
        raise TypeError("parse_matchers takes a list of strings; use parse_matcher_set")
    out: list[Matcher] = []
    for index, text in enumerate(texts):
        try:
            out.extend(parse_matcher_set(text))
        except ValueError as exc:
            raise ValueError(f"matchers[{index}]: {exc}") from exc
    return tuple(out)
