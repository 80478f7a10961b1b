"""The whole configuration file: one field per top-level section, each a model of its concern.

These models describe the YAML as written (durations already in float seconds, secrets already
``Secret``). Checks that need more than one section (receiver names exist, names unique) and
parsing ``time_intervals`` with ``canarywatch.labels.timeintervals`` live in ``config.loader``.
Route inheritance and the root route's defaults are applied by ``pipeline.route.build_route``,
not here: ``Config.route`` is the ``RouteSpec`` tree as written. Every field has a
``description``: ``config_schema_markdown()`` renders them for the README, in this order.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from canarywatch.config.clusters import ClusterSettings, LeaderElectionSettings
from canarywatch.config.daemon import LogSettings, ServerSettings, StateSettings
from canarywatch.config.delivery import DispatchSettings
from canarywatch.config.fields import SECTION, Duration, Name
from canarywatch.config.muting import InhibitRule, Silence, TimeIntervalSet
from canarywatch.config.receivers import Receiver
from canarywatch.config.routing import LabelSettings, RouteSpec
from canarywatch.config.sources import (
    LowTrafficSettings,
    MetricsSourceSettings,
    WebhookIntakeSettings,
)


class ConfigFile(BaseModel):
    """The whole file. Missing ``receivers``/``route`` mean the built-in default policy."""

    model_config = SECTION

    cluster: Name = Field(default="default", description="The `cluster` label on every event.")
    receivers: tuple[Receiver, ...] | None = Field(
        default=None,
        description="Notification destinations. Default: one receiver `default` (console sink).",
        json_schema_extra={"doc_default": "[{name: default, sink: console}]"},
    )
    route: RouteSpec | None = Field(
        default=None,
        description="The routing tree's root; it needs `receiver` and takes no matchers.",
        json_schema_extra={"doc_default": "{receiver: default}"},
    )
    time_intervals: tuple[TimeIntervalSet, ...] = Field(
        default=(), description="Named time intervals for mute/active routes."
    )
    inhibit_rules: tuple[InhibitRule, ...] | None = Field(
        default=None,
        description=(
            "Rules muting events while related events fire. Omitted: the shipped defaults "
            "(a rollback mutes its own rollout's pending halted/no-traffic/weight-advanced); "
            "`[]`: none."
        ),
        json_schema_extra={"doc_default": "shipped defaults"},
    )
    silences: tuple[Silence, ...] = Field(default=(), description="Silences declared in config.")
    state: StateSettings = Field(default_factory=StateSettings, description="Local state.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP listener.")
    catch_up_window: Duration = Field(
        default=600.0,
        ge=0,
        description="On start, events older than this are recorded but not notified.",
    )
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    clusters: tuple[ClusterSettings, ...] = Field(
        default=(), description="Kubernetes clusters to follow; empty: none (replay only)."
    )
    leader_election: LeaderElectionSettings = Field(
        default_factory=LeaderElectionSettings, description="Lease-based leader election."
    )
    metrics_source: MetricsSourceSettings = Field(
        default_factory=MetricsSourceSettings, description="Flagger's Prometheus metrics."
    )
    dispatch: DispatchSettings = Field(
        default_factory=DispatchSettings, description="Delivery timeouts and retries."
    )
    labels: LabelSettings = Field(
        default_factory=LabelSettings, description="Canary labels/annotations to route on."
    )
    low_traffic: LowTrafficSettings = Field(
        default_factory=LowTrafficSettings,
        description="Warn when a canary was promoted after serving too few requests.",
    )
    webhook_intake: WebhookIntakeSettings = Field(
        default_factory=WebhookIntakeSettings,
        description="Flagger's event webhook (POST /v1/flagger/events).",
    )
