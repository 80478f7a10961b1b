"""A fast decoder of the Prometheus text exposition format (0.0.4), for a few sample names only.

:class:`ExpositionDecoder` answers what this did before, for every input::

    [s for f in text_string_to_metric_families(kept_lines(text)) for s in f.samples
     if s.name in wanted]

where ``kept_lines`` keeps only the ``# HELP``/``# TYPE`` lines of the wanted families and the
sample lines of the wanted names (prometheus-client's pure-Python parser is the reference, and
``tests/fuzz/test_exposition_decoder.py`` holds the decoder to it). The cost of that parser was
its per-character label scanning; a real scrape is written by a client library in one
canonical form, which one regular expression per line decodes.

How: the text is split into lines (``str.splitlines``, so ``\\r\\n`` and the other line
boundaries count as before) and each line is classified with ``str`` methods:

- A line of another family (``go_*``, ``process_*``, Flagger's duration histograms, ...) is
  skipped without being parsed: a malformed line there is not an error, as before (the old code
  dropped those lines before the parser saw them).
- A kept line in the canonical form is decoded here: ``# HELP <family> [text]``, ``# TYPE
  <family> <known type>``, and ``<name>[{<label>="<value>",...[,]}] <number>[ <number>]``, with
  single spaces, label names ``[a-zA-Z_][a-zA-Z0-9_]*`` not starting with ``__``, each at most
  once, label values with any escapes (``\\\\``, ``\\"`` and ``\\n`` are decoded, any other
  backslash stays as written), numbers in ASCII decimal or exponent form, ``NaN``, ``+Inf``,
  ``-Inf``, ``Inf`` (an optional timestamp is read past). The parser accepts every such line
  and reads it the same way.
- Any other kept line (odd whitespace, tabs, a duplicate or reserved label name, ``:`` in a
  label name, a missing value, a third number, an unknown ``TYPE``, ...) is rare and full of the
  parser's quirks, so the whole scrape is then handed to the parser itself, exactly as before:
  its answer, or its exception (``ValueError`` mostly), is the decoder's.

The families' state is kept as the parser keeps it, quirks included: a sample of a ``counter``
family whose name does not end in ``_total`` is renamed ``<name>_total`` (so
``# TYPE flagger_canary_status counter`` hides the status samples of its family), by the type
the family has when it ends (a ``TYPE`` line after its samples counts), and a sample outside its
family's names starts a family of its own.

Values are floats. Where the parser returns an ``int`` (an integer literal), this is the same
number as a float, except that an integer beyond the float range is ``±inf`` (``float()`` of the
parser's ``int`` raises ``OverflowError``; the normaliser counted both as non-finite).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

_METRIC_NAME: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

_NUMBER: Final = r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|Inf)|NaN"
"""What ``int()``/``float()`` accept of Go's and Python's renderings of a float: ASCII only."""
_LABEL_NAME: Final = r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*"
"""Unquoted, and not reserved: the parser refuses ``__*`` (``__name__`` differently)."""
_LABEL_VALUE: Final = r'"(?:[^"\\]|\\.)*"'
"""A quoted value, escapes kept: an even run of backslashes before a quote does not escape it."""
_LABEL: Final = re.compile(r'((?!__)[a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', re.DOTALL)
_MAX_TIMESTAMP_CHARS: Final = 300
"""Longer, an integer timestamp may be past the float range: the parser's ``int / 1000`` then
raises ``OverflowError`` (the scrape is refused), so the parser decides."""
_ESCAPE: Final = re.compile(r'\\[\\n"]')
_UNESCAPED: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}

ALLOWED_SUFFIXES: Final[dict[str, tuple[str, ...]]] = {
    "counter": ("",),
    "gauge": ("",),
    "summary": ("_count", "_sum", ""),
    "histogram": ("_count", "_sum", "_bucket"),
}
"""The sample names (suffixes of the family's name) a ``TYPE`` line lets into its family."""
KNOWN_TYPES: Final = frozenset(
    {"counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info", "stateset"}
    | {"untyped"}
)
"""The types ``prometheus_client`` builds a family of (another one is a ``ValueError``)."""


class ScrapeSample(NamedTuple):
    """One decoded sample: what canarywatch reads of prometheus-client's ``Sample``."""

    name: str
    labels: dict[str, str]
    value: float


class _Fallback(Exception):
    """A kept line outside the canonical form: decode the scrape with the reference parser."""


class ExpositionDecoder:
    """Decodes the samples named ``wanted`` (and the families they belong to) from scrapes."""

    def __init__(self, wanted: Iterable[str]) -> None:
        self.wanted: frozenset[str] = frozenset(wanted)
        for name in self.wanted:
            if not _METRIC_NAME.fullmatch(name):
                raise ValueError(f"not a metric name: {name!r}")
        self.families: frozenset[str] = self.wanted | {
            name.removesuffix("_total") for name in self.wanted
        }
        names = "|".join(re.escape(n) for n in sorted(self.wanted, key=len, reverse=True))
        families = "|".join(re.escape(n) for n in sorted(self.families, key=len, reverse=True))
        labels = rf"(?:{_LABEL_NAME}={_LABEL_VALUE},)*(?:{_LABEL_NAME}={_LABEL_VALUE})?"
        self._sample = re.compile(
            rf"({names})(?:\{{({labels})\}})? ({_NUMBER})(?: ({_NUMBER}))?", re.DOTALL
        )
        self._starts = tuple(sorted(self.wanted))
        """What a sample line that may be kept starts with: the others are skipped on this."""
        self._help = re.compile(rf"# HELP ({families})(?: .*)?", re.DOTALL)
        self._type = re.compile(rf"# TYPE ({families}) ([a-z]+)")

    def decode(self, text: str) -> list[ScrapeSample]:
        """The wanted samples of ``text`` in order; raises what the parser raises on bad lines."""
        try:
            return self._decode_canonical(text)
        except _Fallback:
            return self.reference(text)

    def reference(self, text: str) -> list[ScrapeSample]:
        """The same answer from prometheus-client's parser (slow): the fallback, and the oracle."""
        return [
            ScrapeSample(sample.name, sample.labels, _as_float(sample.value))
            for family in text_string_to_metric_families(self.kept_lines(text))
            for sample in family.samples
            if sample.name in self.wanted
        ]

    def kept_lines(self, text: str) -> str:
        """Only the wanted families' ``HELP``/``TYPE`` lines and the wanted names' samples."""
        return "".join(line + "\n" for line in text.splitlines() if self._kept(line))

    def _kept(self, line: str) -> bool:
        if line.startswith("#"):
            parts = line.split(None, 3)
            return len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in self.families
        return line.startswith(self._starts) and _sample_name(line) in self.wanted

    def _decode_canonical(self, text: str) -> list[ScrapeSample]:
        out: list[ScrapeSample] = []
        family = ""
        kind = "untyped"
        allowed: tuple[str, ...] = ()
        members: list[ScrapeSample] = []
        wanted = self.wanted
        sample_re = self._sample.fullmatch
        starts = self._starts
        for line in text.splitlines():
            if line.startswith("#"):
                parts = line.split(None, 3)
                if not (
                    len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in self.families
                ):
                    continue
                if parts[1] == "HELP":
                    found = self._help.fullmatch(line)
                    if found is None:
                        raise _Fallback
                    if found[1] != family:
                        _close(out, family, kind, members, wanted)
                        family, kind, allowed, members = found[1], "untyped", (found[1],), []
                    continue
                typed = self._type.fullmatch(line)
                if typed is None or typed[2] not in KNOWN_TYPES:
                    raise _Fallback
                if typed[1] != family:
                    _close(out, family, kind, members, wanted)
                    family, members = typed[1], []
                kind = typed[2]
                allowed = tuple(family + s for s in ALLOWED_SUFFIXES.get(kind, ("",)))
                continue
            if not line.startswith(starts):
                continue  # another family's (or a junk) line, not parsed
            match = sample_re(line)
            if match is None:
                if _sample_name(line) in wanted:
                    raise _Fallback
                continue
            name, label_text, number, timestamp = match.groups()
            if timestamp is not None and len(timestamp) > _MAX_TIMESTAMP_CHARS:
                raise _Fallback
            sample = ScrapeSample(name, _labels(label_text), _number(number))
            if name in allowed:
                members.append(sample)
            else:  # a family of its own, untyped
                _close(out, family, kind, members, wanted)
                family, kind, allowed, members = "", "untyped", (), []
                out.append(sample)
        _close(out, family, kind, members, wanted)
        return out


def _close(
    out: list[ScrapeSample],
    family: str,
    kind: str,
    members: list[ScrapeSample],
    wanted: frozenset[str],
) -> None:
    """A family ends: its samples, renamed ``<name>_total`` if its type (the last one) says so."""
    if kind == "counter" and not family.endswith("_total"):
        for sample in members:
            renamed = sample.name + "_total"
            if renamed in wanted:
                out.append(sample._replace(name=renamed))
    else:
        out.extend(members)


def _sample_name(line: str) -> str:
    """The name a sample line was kept or skipped by before the parser (not the parser's)."""
    return line.split("{", 1)[0].split(" ", 1)[0]


def _labels(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    pairs = _LABEL.findall(text)
    labels = dict(pairs)
    if len(labels) != len(pairs):
        raise _Fallback  # the parser refuses a duplicate label name
    if "\\" in text:
        for key, value in pairs:
            if "\\" in value:
                labels[key] = _ESCAPE.sub(_unescape, value)
    return labels


def _unescape(found: re.Match[str]) -> str:
    return _UNESCAPED[found[0]]


def _number(text: str) -> float:
    value = float(text)
    if not value and text.startswith("-"):
        # The parser tries int() first: "-0" is int 0, so +0.0 (but "-0.0" is -0.0).
        try:
            return float(int(text))
        except ValueError:
            return value
    return value


def _as_float(value: float) -> float:
    """The parser's value (an ``int`` for an integer literal) as a float; ±inf beyond range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
