"""Regular expressions as Alertmanager runs them: Go's ``regexp``, i.e. RE2 syntax and semantics.

Alertmanager compiles a matcher's value with ``regexp.Compile("^(?:" + value + ")$")`` and tests
a label value with ``MatchString``. ``compile_matcher_regexp`` does exactly that with Google's
RE2 (the ``re2`` module of the ``google-re2`` package), which shares Go's syntax and semantics:
linear-time matching, no back-references or look-around, ASCII-only ``\\w``, ``\\d``, ``\\s``
and ``\\b``, Unicode classes (``\\pL``, ``\\p{Greek}``), POSIX classes (``[[:alpha:]]``),
``\\Q…\\E``, ``(?U)``, ``\\x{eb}``, and repeat counts of at most 1000. Python's ``re`` is not
used for matchers anywhere: it reads ``\\w`` as Unicode, ``x{,2}`` as a repeat and accepts
``\\Z``, look-arounds and possessive quantifiers, all of which Go reads differently or refuses.

Go's engine is a reimplementation of RE2, not a binding, so they differ at the edges. Checked
against ``amtool check-config`` of Alertmanager 0.25 (built with Go 1.19) in
``tests/labels/test_goregexp.py``:

- refused here because Go refuses them, although C++ RE2 accepts them: ``\\C`` (any byte),
  ``(?<name>re)`` (Go accepts it from 1.22, so Alertmanager 0.25 does not; ``(?P<name>re)``
  works everywhere) and group names with characters outside ``[A-Za-z0-9_]``;
- residual differences, not worth a parser of our own: C++ RE2 refuses an expression whose
  compiled form exceeds its 8 MiB memory budget (``\\pL{500}``; Go accepts it), accepts
  nesting deeper than Go's limit of 1000, and its Unicode tables are newer than Go 1.19's
  (``\\p{Kawi}``, Unicode 15, is accepted here and refused by Alertmanager 0.25).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Protocol

import re2

__all__ = ["GoRegexp", "compile_matcher_regexp"]


class _Compiled(Protocol):
    """The part of ``re2._Regexp`` used here (the package ships no type information)."""

    def search(self, text: str) -> object | None: ...


def _options() -> re2.Options:
    options = re2.Options()
    # RE2 writes every syntax error to stderr by default; ours go to the user as ValueError.
    options.log_errors = False
    return options


_OPTIONS: Final = _options()
_GO_CAPTURE_NAME: Final = re.compile(r"[A-Za-z0-9_]+")

# RE2's error text -> what a Python habit should be written as instead.
_HINTS: Final[tuple[tuple[str, str], ...]] = (
    ("invalid perl operator: (?=", "RE2 has no look-ahead"),
    ("invalid perl operator: (?!", "RE2 has no look-ahead"),
    ("invalid perl operator: (?<", "RE2 has no look-behind"),
    ("invalid escape sequence: \\Z", "RE2 writes end of text as \\z or $"),
    ("invalid escape sequence: \\u", "write a code point as \\x{eb}"),
    ("invalid escape sequence: \\U", "write a code point as \\x{1F600}"),
    ("invalid repetition size", "RE2 allows a repeat count of at most 1000"),
    ("bad repetition operator: *+", "RE2 has no possessive quantifiers"),
    ("bad repetition operator: ++", "RE2 has no possessive quantifiers"),
    ("bad repetition operator: ?+", "RE2 has no possessive quantifiers"),
    ("pattern too large", "the compiled expression exceeds RE2's 8 MiB budget"),
)


def _reason(exc: Exception) -> str:
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    for needle, hint in _HINTS:
        if needle in text:
            return f"{text}; {hint}"
    if re.search(r"invalid escape sequence: \\[1-9]", text):
        return f"{text}; RE2 has no back-references"
    return text


def _go_only_refusals(pattern: str) -> str | None:
    """What Go's ``regexp/syntax`` refuses in ``pattern`` although C++ RE2 accepts it.

    Called only once RE2 has accepted the pattern, so the syntax is known to be well formed;
    this walks it just far enough to tell escapes, ``\\Q…\\E`` and classes from groups.
    """
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt == "C":
                return "\\C (any byte) is not supported by Go's regexp, which Alertmanager uses"
            if nxt == "Q" and not in_class:
                end = pattern.find("\\E", i + 2)
                i = n if end < 0 else end + 2
                continue
            i += 2
            continue
        if in_class:
            if pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                i = n if end < 0 else end + 2
                continue
            if ch == "]":
                in_class = False
            i += 1
            continue
        if ch == "[":
            in_class = True
            i += 1
            if pattern.startswith("^", i):
                i += 1
            if pattern.startswith("]", i):
                i += 1  # a leading ] is a literal member
            continue
        if pattern.startswith("(?<", i):
            return (
                "(?<name>re) is not supported by Alertmanager 0.25's Go regexp: write (?P<name>re)"
            )
        if pattern.startswith("(?P<", i):
            end = pattern.find(">", i + 4)
            name = pattern[i + 4 : end]
            if not _GO_CAPTURE_NAME.fullmatch(name):
                return f"capture group name {name!r}: Go allows only [A-Za-z0-9_]"
        i += 1
    return None


def _go_string(value: str) -> str:
    """``value`` with lone surrogates (not UTF-8, so not a Go string) as U+FFFD."""
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)


@dataclass(frozen=True, slots=True)
class GoRegexp:
    """A matcher's regular expression, compiled and anchored as Alertmanager does."""

    pattern: str
    """The value as written, without the anchoring."""
    _compiled: _Compiled = field(repr=False, compare=False)

    def matches(self, value: str) -> bool:
        """Go's ``MatchString`` on the anchored expression."""
        try:
            return self._compiled.search(value) is not None
        except UnicodeEncodeError:
            return self._compiled.search(_go_string(value)) is not None


def compile_matcher_regexp(pattern: str) -> GoRegexp:
    """Compile ``^(?:pattern)$``; ``ValueError`` with RE2's reason where Go would refuse it."""
    try:
        compiled: _Compiled = re2.compile("^(?:" + pattern + ")$", _OPTIONS)
    except re2.error as exc:
        raise ValueError(f"matcher regex {pattern!r} is invalid (RE2): {_reason(exc)}") from None
    except UnicodeEncodeError:
        raise ValueError(f"matcher regex {pattern!r} is not valid UTF-8") from None
    refusal = _go_only_refusals(pattern)
    if refusal is not None:
        raise ValueError(f"matcher regex {pattern!r} is invalid: {refusal}")
    return GoRegexp(pattern, compiled)
