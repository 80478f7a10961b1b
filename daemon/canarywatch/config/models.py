"""The configuration file's schema: one frozen pydantic model per section, extra keys refused.

These models describe the YAML as written (durations already in float seconds, secrets already
``Secret``). Checks that need more than one section (receiver names exist, names unique) and
parsing ``time_intervals`` with ``canarywatch.labels.timeintervals`` live in ``config.loader``. Route
inheritance and the root route's defaults are applied by ``pipeline.route.build_route``, not
here: ``Config.route`` is the ``RouteSpec`` tree as written.
Every field has a ``description``: ``config_schema_markdown()`` renders them for the README.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from canarywatch.config.daemon_models import (
    ClusterSettings,
    DispatchSettings,
    LabelSettings,
    LeaderElectionSettings,
    MetricsSourceSettings,
)
from canarywatch.config.fields import (
    DocType,
    Duration,
    LabelName,
    Matcher,
    Name,
    SecretField,
    check_label_name,
)
from canarywatch.config.low_traffic_models import LowTrafficSettings
from canarywatch.config.webhook_models import WebhookIntakeSettings

_MODEL = ConfigDict(frozen=True, extra="forbid")

ALL_LABELS = "..."
"""``group_by: ["..."]``: group by every label, i.e. one group per distinct label set."""


class Receiver(BaseModel):
    """A named destination: a sink plugin plus the options handed to it."""

    model_config = _MODEL

    name: Name = Field(description="Unique name routes refer to.")
    sink: Name = Field(
        description="Entry-point name of the sink plugin (`console`, `jsonl`, `slack`, ...)."
    )
    send_resolved: bool = Field(default=False, description="Also notify when a condition resolves.")
    options: Mapping[str, object] = Field(
        default_factory=dict,
        description=(
            "Passed to the sink plugin as is; `{env: NAME}`/`{file: PATH}` values become "
            "secrets. Keys that look secret (token, password, webhook_url, ...) must use them."
        ),
        json_schema_extra={"doc_default": "{}"},
    )


def _group_by(value: tuple[str, ...]) -> tuple[str, ...]:
    if ALL_LABELS in value:
        if len(value) != 1:
            raise ValueError('"..." (all labels) must be the only entry of group_by')
        return value
    for label in value:
        check_label_name(label)
    if len(set(value)) != len(value):
        raise ValueError("group_by lists a label twice")
    return value


class RouteSpec(BaseModel):
    """A route node as written; ``pipeline.route.build_route`` fills unset options in."""

    model_config = _MODEL

    receiver: Name | None = Field(
        default=None,
        description="Receiver for events this route matches; inherited from the parent.",
        json_schema_extra={"doc_default": "parent's"},
    )
    group_by: Annotated[tuple[str, ...], AfterValidator(_group_by)] | None = Field(
        default=None,
        description=(
            'Labels that split events into notification groups; `["..."]` means all labels. '
            "Inherited; `[]` below the root inherits too, as in Alertmanager, and on the root "
            "means one group for everything. The root default groups per canary."
        ),
        json_schema_extra={"doc_default": "[cluster, namespace, canary]"},
    )
    group_wait: Duration | None = Field(
        default=None,
        ge=0,
        description=(
            "How long a new group waits for more events before its first notification. "
            "Inherited; the root default is 0s (unlike Alertmanager's 30s) so a rollback "
            "reaches on-call at once."
        ),
        json_schema_extra={"doc_default": "0s"},
    )
    group_interval: Duration | None = Field(
        default=None,
        ge=0,
        description=(
            "Minimum wait before notifying about new events in an existing group. Inherited; "
            "the root default is 0s (unlike Alertmanager's 5m): transitions are discrete news "
            "and batching only delays them. A positive value batches."
        ),
        json_schema_extra={"doc_default": "0s"},
    )
    repeat_interval: Duration | None = Field(
        default=None,
        gt=0,
        description=(
            "How long before re-sending a notification that has not changed. Inherited; "
            "the root default is 4h."
        ),
        json_schema_extra={"doc_default": "4h"},
    )
    matchers: tuple[Matcher, ...] = Field(
        default=(),
        description=(
            'Alertmanager matchers that must all hold (`severity="critical"`); an item may '
            'hold several (`{namespace="shop", severity="critical"}`). Regular expressions are '
            "RE2, as in Alertmanager. Not allowed on the root route."
        ),
    )
    continue_: bool = Field(
        default=False,
        alias="continue",
        description="Keep matching later sibling routes after this one matched.",
    )
    routes: tuple[RouteSpec, ...] = Field(
        default=(), description="Child routes, tried in order (same keys as `route`)."
    )
    mute_time_intervals: tuple[Name, ...] = Field(
        default=(),
        description="Names from `time_intervals` during which this route sends nothing. "
        "Not inherited; not allowed on the root route.",
    )
    active_time_intervals: tuple[Name, ...] = Field(
        default=(),
        description="Names from `time_intervals` outside which this route sends nothing. "
        "Not inherited; not allowed on the root route.",
    )


TimeIntervalValue = Annotated[object, DocType("range")]
"""A range in a time interval (``monday:friday``, ``1:7``, ``-1``, ``2025``), kept as written:
``canarywatch.labels.timeintervals.parse_time_interval`` is the one parser and validator."""


class TimeRangeSpec(BaseModel):
    """A span of the day as written; ``[start_time, end_time)``."""

    model_config = _MODEL

    start_time: Annotated[object, DocType("HH:MM")] = Field(
        description="Start of the span, HH:MM (inclusive). Quote it: YAML reads 19:00 as a number."
    )
    end_time: Annotated[object, DocType("HH:MM")] = Field(
        description="End of the span, HH:MM up to 24:00 (exclusive)."
    )


class TimeIntervalSpec(BaseModel):
    """One interval as written (Alertmanager's keys). An omitted field matches anything; a
    given one matches when any of its entries does, so an empty list matches nothing."""

    model_config = _MODEL

    times: tuple[TimeRangeSpec, ...] | None = Field(
        default=None,
        description="Spans of the day.",
        json_schema_extra={"doc_default": "any time"},
    )
    weekdays: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Day names or ranges, e.g. `monday:friday`, `saturday`; weeks start on sunday.",
        json_schema_extra={"doc_default": "any day"},
    )
    days_of_month: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Days or ranges, e.g. `1:7`; negative counts from the month's end (`-1`).",
        json_schema_extra={"doc_default": "any day"},
    )
    months: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Month names or numbers, or ranges, e.g. `january:march`, `12`.",
        json_schema_extra={"doc_default": "any month"},
    )
    years: tuple[TimeIntervalValue, ...] | None = Field(
        default=None,
        description="Years or ranges, e.g. `2025:2026`.",
        json_schema_extra={"doc_default": "any year"},
    )
    location: Annotated[object, DocType("time zone")] = Field(
        default=None,
        description="IANA time zone the other fields are read in, e.g. `Europe/Berlin`.",
        json_schema_extra={"doc_default": "UTC"},
    )


class TimeIntervalSet(BaseModel):
    """A named list of intervals; routes refer to it by ``name``."""

    model_config = _MODEL

    name: Name = Field(description="Unique name routes refer to.")
    time_intervals: tuple[TimeIntervalSpec, ...] = Field(
        min_length=1, description="The intervals; the name covers a moment when any of them does."
    )


class InhibitRule(BaseModel):
    """While an event matching ``source_matchers`` is firing, mute matching targets."""

    model_config = _MODEL

    source_matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers selecting the muting (source) events."
    )
    target_matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers selecting the events to mute."
    )
    equal: tuple[LabelName, ...] = Field(
        default=(), description="Labels whose values must be equal in source and target."
    )


class Silence(BaseModel):
    """A silence declared in config: mutes matching events between two instants."""

    model_config = _MODEL

    matchers: tuple[Matcher, ...] = Field(
        min_length=1, description="Matchers the silenced events must all satisfy."
    )
    starts_at: datetime = Field(description="Start, RFC 3339 with a time zone.")
    ends_at: datetime = Field(description="End, RFC 3339 with a time zone; after starts_at.")
    created_by: Annotated[str, Field(min_length=1)] = Field(description="Who added it.")
    comment: Annotated[str, Field(min_length=1)] = Field(description="Why it exists.")

    @model_validator(mode="after")
    def _window(self) -> Self:
        for name in ("starts_at", "ends_at"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} needs a time zone offset (e.g. Z or +02:00)")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class StateSettings(BaseModel):
    model_config = _MODEL

    dir: Path = Field(
        default=Path("state"),
        description="Directory of the state database; relative to the working directory.",
        json_schema_extra={"doc_default": "./state"},
    )
    retention: Duration = Field(
        default=120 * 3600.0,
        gt=0,
        description="How long the notification log and resolved conditions are kept.",
        json_schema_extra={"doc_default": "120h"},
    )
    max_held_notifications: int = Field(
        default=1000,
        ge=1,
        description=(
            "While the state store cannot be written (disk full, read-only, I/O error): "
            "notifications held in memory until it can; past this the oldest is dropped "
            "(counted in `canarywatch_events_dropped_total`)."
        ),
    )
    write_retry_max: Duration = Field(
        default=30.0,
        gt=0,
        description=(
            "While the state store cannot be written: the longest wait between attempts to "
            "write what is held (the wait doubles from 0.5s up to this)."
        ),
        json_schema_extra={"doc_default": "30s"},
    )


def split_host_port(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9797"`` / ``"[::1]:9797"`` / ``":9797"`` -> host, port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be HOST:PORT, e.g. 127.0.0.1:9797, not {listen!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _listen(value: str) -> str:
    split_host_port(value)
    return value


class ServerSettings(BaseModel):
    """The HTTP listener: Flagger webhooks, ``/metrics``, ``/healthz``, ``/readyz``."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    listen: Annotated[str, AfterValidator(_listen)] = Field(
        default="127.0.0.1:9797",
        description="HOST:PORT to listen on; a non-loopback address requires `token`.",
    )
    token: SecretField | None = Field(
        default=None,
        description="Bearer token required on the webhook endpoint: `{env: ...}`/`{file: ...}`.",
    )

    @property
    def host(self) -> str:
        return split_host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.listen)[1]

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


class LogSettings(BaseModel):
    model_config = _MODEL

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Minimum level logged."
    )
    format: Literal["auto", "json", "console"] = Field(
        default="auto",
        description="`json` (journald), `console` (human), `auto`: console on a TTY, else json.",
    )
    file: Path | None = Field(
        default=None,
        description="Append the log to this file instead of stderr (stdout is never used: it "
        "carries the console sink's notifications).",
    )


class ConfigFile(BaseModel):
    """The whole file. Missing ``receivers``/``route`` mean the built-in default policy."""

    model_config = _MODEL

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
