"""``classify`` (the indexed catalogue) answers exactly what the plain in-order scan answers.

The oracle is ``classify_in_order``: every catalogue entry tried in order, the first match wins.
The inputs are every message text in the fixtures (the format table, the Flagger fixtures, the
recordings), every catalogue pattern's own strings, and near misses generated from both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.normalise.test_flagger_messages import ROWS, instantiate

from canarywatch.model import Transition
from canarywatch.normalise.messages import (
    CATALOGUE,
    COMBINED_PREFIX,
    Entry,
    candidates,
    classify,
    classify_in_order,
    first_words_of,
)

TESTS = Path(__file__).parents[1]
MESSAGE_KEYS = frozenset({"message", "eventMessage"})


def _messages_in(node: Any) -> Iterator[str]:
    """Every string under a ``message``/``eventMessage`` key, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in MESSAGE_KEYS and isinstance(value, str):
                yield value
            else:
                yield from _messages_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _messages_in(value)


def _file_messages(path: Path) -> Iterator[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip() and not line.startswith("#"):
                yield from _messages_in(json.loads(line))
    else:
        yield from _messages_in(json.loads(text))


@cache
def fixture_messages() -> tuple[str, ...]:
    """Every message text the fixtures hold, each once, in a stable order."""
    found: list[str] = []
    for row in ROWS:
        found += [instantiate(row), row["format"]]
    files = sorted((TESTS / "fixtures" / "flagger").glob("*.json*"))
    files += sorted((TESTS / "recordings").rglob("*.json*"))
    for path in files:
        found += _file_messages(path)
    return tuple(dict.fromkeys(found))


def test_the_fixtures_hold_many_known_and_unknown_messages() -> None:
    messages = fixture_messages()
    known = {match.entry for text in messages if (match := classify_in_order(text))}
    assert len(messages) > 600
    assert known == {entry.name for entry in CATALOGUE}
    assert sum(classify_in_order(text) is None for text in messages) > 100


def _near_misses(text: str) -> Iterator[str]:
    """``text`` one word-level edit away: each word dropped, doubled or glued to the next."""
    words = text.split(" ")
    for i in range(len(words)):
        yield " ".join(words[:i] + words[i + 1 :])
        yield " ".join(words[: i + 1] + words[i:])
        yield " ".join(words[:i]) + "".join(words[i : i + 2]) + " ".join(words[i + 2 :])
    yield text.replace(" ", "\t", 1)
    yield text.lower()
    yield text[:1].swapcase() + text[1:]
    yield COMBINED_PREFIX + "  " + text + "\n"


def test_every_fixture_message_and_its_word_edits_classify_as_the_scan_does() -> None:
    differ = [
        (variant, classify(variant), classify_in_order(variant))
        for text in fixture_messages()
        for variant in (text, *_near_misses(text))
        if classify(variant) != classify_in_order(variant)
    ]
    assert differ == []


PIECES = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            " ",
            "  ",
            "\t",
            "\n",
            ".",
            ": ",
            "-primary.",
            " not ready",
            " not ready: ",
            "Halt ",
            "halt ",
            "advancement ",
            "exceeded its progress",
            "canary ",
            "primary deployment ",
            "waiting for rollout to finish: ",
            "deployment ",
            " is not supported when using the kubernetes provider",
            COMBINED_PREFIX,
            "%s",
            "99999999999",
        ]
    ),
)


@st.composite
def near_misses(draw: st.DrawFn, seeds: st.SearchStrategy[str]) -> str:
    """A seed with up to three edits: a piece inserted, a slice cut, or another seed spliced in."""
    text = draw(seeds)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "cut", "splice"]))
        if edit == "insert":
            text = text[:at] + draw(PIECES) + text[at:]
        elif edit == "cut":
            text = text[:at] + text[draw(st.integers(at, len(text))) :]
        else:
            other = draw(seeds)
            text = text[:at] + other[draw(st.integers(0, len(other))) :]
    return text


def _texts_of(entry: Entry) -> st.SearchStrategy[str]:
    return st.from_regex(entry.pattern, fullmatch=True)


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda entry: entry.name)
@settings(max_examples=25)
@given(data=st.data())
def test_each_entry_texts_and_near_misses_classify_as_the_scan_does(
    entry: Entry, data: st.DataObject
) -> None:
    """Strings the entry's own pattern matches (so overlapping entries meet), and near misses."""
    seeds = st.one_of(_texts_of(entry), st.sampled_from(CATALOGUE).flatmap(_texts_of))
    message = data.draw(st.one_of(_texts_of(entry), near_misses(seeds)))
    assert classify(message) == classify_in_order(message)


@given(near_misses(st.sampled_from(fixture_messages())))
@example("primary deployment podinfo-primary.test not ready: exceeded its progress deadline")
@example("Halt podinfo.test advancement waiting for rollout to finish: 0 of 1 updated")
def test_fixture_near_misses_classify_as_the_scan_does(message: str) -> None:
    assert classify(message) == classify_in_order(message)


@given(st.text())
def test_any_text_classifies_as_the_scan_does(message: str) -> None:
    assert classify(message) == classify_in_order(message)


# -- the index itself -------------------------------------------------------------------------


def _entry(source: str, flags: int = 0) -> Entry:
    return Entry("probe", re.compile(source, flags), None)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("Halt x", {"Halt"}),
        ("Confirm-rollout check (?P<hook>.+) passed", {"Confirm-rollout"}),
        (r"Foo (?:a|b) \| []|x] [^]|] bar", {"Foo"}),
        ("Foo ?bar", None),
        ("Foo +bar", None),
        ("Foo{2} bar", None),
        ("Foo bar|baz", None),
        ("Foo [|] bar|baz", None),
        ("Foo []|] bar|baz", None),
        ("(?:Foo|Bar) baz", None),
        ("[Ff]oo bar", None),
        (".+ bar", None),
        ("Foo", None),
    ],
)
def test_first_words_are_read_only_from_a_literal_leading_word(
    source: str, words: set[str] | None
) -> None:
    assert first_words_of(_entry(source)) == (None if words is None else frozenset(words))


def test_a_case_blind_or_verbose_pattern_has_no_first_word() -> None:
    assert first_words_of(_entry("Foo bar", re.IGNORECASE)) is None
    assert first_words_of(_entry("Foo bar", re.VERBOSE)) is None


def test_declared_first_words_are_those_the_pattern_cannot_state() -> None:
    for entry in CATALOGUE:
        if entry.first_words:
            assert first_words_of(Entry(entry.name, entry.pattern, None)) is None, entry.name


def test_every_entry_is_indexed_by_a_first_word_or_a_needed_literal() -> None:
    """Keeps ``classify`` from falling back to trying regular expressions blindly."""
    assert [e.name for e in CATALOGUE if first_words_of(e) is None and not e.needs] == []


def test_candidates_keep_catalogue_order() -> None:
    order = {entry.name: i for i, entry in enumerate(CATALOGUE)}
    for text in fixture_messages():
        ranks = [order[entry.name] for entry in candidates(text.strip())]
        assert ranks == sorted(ranks)
    halt = [entry.name for entry in candidates("Halt podinfo.test advancement")]
    assert halt[0] == "gate-rollout-waiting"
    assert "primary-not-ready" in halt
    assert "initialized" not in halt


def test_the_first_match_in_catalogue_order_still_wins() -> None:
    # Both "progress-deadline-not-ready" and "other-not-ready" match; the earlier one wins.
    message = "canary deployment podinfo.test not ready: exceeded its progress deadline"
    match = classify(message)
    assert match is not None
    assert (match.entry, match.transition) == (
        "progress-deadline-not-ready",
        Transition.ROLLED_BACK,
    )
    assert match == classify_in_order(message)
