"""Configuration: load YAML once into frozen, validated objects grouped by concern.

Errors are ``ConfigError`` naming file, line and key path; secrets become ``Secret``. See
``config/canarywatch.example.yaml`` for every key, and ``config_schema_markdown()`` for the
reference table in the README.
"""

from canarywatch.config.loader import (
    DEFAULT_GROUP_BY,
    DEFAULT_RECEIVER,
    SECRET_OPTION_KEY,
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
)
from canarywatch.config.resolved import Config, Loc, Route, SourceMap, format_path
from canarywatch.config.schema_doc import config_schema_markdown
from canarywatch.config.timeintervals import TimeInterval, TimeIntervalSet, TimeRange
from canarywatch.errors import ConfigError
from canarywatch.secrets import Secret

__all__ = [
    "ALL_LABELS",
    "DEFAULT_GROUP_BY",
    "DEFAULT_RECEIVER",
    "SECRET_OPTION_KEY",
    "Config",
    "ConfigError",
    "ConfigFile",
    "InhibitRule",
    "Loc",
    "LogSettings",
    "Receiver",
    "Route",
    "RouteSpec",
    "Secret",
    "ServerSettings",
    "Silence",
    "SourceMap",
    "StateSettings",
    "TimeInterval",
    "TimeIntervalSet",
    "TimeRange",
    "config_schema_markdown",
    "format_path",
    "load_config",
    "parse_config",
]
