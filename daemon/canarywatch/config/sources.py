"""Config sections of the inputs besides the clusters' own watches: ``metrics_source``
(Flagger's Prometheus metrics), ``webhook_intake`` (Flagger's event webhook) and ``low_traffic``
(the passed-with-no-traffic check at promotion, a Prometheus query).

The sources themselves are ``canarywatch.sources.flagger_metrics``,
``canarywatch.sources.flagger_webhook`` (served on ``server.listen`` at
``POST /v1/flagger/events``) and ``canarywatch.sources.low_traffic``; the low-traffic query
templates and their placeholders are documented there and in ``MESH_QUERIES``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from canarywatch.config.fields import SECTION, Duration, Name, SecretField


def _yaml_off(value: object) -> object:
    """YAML 1.1 reads a bare ``off`` as ``False``; take it as the word the user wrote."""
    return "off" if value is False else value


class MetricsTargetSpec(BaseModel):
    """One Flagger instance to read metrics from."""

    model_config = SECTION

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
    """HTTP basic auth for a Prometheus (metrics source, low-traffic check)."""

    model_config = SECTION

    username: str = Field(description="User name.")
    password: SecretField = Field(description="Password: `{env: ...}`/`{file: ...}`.")


class TLSSpec(BaseModel):
    """TLS options for a Prometheus or a scraped Flagger."""

    model_config = SECTION

    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server.")
    cert_file: Path | None = Field(default=None, description="Client certificate.")
    key_file: Path | None = Field(default=None, description="Client key.")
    insecure_skip_verify: bool = Field(
        default=False, description="Do not verify the server certificate (never in production)."
    )


class MetricsSourceSettings(BaseModel):
    """Flagger's Prometheus metrics: scraped directly, or queried from a Prometheus."""

    model_config = SECTION

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


DEFAULT_MAX_BODY_BYTES: Final = 256 * 1024
"""Flagger's bodies are a few hundred bytes; custom ``metadata`` rarely adds more than a few KiB."""

LIMIT_MAX_BODY_BYTES: Final = 1 << 20
"""The web server refuses larger bodies on every route anyway (``web.MAX_BODY_BYTES``)."""


class WebhookIntakeSettings(BaseModel):
    """Flagger's event webhook (`-event-webhook` or a Canary `type: event` webhook).

    Point Flagger at `http://<canarywatch>:<port>/v1/flagger/events`. Flagger cannot send
    headers on this webhook, so when `secret` is set put it in the URL as
    `?token=<secret>`; `Authorization: Bearer <secret>` is accepted too (proxies, curl).
    """

    model_config = SECTION

    enabled: bool = Field(default=False, description="Accept Flagger's event webhook.")
    secret: SecretField | None = Field(
        default=None,
        description=(
            "Shared secret required on every POST, as `?token=` in the URL Flagger is given "
            "or as `Authorization: Bearer`; `{env: ...}`/`{file: ...}`. Default: none."
        ),
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        le=LIMIT_MAX_BODY_BYTES,
        description="Larger request bodies are refused with 413.",
        json_schema_extra={"doc_default": "256 KiB"},
    )
    cluster: Name | None = Field(
        default=None,
        description=(
            "The `cluster` label stamped on webhook events (the Flagger that posts them runs "
            "there); default: the first configured cluster."
        ),
        json_schema_extra={"doc_default": "first cluster"},
    )


Mesh = Literal["istio", "linkerd", "nginx", "custom"]

PLACEHOLDERS: Final = ("namespace", "target", "canary", "cluster", "window")
"""What a query template may name as ``{placeholder}``; any other braces are PromQL's own."""

PLACEHOLDER: Final = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

MESH_QUERIES: Final[dict[str, str]] = {
    # Requests the canary pods received, as reported by their own sidecars (Flagger's istio
    # observer uses the same reporter and workload labels).
    "istio": (
        'sum(increase(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="{namespace}",destination_workload="{target}"}[{window}]))'
    ),
    # Inbound responses of the canary deployment, from its linkerd proxy.
    "linkerd": (
        'sum(increase(response_total{namespace="{namespace}",deployment="{target}",'
        'direction="inbound"}[{window}]))'
    ),
    # ingress-nginx: Flagger merges the "<ingress>-canary" Ingress into the main one as an
    # alternative backend, so the controller's `ingress` label is the *main* Ingress and the
    # requests the canary served are the ones whose `canary` label names the alternative
    # upstream, "<namespace>-<target>-canary-<port>" (Flagger's canary Service is
    # "<service.name>-canary", and service.name defaults to the target's name).
    "nginx": (
        'sum(increase(nginx_ingress_controller_requests{namespace="{namespace}",'
        'canary=~"{namespace}-{target}-canary-.+"}[{window}]))'
    ),
}
"""Default request-count templates per mesh (Flagger MetricTemplate style, our placeholders)."""


class LowTrafficSettings(BaseModel):
    """At `promoted`, ask Prometheus how many requests the canary served during its analysis.

    A canary that passed its analysis with (almost) no traffic was never tested: Flagger's
    metric checks can pass on an empty or tiny sample. When the count is below `min_requests`
    canarywatch emits one `low-traffic-promotion` warning for that rollout. The figure is
    carried on that event and logged; the `promoted` notification has already gone out.
    """

    model_config = SECTION

    enabled: bool = Field(default=False, description="Run the check at every promotion.")
    prometheus_url: str = Field(
        default="",
        description="Prometheus base URL (the one that scrapes the mesh/ingress metrics).",
    )
    bearer_token: SecretField | None = Field(
        default=None, description="Bearer token for Prometheus."
    )
    basic_auth: BasicAuthSpec | None = Field(default=None, description="Basic auth for Prometheus.")
    tls: TLSSpec = Field(default_factory=TLSSpec, description="TLS options for Prometheus.")
    mesh: Mesh = Field(
        default="istio",
        description=(
            "Which default query to use: `istio`, `linkerd`, `nginx`, or `custom` (then "
            "`query` is required)."
        ),
    )
    query: str = Field(
        default="",
        description=(
            "PromQL template overriding the mesh default; it must return the request count "
            "as one number. Placeholders: `{namespace}`, `{target}` (the workload), "
            "`{canary}`, `{cluster}`, `{window}` (the rollout's duration, e.g. `754s`)."
        ),
        json_schema_extra={"doc_default": "per mesh"},
    )
    min_requests: int = Field(
        default=100, ge=1, description="Fewer requests than this during analysis is a warning."
    )
    timeout: Duration = Field(default=10.0, gt=0, description="Per-query timeout.")
    delay: Duration = Field(
        default=30.0,
        ge=0,
        description=(
            "Wait this long after `promoted` before querying, so Prometheus has scraped the "
            "last requests (the query is still evaluated at the promotion time)."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.enabled and not self.prometheus_url:
            raise ValueError("low_traffic.enabled needs `prometheus_url`")
        if self.mesh == "custom" and not self.query.strip():
            raise ValueError("mesh: custom needs `query`")
        if self.bearer_token is not None and self.basic_auth is not None:
            raise ValueError("set either `bearer_token` or `basic_auth`, not both")
        return self

    def template(self) -> str:
        """The PromQL template in effect: ``query`` when set, else the mesh's default."""
        return self.query.strip() or MESH_QUERIES[self.mesh]
