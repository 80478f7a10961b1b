"""Hypothesis over the decoders of untrusted input: Flagger's messages, the watch stream's line
framing, Flagger's ``/metrics`` exposition, Kubernetes watch events, and the config file.

Each must be total on arbitrary input: it answers (a match or ``None``, a ``Normalised`` with an
outcome and a note, a ``Config`` or a ``ConfigError`` naming the file) and never raises anything
else or hangs (hypothesis' per-example ``deadline`` catches a pathological regex or loop).
``CANARYWATCH_SOAK=1`` multiplies the number of examples.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canarywatch.config import ConfigError, parse_config
from canarywatch.model import Observation, Outcome, SourceName
from canarywatch.normalise.flagger_metrics import FlaggerMetricsNormaliser
from canarywatch.normalise.messages import classify
from canarywatch.pipeline.policy import build_pipeline

# The watch loop's line framing is a private helper of ``sources.watch`` (it reads any object
# with ``readany()``); there is no public pure function for it, so it is imported directly.
from canarywatch.sources.watch import _Failure, _lines

EXAMPLES = 1000 if os.environ.get("CANARYWATCH_SOAK") == "1" else 120
FUZZ = settings(
    max_examples=EXAMPLES,
    # No per-example deadline: a multi-megabyte example on a loaded 2-core CI machine took over
    # 2 s, Hypothesis then replayed it to report a "deadline" failure and failed on the repr of
    # the 4 MB input instead. The properties that matter bound time themselves (the framing test
    # asserts "never hangs" with its own 10 s timeout).
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
AT = datetime(2026, 8, 4, 14, 8, 2, tzinfo=UTC)

# Fragments of real Flagger messages, recombined with noise: close to the catalogue's regexes.
FRAGMENTS = [
    "Halt ",
    "advancement ",
    "podinfo.test ",
    "success rate ",
    "96.12% < 99%",
    "Advance ",
    "canary weight ",
    "canary iteration 3/10",
    "Rolling back ",
    "failed checks threshold reached 5",
    "Canary failed! ",
    "New revision detected! Scaling up ",
    "(combined from similar events): ",
    "waiting for approval ",
    "Promotion completed! ",
    "no values found for ",
    "Copying podinfo.test template spec to podinfo-primary.test",
    "%",
    "\n",
    "\x00",
    "é",
    "𝔘",
]
messages = st.one_of(
    st.text(max_size=400),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=30).map("".join),
    st.builds(lambda n: "Halt " + "a" * n + " advancement", st.integers(0, 50_000)),
)


@FUZZ
@given(messages)
def test_classify_is_total(message: str) -> None:
    found = classify(message)
    assert found is None or found.__class__.__name__ == "MessageMatch"


# -- the watch stream's line framing ------------------------------------------------------------


class ChunkReader:
    """Stands in for ``aiohttp.StreamReader``: hands out pre-cut chunks, then EOF."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = list(chunks)

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        return self._chunks.pop(0) if self._chunks else b""


def good_line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


line_bodies = st.one_of(
    st.binary(max_size=300),  # anything: invalid UTF-8, NULs, stray newlines
    st.builds(
        lambda n: good_line({"type": "ADDED", "object": {"message": "x" * n}}),
        st.integers(0, 2_000_000),  # huge lines, past aiohttp's 128 KiB readline cap
    ),
    st.builds(lambda b: good_line({"type": "MODIFIED", "object": {}})[:b], st.integers(0, 40)),
)


@FUZZ
@given(
    st.lists(line_bodies, max_size=8),
    st.lists(st.integers(1, 4096), min_size=1, max_size=8),
)
async def test_watch_line_framing_never_hangs_and_rejects_truncation(
    bodies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(bodies)
    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        size = cuts[i % len(cuts)] * (1 + len(stream) // 65536)
        chunks.append(stream[pos : pos + size])
        pos += size
        i += 1
    out: list[bytes] = []
    failure: _Failure | None = None
    async with asyncio.timeout(10):
        try:
            async for line in _lines(ChunkReader(chunks)):  # type: ignore[arg-type]
                out.append(line)
        except _Failure as exc:
            failure = exc
    complete, _, tail = stream.rpartition(b"\n")
    expected = [ln for ln in complete.split(b"\n") if ln.strip()] if b"\n" in stream else []
    assert out == expected
    if tail.strip():
        assert failure is not None
        assert failure.reason == "malformed"  # the rejection carries its reason
    else:
        assert failure is None


# -- Kubernetes watch events through the pipeline -----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
event_objects = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["Event", "Canary", "Pod"]) | st.text(max_size=5),
        "metadata": st.fixed_dictionaries(
            {}, optional={"name": st.text(max_size=10), "namespace": json_values}
        )
        | json_values,
        "involvedObject": st.fixed_dictionaries(
            {},
            optional={
                "kind": st.sampled_from(["Canary", "Pod"]) | json_values,
                "name": json_values,
                "namespace": json_values,
            },
        )
        | json_values,
        "message": messages | json_values,
        "type": st.sampled_from(["Normal", "Warning"]) | json_values,
        "count": st.integers(-5, 10**12) | json_values,
        "lastTimestamp": st.sampled_from(["2026-08-04T14:08:02Z", "yesterday", ""]) | json_values,
        "status": json_values,
    },
)


@FUZZ
@given(
    st.sampled_from([SourceName.KUBERNETES_EVENTS, SourceName.CANARIES]),
    st.fixed_dictionaries({"type": st.sampled_from(["ADDED", "MODIFIED", "DELETED", "?"])}).flatmap(
        lambda d: st.fixed_dictionaries({"type": st.just(d["type"]), "object": event_objects})
    )
    | json_values,
)
def test_pipeline_counts_every_odd_observation(source: SourceName, data: Any) -> None:
    pipeline = build_pipeline(None)
    pipeline.observe(Observation(at=AT, source=source, data=data), AT)
    pipeline.due(AT)
    assert sum(pipeline.stats.outcomes.values()) == 1  # counted under exactly one outcome


# -- Flagger's /metrics -------------------------------------------------------------------------

VALID_EXPOSITION = (
    "# HELP flagger_canary_status Last canary analysis result\n"
    "# TYPE flagger_canary_status gauge\n"
    'flagger_canary_status{name="podinfo",namespace="test"} 1\n'
    "# TYPE flagger_canary_weight gauge\n"
    'flagger_canary_weight{workload="podinfo",namespace="test"} 20\n'
    "# TYPE flagger_info gauge\n"
    'flagger_info{version="1.44.0",mesh_provider="istio"} 1\n'
)


def mutate(text: str, edits: list[tuple[int, str]]) -> str:
    for pos, insert in edits:
        pos %= max(len(text), 1)
        text = text[:pos] + insert + text[pos + 1 :]
    return text


@FUZZ
@given(
    st.one_of(
        st.text(max_size=2000),
        st.lists(st.tuples(st.integers(0, 10_000), st.text(max_size=6)), max_size=10).map(
            lambda edits: mutate(VALID_EXPOSITION, edits)
        ),
        st.binary(max_size=500),
    ),
    st.integers(1, 3),
)
def test_metrics_normaliser_is_total(text: str | bytes, scrapes: int) -> None:
    normaliser = FlaggerMetricsNormaliser()
    for _ in range(scrapes):
        data: Any = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        result = normaliser(Observation(at=AT, source=SourceName.FLAGGER_METRICS, data=data))
        assert isinstance(result.outcome, Outcome)
        if result.outcome is Outcome.MALFORMED:
            assert result.note  # a rejection names its reason


# -- the config loader --------------------------------------------------------------------------


def printable(text: str) -> str:
    """Without the C0/C1 controls YAML's reader refuses, to reach deeper than the reader."""
    return "".join(
        ch for ch in text if ch in "\t\n\r" or not (ord(ch) < 32 or 127 <= ord(ch) < 160)
    )


config_docs = st.one_of(
    st.text(max_size=500),  # control characters included: refused by the reader
    st.text(max_size=500).map(printable),
    json_values.map(lambda v: yaml.safe_dump(v, default_flow_style=False)),
    st.dictionaries(
        st.sampled_from(
            ["receivers", "route", "state", "clusters", "server", "dispatch", "silences", "x"]
        ),
        json_values,
        max_size=4,
    ).map(lambda v: yaml.safe_dump(v)),
    st.sampled_from(["{", "a: [", "&a [*a]", "!!python/object:os.system x", "a: *b", "\t- x"]),
)


@FUZZ
@given(config_docs)
def test_config_loader_answers_config_or_config_error(text: str) -> None:
    try:
        parse_config(text, filename="fuzz.yaml", environ={})
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert "fuzz.yaml" in message  # the rejection names the file (and key or line)


@pytest.mark.parametrize("text", ["\x1f", "a: b\x07"])
def test_control_characters_are_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match=r"fuzz\.yaml"):
        parse_config(text, filename="fuzz.yaml", environ={})


def test_yaml_bombs_are_refused_quickly() -> None:
    """Billion laughs: aliases nested ten deep must be rejected, not expanded."""
    bomb = "a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
        f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
        for i in range(9)
    )
    with pytest.raises(ConfigError):
        parse_config(bomb, filename="bomb.yaml", environ={})
