"""Field types shared by the config models: durations, secrets, names, label names, matchers.

Each is an ``Annotated`` type whose validator turns YAML input into the value canarywatch uses
(float seconds, ``Secret``) and raises ``ValueError`` with a message fit for a user; the loader
adds the key path and line. ``DocType`` tells the schema table what to call the type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import AfterValidator, BeforeValidator, ValidationInfo

from canarywatch.durations import parse_duration
from canarywatch.errors import ConfigError
from canarywatch.matchers import parse_matcher_set
from canarywatch.secrets import Secret, resolve_secret

LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class DocType:
    """Annotation metadata: the type's name in the generated schema table."""

    name: str


def _duration(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, not a boolean")  # noqa: TRY004 - pydantic reports ValueError only
    if isinstance(value, int | float):
        if value == 0:
            return 0.0
        raise ValueError(f"duration {value!r} needs a unit, e.g. {value}s or {value}m")
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 5m or 1h30m")  # noqa: TRY004 - as above
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration), DocType("duration")]
"""A Prometheus-style duration in YAML; float seconds once validated."""


def _secret(value: object, info: ValidationInfo) -> Secret:
    context = info.context if isinstance(info.context, dict) else {}
    try:
        return resolve_secret(value, path="", environ=context.get("environ"))
    except ConfigError as exc:
        raise ValueError(exc.message) from None


SecretField = Annotated[Secret, BeforeValidator(_secret), DocType("secret")]
"""``{env: NAME}`` / ``{file: PATH}`` (or ``{value: ...}`` in tests) resolved to a ``Secret``."""


def _name(value: str) -> str:
    if not value or value != value.strip() or any(c.isspace() for c in value):
        raise ValueError("must be a non-empty name without whitespace")
    return value


Name = Annotated[str, AfterValidator(_name), DocType("name")]


def check_label_name(value: str) -> str:
    if not LABEL_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)")
    return value


LabelName = Annotated[str, AfterValidator(check_label_name), DocType("label name")]


def _matcher(value: str) -> str:
    # The one parser routing, inhibition and silences use, so what validates here is read the
    # same way there; raises ValueError with its own message.
    parse_matcher_set(value)
    return value


Matcher = Annotated[str, AfterValidator(_matcher), DocType("matcher")]
"""One item of a ``matchers:`` list in Alertmanager syntax: a matcher (``severity="critical"``,
``namespace=~"team-.*"``) or several, comma-separated and optionally in braces
(``{namespace="shop", severity="critical"}``), exactly as Alertmanager's ``ParseMatchers``."""
