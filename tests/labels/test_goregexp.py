"""Matcher regular expressions are Go's (RE2), checked against the real Alertmanager.

``CASES`` is what Alertmanager 0.25 (Go 1.19 ``regexp``) does with each pattern in a route
``matchers: ['label=~"PATTERN"']``: refuse the config, or route each label value to the child
or not. canarywatch must do the same through the same config (validation and routing); the
``needs_binaries`` test asks ``amtool`` the very same questions, so the table is the real
Alertmanager's word, not ours.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.amtool import AlertmanagerOracle

from canarywatch.config import ConfigError, parse_config
from canarywatch.labels.goregexp import compile_matcher_regexp
from canarywatch.labels.matchers import escape_value
from canarywatch.pipeline import policy

ACCEPTED: list[tuple[str, dict[str, bool]]] = [
    # Perl classes are ASCII in Go: \w, \d, \s, \b know nothing of "ë", "٣" or NBSP.
    (r"\w+", {"Zoë": False, "Zoe": True, "a_1": True}),
    (r"\d", {"٣": False, "3": True}),
    (r"\s", {"\u00a0": False, " ": True}),
    (r"\b\w+\b", {"é": False, "ab": True}),
    (r"\W", {"ë": True}),
    # Go has no {,n}: it is a literal.
    (r"x{,2}", {"x{,2}": True, "x": False, "xx": False}),
    (r"a\z", {"a": True, "ab": False}),
    # Unicode and POSIX classes, quoting, flags, code points: RE2 syntax Python lacks.
    (r"\pL+", {"Zoë": True, "1": False}),
    (r"\p{Greek}+", {"αβ": True, "a": False}),
    (r"\PL", {"1": True, "a": False}),
    (r"[[:alpha:]]+", {"ab": True, "Zoë": False}),
    (r"[[:^digit:]]", {"a": True, "1": False}),
    (r"\Q.*\E", {".*": True, "ab": False}),
    (r"(?U)a+", {"aa": True}),
    (r"\x{eb}", {"ë": True, "e": False}),
    (r"(?i)zoË", {"ZOë": True}),
    (r"(?i)k", {"\u212a": True}),  # Kelvin sign folds to k
    (r"(?P<name>a)", {"a": True}),
    (r"a{1000}", {"a" * 1000: True, "a" * 999: False}),
    # Anchoring is ^(?:…)$ around the text as written, quirks included.
    (r"a)|(b", {"axyz": True, "b": True, "xb": True, "x": False}),
    (r"x", {"x\n": False}),
    (r".", {"\n": False}),
    (r"(?s).", {"\n": True}),
    (r"[^a]", {"\n": True}),
    (r"a|", {"a": True, "b": False}),
]

REFUSED: list[str] = [
    r"(?=a)",  # look-ahead
    r"(?!a)",
    r"(?<=a)",  # look-behind
    r"\Z",  # Python's end of text; RE2 writes \z
    r"a{1001}",  # repeat count over 1000
    r"(?:a{31}){33}",  # nested repeat counts multiply past 1000
    r"a*+",  # possessive
    r"a++",
    r"\u00eb",  # Python's code point escape; RE2 writes \x{eb}
    r"\1",  # back-reference
    r"(?P=n)",
    r"(?x)a b",  # verbose flag
    r"(?#note)",
    r"(?>a)",  # atomic group
    r"\N{SPACE}",
    r"\p{Foo}",
    r"[z-a]",
    r"(unclosed",
    # C++ RE2 accepts these; Go (and so Alertmanager 0.25) does not.
    r"\C",
    r"(?<name>a)",
    r"(?P<é>a)",
]

RESIDUAL: list[tuple[str, bool]] = [
    # (pattern, Alertmanager accepts): documented differences between Go and C++ RE2.
    (r"\pL{500}", True),  # over C++ RE2's 8 MiB budget for the compiled program
    (r"\p{Kawi}", False),  # Unicode 15 script: newer than Go 1.19's tables
    ("(" * 999 + ")" * 999, False),  # Go's nesting limit; C++ RE2 has none as low
]


def matcher(pattern: str) -> str:
    return f'label=~"{escape_value(pattern)}"'


def config(pattern: str, *, canarywatch: bool) -> dict[str, Any]:
    """The same route tree for both; only the receivers' shape differs."""
    names = ("default", "hit")
    receivers = [{"name": n, "sink": "console"} if canarywatch else {"name": n} for n in names]
    return {
        "route": {
            "receiver": "default",
            "routes": [{"receiver": "hit", "matchers": [matcher(pattern)]}],
        },
        "receivers": receivers,
    }


def canarywatch_receivers(pattern: str, value: str) -> list[str]:
    loaded = parse_config(json.dumps(config(pattern, canarywatch=True)), filename="c.yaml")
    return [node.receiver for node in policy.build_route(loaded.route).match({"label": value})]


@pytest.mark.parametrize(("pattern", "values"), ACCEPTED, ids=[p for p, _ in ACCEPTED])
def test_accepted_patterns_match_as_go_does(pattern: str, values: dict[str, bool]) -> None:
    for value, hit in values.items():
        expected = ["hit"] if hit else ["default"]
        assert canarywatch_receivers(pattern, value) == expected, (pattern, value)


@pytest.mark.parametrize("pattern", REFUSED)
def test_refused_patterns_are_config_errors_naming_the_key(pattern: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config(pattern, canarywatch=True)), filename="c.yaml")
    assert caught.value.path == "route.routes[0].matchers[0]"
    assert caught.value.message.startswith(f"matcher regex {pattern!r} is invalid")


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [
        (r"(?=a)", "no look-ahead"),
        (r"\Z", r"\z"),
        (r"a{1001}", "at most 1000"),
        (r"a*+", "possessive"),
        (r"\u00eb", r"\x{eb}"),
        (r"\1", "back-references"),
        (r"(?<n>a)", "(?P<name>re)"),
    ],
)
def test_refusals_say_what_to_write_instead(pattern: str, hint: str) -> None:
    with pytest.raises(ValueError, match="matcher regex") as caught:
        compile_matcher_regexp(pattern)
    assert hint in str(caught.value)


def test_lone_surrogate_in_a_label_value_matches_as_replacement_character() -> None:
    # Not UTF-8, so not a Go string: Go's JSON decoder would have made it U+FFFD.
    assert compile_matcher_regexp("x.").matches("x\ud800")
    assert compile_matcher_regexp("x\ufffd").matches("x\udfff")
    assert not compile_matcher_regexp("x").matches("x\ud800")


@pytest.mark.parametrize(("pattern", "alertmanager_accepts"), RESIDUAL)
def test_residual_differences_are_as_documented(pattern: str, alertmanager_accepts: bool) -> None:
    """canarywatch decides these the other way round (README, goregexp docstring)."""
    try:
        compile_matcher_regexp(pattern)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted is not alertmanager_accepts


# --- the real Alertmanager decides ---------------------------------------------------------------


@pytest.fixture(scope="module")
def amtool(tmp_path_factory: pytest.TempPathFactory) -> AlertmanagerOracle:
    return AlertmanagerOracle(tmp_path_factory.mktemp("amtool"))


@pytest.mark.needs_binaries
@pytest.mark.parametrize(("pattern", "values"), ACCEPTED, ids=[p for p, _ in ACCEPTED])
def test_alertmanager_agrees_on_accepted_patterns(
    amtool: AlertmanagerOracle, pattern: str, values: dict[str, bool]
) -> None:
    checked = amtool.check(config(pattern, canarywatch=False))
    assert checked.ok, f"amtool refused {pattern!r}: {checked.output}"
    for value in values:
        go = amtool.receivers(checked, {"label": value})
        ours = canarywatch_receivers(pattern, value)
        assert ours == go, f"{pattern!r} on {value!r}: amtool {go}, canarywatch {ours}"


@pytest.mark.needs_binaries
@pytest.mark.parametrize("pattern", REFUSED)
def test_alertmanager_agrees_on_refused_patterns(amtool: AlertmanagerOracle, pattern: str) -> None:
    checked = amtool.check(config(pattern, canarywatch=False))
    assert not checked.ok, f"amtool accepted {pattern!r}, canarywatch refuses it"


@pytest.mark.needs_binaries
@pytest.mark.parametrize(("pattern", "alertmanager_accepts"), RESIDUAL)
def test_alertmanager_side_of_the_residual_differences(
    amtool: AlertmanagerOracle, pattern: str, alertmanager_accepts: bool
) -> None:
    checked = amtool.check(config(pattern, canarywatch=False))
    assert checked.ok is alertmanager_accepts, checked.output
