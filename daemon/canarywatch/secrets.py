"""Secrets: values that must never reach a log line, an error message or a ``repr``.

A secret is written in config as a reference, never inline::

    token: {env: CANARYWATCH_TOKEN}        # from the environment
    token: {file: /run/secrets/token}      # file content, one trailing newline stripped
    token: {value: not-a-real-token}       # inline: for tests and examples only

Resolution happens once, at load time, so a missing variable or unreadable file fails
``check-config`` instead of the first delivery. Errors name the key path and the *source*
(variable name or file path), never the value.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from canarywatch.errors import ConfigError

SECRET_FORMS: Final = ("env", "file", "value")
"""The keys of a secret reference mapping; exactly one may be given."""

SECRET_HINT: Final = (
    "write a secret as {env: VARIABLE} or {file: /path/to/file} "  # noqa: S105 - help text
    "({value: ...} is accepted for tests only)"
)

_MASK: Final = "Secret('***')"


class Secret:
    """A string that only ``reveal()`` gives back.

    ``repr``/``str``/``format`` show ``Secret('***')``. Equality compares the values in
    constant time and only with another ``Secret``; hashing is allowed so secrets can be parts of
    cache keys, but the hash is never shown.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The plain value: call it at the last moment, where it is put on the wire."""
        return self._value

    def __repr__(self) -> str:
        return _MASK

    __str__ = __repr__

    def __format__(self, format_spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Pickling is allowed (multiprocessing, deepcopy) but must not go through __repr__.
        return (Secret, (self._value,))


def is_secret_ref(value: object) -> bool:
    """Whether ``value`` is a ``{env: ...}`` / ``{file: ...}`` / ``{value: ...}`` mapping."""
    return isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in SECRET_FORMS


def resolve_secret(value: object, *, path: str, environ: Mapping[str, str] | None = None) -> Secret:
    """Turn a secret reference into a ``Secret``.

    Raises ``ConfigError`` naming ``path`` when ``value`` is not a reference (inline plain
    strings are refused), the variable is unset or empty, or the file cannot be read.
    """
    if isinstance(value, Secret):
        return value
    if not isinstance(value, Mapping) or not is_secret_ref(value):
        what = "an inline string" if isinstance(value, str) else f"a {type(value).__name__}"
        raise ConfigError(f"a secret cannot be {what}: {SECRET_HINT}", path=path)
    form, source = next(iter(value.items()))
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{{{form}: ...}} needs a non-empty string", path=path)
    env = os.environ if environ is None else environ
    if form == "env":
        if source not in env:
            raise ConfigError(f"environment variable {source!r} is not set", path=path)
        text = env[source]
        if not text:
            raise ConfigError(f"environment variable {source!r} is empty", path=path)
        return Secret(text)
    if form == "file":
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise ConfigError(f"cannot read secret file {source!r}: {reason}", path=path) from None
        text = text.removesuffix("\n")
        if not text:
            raise ConfigError(f"secret file {source!r} is empty", path=path)
        return Secret(text)
    return Secret(source)
