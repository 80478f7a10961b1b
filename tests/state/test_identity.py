"""Fingerprints: stable, and exactly the identity fields of reference/transitions.md."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import pytest

from canarywatch.identity import canary_key, fingerprint
from canarywatch.model import CanaryRef, Phase, SourceName, Transition
from canarywatch.testing import T0, make_event

BASE = make_event(Transition.HALTED, cluster="prod", rollout="2", episode=1, detail="")


def test_fingerprint_is_pinned_16_hex_digits() -> None:
    # Pinned: changing the encoding would re-send everything in every notification log.
    assert fingerprint(BASE) == "be833c1b99b0e0ac"
    assert fingerprint(make_event(Transition.WEIGHT_ADVANCED, detail="10")) == "19a465b434a8ca33"
    # ... which is the documented encoding:
    encoded = b'["prod","test","podinfo","2","halted","",1]'
    assert fingerprint(BASE) == hashlib.sha256(encoded).hexdigest()[:16]


def test_fingerprint_ignores_everything_but_identity() -> None:
    other = dataclasses.replace(
        BASE,
        observed_at=T0 + timedelta(hours=1),
        occurred_at=T0,
        sources=(SourceName.CANARIES, SourceName.FLAGGER_WEBHOOK),
        message="different",
        reason="request-success-rate 12 < 99",
        phase=Phase.PROGRESSING,
        weight=30,
        failed_checks=4,
        target="podinfo-primary",
        labels={"team": "payments"},
        hints={"spec": "abc"},
    )
    assert fingerprint(other) == fingerprint(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"canary": CanaryRef("test", "podinfo", "staging")},
        {"canary": CanaryRef("prod", "podinfo", "prod")},
        {"canary": CanaryRef("test", "frontend", "prod")},
        {"rollout": "3"},
        {"transition": Transition.NO_TRAFFIC},
        {"detail": "x"},
        {"episode": 2},
    ],
)
def test_each_identity_field_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert fingerprint(dataclasses.replace(BASE, **change)) != fingerprint(BASE)  # type: ignore[arg-type]


def test_fields_cannot_bleed_into_each_other() -> None:
    a = dataclasses.replace(BASE, canary=CanaryRef("a/b", "c", ""))
    b = dataclasses.replace(BASE, canary=CanaryRef("a", "b/c", ""))
    assert fingerprint(a) != fingerprint(b)


def test_canary_key() -> None:
    assert canary_key(CanaryRef("test", "podinfo", "prod")) == "prod/test/podinfo"
    assert canary_key(CanaryRef("test", "podinfo")) == "/test/podinfo"
