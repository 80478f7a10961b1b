"""Pydantic's validation errors in canarywatch's words: for the config file and sink options.

Pydantic says ``Extra inputs are not permitted`` and ``Input should be a valid string``; a user
editing a YAML file wants ``unknown key 'chanel' (did you mean 'channel'? ...)`` and ``expected a
string``. The config loader and the sink loader both describe errors through here, so the two
read alike. Input values are never quoted: options and config values carry secrets.

A foundation module: it imports pydantic and ``labels.keypath`` only, so ``canarywatch.sinks``
(which plugins import) may use it without depending on the config models.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from canarywatch.labels.keypath import KeyPath
from canarywatch.labels.keypath import format_key_path as format_key_path  # sinks use it here

TYPE_MESSAGES: Final = MappingProxyType(
    {
        "tuple_type": "expected a list",
        "list_type": "expected a list",
        "dict_type": "expected a mapping (key: value)",
        "model_type": "expected a mapping (key: value)",
        "model_attributes_type": "expected a mapping (key: value)",
        "mapping_type": "expected a mapping (key: value)",
        "string_type": "expected a string",
        "int_type": "expected a whole number",
        "int_parsing": "expected a whole number",
        "int_from_float": "expected a whole number",
        "float_type": "expected a number",
        "float_parsing": "expected a number",
        "bool_type": "expected true or false",
        "bool_parsing": "expected true or false",
        "datetime_type": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
        "datetime_parsing": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
        "datetime_from_date_parsing": "expected an RFC 3339 time like 2025-01-31T12:00:00Z",
        "missing": "required key is missing",
    }
)
"""Messages by pydantic error type, where pydantic's own wording is not ours."""


def describe(
    error: ErrorDetails,
    *,
    model: type[BaseModel],
    noun: str = "key",
    hints: Mapping[str, str] | None = None,
) -> str:
    """One error of ``model.model_validate`` as a message for a user (no key path, no value).

    ``noun`` names what an unknown key is (``key``, ``option``); ``hints`` maps a known
    mistake's key (``match``) to what to write instead.
    """
    kind = error["type"]
    if kind == "extra_forbidden":
        return unknown_key(error["loc"], model=model, noun=noun, hints=hints)
    if kind == "missing" and noun != "key":
        return f"required {noun} is missing"
    if kind in TYPE_MESSAGES:
        return TYPE_MESSAGES[kind]
    if kind == "too_short":
        return "must not be empty"
    message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return message.replace("Input should be", "must be")


def unknown_key(
    loc: Sequence[str | int],
    *,
    model: type[BaseModel],
    noun: str = "key",
    hints: Mapping[str, str] | None = None,
) -> str:
    """``unknown key 'chanel' (did you mean 'channel'? known: ...)`` for the key at ``loc``."""
    path = key_path(loc)
    key = str(path[-1]) if path else "?"
    message = f"unknown {noun} {key!r}"
    if hints and key in hints:
        return f"{message}: {hints[key]}"
    found = model_at(model, path[:-1])
    if found is None:
        return message
    known = sorted(f.alias or name for name, f in found.model_fields.items())
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{message} ({hint}known: {', '.join(known)})"


def key_path(loc: Sequence[str | int]) -> KeyPath:
    """Pydantic's ``loc`` (``("links", 0, "url")``) without the tags it adds for union members
    and validators (``function-after[...]``, ``list[str]``, ``[key]``): only what a user wrote."""
    return tuple(part for part in loc if not (isinstance(part, str) and "[" in part))


def model_at(root: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model validating the mapping at ``loc`` below ``root`` (to list the keys it takes)."""
    model = root
    for part in loc:
        if isinstance(part, int):
            continue
        by_key = {f.alias or name: f for name, f in model.model_fields.items()}
        if part not in by_key:
            return None
        found = find_model(by_key[part].annotation)
        if found is None:
            return None
        model = found
    return model


def find_model(annotation: object) -> type[BaseModel] | None:
    """The model inside an annotation (``tuple[Receiver, ...] | None`` -> ``Receiver``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) is not None else ():
        found = find_model(arg)
        if found is not None:
            return found
    return None
