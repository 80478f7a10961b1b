"""Config sections ``clusters`` (the Kubernetes clusters followed, each with its ``cluster``
label) and ``leader_election`` (which replica dispatches, through a Lease in one of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

from canarywatch.config.fields import SECTION, Duration, Name


class ClusterSettings(BaseModel):
    """One Kubernetes cluster to follow, with its own sources and `cluster` label."""

    model_config = SECTION

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

    model_config = SECTION

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
