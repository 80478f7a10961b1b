"""Flagger event-webhook normalisation, driven by the byte-exact bodies in fixtures/."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canarywatch.model import (
    CanaryEvent,
    CanaryRef,
    Normalised,
    Observation,
    Outcome,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.kube_events import KubeEventNormaliser
from canarywatch.normalise.webhook import (
    WebhookNormaliser,
    normalise_webhook,
    parse_unix_ms,
    read_payload,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "flagger"
AT = datetime(2026, 8, 4, 16, 0, tzinfo=UTC)
T = Transition


def body(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"event-webhook-{name}.json").read_bytes())
    return data


def observe(data: object, cluster: str = "prod-eu-1") -> Observation:
    return Observation(at=AT, source=SourceName.FLAGGER_WEBHOOK, data=data, cluster=cluster)


def only_event(result: Normalised) -> CanaryEvent:
    assert result.outcome is Outcome.TRANSITION
    (event,) = result.events
    return event


# (fixture, transition, detail, phase, hints)
CASES: list[tuple[str, Transition, str, Phase, dict[str, str]]] = [
    (
        "new-revision",
        T.REVISION_DETECTED,
        "",
        Phase.PROGRESSING,
        {"previous_checksum": "865dbb8b64"},
    ),
    ("advance", T.WEIGHT_ADVANCED, "20", Phase.PROGRESSING, {"checksum": "8c669c5f"}),
    ("promotion-completed", T.PROMOTED, "", Phase.SUCCEEDED, {"checksum": "8c669c5f"}),
    ("halt-success-rate", T.HALTED, "", Phase.PROGRESSING, {"checksum": "6795f6bb59"}),
    ("rollback-threshold", T.ROLLED_BACK, "", Phase.FAILED, {"checksum": "6795f6bb59"}),
    ("canary-failed", T.ROLLED_BACK, "", Phase.FAILED, {"checksum": "6795f6bb59"}),
    # The body says Succeeded (the phase being left); the message means Waiting.
    (
        "waiting-approval",
        T.AWAITING_APPROVAL,
        "rollout",
        Phase.WAITING,
        {"previous_checksum": "6d7bd75c5d"},
    ),
    (
        "halt-no-values-custom-metadata",
        T.NO_TRAFFIC,
        "",
        Phase.PROGRESSING,
        {"checksum": "858b78bbdd"},
    ),
]


@pytest.mark.parametrize(("fixture", "transition", "detail", "phase", "hints"), CASES)
def test_fixture_bodies(
    fixture: str, transition: Transition, detail: str, phase: Phase, hints: dict[str, str]
) -> None:
    event = only_event(normalise_webhook(observe(body(fixture))))
    assert (event.transition, event.detail, event.phase) == (transition, detail, phase)
    assert dict(event.hints) == hints
    assert event.sources == (SourceName.FLAGGER_WEBHOOK,)
    assert event.observed_at == AT
    assert event.canary.cluster == "prod-eu-1"


def test_escaped_comparator_and_timestamp() -> None:
    event = only_event(normalise_webhook(observe(body("halt-success-rate"))))
    assert event.message == "Halt podinfo.test advancement success rate 96.12% < 99%"
    assert event.reason == "request-success-rate 96.12 < 99"
    assert event.severity is Severity.WARNING
    assert event.canary == CanaryRef("test", "podinfo", "prod-eu-1")
    assert event.occurred_at == datetime(2026, 8, 4, 14, 3, 2, 889000, tzinfo=UTC)


def test_custom_metadata_is_not_copied() -> None:
    event = only_event(normalise_webhook(observe(body("halt-no-values-custom-metadata"))))
    assert event.canary == CanaryRef("shop", "checkout", "prod-eu-1")
    assert event.target == "checkout"
    assert "payments" not in repr(event)


def test_reported_phase_is_used_when_the_message_implies_none() -> None:
    data = body("advance")
    data["phase"] = "Promoting"
    data["metadata"]["eventMessage"] = "podinfo-primary.test not ready: waiting for rollout"
    event = only_event(normalise_webhook(observe(data)))
    assert event.transition is T.NOT_READY
    assert event.phase is Phase.PROMOTING


def test_unknown_phase_text_is_dropped() -> None:
    data = body("advance")
    data["phase"] = "Exploded"
    data["metadata"]["eventMessage"] = "Post-rollout hook notify failed 503"
    event = only_event(normalise_webhook(observe(data)))
    assert event.transition is T.WEBHOOK_FAILED
    assert event.phase is None


def test_every_repeat_post_is_a_transition() -> None:
    normaliser = WebhookNormaliser()
    data = body("halt-no-values-custom-metadata")
    results = [normaliser(observe(data)) for _ in range(5)]
    assert [r.outcome for r in results] == [Outcome.TRANSITION] * 5


def test_webhook_and_event_agree_on_identity() -> None:
    """The same Flagger message from both feeds yields the same identity fields."""
    lines = (FIXTURES / "events-rollback.jsonl").read_text().splitlines()
    kube = KubeEventNormaliser()
    from_events = [e for line in lines for e in kube(observe(json.loads(line))).events]
    for fixture in ("halt-success-rate", "rollback-threshold", "canary-failed"):
        hook = only_event(normalise_webhook(observe(body(fixture))))
        twin = next(e for e in from_events if e.message == hook.message)
        fields = ("canary", "transition", "detail", "reason", "target", "severity", "phase")
        assert [getattr(hook, f) for f in fields] == [getattr(twin, f) for f in fields]
        assert hook.occurred_at is not None
        assert twin.occurred_at is not None
        assert abs((hook.occurred_at - twin.occurred_at).total_seconds()) < 1


def test_informational_and_unknown_messages() -> None:
    data = body("advance")
    data["metadata"]["eventMessage"] = "Pre-rollout check acceptance-test passed"
    info = normalise_webhook(observe(data))
    assert (info.outcome, info.events, info.note) == (
        Outcome.INFORMATIONAL,
        (),
        "pre-rollout-passed",
    )
    data["metadata"]["eventMessage"] = "something new https://x:secret@h/p?q=1"
    unknown = normalise_webhook(observe(data))
    assert unknown.outcome is Outcome.UNKNOWN
    assert unknown.note.startswith("unknown Normal message: something new")
    assert "secret" not in unknown.note


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    data = copy.deepcopy(body("advance"))
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


@pytest.mark.parametrize(
    ("data", "note"),
    [
        ([1, 2], "body is not a JSON object"),
        (_without(("name",)), "body lacks name or namespace"),
        ({**body("advance"), "namespace": 7}, "body lacks name or namespace"),
        (_without(("metadata",)), "body lacks metadata"),
        (_without(("metadata", "eventMessage")), "body lacks metadata.eventMessage"),
    ],
)
def test_malformed_bodies(data: object, note: str) -> None:
    result = normalise_webhook(observe(data))
    assert (result.outcome, result.events, result.note) == (Outcome.MALFORMED, (), note)
    assert read_payload(data) == note


def test_missing_checksum_and_timestamp_still_normalise() -> None:
    data = _without(("checksum",))
    del data["metadata"]["timestamp"]
    event = only_event(normalise_webhook(observe(data)))
    assert event.hints == {}
    assert event.occurred_at is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1785839642902", datetime(2026, 8, 4, 10, 34, 2, 902000, tzinfo=UTC)),
        (1785839642902, datetime(2026, 8, 4, 10, 34, 2, 902000, tzinfo=UTC)),
        ("", None),
        ("-5", None),
        ("12.5", None),
        ("²", None),
        ("9" * 5000, None),
        (10**30, None),
        (True, None),
        (None, None),
    ],
)
def test_parse_unix_ms(value: object, expected: datetime | None) -> None:
    assert parse_unix_ms(value) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
BODIES = st.fixed_dictionaries(
    {},
    optional={
        "name": JSON | st.just("podinfo"),
        "namespace": JSON | st.just("test"),
        "phase": JSON | st.sampled_from([p.value for p in Phase]),
        "checksum": JSON,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "eventMessage": JSON | st.just("Advance podinfo.test canary weight 10"),
                "eventType": JSON,
                "timestamp": JSON | st.integers().map(str),
            },
        ),
    },
)


@given(JSON | BODIES)
def test_normalise_is_total(data: object) -> None:
    result = normalise_webhook(observe(data))
    assert isinstance(result, Normalised)
    assert len(result.events) == (1 if result.outcome is Outcome.TRANSITION else 0)
    assert result.outcome is not Outcome.REPEAT
