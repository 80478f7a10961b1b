"""Config section ``low_traffic``: the passed-with-no-traffic check at promotion.

Same conventions as ``config.daemon_models``: a frozen pydantic model, extra keys refused, every
field described for the generated reference. The check itself is ``canarywatch.sources.low_traffic``;
the query templates and their placeholders are documented there and in ``MESH_QUERIES``.
"""

from __future__ import annotations

import re
from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canarywatch.config.daemon_models import BasicAuthSpec, TLSSpec
from canarywatch.config.fields import Duration, SecretField

_MODEL = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

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

    model_config = _MODEL

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
