"""Configuration: load YAML once into frozen, validated objects grouped by concern.

Errors are ``ConfigError`` naming file, line and key path; secrets become ``Secret``. See
``config/canarywatch.example.yaml`` for every key, and ``config_schema_markdown()`` for the
reference table in the README. The route tree stays as written (``RouteSpec``):
``pipeline.route.build_route`` applies inheritance and the root defaults.

One module per concern: ``routing`` (the route tree, its defaults, ``labels``), ``muting``
(time intervals, inhibit rules, silences), ``receivers``, ``clusters`` (and leader election),
``sources`` (metrics source, webhook intake, low-traffic check), ``delivery`` (dispatch),
``daemon`` (listener, log, state); ``document`` gathers them into the file's model, ``loader``
validates it into a ``Config`` (``resolved``).
"""

from canarywatch.config.clusters import ClusterSettings, LeaderElectionSettings
from canarywatch.config.daemon import LogSettings, ServerSettings, StateSettings
from canarywatch.config.delivery import DispatchSettings
from canarywatch.config.document import ConfigFile
from canarywatch.config.fields import UncheckedSecret
from canarywatch.config.loader import SECRET_OPTION_KEY, Check, load_config, parse_config
from canarywatch.config.muting import (
    InhibitRule,
    Silence,
    TimeIntervalSet,
    TimeIntervalSpec,
    TimeRangeSpec,
)
from canarywatch.config.receivers import DEFAULT_RECEIVER, DEFAULT_SINK, Receiver
from canarywatch.config.resolved import Config, Loc, SourceMap
from canarywatch.config.routing import (
    ALL_LABELS,
    DEFAULT_GROUP_BY,
    DEFAULT_GROUP_INTERVAL_S,
    DEFAULT_GROUP_WAIT_S,
    DEFAULT_REPEAT_INTERVAL_S,
    ROUTE_LOC,
    LabelSettings,
    RouteSpec,
    root_route_problems,
    walk_route,
)
from canarywatch.config.schema_doc import config_schema_markdown
from canarywatch.config.sources import (
    LowTrafficSettings,
    MetricsSourceSettings,
    WebhookIntakeSettings,
)
from canarywatch.errors import ConfigError
from canarywatch.labels.keypath import format_key_path
from canarywatch.secrets import Secret

format_path = format_key_path
"""The name this package gave ``labels.keypath.format_key_path`` before there was one."""

__all__ = [
    "ALL_LABELS",
    "DEFAULT_GROUP_BY",
    "DEFAULT_GROUP_INTERVAL_S",
    "DEFAULT_GROUP_WAIT_S",
    "DEFAULT_RECEIVER",
    "DEFAULT_REPEAT_INTERVAL_S",
    "DEFAULT_SINK",
    "ROUTE_LOC",
    "SECRET_OPTION_KEY",
    "Check",
    "ClusterSettings",
    "Config",
    "ConfigError",
    "ConfigFile",
    "DispatchSettings",
    "InhibitRule",
    "LabelSettings",
    "LeaderElectionSettings",
    "Loc",
    "LogSettings",
    "LowTrafficSettings",
    "MetricsSourceSettings",
    "Receiver",
    "RouteSpec",
    "Secret",
    "ServerSettings",
    "Silence",
    "SourceMap",
    "StateSettings",
    "TimeIntervalSet",
    "TimeIntervalSpec",
    "TimeRangeSpec",
    "UncheckedSecret",
    "WebhookIntakeSettings",
    "config_schema_markdown",
    "format_key_path",
    "format_path",
    "load_config",
    "parse_config",
    "root_route_problems",
    "walk_route",
]
