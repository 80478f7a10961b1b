"""Flagger /metrics scrapes: the fixture scenarios, change-only emission and hostile input."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canarywatch.model import (
    CanaryRef,
    Normalised,
    Observation,
    Outcome,
    Phase,
    Severity,
    SourceName,
    Transition,
)
from canarywatch.normalise.flagger_metrics import (
    MAX_CLUSTERS,
    FlaggerMetricsNormaliser,
    RejectReason,
)
from canarywatch.normalise.metric_tables import NEWEST_TABLE, StatusMeaning, table_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "flagger"
AT = datetime(2026, 8, 4, 10, 42, tzinfo=UTC)
CLUSTER = "prod-eu-1"

Seen = tuple[str, Transition, str]
"""``(namespace/canary, transition, detail)``."""


def fixture(name: str) -> str:
    return (FIXTURES / f"metrics-{name}.prom").read_text()


def scrape(text: str, *, cluster: str = CLUSTER) -> Observation:
    return Observation(at=AT, source=SourceName.FLAGGER_METRICS, data=text, cluster=cluster)


def play(normaliser: FlaggerMetricsNormaliser, *names: str) -> list[Normalised]:
    return [normaliser(scrape(fixture(name))) for name in names]


def seen(result: Normalised) -> list[Seen]:
    return [(str(e.canary), e.transition, e.detail) for e in result.events]


# -- the fixture scenarios (fixtures/flagger/README.md) -------------------------------------


def test_rollout_progressing_then_succeeded_is_promoted_via_successes_total() -> None:
    first, second = play(FlaggerMetricsNormaliser(), "rollout-progressing", "rollout-succeeded")
    assert first == Normalised(Outcome.IGNORED, note="first sight")
    assert seen(second) == [("test/podinfo", Transition.PROMOTED, "")]
    (event,) = second.events
    assert event.canary == CanaryRef("test", "podinfo", CLUSTER)
    assert event.sources == (SourceName.FLAGGER_METRICS,)
    assert event.observed_at == AT
    assert event.target == "podinfo"
    assert event.phase is Phase.SUCCEEDED
    assert event.severity is Severity.INFO
    assert "skipped" not in event.hints


def test_rollback_halting_then_failed_is_one_rolled_back() -> None:
    first, second = play(FlaggerMetricsNormaliser(), "rollback-halting", "rollback-failed")
    assert first.events == ()
    # Status 0 -> 2 and failures_total appearing are the same transition: folded into one.
    assert seen(second) == [("test/podinfo", Transition.ROLLED_BACK, "")]
    (event,) = second.events
    assert event.reason == "flagger_canary_status=2"
    assert event.phase is Phase.FAILED
    assert event.severity is Severity.CRITICAL


def test_no_traffic_halting_then_failed_rolls_back_checkout_only() -> None:
    normaliser = FlaggerMetricsNormaliser()
    first, second = play(normaliser, "no-traffic-halting", "no-traffic-failed")
    assert first.events == ()
    # podinfo stays at 2 (a Failed canary stays at 2): no repeat of its rollback.
    assert seen(second) == [("shop/checkout", Transition.ROLLED_BACK, "")]
    assert second.events[0].reason == "flagger_canary_status=2"
    # No metric_analysis series was ever produced for checkout.
    assert normaliser.latest_analysis("shop", "checkout") == {}


def test_the_whole_day_in_order() -> None:
    results = play(
        FlaggerMetricsNormaliser(),
        "rollout-progressing",
        "rollout-succeeded",
        "rollback-halting",
        "rollback-failed",
        "no-traffic-halting",
        "no-traffic-failed",
    )
    assert [seen(r) for r in results] == [
        [],
        [("test/podinfo", Transition.PROMOTED, "")],
        # frontend was promoted at 11:38 (its counter appeared); podinfo's new rollout (status
        # 1 -> 0) is at 20.
        [
            ("test/frontend", Transition.PROMOTED, ""),
            ("test/podinfo", Transition.REVISION_DETECTED, ""),
            ("test/podinfo", Transition.WEIGHT_ADVANCED, "20"),
        ],
        [("test/podinfo", Transition.ROLLED_BACK, "")],
        # checkout 1 -> 0 is its new rollout; its first weight series is state, not news.
        [("shop/checkout", Transition.REVISION_DETECTED, "")],
        [("shop/checkout", Transition.ROLLED_BACK, "")],
    ]


def status_scrape(value: int, *, name: str = "podinfo") -> str:
    return (
        'flagger_info{mesh_provider="istio",version="1.44.0"} 1\n'
        f'flagger_canary_status{{name="{name}",namespace="test"}} {value}\n'
    )


@pytest.mark.parametrize("before", [1, 2])
def test_status_to_progressing_is_a_new_revision(before: int) -> None:
    """Flagger sets Progressing only for a new revision (checkCanaryStatus; a restart from
    WaitingPromotion): from Initialized/Succeeded/Waiting (1) or Failed (2). Without it, the
    metrics alone took every rollout of a canary for one."""
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(status_scrape(before)))
    result = normaliser(scrape(status_scrape(0)))
    assert seen(result) == [("test/podinfo", Transition.REVISION_DETECTED, "")]
    (event,) = result.events
    assert event.phase is Phase.PROGRESSING
    assert event.reason == "flagger_canary_status=0"
    assert event.severity is Severity.INFO


@pytest.mark.parametrize(
    "values",
    [
        [0],  # first sight: state, not news
        [0, 0],  # a revision restarting an analysis still Progressing leaves it at 0
        [1, 1, 2, 2],
        [0, 1],  # Progressing -> Promoting/Finalising/Succeeded/Waiting...: no new revision
    ],
)
def test_no_new_revision_without_a_move_into_progressing(values: list[int]) -> None:
    normaliser = FlaggerMetricsNormaliser()
    found = [t for v in values for _, t, _ in seen(normaliser(scrape(status_scrape(v))))]
    assert Transition.REVISION_DETECTED not in found


def test_a_new_revision_comes_before_the_weight_step_of_the_same_scrape() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollout-succeeded")))
    text = (
        fixture("rollout-progressing")
        .replace('workload="podinfo"} 30', 'workload="podinfo"} 10')
        .replace('workload="podinfo-primary"} 70', 'workload="podinfo-primary"} 90')
    )
    assert seen(normaliser(scrape(text)))[:2] == [
        ("test/podinfo", Transition.REVISION_DETECTED, ""),
        ("test/podinfo", Transition.WEIGHT_ADVANCED, "10"),
    ]


def test_a_promotion_and_the_next_revision_in_one_scrape_come_in_that_order() -> None:
    """Finalising, then Succeeded and a new revision between two scrapes: the counter's
    ``promoted`` is the previous rollout's, so it comes before the new ``revision-detected``."""
    status = 'flagger_canary_status{name="podinfo",namespace="test"} '
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollout-progressing").replace(status + "0", status + "1")))
    result = normaliser(scrape(fixture("rollout-succeeded").replace(status + "1", status + "0")))
    assert seen(result) == [
        ("test/podinfo", Transition.PROMOTED, ""),
        ("test/podinfo", Transition.REVISION_DETECTED, ""),
    ]


def test_unchanged_rescrape_is_a_repeat_with_no_events() -> None:
    normaliser = FlaggerMetricsNormaliser()
    results = play(normaliser, "rollback-halting", "rollback-failed", "rollback-failed")
    assert results[2] == Normalised(Outcome.REPEAT)


def test_weight_rise_of_the_canary_series_is_weight_advanced() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollout-progressing")))
    text = (
        fixture("rollout-progressing")
        .replace('workload="podinfo"} 30', 'workload="podinfo"} 40')
        .replace('workload="podinfo-primary"} 70', 'workload="podinfo-primary"} 60')
    )
    result = normaliser(scrape(text))
    assert seen(result) == [("test/podinfo", Transition.WEIGHT_ADVANCED, "40")]
    (event,) = result.events
    assert event.weight == 40
    assert event.phase is Phase.PROGRESSING


def test_primary_weight_rising_is_not_news() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollout-progressing")))
    text = (
        fixture("rollout-progressing")
        .replace('workload="podinfo"} 30', 'workload="podinfo"} 0')
        .replace('workload="podinfo-primary"} 70', 'workload="podinfo-primary"} 100')
    )
    assert normaliser(scrape(text)).events == ()


def test_skipped_analysis_promotion_carries_the_hint() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollout-progressing")))
    text = fixture("rollout-succeeded").replace(
        'analysis_status="completed",deployment_strategy="canary",name="podinfo"',
        'analysis_status="skipped",deployment_strategy="canary",name="podinfo"',
    )
    result = normaliser(scrape(text))
    assert seen(result) == [("test/podinfo", Transition.PROMOTED, "")]
    assert dict(result.events[0].hints) == {"skipped": "true"}


def test_counter_reset_after_flagger_restart_is_not_news() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("no-traffic-failed")))
    restarted = fixture("no-traffic-failed").replace(
        'name="checkout",namespace="shop"} 1\n', 'name="checkout",namespace="shop"} 0\n'
    )
    assert restarted != fixture("no-traffic-failed")
    assert normaliser(scrape(restarted)).events == ()


def test_workload_to_canary_maps_the_canary_name_but_keeps_the_target() -> None:
    normaliser = FlaggerMetricsNormaliser(
        workload_to_canary=lambda ns, workload: f"{workload}-canary" if ns == "test" else None
    )
    play(normaliser, "rollback-halting")
    (result,) = play(normaliser, "rollback-failed")
    (event,) = result.events
    assert event.canary == CanaryRef("test", "podinfo-canary", CLUSTER)
    assert event.target == "podinfo"
    assert normaliser.latest_analysis("test", "podinfo-canary") == {
        "request-duration": 1.283,
        "request-success-rate": 89.96,
    }


def test_latest_analysis_tracks_values_without_emitting() -> None:
    normaliser = FlaggerMetricsNormaliser()
    first = normaliser(scrape(fixture("rollout-progressing")))
    assert normaliser.latest_analysis("test", "podinfo") == {
        "request-duration": 0.191,
        "request-success-rate": 100.0,
    }
    changed = fixture("rollout-progressing").replace(
        'metric="request-success-rate",name="podinfo",namespace="test"} 100',
        'metric="request-success-rate",name="podinfo",namespace="test"} 96.12',
    )
    result = normaliser(scrape(changed))
    assert first.events == ()
    assert result.events == ()
    assert result.outcome is Outcome.INFORMATIONAL
    assert normaliser.latest_analysis("test", "podinfo")["request-success-rate"] == 96.12
    assert normaliser.latest_analysis("test", "podinfo", cluster=CLUSTER) != {}
    assert normaliser.latest_analysis("test", "podinfo", cluster="elsewhere") == {}


def test_metric_template_label_of_pre_release_builds_is_accepted() -> None:
    normaliser = FlaggerMetricsNormaliser()
    text = fixture("rollout-progressing").replace('{metric="', '{metricTemplate="')
    normaliser(scrape(text))
    assert set(normaliser.latest_analysis("test", "podinfo")) == {
        "request-duration",
        "request-success-rate",
    }


def test_clusters_are_kept_apart() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting"), cluster="a"))
    other = normaliser(scrape(fixture("rollback-failed"), cluster="b"))
    assert other.outcome is Outcome.IGNORED
    back = normaliser(scrape(fixture("rollback-failed"), cluster="a"))
    assert seen(back) == [("test/podinfo", Transition.ROLLED_BACK, "")]
    assert back.events[0].canary.cluster == "a"


def test_latest_analysis_reads_the_most_recently_scraped_cluster_first() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting"), cluster="a"))
    normaliser(scrape(fixture("rollback-failed"), cluster="b"))
    assert normaliser.latest_analysis("test", "podinfo")["request-duration"] == 1.283
    normaliser(scrape(fixture("rollback-halting"), cluster="a"))
    assert normaliser.latest_analysis("test", "podinfo")["request-duration"] == 0.212


def test_the_least_recently_scraped_cluster_is_forgotten_first() -> None:
    normaliser = FlaggerMetricsNormaliser()
    clusters = [f"c{i}" for i in range(MAX_CLUSTERS + 1)]
    for cluster in clusters[:-1]:
        normaliser(scrape(fixture("rollback-halting"), cluster=cluster))
    # A query does not count as a scrape: c0 stays the least recently scraped.
    assert normaliser.latest_analysis("test", "podinfo", cluster="c0") != {}
    normaliser(scrape(fixture("rollback-halting"), cluster=clusters[-1]))
    assert normaliser.latest_analysis("test", "podinfo", cluster="c0") == {}
    kept = normaliser(scrape(fixture("rollback-failed"), cluster="c1"))
    assert seen(kept) == [("test/podinfo", Transition.ROLLED_BACK, "")]
    forgotten = normaliser(scrape(fixture("rollback-failed"), cluster="c0"))
    assert forgotten.outcome is Outcome.IGNORED  # a first sight again


# -- unknown values and versions ----------------------------------------------------------


def test_status_value_outside_the_table_is_unknown_and_never_guessed() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting")))
    odd = fixture("rollback-halting").replace(
        'flagger_canary_status{name="podinfo",namespace="test"} 0',
        'flagger_canary_status{name="podinfo",namespace="test"} 3',
    )
    result = normaliser(scrape(odd))
    assert result.outcome is Outcome.UNKNOWN
    assert result.events == ()
    assert "flagger_canary_status=3" in result.note
    assert "test/podinfo" in result.note
    assert normaliser.unknown_status_values == {"3": 1}
    # The same odd value again is not counted twice; the next known value diffs against 0.
    assert normaliser(scrape(odd)).outcome is Outcome.REPEAT
    assert normaliser.unknown_status_values == {"3": 1}
    failed = normaliser(scrape(fixture("rollback-failed")))
    assert seen(failed) == [("test/podinfo", Transition.ROLLED_BACK, "")]


def test_unknown_version_is_reported_and_decoded_with_the_newest_table() -> None:
    normaliser = FlaggerMetricsNormaliser()
    play(normaliser, "rollback-halting")
    assert normaliser.unknown_version is None
    future = fixture("rollback-failed").replace('version="1.44.0"', 'version="2.0.0-dev"')
    result = normaliser(scrape(future))
    assert normaliser.unknown_version == "2.0.0-dev"
    assert seen(result) == [("test/podinfo", Transition.ROLLED_BACK, "")]


def test_missing_flagger_info_is_an_unknown_version() -> None:
    normaliser = FlaggerMetricsNormaliser()
    text = fixture("rollback-halting").replace(
        'flagger_info{mesh_provider="istio",version="1.44.0"} 1', ""
    )
    normaliser(scrape(text))
    assert normaliser.unknown_version == "(absent)"


@pytest.mark.parametrize(
    ("version", "table", "known"),
    [
        ("1.44.0", "outcome-counters", True),
        ("v1.42.0", "outcome-counters", True),
        ("1.42.0-rc.1", "metric-analysis", True),
        ("1.41.3", "metric-analysis", True),
        ("1.20.0", "metric-analysis", True),
        ("1.19.9", "status-only", True),
        ("0.1.0-beta.6", "status-only", True),
        ("0.1.0-beta.5", "outcome-counters", False),
        ("1.45.0", "outcome-counters", False),
        ("latest", "outcome-counters", False),
        ("", "outcome-counters", False),
        (None, "outcome-counters", False),
    ],
)
def test_table_for_picks_by_semver_range(version: str | None, table: str, known: bool) -> None:
    chosen, is_known = table_for(version)
    assert (chosen.name, is_known) == (table, known)


def test_status_mapping_is_the_same_in_every_table() -> None:
    for version in ("0.1.0-beta.6", "1.20.0", "1.44.0"):
        table, _ = table_for(version)
        assert [table.status_meaning(v) for v in (0.0, 1.0, 2.0, 3.0, 0.5)] == [
            StatusMeaning.PROGRESSING,
            StatusMeaning.OTHER,
            StatusMeaning.FAILED,
            None,
            None,
        ]
    assert NEWEST_TABLE.has_outcome_counters


# -- the proposed flagger_canary_phase state set (PR #1927) ---------------------------------

PHASES = ["Progressing", "Promoting", "Finalising", "Succeeded", "Failed", "WaitingPromotion"]


def with_phase(text: str, phase: str) -> str:
    lines = [
        "# HELP flagger_canary_phase Canary phase",
        "# TYPE flagger_canary_phase gauge",
        *(
            f'flagger_canary_phase{{name="podinfo",namespace="test",phase="{p}"}} '
            f"{1 if p == phase else 0}"
            for p in PHASES
        ),
    ]
    return text + "\n".join(lines) + "\n"


def test_phase_metric_is_authoritative_for_promotion_failed() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(with_phase(fixture("rollback-halting"), "Promoting")))
    result = normaliser(scrape(with_phase(fixture("rollback-failed"), "Failed")))
    # Status 1 -> 2 alone would say rolled-back; the phase says the promotion failed, and the
    # failures counter folds into it.
    assert seen(result) == [("test/podinfo", Transition.PROMOTION_FAILED, "")]
    assert result.events[0].reason == "flagger_canary_phase=Failed"


def test_phase_metric_announces_succeeded() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(with_phase(fixture("rollout-progressing"), "Finalising")))
    result = normaliser(scrape(with_phase(fixture("rollout-succeeded"), "Succeeded")))
    assert seen(result) == [("test/podinfo", Transition.PROMOTED, "")]
    assert result.events[0].phase is Phase.SUCCEEDED


def test_phase_metric_into_progressing_is_a_new_revision() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(with_phase(fixture("rollout-succeeded"), "Succeeded")))
    result = normaliser(scrape(with_phase(fixture("rollout-progressing"), "Progressing")))
    assert seen(result)[0] == ("test/podinfo", Transition.REVISION_DETECTED, "")
    assert result.events[0].reason == "flagger_canary_phase=Progressing"


def test_phase_metric_with_an_unknown_phase_label_is_rejected() -> None:
    normaliser = FlaggerMetricsNormaliser()
    text = fixture("rollout-progressing") + (
        'flagger_canary_phase{name="podinfo",namespace="test",phase="Paused"} 1\n'
    )
    normaliser(scrape(text))
    assert normaliser.rejected[RejectReason.UNKNOWN_PHASE] == 1


# -- hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('flagger_canary_status{name="podinfo",namespace="test"} NaN', RejectReason.NON_FINITE),
        ('flagger_canary_status{name="podinfo",namespace="test"} +Inf', RejectReason.NON_FINITE),
        ('flagger_canary_status{namespace="test"} 2', RejectReason.MISSING_LABEL),
        ('flagger_canary_weight{namespace="test"} 2', RejectReason.MISSING_LABEL),
        ('flagger_canary_status{name="podinfo",namespace="test"} 2', RejectReason.DUPLICATE),
        (
            'flagger_canary_status{name="' + "p" * 1025 + '",namespace="test"} 2',
            RejectReason.LABEL_TOO_LONG,
        ),
    ],
)
def test_bad_samples_are_skipped_and_counted(line: str, reason: str) -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting")))
    # The bad line comes after the real podinfo status (0), so "keep first" keeps 0.
    text = fixture("rollback-halting") + line + "\n"
    result = normaliser(scrape(text))
    assert normaliser.rejected == {reason: 1}
    assert result.events == ()
    assert result.outcome is Outcome.REPEAT


@pytest.mark.parametrize(
    "text",
    [
        'flagger_canary_status{name="podinfo",namespace="test"} 1 2 3 x\n',
        'flagger_canary_status{name="podinfo" namespace="test"} 1\n',
        "# TYPE flagger_canary_status\n",
        "flagger_canary_status{name=podinfo} 1\n",
    ],
)
def test_malformed_exposition_is_malformed_and_keeps_the_baseline(text: str) -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting")))
    result = normaliser(scrape(text))
    assert result.outcome is Outcome.MALFORMED
    assert result.note.startswith("unparseable exposition")
    assert seen(normaliser(scrape(fixture("rollback-failed")))) == [
        ("test/podinfo", Transition.ROLLED_BACK, "")
    ]


@pytest.mark.parametrize("data", [None, 42, {"text": "x"}, ["a"]])
def test_non_text_data_is_malformed(data: object) -> None:
    result = FlaggerMetricsNormaliser()(
        Observation(at=AT, source=SourceName.FLAGGER_METRICS, data=data)
    )
    assert result.outcome is Outcome.MALFORMED


def test_scrape_without_flagger_metrics_keeps_the_baseline() -> None:
    normaliser = FlaggerMetricsNormaliser()
    normaliser(scrape(fixture("rollback-halting")))
    empty = normaliser(
        scrape("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 7\n")
    )
    assert empty.outcome is Outcome.IGNORED
    # Had the empty scrape replaced the baseline, the next one would be a first sight.
    assert seen(normaliser(scrape(fixture("rollback-failed")))) == [
        ("test/podinfo", Transition.ROLLED_BACK, "")
    ]


_names = st.sampled_from(
    [
        "flagger_canary_status",
        "flagger_canary_weight",
        "flagger_canary_successes_total",
        "flagger_canary_failures_total",
        "flagger_canary_metric_analysis",
        "flagger_canary_phase",
        "flagger_info",
        "go_goroutines",
    ]
)
_label = st.sampled_from(["name", "namespace", "workload", "metric", "phase", "version", "x"])
_values = st.sampled_from(["0", "1", "2", "3", "NaN", "-Inf", "1e400", "9" * 50, "0.5", "x", ""])
_line = st.one_of(
    st.builds(
        lambda n, labels, v: f"{n}{{{','.join(f'{k}={val!r}' for k, val in labels)}}} {v}",
        _names,
        st.lists(
            st.tuples(_label, st.sampled_from(['"test"', '"podinfo"', '""', "u"])), max_size=4
        ),
        _values,
    ).map(lambda s: s.replace("'", "")),
    st.builds(lambda n, t: f"# TYPE {n} {t}", _names, st.sampled_from(["gauge", "counter", ""])),
    st.text(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(scrapes=st.lists(st.lists(_line, max_size=12).map("\n".join), min_size=1, max_size=4))
def test_normaliser_is_total_on_hostile_exposition(scrapes: list[str]) -> None:
    normaliser = FlaggerMetricsNormaliser()
    for text in [fixture("rollback-halting"), *scrapes]:
        result = normaliser(scrape(text))
        assert isinstance(result, Normalised)
        for event in result.events:
            assert event.transition in {
                Transition.PROMOTED,
                Transition.ROLLED_BACK,
                Transition.PROMOTION_FAILED,
                Transition.WEIGHT_ADVANCED,
            }
