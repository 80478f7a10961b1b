"""Issue 12 (leftover): an analysis episode is named by the Event that says why, whichever
source came first.

Flagger records "Halt advancement no values found for … metric …" and then writes
``status.failedChecks`` in the same reconcile, but client-go writes the Event in the
background, so the Canary watch can report "a check failed" (``halted``) first. That first
sighting used to name the episode: ``halted`` where Flagger said ``no-traffic``. Where the
Events are watched, a status halt that would open the analysis condition now waits
(``correlate.NAME_WAIT`` at most) for the Event to name it; the same hold as a rollout start
waiting for its spec (``correlate.SPEC_WAIT``). Time is passed in (``now``), never read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.pipeline.test_runner_backlog import DEFAULT_INHIBITION, POLICY

from canarywatch.config import parse_config
from canarywatch.model import (
    TRANSITIONS,
    CanaryEvent,
    CanaryRef,
    Condition,
    Observation,
    SourceName,
    Transition,
)
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.correlate import NAME_WAIT, SPEC_WAIT, Correlator
from canarywatch.pipeline.policy import DEFAULT_CLUSTER, build_pipeline, name_wait_clusters

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
"""The daemon's (virtual) clock when the status halt arrives."""
PODINFO = CanaryRef("test", "podinfo", DEFAULT_CLUSTER)


def flagger_event(
    uid: str, minute: int, message: str, kind: str = "Normal", *, name: str = "podinfo"
) -> Observation:
    """An Event Flagger recorded about Canary ``name`` (an ADDED on the Events watch)."""
    stamp = f"2026-12-05T01:0{minute}:00Z"
    obj: dict[str, Any] = {
        "metadata": {"name": f"{name}.{uid}", "namespace": "test", "uid": uid},
        "involvedObject": {"kind": "Canary", "namespace": "test", "name": name},
        "reason": "Synced",
        "message": message,
        "type": kind,
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "flagger"},
    }
    return Observation(
        at=NOW, source=SourceName.KUBERNETES_EVENTS, data={"type": "ADDED", "object": obj}
    )


NO_VALUES = flagger_event(
    "e9",
    3,
    "Halt advancement no values found for istio metric request-success-rate probably "
    "podinfo.test is not receiving traffic: running query failed: no values found",
    "Warning",
)
ROLLBACK = flagger_event(
    "e10", 3, "Rolling back podinfo.test failed checks threshold reached 1", "Warning"
)


def status(
    minute: int, phase: str, *, weight: int = 0, failed_checks: int = 0, name: str = "podinfo"
) -> Observation:
    """A Canary watch event (MODIFIED: the daemon has seen the Canary before)."""
    obj: dict[str, Any] = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": "test", "uid": f"uid-{name}"},
        "spec": {"targetRef": {"name": name}, "analysis": {"stepWeight": 10, "threshold": 5}},
        "status": {
            "phase": phase,
            "canaryWeight": weight,
            "failedChecks": failed_checks,
            "iterations": 0,
            "lastAppliedSpec": "s1",
            "lastTransitionTime": f"2026-12-05T01:0{minute}:00Z",
        },
    }
    return Observation(at=NOW, source=SourceName.CANARIES, data={"type": "MODIFIED", "object": obj})


HALT_STATUS = status(3, "Progressing", weight=10, failed_checks=1)
"""The status write of the reconcile that recorded ``NO_VALUES``."""


def waiting(*, names: bool = True) -> Correlator:
    """The correlator of a cluster whose Events and Canary status are both watched."""
    return Correlator(
        spec_wait_clusters={DEFAULT_CLUSTER}, name_wait_clusters={DEFAULT_CLUSTER} if names else ()
    )


def in_analysis(policy: Any = POLICY, *, names: bool = True) -> Pipeline:
    """A pipeline whose canary ``podinfo`` is at weight 10 of rollout ``s1``, nothing held."""
    pipeline = build_pipeline(policy, correlator=waiting(names=names))
    before = [
        status(0, "Succeeded"),
        flagger_event("e1", 1, "New revision detected! Scaling up podinfo.test"),
        status(1, "Progressing"),
        flagger_event("e2", 2, "Advance podinfo.test canary weight 10"),
        status(2, "Progressing", weight=10),
    ]
    at = NOW - timedelta(seconds=30)
    for obs in before:
        pipeline.observe(obs, at)
    pipeline.flush_all(at)
    assert pipeline.correlator.next_release() is None
    return pipeline


def announced(pipeline: Pipeline, now: datetime) -> list[CanaryEvent]:
    return [e for n in pipeline.due(now) for e in n.events]


def test_the_event_arriving_within_the_wait_names_the_episode() -> None:
    pipeline = in_analysis()
    assert pipeline.observe(HALT_STATUS, NOW) == []  # held for its name
    assert pipeline.next_deadline() == NOW + NAME_WAIT
    later = NOW + timedelta(milliseconds=40)
    made = pipeline.observe(NO_VALUES, later)
    assert [(e.transition.value, e.rollout) for e in made] == [("no-traffic", "s1")]
    assert made[0].sources == (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES)
    assert made[0].message.startswith("Halt advancement no values found")
    assert made[0].failed_checks == 1  # what only the status knew
    sent = announced(pipeline, later)
    assert [(e.transition.value, e.sources) for e in sent] == [
        ("no-traffic", (SourceName.KUBERNETES_EVENTS, SourceName.CANARIES))
    ]
    assert pipeline.correlator.next_release() is None  # nothing left held
    # The next failed check (status and Event) joins that episode: nothing new.
    assert pipeline.observe(status(4, "Progressing", weight=10, failed_checks=2), later) == []
    assert pipeline.release_held(NOW + 10 * NAME_WAIT) == []
    assert pipeline.flush_all(NOW + 10 * NAME_WAIT) == []
    opener = pipeline.correlator.open_conditions(PODINFO)[Condition.ANALYSIS]
    assert opener.transition.value == "no-traffic"
    assert opener.failed_checks == 2


def test_a_status_halt_nobody_names_is_halted_after_the_wait() -> None:
    """The Events watch is down (or client-go's spam filter dropped the Event): the episode
    goes out ``NAME_WAIT`` late, named as the status says; a late Event joins it."""
    pipeline = in_analysis()
    assert pipeline.observe(HALT_STATUS, NOW) == []
    assert pipeline.release_held(NOW + NAME_WAIT - timedelta(milliseconds=1)) == []
    assert announced(pipeline, NOW + NAME_WAIT - timedelta(milliseconds=1)) == []
    released = pipeline.release_held(NOW + NAME_WAIT)
    assert [(e.transition.value, e.sources) for e in released] == [
        ("halted", (SourceName.CANARIES,))
    ]
    assert [e.transition.value for e in announced(pipeline, NOW + NAME_WAIT)] == ["halted"]
    assert pipeline.correlator.next_release() is None
    assert pipeline.observe(NO_VALUES, NOW + 2 * NAME_WAIT) == []  # the same episode, late


def test_the_timer_of_the_wait_is_due_in_the_runner_s_own_call() -> None:
    """``due`` (what the runner calls when ``next_deadline`` passes) releases the halt too."""
    pipeline = in_analysis()
    pipeline.observe(HALT_STATUS, NOW)
    deadline = pipeline.next_deadline()
    assert deadline == NOW + NAME_WAIT
    assert [e.transition.value for n in pipeline.due(deadline) for e in n.events] == ["halted"]


@pytest.mark.parametrize("policy", [POLICY, DEFAULT_INHIBITION], ids=["plain", "inhibiting"])
def test_a_verdict_before_the_wait_ends_releases_the_halt_before_it(policy: Any) -> None:
    """A page is not held, and the halt it releases is sent before it fires (with the shipped
    inhibit rules a verdict mutes its rollout's halts still waiting)."""
    pipeline = in_analysis(policy)
    assert pipeline.observe(HALT_STATUS, NOW) == []
    verdict_at = NOW + timedelta(milliseconds=300)
    made = pipeline.observe(ROLLBACK, verdict_at)
    assert [e.transition.value for e in made] == ["halted", "rolled-back"]
    assert [e.transition.value for e in announced(pipeline, verdict_at)] == [
        "halted",
        "rolled-back",
    ]
    assert pipeline.correlator.next_release() is None


@pytest.mark.parametrize("names", [False, True])
def test_without_an_events_source_the_status_halt_is_sent_at_once(names: bool) -> None:
    pipeline = in_analysis(names=names)
    made = pipeline.observe(HALT_STATUS, NOW)
    assert [e.transition.value for e in made] == ([] if names else ["halted"])


def test_a_halt_joining_an_open_episode_does_not_wait() -> None:
    """Only the sighting that would open the condition waits: the Event came first, the status
    halt is its repeat and holds nothing back."""
    pipeline = in_analysis()
    assert [e.transition.value for e in pipeline.observe(NO_VALUES, NOW)] == ["no-traffic"]
    assert pipeline.observe(HALT_STATUS, NOW) == []
    assert pipeline.correlator.next_release() is None


def test_what_follows_a_held_halt_waits_behind_it_in_order() -> None:
    pipeline = in_analysis()
    pipeline.observe(HALT_STATUS, NOW)
    advance = flagger_event("e11", 4, "Advance podinfo.test canary weight 20")
    assert pipeline.observe(advance, NOW) == []  # behind the halt: it closes the episode
    made = pipeline.observe(NO_VALUES, NOW + timedelta(milliseconds=5))
    assert [(e.transition.value, e.detail) for e in made] == [
        ("no-traffic", ""),
        ("weight-advanced", "20"),
    ]
    assert Condition.ANALYSIS not in pipeline.correlator.open_conditions(PODINFO)


def test_the_two_reasons_to_hold_keep_their_own_deadlines() -> None:
    """One hold mechanism, a queue per reason: a start held for its spec (``SPEC_WAIT``) and a
    halt held for its name (``NAME_WAIT``, shorter) are each released at their own deadline,
    and ``next_release`` is the earlier of the two."""
    pipeline = in_analysis()
    correlator = pipeline.correlator
    other = CanaryRef("test", "other", DEFAULT_CLUSTER)
    pipeline.observe(status(0, "Succeeded", name="other"), NOW - timedelta(seconds=30))
    start = flagger_event("o1", 5, "New revision detected! Scaling up other.test", name="other")
    assert pipeline.observe(start, NOW) == []  # held for its spec until NOW + SPEC_WAIT
    halt_at = NOW + timedelta(milliseconds=500)
    assert pipeline.observe(HALT_STATUS, halt_at) == []  # held for its name
    assert correlator.next_release() == halt_at + NAME_WAIT < NOW + SPEC_WAIT
    released = correlator.release_due(halt_at + NAME_WAIT)
    assert [(e.canary, e.transition.value) for e, _ in released] == [(PODINFO, "halted")]
    assert correlator.next_release() == NOW + SPEC_WAIT
    released = correlator.release_due(NOW + SPEC_WAIT)
    assert [(e.canary, e.transition.value) for e, _ in released] == [(other, "revision-detected")]
    assert correlator.next_release() is None


def test_a_held_halt_is_announced_at_shutdown_and_its_episode_survives_the_restart() -> None:
    """Nothing held is snapshotted: the daemon releases every hold before its shutdown
    snapshot (``flush_all``), so the restarted correlator knows the episode, and the Event
    listed again after the restart is not news."""
    pipeline = in_analysis()
    pipeline.observe(HALT_STATUS, NOW)
    sent = [e.transition.value for n in pipeline.flush_all(NOW) for e in n.events]
    assert sent == ["halted"]
    restored = Correlator.restore(
        pipeline.correlator.snapshot(), name_wait_clusters={DEFAULT_CLUSTER}
    )
    assert restored.next_release() is None
    again = build_pipeline(POLICY, correlator=restored)
    assert again.observe(NO_VALUES, NOW + timedelta(seconds=5)) == []
    opener = restored.open_conditions(PODINFO)[Condition.ANALYSIS]
    assert (opener.transition.value, opener.rollout) == ("halted", "s1")


def test_the_clusters_whose_events_are_watched_wait_for_the_name() -> None:
    config = parse_config(
        "clusters:\n"
        "  - {name: east, connection: host, host: 'https://east:6443'}\n"
        "  - {name: west, connection: host, host: 'https://west:6443', watch_events: false}\n"
    )
    assert name_wait_clusters(config) == frozenset({"east"})
    assert name_wait_clusters(None) == frozenset()
    pipeline = build_pipeline(config)
    held = status_halt(cluster="east")
    assert pipeline.correlator(held, NOW).held
    assert pipeline.correlator(status_halt(cluster="west"), NOW).new is not None


def status_halt(*, cluster: str) -> CanaryEvent:
    """A status-derived ``halted`` of a canary of ``cluster`` in its rollout's analysis."""
    normalise = build_pipeline(POLICY).normaliser
    normalise(
        Observation(
            at=NOW,
            source=SourceName.CANARIES,
            cluster=cluster,
            data=status(2, "Progressing", weight=10).data,
        )
    )
    (halt,) = normalise(
        Observation(at=NOW, source=SourceName.CANARIES, cluster=cluster, data=HALT_STATUS.data)
    ).events
    return halt


def test_the_webhook_names_the_episode_too_and_the_status_labels_still_route_it() -> None:
    """Any source with Flagger's words names it (the webhook usually comes first anyway); what
    only the status carries (the Canary's labels, for routing) is kept on the named event."""
    correlator = Correlator(name_wait_clusters={"prod"}, label_hints={"label:team": "canary_team"})
    ref = CanaryRef("test", "podinfo", "prod")

    def sighting(transition: Transition, source: SourceName, **hints: str) -> CanaryEvent:
        return CanaryEvent(
            canary=ref,
            transition=transition,
            observed_at=NOW,
            sources=(source,),
            severity=TRANSITIONS[transition].severity,
            failed_checks=1 if source is SourceName.CANARIES else None,
            hints=hints,
        )

    start = sighting(Transition.REVISION_DETECTED, SourceName.KUBERNETES_EVENTS)
    assert correlator(start, NOW).new is not None
    halt = sighting(Transition.HALTED, SourceName.CANARIES, spec="s1", **{"label:team": "pay"})
    assert correlator(halt, NOW).held
    hook = sighting(Transition.NO_TRAFFIC, SourceName.FLAGGER_WEBHOOK)
    result = correlator(hook, NOW + timedelta(milliseconds=3))
    assert result.new is not None
    assert result.new.transition is Transition.NO_TRAFFIC
    assert result.new.sources == (SourceName.FLAGGER_WEBHOOK, SourceName.CANARIES)
    assert result.new.labels["canary_team"] == "pay"
    assert [(e.transition, r.new, r.duplicate_of is not None) for e, r in result.then] == [
        (Transition.HALTED, None, True)
    ]
    assert correlator.next_release() is None
