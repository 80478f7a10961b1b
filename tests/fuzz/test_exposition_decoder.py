"""The scrape decoder against prometheus-client's parser, the oracle (issue 17).

The oracle is what ``FlaggerMetricsNormaliser`` did before the decoder: keep the wanted lines
(``_flagger_lines``, copied here as it was), parse them with
``prometheus_client.parser.text_string_to_metric_families`` and keep the wanted sample names.
For every generated text the decoder must answer the same samples (names, labels, values, in
order; NaN equals NaN, and the sign of a zero counts) or raise the same exception type.

The one difference, on purpose: the parser returns an integer literal as an ``int``; the decoder
returns floats, and an integer beyond the float range is ``±inf`` where ``float()`` of the
parser's ``int`` raises ``OverflowError`` (the normaliser counted both as non-finite).
:func:`as_float` applies that rule to the oracle's values.

``CANARYWATCH_SOAK=1`` multiplies the number of examples.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from canarywatch.normalise.exposition import ExpositionDecoder, ScrapeSample
from canarywatch.normalise.flagger_metrics import _DECODER, _WANTED

EXAMPLES = 3000 if os.environ.get("CANARYWATCH_SOAK") == "1" else 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_FAMILIES = frozenset(_WANTED | {name.removesuffix("_total") for name in _WANTED})


def _flagger_lines(text: str) -> str:
    """The normaliser's pre-filter before the decoder, verbatim."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and parts[2] in _FAMILIES:
                kept.append(line)
        elif line.startswith("flagger_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in _WANTED:
                kept.append(line)
    return "\n".join(kept) + "\n"


def as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def oracle(text: str) -> list[ScrapeSample]:
    return [
        ScrapeSample(sample.name, sample.labels, as_float(sample.value))
        for family in text_string_to_metric_families(_flagger_lines(text))
        for sample in family.samples
        if sample.name in _WANTED
    ]


def same_value(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def outcome(decode: Any, text: str) -> tuple[str, list[ScrapeSample]]:
    try:
        return "ok", decode(text)
    except Exception as exc:  # noqa: BLE001 - the exception type is what is compared
        return type(exc).__name__, []


def assert_same(text: str) -> str:
    expected_kind, expected = outcome(oracle, text)
    kind, got = outcome(_DECODER.decode, text)
    assert kind == expected_kind, (text, expected_kind, kind)
    assert [(s.name, s.labels) for s in got] == [(s.name, s.labels) for s in expected], text
    for mine, theirs in zip(got, expected, strict=True):
        assert same_value(mine.value, theirs.value), (text, mine, theirs)
    return kind


# -- generated exposition text ------------------------------------------------------------------

WANTED_NAMES = sorted(_WANTED)
OTHER_NAMES = [
    "flagger_canary_total",
    "flagger_canary_duration_seconds_bucket",
    "flagger_canary_successes",
    "flagger_canary_status_x",
    "go_goroutines",
    "process_cpu_seconds_total",
    "flagger_",
]
FAMILY_NAMES = [*sorted(_FAMILIES), "flagger_canary_duration_seconds", "go_gc_duration_seconds"]
TYPES = ["counter", "gauge", "summary", "histogram", "untyped", "unknown", "info", "stateset"]
LABEL_NAMES = ["name", "namespace", "workload", "metric", "version", "phase", "le", "_", "a1"]
ODD_LABEL_NAMES = ["__name__", "__x", "a:b", "1a", "a-b", '"quoted"', ""]
NUMBERS = [
    "0", "1", "2", "-1", "-0", "+0", "-0.0", "007", "100", "1.5", ".5", "5.", "1e3", "1E-3",
    "1.5e+06", "-2.5e-7", "+Inf", "-Inf", "Inf", "NaN", "1" * 400,
    "-" + "9" * 330, "1e400",
]  # fmt: skip
ODD_NUMBERS = [
    "inf",
    "nan",
    "-NaN",
    "infinity",
    "1_000",
    "0x10",
    "",
    "one",
    "1.2.3",
    "٣",
    "١٢",
    "Infinity",
    "+-1",
    "1e",
    "e1",
]

label_value_chars = st.sampled_from(
    ["\\\\", '\\"', "\\n", "\\x", "\\", '"', ",", "}", "{", "=", " "]
)
label_values = st.lists(
    label_value_chars | st.text(alphabet=st.characters(exclude_characters="\n\r"), max_size=4),
    max_size=6,
).map("".join)
VALUE_PIECES = ["\\\\", '\\"', "\\n", "\\x", ",", "}", "{", "=", " ", "é", "a", "-", "#"]
VALUE_PIECES += ["\t", "\xa0", "\x1f", "\x00", "𝔘"]  # whitespace and controls, quoted
clean_values = st.lists(
    st.sampled_from(VALUE_PIECES) | st.text(alphabet="abc xyz-._", max_size=4),
    max_size=6,
).map("".join)


@st.composite
def label_sets(draw: st.DrawFn, *, canonical: bool) -> str:
    if draw(st.integers(0, 5)) == 0:
        return ""
    names = st.sampled_from(LABEL_NAMES if canonical else LABEL_NAMES + ODD_LABEL_NAMES)
    values = clean_values if canonical else label_values
    pairs = draw(st.lists(st.tuples(names, values), max_size=4))
    if canonical:
        pairs = list(dict(pairs).items())  # each label name once
    comma = "," if canonical else draw(st.sampled_from([",", ", ", " ,", ",,"]))
    body = comma.join(f'{k}="{v}"' for k, v in pairs)
    if draw(st.booleans()) and pairs:
        body += ","
    if not canonical and draw(st.booleans()):
        body = draw(st.sampled_from([" ", ""])) + body + draw(st.sampled_from([" ", ""]))
    return "{" + body + "}"


@st.composite
def sample_lines(draw: st.DrawFn, *, canonical: bool) -> str:
    names = WANTED_NAMES if canonical else WANTED_NAMES + OTHER_NAMES
    name = draw(st.sampled_from(names))
    labels = draw(label_sets(canonical=canonical))
    numbers = st.sampled_from(NUMBERS) if canonical else st.sampled_from(NUMBERS + ODD_NUMBERS)
    floats = st.floats().map(repr)
    if canonical:
        floats = floats.filter(lambda v: "n" not in v)  # Python's "nan", "inf": not Go's
    value = draw(numbers | floats)
    line = f"{name}{labels} {value}"
    if draw(st.booleans()):
        # A timestamp past 300 characters may overflow the parser's int / 1000: it decides.
        stamps = st.sampled_from([n for n in NUMBERS if len(n) <= 300]) if canonical else numbers
        line += " " + draw(stamps | st.integers(-(10**15), 10**15).map(str))
    if not canonical:
        sep = draw(st.sampled_from([" ", "  ", "\t", " \t", ""]))
        line = line.replace(" ", sep, 1) if draw(st.booleans()) else line
        if draw(st.booleans()):
            line += draw(st.sampled_from([" ", "\t", " 3", " \u00a0", "\x1f"]))
    return line


@st.composite
def comment_lines(draw: st.DrawFn, *, canonical: bool) -> str:
    family = draw(st.sampled_from(FAMILY_NAMES))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(TYPES if canonical else [*TYPES, "foo", "", "gauge x"]))
        line = f"# TYPE {family} {kind}".rstrip() if kind else f"# TYPE {family}"
    else:
        doc = draw(st.text(alphabet='ab \\n"\t', max_size=10))
        line = f"# HELP {family} {doc}" if doc or draw(st.booleans()) else f"# HELP {family}"
    if not canonical:
        line = draw(
            st.sampled_from(
                [
                    line,
                    line.replace(" ", "\t", 1),
                    line.replace("# ", "#", 1),
                    line.replace("# ", "#x ", 1),
                    line.replace(" ", "  "),
                    line.replace(family, f'"{family}"'),
                    line.replace(" ", "\u00a0", 2),
                    " " + line,
                    line + " ",
                ]
            )
        )
    return line


junk_lines = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "#", "# a comment", "# HELP", "# TYPE", "go_goroutines 7", "}", "{"]),
)


def mutate(line: str, edits: list[tuple[int, str]]) -> str:
    for pos, insert in edits:
        pos %= max(len(line), 1)
        line = line[:pos] + insert + line[pos + 1 :]
    return line


mutated_lines = st.builds(
    mutate,
    sample_lines(canonical=True) | comment_lines(canonical=True),
    st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from(["", " ", "\t", '"', "\\", "{", "}", ",", "=", "#"]),
        ),
        min_size=1,
        max_size=3,
    ),
)
canonical_lines = sample_lines(canonical=True) | comment_lines(canonical=True)
any_lines = st.one_of(
    canonical_lines,
    sample_lines(canonical=False),
    comment_lines(canonical=False),
    junk_lines,
    mutated_lines,
)
newlines = st.sampled_from(["\n", "\n", "\n", "\r\n", "\r", "\x85", "\u2028", "\x0b"])


@st.composite
def texts(draw: st.DrawFn, lines: st.SearchStrategy[str], *, odd_newlines: bool) -> str:
    parts = draw(st.lists(lines, max_size=12))
    if odd_newlines:
        return "".join(part + draw(newlines) for part in parts)
    return "".join(part + "\n" for part in parts)


@FUZZ
@given(texts(any_lines, odd_newlines=True))
def test_decoder_answers_what_the_parser_answers(text: str) -> None:
    reference = ExpositionDecoder.reference
    with patch.object(ExpositionDecoder, "reference", autospec=True, side_effect=reference) as ref:
        kind = assert_same(text)
    event(f"{kind}, {'the parser' if ref.called else 'fast path'}")


@FUZZ
@given(texts(canonical_lines, odd_newlines=False))
def test_canonical_scrapes_are_decoded_without_the_parser(text: str) -> None:
    """A scrape as client libraries write it is decoded by the fast path alone."""
    assert_same(text)
    with patch.object(ExpositionDecoder, "reference", _no_parser):
        assert_same(text)


def _no_parser(self: ExpositionDecoder, text: str) -> list[ScrapeSample]:
    raise AssertionError(f"fell back to the parser on {text!r}")


# -- one rule at a time ---------------------------------------------------------------------------

S = "flagger_canary_status"


def decoded(text: str) -> list[ScrapeSample]:
    assert_same(text)
    return _DECODER.decode(text)


def fast(text: str) -> list[ScrapeSample]:
    """Decoded by the fast path (no fallback), and the same as the parser's."""
    assert_same(text)
    return _DECODER._decode_canonical(text)


@pytest.mark.parametrize(
    ("escaped", "value"),
    [
        ("a\\\\b", "a\\b"),
        ('a\\"b', 'a"b'),
        ("a\\nb", "a\nb"),
        ("a\\xb", "a\\xb"),  # an unknown escape stays as written
        ("a\\\\nb", "a\\nb"),  # an escaped backslash, then a plain n
        ("\\\\", "\\"),
        ('}{,= \\"#', '}{,= "#'),  # a quoted value may hold anything but an unescaped quote
        ("é𝔘\t", "é𝔘\t"),
    ],
)
def test_label_value_escapes(escaped: str, value: str) -> None:
    assert fast(f'{S}{{name="{escaped}",namespace="t"}} 1\n') == [
        (S, {"name": value, "namespace": "t"}, 1.0)
    ]


@pytest.mark.parametrize(
    ("number", "value"),
    [
        ("1", 1.0),
        ("-0", 0.0),  # int("-0") first: +0.0
        ("-0.0", -0.0),
        ("1.5e+06", 1.5e6),
        ("1E-3", 1e-3),
        (".5", 0.5),
        ("5.", 5.0),
        ("007", 7.0),
        ("+Inf", math.inf),
        ("-Inf", -math.inf),
        ("Inf", math.inf),
        ("1" * 400, math.inf),  # the parser's int, past float range: the one difference
    ],
)
def test_numbers(number: str, value: float) -> None:
    ((_, _, got),) = fast(f"{S} {number}\n")
    assert same_value(got, value)


def test_nan() -> None:
    ((_, _, got),) = fast(f"{S} NaN\n")
    assert math.isnan(got)


def test_timestamps_are_read_past() -> None:
    assert fast(f'{S}{{name="a"}} 2 1700000000000\n') == [(S, {"name": "a"}, 2.0)]
    assert fast(f"{S} 2 -1.5e3\n") == [(S, {}, 2.0)]


def test_an_integer_timestamp_past_the_float_range_is_refused() -> None:
    """The parser divides the timestamp's int by 1000: past the float range, OverflowError."""
    assert fast(f"{S} 1 {'9' * 300}\n") == [(S, {}, 1.0)]
    with pytest.raises(OverflowError):
        _DECODER.decode(f"{S} 1 {'9' * 320}\n")
    assert decoded(f"{S} 1 1e400\n") == [(S, {}, 1.0)]


def test_label_sets_empty_and_trailing_comma() -> None:
    assert fast(f"{S}{{}} 1\n") == [(S, {}, 1.0)]
    assert fast(f'{S}{{name="a",}} 1\n') == [(S, {"name": "a"}, 1.0)]
    assert fast(f"{S} 1\n") == [(S, {}, 1.0)]


def test_odd_whitespace_is_the_parsers_reading() -> None:
    """Tabs, double spaces, spaces in the label set, no space before the value: the parser."""
    for line in [
        f'{S}{{name="a"}}\t1',
        f'{S}{{name="a"}}  1  ',
        f'{S}{{name="a"}}1',
        f'{S}{{ name = "a" , namespace="b" }} 1',
    ]:
        assert decoded(line + "\n")[0][0] == S
    assert decoded(f"{S} 1 2 3\n") == [(S, {}, 1.0)]  # the middle number is ignored


def test_crlf_and_other_line_boundaries() -> None:
    text = f'# TYPE {S} gauge\r\n{S}{{name="a"}} 1\r\n'
    assert fast(text) == [(S, {"name": "a"}, 1.0)]
    assert fast(text.replace("\r\n", "\u2028")) == [(S, {"name": "a"}, 1.0)]


@pytest.mark.parametrize(
    "line",
    [
        f'{S}{{name="a",name="b"}} 1',  # duplicate label name
        f'{S}{{__name__="x"}} 1',  # the name twice
        f'{S}{{__x="y"}} 1',  # reserved label name
        f'{S}{{name="a}} 1',  # unterminated value
        f"{S}{{name=a}} 1",  # unquoted value
        f"{S} 1_000",
        f"{S} 0x10",
        f"{S} one",
        f"{S}",
        f"{S} ",
        f"# TYPE {S} foo",
        f"# TYPE {S}",
    ],
)
def test_the_parsers_rejections_are_rejections(line: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's, whatever its message
        _DECODER.decode(f"# HELP {S} x\n{line}\n")
    assert_same(line + "\n")


def test_the_parsers_leniencies_are_kept() -> None:
    assert decoded(f'{S}{{a:b="x"}} 1\n') == [(S, {"a:b": "x"}, 1.0)]
    assert decoded(f'{S}{{"quoted"="x"}} 1\n') == [(S, {"quoted": "x"}, 1.0)]


def test_other_families_are_skipped_unparsed() -> None:
    text = (
        '# HELP go_gc_duration_seconds "\n'
        "# TYPE go_gc_duration_seconds nonsense\n"
        'go_gc_duration_seconds{quantile="0"} NaN NaN NaN\n'
        "flagger_canary_duration_seconds_bucket{le= 1\n"
        "flagger_canary_status\t1\n"  # not the status: the name ends at a space or a brace
        "junk {{{\n"
        f'{S}{{name="a"}} 1\n'
    )
    assert fast(text) == [(S, {"name": "a"}, 1.0)]


def test_counter_type_renames_and_a_foreign_sample_starts_a_family() -> None:
    """The parser's family state: quirks included."""
    counter = f'# TYPE {S} counter\n{S}{{name="a"}} 1\n'
    assert fast(counter) == []  # renamed flagger_canary_status_total: not wanted
    reset = f"# TYPE {S} counter\nflagger_canary_weight 5\n{S} 1\n"
    assert fast(reset) == [("flagger_canary_weight", {}, 5.0), (S, {}, 1.0)]
    total = "# TYPE flagger_canary_successes_total counter\nflagger_canary_successes_total 3\n"
    assert fast(total) == [("flagger_canary_successes_total", {}, 3.0)]
    family = "# TYPE flagger_canary_successes counter\nflagger_canary_successes_total 3\n"
    assert fast(family) == [("flagger_canary_successes_total", {}, 3.0)]
    helped = f"# TYPE {S} counter\n# HELP {S} again\n{S} 1\n"
    assert fast(helped) == []  # HELP of the same family keeps its type
    other = f"# TYPE {S} counter\n# HELP flagger_canary_weight w\n{S} 1\n"
    assert fast(other) == [(S, {}, 1.0)]
    late = f"# HELP {S} h\n{S} 1\n# TYPE {S} counter\n"
    assert fast(late) == []  # the family's last type counts, for the samples before it too
    relaxed = f"# TYPE {S} counter\n{S} 1\n# TYPE {S} gauge\n"
    assert fast(relaxed) == [(S, {}, 1.0)]


def test_histogram_type_lets_none_of_the_bare_names_in() -> None:
    text = f"# TYPE {S} histogram\n{S} 1\n{S} 2\n"
    assert fast(text) == [(S, {}, 1.0), (S, {}, 2.0)]


def test_wanted_names_must_be_metric_names() -> None:
    with pytest.raises(ValueError, match="not a metric name"):
        ExpositionDecoder(["a b"])
    assert ExpositionDecoder([]).decode("x 1\n") == []


def test_real_fixtures_take_the_fast_path() -> None:
    paths = sorted((Path(__file__).parents[1] / "fixtures" / "flagger").glob("*.prom"))
    assert paths
    for path in paths:
        text = path.read_text()
        assert _DECODER._decode_canonical(text) == _DECODER.reference(text) == oracle(text)
