"""Build the notification policy (router, inhibitor, pipeline) from a ``Config``.

Without a config file canarywatch uses the built-in default policy: every transition is its own
notification, sent at once to one receiver named ``default`` (the ``console`` sink), and
resolutions are not sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import structlog

from canarywatch.config import (
    ALL_LABELS,
    DEFAULT_RECEIVER,
    DEFAULT_SINK,
    ROUTE_LOC,
    Config,
    RouteSpec,
)
from canarywatch.labels.durations import format_duration
from canarywatch.labels.matchers import parse_matchers
from canarywatch.labels.timeintervals import TimeInterval
from canarywatch.metrics import Metrics
from canarywatch.normalise import Normaliser
from canarywatch.pipeline.core import Pipeline
from canarywatch.pipeline.correlate import Correlator
from canarywatch.pipeline.inhibit import Inhibitor, InhibitRule
from canarywatch.pipeline.route import Router
from canarywatch.pipeline.route import build_route as build_route  # config.route -> the tree
from canarywatch.pipeline.silence import Silencer
from canarywatch.views.explain import DecisionRecorder

DEFAULT_CLUSTER = "default"
NEVER_REPEAT_S = 365 * 24 * 3600.0

DEFAULT_ROUTE = build_route(
    RouteSpec.model_validate(
        {
            "receiver": DEFAULT_RECEIVER,
            "group_by": [ALL_LABELS],
            "repeat_interval": format_duration(NEVER_REPEAT_S),
        }
    )
)
"""Without a config: one group per distinct label set, flushed the moment an event arrives
(the root defaults' ``group_wait``/``group_interval``), never repeated."""


def build_time_intervals(config: Config) -> Mapping[str, Sequence[TimeInterval]]:
    """The named time intervals, already parsed by ``canarywatch.labels.timeintervals`` at load."""
    return config.time_intervals


def build_router(config: Config | None) -> Router:
    if config is None or not config.receivers:
        return Router(DEFAULT_ROUTE, send_resolved={DEFAULT_RECEIVER: False})
    try:
        root = build_route(config.route)
    except ValueError as exc:
        # The loader reports the same root-route problems with their lines; this is for a
        # Config built in code.
        raise config.error_at(ROUTE_LOC, str(exc)) from None
    return Router(
        root,
        send_resolved={r.name: r.send_resolved for r in config.receivers},
        time_intervals=build_time_intervals(config),
    )


DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule(
        source_matchers=parse_matchers(['transition=~"rolled-back|promotion-failed"']),
        target_matchers=parse_matchers(['transition=~"halted|no-traffic|weight-advanced"']),
        equal=("cluster", "namespace", "canary", "rollout"),
    ),
)
"""Shipped when the config has no ``inhibit_rules``: a rollout's verdict mutes its own steps
and warnings still waiting in a group (with ``group_wait`` > 0; sent ones cannot be unsent)."""


def build_inhibitor(config: Config | None) -> Inhibitor:
    if config is None or config.inhibit_rules is None:
        return Inhibitor(DEFAULT_INHIBIT_RULES)
    return Inhibitor(
        [
            InhibitRule(
                source_matchers=parse_matchers(list(rule.source_matchers)),
                target_matchers=parse_matchers(list(rule.target_matchers)),
                equal=tuple(rule.equal),
            )
            for rule in config.inhibit_rules
        ]
    )


def spec_wait_clusters(config: Config | None) -> frozenset[str]:
    """The clusters whose Canary status is watched: there a rollout start reported without its
    spec waits for the status to reveal it (``correlate.SPEC_WAIT``), so the rollout's id does
    not depend on which source reported the start first."""
    if config is None:
        return frozenset()
    return frozenset(cluster.name for cluster in config.clusters if cluster.watch_canaries)


def name_wait_clusters(config: Config | None) -> frozenset[str]:
    """The clusters whose Kubernetes Events are watched: there a ``halted`` first reported by
    the Canary status waits for the Event that says why (``correlate.NAME_WAIT``), so the
    analysis episode is named ``no-traffic`` when Flagger found no values, whichever source
    came first. Without the Events nothing could name it: the status halt is sent at once."""
    if config is None:
        return frozenset()
    return frozenset(cluster.name for cluster in config.clusters if cluster.watch_events)


def label_hints(config: Config | None) -> dict[str, str]:
    """Hint keys of the canaries source -> routing label names, from ``labels:``.

    ``labels.canary_labels: [team]`` makes a Canary's ``team`` label the ``canary_team``
    routing label; characters not allowed in label names become ``_``.
    """
    if config is None:
        return {}
    settings = config.labels
    hints = {f"label:{key}": settings.prefix + _label_name(key) for key in settings.canary_labels}
    hints.update(
        {
            f"annotation:{key}": settings.prefix + _label_name(key)
            for key in settings.canary_annotations
        }
    )
    return hints


def _label_name(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def build_pipeline(
    config: Config | None,
    *,
    metrics: Metrics | None = None,
    log: structlog.typing.FilteringBoundLogger | None = None,
    normaliser: Normaliser | None = None,
    correlator: Correlator | None = None,
    silencer: Silencer | None = None,
    catch_up: bool = False,
    explain: DecisionRecorder | None = None,
) -> Pipeline:
    """The pipeline for ``config`` (``None``: the built-in default policy).

    ``catch_up`` applies the start-up catch-up window (the daemon); replay does not need it.
    ``explain`` records every decision (``canarywatch explain``, ``replay --explain``).
    """
    return Pipeline(
        router=build_router(config),
        inhibitor=build_inhibitor(config),
        normaliser=normaliser,
        correlator=correlator
        or Correlator(
            label_hints=label_hints(config),
            spec_wait_clusters=spec_wait_clusters(config),
            name_wait_clusters=name_wait_clusters(config),
        ),
        silencer=silencer,
        metrics=metrics,
        log=log,
        cluster=config.cluster if config is not None else DEFAULT_CLUSTER,
        catch_up_window_s=config.catch_up_window_s if (catch_up and config) else None,
        explain=explain,
    )


def receivers(config: Config | None) -> list[tuple[str, str, Mapping[str, object]]]:
    """``(receiver name, sink name, options)`` for every receiver, default included."""
    if config is None or not config.receivers:
        return [(DEFAULT_RECEIVER, DEFAULT_SINK, {})]
    return [(r.name, r.sink, r.options) for r in config.receivers]
