"""Every Event message format of every Flagger release means what ``flagger_messages.json`` says.

The table is extracted from Flagger's source at every release tag by
``extract_flagger_messages.py`` (beside this file); its ``transition`` column is human judgement.
Each format is instantiated here with realistic values and must classify as that column says:
a transition name, ``informational`` (known, never notified), ``ignored`` (a raw controller or
Kubernetes error: unknown, never notified) or ``not-emitted`` (reachable in the source as the
extraction reads it, but never recorded; not instantiated).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canarywatch.model import TRANSITIONS, Observation, Outcome, SourceName, Transition
from canarywatch.normalise.kube_events import KubeEventNormaliser
from canarywatch.normalise.messages import CATALOGUE, MessageMatch, classify
from canarywatch.normalise.webhook import normalise_webhook

TABLE: dict[str, Any] = json.loads(
    (Path(__file__).with_name("flagger_messages.json")).read_text(encoding="utf-8")
)
ROWS: list[dict[str, Any]] = TABLE["formats"]
EMITTED = [row for row in ROWS if row["transition"] != "not-emitted"]
NON_TRANSITIONS = {"informational", "ignored", "not-emitted"}
PAGING = {
    Transition.ROLLED_BACK,
    Transition.PROMOTION_FAILED,
    Transition.HALTED,
    Transition.NO_TRAFFIC,
    Transition.AWAITING_APPROVAL,
    Transition.WEBHOOK_FAILED,
    Transition.NOT_READY,
}
AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
NAME, NAMESPACE = "podinfo", "test"

_VERB = re.compile(r"%(?:%|[-+# 0]*(?:\d+|\*)?(?:\.(?:\d+|\*)?)?[a-zA-Z])")

# Realistic texts for an error that fills a ``%v``/``%w``, by what the format is about.
_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"no values found"), "no values found"),
    (
        re.compile(r"(?i)prometheus|metric|provider|knative service %s/%s"),
        'Post "http://prometheus.istio-system:9090/api/v1/query": dial tcp 10.96.0.10:9090: '
        "connect: connection refused",
    ),
    (re.compile(r"check %s failed|hook %s failed"), "error response from webhook: 500"),
    (
        re.compile(r"not ready|progress deadline"),
        "waiting for rollout to finish: 1 old replicas are pending termination",
    ),
)
_KUBE_ERROR = 'deployments.apps "podinfo" not found'


def _error_text(fmt: str) -> str:
    for pattern, text in _ERRORS:
        if pattern.search(fmt):
            return text
    return _KUBE_ERROR


# (substring of the lower-cased Go expression, value): the first that matches fills the verb.
_BY_EXPRESSION: tuple[tuple[str, str], ...] = (
    ("weight", "30"),
    ("primary", "podinfo-primary"),
    ("hook", "load-test"),
    ("templateref", "error-rate"),
    ("iterations+1", "3"),
    ("iterations", "10"),
    ("failedchecks", "5"),
    ("kind", "Deployment"),
    ("revision", "podinfo-00002"),
    ("resourceversion", "48215181"),
    ("parentref", "public-gateway"),
    ("condition.status", "False"),
    ("updatestrategy", "OnDelete"),
    ("progressdeadline", "600"),
)


def _number(expr: str, ints: list[int]) -> str:
    low = expr.lower()
    if "threshold" in low:
        return "100"
    if "deadline" in low:
        return "600"
    ints.append(len(ints) + 1)
    return str(ints[-1])


def _value(verb: str, expr: str, fmt: str, before: str, ints: list[int]) -> str:
    """A realistic value for one verb, from the Go expression Flagger passes to it."""
    low = expr.lower()
    if verb.endswith("d"):
        return _number(expr, ints)
    if verb.endswith("f"):
        return verb % (96.12 if "success rate" in before else 12.5)
    if verb == "%q":
        return '"podinfo-primary"' if "primary" in before else '"podinfo"'
    if verb == "%+v":
        return "{Name:x-canary Value:insider}"
    if "retri" in low or "retry" in low:
        return "false" if "deadline" in fmt.lower() else "true"
    # ``%w`` is always an error; so is a client call's result (``….Update(…)``) under ``%v``.
    errorish = low.startswith("err") or low.endswith(("err", ".error()"))
    if verb == "%w" or errorish or (verb == "%v" and "client" in low):
        return _error_text(fmt)
    if "namespace" in low or low == "ns":
        return NAMESPACE
    if "metricsserver" in low:
        return "http://prometheus.istio-system:9090"
    if "secret" in low:
        return "prom-auth"
    if "provider" in low:
        return "istio"
    if "metric" in low:
        return "request-success-rate" if "probably" in fmt else "error-rate"
    if low == "val":
        return "1.283s" if "duration" in before else "96.12"
    if "max" in low or "min" in low:
        if "duration" in before:
            return "500ms"
        return "99" if "success rate" in before else "5"
    for key, value in _BY_EXPRESSION:
        if key in low:
            return value
    return NAME


def instantiate(row: dict[str, Any]) -> str:
    """The format filled with realistic values, as Flagger would have recorded it."""
    fmt: str = row["format"]
    args: list[str] = row["args"]
    out: list[str] = []
    ints: list[int] = []
    pos = k = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        if m[0] == "%%":
            out.append("%")
            continue
        expr = args[k] if k < len(args) else ""
        out.append(_value(m[0], expr, fmt, fmt[: m.start()], ints))
        k += 1
    out.append(fmt[pos:])
    return "".join(out)


def _expected_ok(row: dict[str, Any], match: MessageMatch | None) -> bool:
    meaning = row["transition"]
    if meaning == "ignored":
        return match is None
    if meaning == "informational":
        return match is not None and match.transition is None
    return match is not None and match.transition is Transition(meaning)


def _row_id(row: dict[str, Any]) -> str:
    return f"{row['type'][0]}:{row['format'][:70]}"


# -- the table itself ----------------------------------------------------------------------


def test_the_table_covers_every_release_and_is_fully_judged() -> None:
    tags = TABLE["tags"]
    assert len(tags) >= 100
    assert tags[0] == "0.0.1"
    assert "v1.44.0" in tags
    valid = {t.value for t in TRANSITIONS} | NON_TRANSITIONS
    unjudged = [r["format"] for r in ROWS if r["review"] or r["transition"] not in valid]
    assert unjudged == [], "new formats need a human decision (transition, why)"
    assert all(r["why"] for r in ROWS)
    assert all(r["type"] in {"Normal", "Warning"} for r in ROWS)
    for row in ROWS:
        assert tags.index(row["first"]) <= tags.index(row["last"])
    keys = [(r["format"], r["type"]) for r in ROWS]
    assert len(keys) == len(set(keys))


def test_every_paging_transition_has_formats_from_the_table() -> None:
    seen = Counter(r["transition"] for r in EMITTED)
    assert {t.value for t in PAGING} <= set(seen)


# -- each format classifies as the table says ----------------------------------------------


@pytest.mark.parametrize("row", EMITTED, ids=_row_id)
def test_each_format_classifies_as_the_table_says(row: dict[str, Any]) -> None:
    message = instantiate(row)
    match = classify(message)
    got = None if match is None else (match.entry, match.transition)
    assert _expected_ok(row, match), f"{message!r}: table says {row['transition']}, got {got}"


def test_paging_formats_without_exception() -> None:
    """The formats a person is paged for, over all releases, in one assertion."""
    wrong = []
    for row in EMITTED:
        if row["transition"] in NON_TRANSITIONS or Transition(row["transition"]) not in PAGING:
            continue
        match = classify(instantiate(row))
        if match is None or match.transition is not Transition(row["transition"]):
            wrong.append((row["format"], row["transition"], match and match.transition))
    assert wrong == []


def test_readiness_is_not_ready_never_halted() -> None:
    readiness = [
        r for r in EMITTED if re.search(r"not ready|waiting for rollout|is not ready", r["format"])
    ]
    assert len(readiness) > 40
    for row in readiness:
        match = classify(instantiate(row))
        assert match is not None
        assert match.transition is not Transition.HALTED, row["format"]


@pytest.mark.parametrize(
    ("message", "transition"),
    [
        # 0.x and 1.x spellings of the same transitions.
        (
            "Halt advancement no values found for metric request-success-rate probably "
            "podinfo.test is not receiving traffic",
            Transition.NO_TRAFFIC,
        ),
        (
            "Halt advancement no values found for istio metric request-success-rate probably "
            "podinfo.test is not receiving traffic: running query failed: no values found",
            Transition.NO_TRAFFIC,
        ),
        (
            "Metrics server http://prometheus.istio-system:9090 query failed: no values found",
            Transition.WEBHOOK_FAILED,
        ),
        ("Prometheus query failed: no values found", Transition.WEBHOOK_FAILED),
        (
            "Metric query failed for no usable metrics template and query were configured",
            Transition.WEBHOOK_FAILED,
        ),
        ("Knative Revision podinfo-00002.test is not ready", Transition.NOT_READY),
        (
            "Halt podinfo.test advancement waiting for rollout to finish: 1 old replicas are "
            "pending termination",
            Transition.NOT_READY,
        ),
        (
            "Halt advancement podinfo-primary.test waiting for rollout to finish: 0 of 1 "
            "updated replicas are available",
            Transition.NOT_READY,
        ),
        ("Starting canary deployment for podinfo.test", Transition.ANALYSIS_STARTED),
        ("Starting canary analysis for podinfo.test", Transition.ANALYSIS_STARTED),
    ],
)
def test_old_spellings_mean_the_same_transitions(message: str, transition: Transition) -> None:
    match = classify(message)
    assert match is not None
    assert match.transition is transition


def test_the_canary_past_its_deadline_rolls_back_the_primary_does_not() -> None:
    daemonset = classify(
        "canary damonset podinfo.test not ready with retryable false: exceeded its "
        "progressDeadlineSeconds: 600"
    )
    primary_daemonset = classify(
        "primary daemonset podinfo-primary.test not ready: "
        "exceeded its progressDeadlineSeconds: 600"
    )
    assert daemonset is not None
    assert (daemonset.transition, daemonset.reason, daemonset.target) == (
        Transition.ROLLED_BACK,
        "progress-deadline",
        "podinfo",
    )
    assert primary_daemonset is not None
    assert primary_daemonset.transition is Transition.NOT_READY


def test_every_catalogue_entry_is_a_format_some_release_emits() -> None:
    """The catalogue knows no message that only canarywatch made up."""
    used: Counter[str] = Counter()
    for row in EMITTED:
        match = classify(instantiate(row))
        if match is not None:
            used[match.entry] += 1
    assert {entry.name for entry in CATALOGUE} - set(used) == set()


# -- a message no release emits ------------------------------------------------------------

NEVER_EMITTED = [
    "Synced",
    "Rollback completed! Scaling down podinfo.test",
    "Canary podinfo.test promoted",
    "Halt podinfo.test advancement",
    "Halt podinfo.test advancement because the moon is full",
    "Advance podinfo.test canary weight",
    "Promotion failed! podinfo.test",
    "Rolling back podinfo.test",
    "Canary podinfo.test is healthy",
    "Warning: canary podinfo.test is unhealthy",
    "New revision detected podinfo",
    "Initialization done!",
]


def _as_event(message: str, event_type: str) -> dict[str, Any]:
    return {
        "type": "ADDED",
        "object": {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {"name": "podinfo.18c88e905dd3d4a8", "namespace": NAMESPACE, "uid": "u1"},
            "involvedObject": {
                "kind": "Canary",
                "namespace": NAMESPACE,
                "name": NAME,
                "uid": "c1",
                "apiVersion": "flagger.app/v1beta1",
            },
            "reason": "Synced",
            "message": message,
            "source": {"component": "flagger"},
            "firstTimestamp": "2026-12-05T12:00:00Z",
            "lastTimestamp": "2026-12-05T12:00:00Z",
            "count": 1,
            "type": event_type,
        },
    }


def _as_webhook(message: str, event_type: str) -> dict[str, Any]:
    return {
        "name": NAME,
        "namespace": NAMESPACE,
        "phase": "Progressing",
        "checksum": "865dbb8b64",
        "metadata": {
            "eventMessage": message,
            "eventType": event_type,
            "timestamp": "1785839462837",
        },
    }


def _shape(fmt: str) -> re.Pattern[str]:
    """Every text the format can produce: each verb stands for any text."""
    parts = _VERB.split(fmt)
    verbs = _VERB.findall(fmt)
    pattern = re.escape(parts[0])
    for verb, text in zip(verbs, parts[1:], strict=True):
        pattern += ("%" if verb == "%%" else ".*") + re.escape(text)
    return re.compile(pattern, re.DOTALL)


# A raw error passed through as "%v" can be any text; every other format has a shape.
SHAPES = [_shape(r["format"]) for r in EMITTED if _VERB.sub("", r["format"]).strip()]


@pytest.mark.parametrize("message", NEVER_EMITTED)
def test_a_message_no_release_emits_stays_unknown_and_is_never_notified(message: str) -> None:
    assert not any(shape.fullmatch(message) for shape in SHAPES)
    assert classify(message) is None
    for event_type in ("Normal", "Warning"):
        kube = KubeEventNormaliser()(
            Observation(
                at=AT,
                source=SourceName.KUBERNETES_EVENTS,
                data=_as_event(message, event_type),
                cluster="prod",
            )
        )
        hook = normalise_webhook(
            Observation(
                at=AT,
                source=SourceName.FLAGGER_WEBHOOK,
                data=_as_webhook(message, event_type),
                cluster="prod",
            )
        )
        assert (kube.outcome, kube.events) == (Outcome.UNKNOWN, ())
        assert (hook.outcome, hook.events) == (Outcome.UNKNOWN, ())


def test_ignored_and_informational_formats_are_never_notified() -> None:
    normaliser = KubeEventNormaliser()
    for i, row in enumerate(r for r in EMITTED if r["transition"] in NON_TRANSITIONS):
        data = _as_event(instantiate(row), row["type"])
        data["object"]["metadata"]["uid"] = f"u{i}"
        result = normaliser(Observation(at=AT, source=SourceName.KUBERNETES_EVENTS, data=data))
        assert result.events == (), row["format"]
        expected = Outcome.UNKNOWN if row["transition"] == "ignored" else Outcome.INFORMATIONAL
        assert result.outcome is expected, row["format"]
