"""Config sections of the running daemon: clusters, leader election, metrics, dispatch, labels.

Same conventions as ``config.models``: frozen pydantic models, extra keys refused, every field
described for the generated reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from canarywatch.config.fields import Duration, LabelName, Name, SecretField

_MODEL = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _yaml_off(value: object) -> object:
    """YAML 1.1 reads a bare ``off`` as ``False``; take it as the word the user wrote."""
    return "off" if value is False else value


class ClusterSettings(BaseModel):
    """One Kubernetes cluster to follow, with its own sources and `cluster` label."""

    model_config = _MODEL

    name: Name = Field(description="The `cluster` label on this cluster's events.")
    connection: Literal["auto", "in-cluster", "kubeconfig", "host"] = Field(
        default="auto",
        description=(
            "`in-cluster` (service account), `kubeconfig` (`kubeconfig` + `context`), `host` "
            "(an explicit API server URL, e.g. the simulator), or `auto`: in-cluster when "
            "KUBERNETES_SERVICE_HOST is set, else kubeconfig."
        ),
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file; default: $KUBECONFIG or ~/.kube/config.",
        json_schema_extra={"doc_default": "$KUBECONFIG"},
    )
    context: str | None = Field(
        default=None,
        description="Kubeconfig context; default: the file's current context.",
        json_schema_extra={"doc_default": "current"},
    )
    host: str | None = Field(default=None, description="API server URL for `connection: host`.")
    namespaces: tuple[Name, ...] = Field(
        default=(), description="Namespaces to watch; empty (and no selector) means all."
    )
    namespace_selector: str = Field(
        default="",
        description=(
            "Label selector of namespaces to watch (e.g. `canarywatch.io/watch=true`), "
            "resolved at start-up and added to `namespaces`."
        ),
    )
    canary_label_selector: str = Field(
        default="", description="Label selector limiting which Canaries are followed."
    )
    events_api: Literal["core/v1", "events.k8s.io/v1"] = Field(
        default="core/v1",
        description="Which Events API to watch (Flagger writes core/v1; both views work).",
    )
    watch_events: bool = Field(default=True, description="Follow Kubernetes Events.")
    watch_canaries: bool = Field(default=True, description="Follow Canary status.")
    silent_stream: Duration = Field(
        default=60.0,
        gt=0,
        description=(
            "A watch that sends nothing (not even a bookmark, which the API server sends every "
            "minute when asked) for this long is taken as half-open, closed and replaced."
        ),
    )
    watch_start_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="How long a list or a new watch may take to answer before it is retried.",
    )

    @model_validator(mode="after")
    def _host_needed(self) -> Self:
        if self.connection == "host" and not self.host:
            raise ValueError("connection: host needs `host` (the API server URL)")
        return self


class LeaderElectionSettings(BaseModel):
    """Replicas elect one leader through a coordination.k8s.io/v1 Lease; only it dispatches."""

    model_config = _MODEL

    enabled: bool = Field(default=False, description="Turn leader election on.")
    lease_name: Name = Field(default="canarywatch", description="Name of the Lease object.")
    lease_namespace: Name = Field(
        default="canarywatch", description="Namespace of the Lease (the daemon's own)."
    )
    identity: str | None = Field(
        default=None,
        description="This replica's identity; default: the pod/host name.",
        json_schema_extra={"doc_default": "hostname"},
    )
    cluster: Name | None = Field(
        default=None,
        description="Which configured cluster holds the Lease; default: the first.",
        json_schema_extra={"doc_default": "first cluster"},
    )
    lease_duration: Duration = Field(default=15.0, description="How long a lease is valid.")
    renew_deadline: Duration = Field(default=10.0, description="Leader gives up after this.")
    retry_period: Duration = Field(default=2.0, description="Time between attempts.")

    @model_validator(mode="after")
    def _ordering(self) -> Self:
        if not (
            self.lease_duration > self.renew_deadline > 1.2 * self.retry_period
            and self.retry_period >= 1
        ):
            raise ValueError("need lease_duration > renew_deadline > 1.2 x retry_period, all >= 1s")
        return self


class MetricsTargetSpec(BaseModel):
    model_config = _MODEL

    name: Name = Field(description="Target name (the self-event's canary name when down).")
    url: str = Field(default="", description="Flagger's /metrics URL (scrape mode).")
    match: str = Field(
        default="", description='Extra PromQL matchers (prometheus mode), e.g. `job="flagger"`.'
    )
    cluster: Name | None = Field(
        default=None,
        description="The cluster this Flagger runs in; default: the first cluster / `cluster`.",
        json_schema_extra={"doc_default": "first cluster"},
    )


class BasicAuthSpec(BaseModel):
    model_config = _MODEL

    username: str = Field(description="User name.")
    password: SecretField = Field(description="Password: `{env: ...}`/`{file: ...}`.")


class TLSSpec(BaseModel):
    model_config = _MODEL

    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    cert_file: Path | None = Field(default=None, description="Client certificate.")
    key_file: Path | None = Field(default=None, description="Client key.")
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server certificate (never in production)."
    )


class MetricsSourceSettings(BaseModel):
    """Flagger's Prometheus metrics: scraped directly, or queried from a Prometheus."""

    model_config = _MODEL

    mode: Annotated[Literal["off", "scrape", "prometheus"], BeforeValidator(_yaml_off)] = Field(
        default="off", description="`scrape` Flagger's /metrics, query `prometheus`, or `off`."
    )
    targets: tuple[MetricsTargetSpec, ...] = Field(
        default=(), description="Flagger instances (one per cluster)."
    )
    discover: bool = Field(
        default=False,
        description=(
            "Scrape mode, in-cluster: find Flagger from its Service (label "
            "`discover_selector`) in every cluster at start-up, in addition to `targets`."
        ),
    )
    discover_selector: str = Field(
        default="app.kubernetes.io/name=flagger",
        description="Label selector of Flagger's Service for `discover`.",
    )
    prometheus_url: str = Field(default="", description="Prometheus base URL (prometheus mode).")
    bearer_token: SecretField | None = Field(
        default=None, description="Bearer token for Prometheus."
    )
    basic_auth: BasicAuthSpec | None = Field(default=None, description="Basic auth for Prometheus.")
    tls: TLSSpec = Field(default_factory=TLSSpec, description="TLS options for both modes.")
    interval: Duration = Field(default=5.0, gt=0, description="Time between scrapes/queries.")
    timeout: Duration = Field(default=4.0, gt=0, description="Per-request timeout.")
    down_after: int = Field(
        default=3, ge=1, description="Failed scrapes in a row before `metrics-source-down`."
    )
    up_after: int = Field(
        default=1, ge=1, description="Good scrapes in a row before `metrics-source-recovered`."
    )


class DispatchSettings(BaseModel):
    """Delivery: timeouts, retries and the shutdown drain."""

    model_config = _MODEL

    attempt_timeout: Duration = Field(default=10.0, gt=0, description="One delivery attempt.")
    retry_budget: Duration = Field(
        default=300.0, ge=0, description="How long one notification is retried."
    )
    drain_timeout: Duration = Field(
        default=20.0,
        ge=0,
        description="On shutdown, how long queued notifications may still be delivered.",
    )
    queue_size: int = Field(default=1000, ge=1, description="Per-receiver queue bound.")


class LabelSettings(BaseModel):
    """Which of a Canary's own labels/annotations become routing labels (owner routing)."""

    model_config = _MODEL

    canary_labels: tuple[str, ...] = Field(
        default=(),
        description="Canary label keys to copy, e.g. `team`, `app.kubernetes.io/part-of`.",
    )
    canary_annotations: tuple[str, ...] = Field(
        default=(), description="Canary annotation keys to copy."
    )
    prefix: LabelName = Field(
        default="canary_",
        description="Prefix of the copied labels (`team` becomes `canary_team`).",
    )
