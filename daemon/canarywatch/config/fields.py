"""Field types shared by the config models: durations, secrets, names, label names, matchers,
and the one ``model_config`` (``SECTION``) they all use.

Each is an ``Annotated`` type whose validator turns YAML input into the value canarywatch uses
(float seconds, ``Secret``) and raises ``ValueError`` with a message fit for a user; the loader
adds the key path and line. ``DocType`` tells the schema table what to call the type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, ClassVar, Final

from pydantic import AfterValidator, BeforeValidator, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError

from canarywatch.errors import ConfigError
from canarywatch.labels.durations import parse_duration
from canarywatch.labels.matchers import parse_matcher_set
from canarywatch.secrets import Secret, is_secret_ref, resolve_secret

LABEL_NAME: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

SECTION: Final = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
"""The ``model_config`` of every config model: frozen, extra keys refused (a typo is an error,
not a silently ignored key), and ``Secret`` allowed as a field type."""


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


SECRET_UNRESOLVED: Final = "secret_unresolved"  # noqa: S105 - an error type's name, not a secret
"""The pydantic error type of a well-formed secret reference that could not be read (the
variable unset, the file missing): the loader stands in for it and checks the rest."""


class UncheckedSecret(Secret):
    """A secret reference that was not read: ``check-config --skip-secrets``, or one already
    reported as unreadable. Its value is a placeholder shaped like an https URL, so sink option
    checks that parse a URL or a token still pass; nothing may deliver with it."""

    __slots__ = ()

    PLACEHOLDER: ClassVar[str] = "https://unchecked.invalid/secret-not-read"

    def __init__(self) -> None:
        super().__init__(self.PLACEHOLDER)


def read_secret(value: object, *, environ: Mapping[str, str] | None, skip: bool) -> Secret:
    """``resolve_secret``; with ``skip``, a well-formed ``{env: ...}``/``{file: ...}`` is not
    read but becomes an ``UncheckedSecret`` (a malformed one is still refused)."""
    reference = _reference(value)
    if skip and reference is not None and reference[0] != "value":
        return UncheckedSecret()
    return resolve_secret(value, path="", environ=environ)


def _reference(value: object) -> tuple[str, str] | None:
    """``(form, source)`` of a well-formed secret reference, else ``None``."""
    if not isinstance(value, Mapping) or not is_secret_ref(value):
        return None
    form, source = next(iter(value.items()))
    return (str(form), source) if isinstance(source, str) and source else None


def _secret(value: object, info: ValidationInfo) -> Secret:
    context = info.context if isinstance(info.context, dict) else {}
    try:
        return read_secret(
            value, environ=context.get("environ"), skip=bool(context.get("skip_secrets"))
        )
    except ConfigError as exc:
        if _reference(value) is not None:  # the reference is fine; what it names is not there
            raise PydanticCustomError(
                SECRET_UNRESOLVED, "{reason}", {"reason": exc.message}
            ) from None
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
