"""Configuration: load YAML once into frozen, validated objects grouped by concern.

Errors are ``ConfigError`` naming file, line and key path; secrets become ``Secret``. See
``config/canarywatch.example.yaml`` for every key, and ``config_schema_markdown()`` for the
reference table in the README. The route tree stays as written (``RouteSpec``):
``pipeline.route.build_route`` applies inheritance and the root defaults.
"""

from canarywatch.config.fields import UncheckedSecret
from canarywatch.config.loader import (
    DEFAULT_RECEIVER,
    SECRET_OPTION_KEY,
    Check,
    load_config,
    parse_config,
)
from canarywatch.config.models import (
    ALL_LABELS,
    ConfigFile,
    InhibitRule,
    LogSettings,
    Receiver,
    RouteSpec,
    ServerSettings,
    Silence,
    StateSettings,
    TimeIntervalSet,
    TimeIntervalSpec,
    TimeRangeSpec,
)
from canarywatch.config.resolved import (
    ROUTE_LOC,
    Config,
    Loc,
    SourceMap,
    format_path,
    walk_route,
)
from canarywatch.config.schema_doc import config_schema_markdown
from canarywatch.errors import ConfigError
from canarywatch.secrets import Secret

__all__ = [
    "ALL_LABELS",
    "DEFAULT_RECEIVER",
    "ROUTE_LOC",
    "SECRET_OPTION_KEY",
    "Check",
    "Config",
    "ConfigError",
    "ConfigFile",
    "InhibitRule",
    "Loc",
    "LogSettings",
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
    "config_schema_markdown",
    "format_path",
    "load_config",
    "parse_config",
    "walk_route",
]
