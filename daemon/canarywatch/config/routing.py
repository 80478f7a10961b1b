"""Config section ``route`` (the routing tree as written) and ``labels`` (what it can match on).

``RouteSpec`` is the one description of a route node: the loader validates it, and
``pipeline.route.build_route`` resolves it (inheritance, the root defaults below) into the tree
the router walks. Each node's own values are checked here, once, by the model (``group_by``
shape, ``group_wait``/``group_interval`` >= 0, ``repeat_interval`` > 0); what only the root may
not have is ``root_route_problems``, which the loader reports with its line and
``build_route`` refuses.

The root defaults differ from Alertmanager's: ``group_by`` is ``(cluster, namespace, canary)``
(one group per canary), ``group_wait`` and ``group_interval`` are 0 s, because a lifecycle
transition is discrete news and batching only delays it; ``repeat_interval`` is 4 h as in
Alertmanager.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, Field

from canarywatch.config.fields import SECTION, Duration, LabelName, Matcher, Name, check_label_name
from canarywatch.labels.durations import format_duration
from canarywatch.labels.keypath import KeyPath
from canarywatch.labels.matchers import parse_matcher_set

ALL_LABELS: Final = "..."
"""``group_by: ["..."]``: group by every label, i.e. one group per distinct label set."""

DEFAULT_GROUP_BY: Final[tuple[str, ...]] = ("cluster", "namespace", "canary")
"""The root route's ``group_by`` when it names none: one group per canary."""
DEFAULT_GROUP_WAIT_S: Final = 0.0
"""The root route's ``group_wait``: Alertmanager waits 30 s, a rollback should not."""
DEFAULT_GROUP_INTERVAL_S: Final = 0.0
"""The root route's ``group_interval``: Alertmanager's is 5 m; transitions are discrete news."""
DEFAULT_REPEAT_INTERVAL_S: Final = 4 * 3600.0
"""The root route's ``repeat_interval``, as in Alertmanager."""

ROUTE_LOC: Final[KeyPath] = ("route",)
"""The key path of the root route."""


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

    model_config = SECTION

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
        json_schema_extra={"doc_default": f"[{', '.join(DEFAULT_GROUP_BY)}]"},
    )
    group_wait: Duration | None = Field(
        default=None,
        ge=0,
        description=(
            "How long a new group waits for more events before its first notification. "
            f"Inherited; the root default is {format_duration(DEFAULT_GROUP_WAIT_S)} "
            "(unlike Alertmanager's 30s) so a rollback reaches on-call at once."
        ),
        json_schema_extra={"doc_default": format_duration(DEFAULT_GROUP_WAIT_S)},
    )
    group_interval: Duration | None = Field(
        default=None,
        ge=0,
        description=(
            "Minimum wait before notifying about new events in an existing group. Inherited; "
            f"the root default is {format_duration(DEFAULT_GROUP_INTERVAL_S)} (unlike "
            "Alertmanager's 5m): transitions are discrete news and batching only delays them. "
            "A positive value batches."
        ),
        json_schema_extra={"doc_default": format_duration(DEFAULT_GROUP_INTERVAL_S)},
    )
    repeat_interval: Duration | None = Field(
        default=None,
        gt=0,
        description=(
            "How long before re-sending a notification that has not changed. Inherited; "
            f"the root default is {format_duration(DEFAULT_REPEAT_INTERVAL_S)}."
        ),
        json_schema_extra={"doc_default": format_duration(DEFAULT_REPEAT_INTERVAL_S)},
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


def walk_route(spec: RouteSpec, loc: KeyPath = ROUTE_LOC) -> Iterator[tuple[KeyPath, RouteSpec]]:
    """``spec`` and every node below it with its key path, depth first in config order."""
    yield loc, spec
    for index, child in enumerate(spec.routes):
        yield from walk_route(child, (*loc, "routes", index))


def root_route_problems(spec: RouteSpec) -> Iterator[tuple[KeyPath, str]]:
    """What the root route may not have, as (key path below ``route``, message).

    The root has no parent to inherit a receiver from, matches every event and has no
    siblings; time intervals would mute everything. ``''`` and ``'{}'`` are no matcher, as in
    Alertmanager.
    """
    if spec.receiver is None:
        yield ("receiver",), "the root route needs a receiver"
    if any(parse_matcher_set(item) for item in spec.matchers):
        yield ("matchers",), "the root route matches everything: no matchers"
    if spec.continue_:
        yield ("continue",), "the root route has no siblings: no continue"
    for key in ("mute_time_intervals", "active_time_intervals"):
        if getattr(spec, key):
            yield (key,), f"the root route cannot have {key}"


class LabelSettings(BaseModel):
    """Which of a Canary's own labels/annotations become routing labels (owner routing)."""

    model_config = SECTION

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
