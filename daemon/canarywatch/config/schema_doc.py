"""The configuration reference table, generated from the models so it cannot drift.

``config_schema_markdown()`` renders one row per key (path, type, default, description); the
README embeds its output and a test compares the two.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from canarywatch.config.document import ConfigFile
from canarywatch.config.fields import DocType
from canarywatch.config.routing import RouteSpec
from canarywatch.labels.durations import format_duration
from canarywatch.secrets import Secret

_SIMPLE = {
    bool: "bool",
    str: "string",
    int: "integer",
    float: "number",
    Path: "path",
    datetime: "RFC 3339 time",
    Secret: "secret",
}


def config_schema_markdown() -> str:
    """A Markdown table of every configuration key."""
    lines = [
        "| Key | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for path, type_name, default, description in _rows(ConfigFile, ""):
        cells = (f"`{path}`", type_name, default, description)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        path = f"{prefix}.{key}" if prefix else key
        nested, is_list = _nested_model(field.annotation)
        recursive = nested is RouteSpec and model is RouteSpec
        type_name = "list of route" if recursive else _field_type(field)
        rows.append((path, type_name, _default(field), field.description or ""))
        if nested is not None and not recursive:
            rows.extend(_rows(nested, f"{path}[]" if is_list else path))
    return rows


def _nested_model(annotation: object) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally, or as list items), and if in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = get_origin(annotation)
    if origin is None:
        return None, False
    for arg in get_args(annotation):
        model, is_list = _nested_model(arg)
        if model is not None:
            return model, is_list or origin in (tuple, list)
    return None, False


def _field_type(field: FieldInfo) -> str:
    for meta in field.metadata:
        if isinstance(meta, DocType):
            return meta.name
    return _type_name(field.annotation)


def _type_name(annotation: object) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        for meta in annotation.__metadata__:  # type: ignore[attr-defined]
            if isinstance(meta, DocType):
                return meta.name
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None))
    if origin in (tuple, list):
        return f"list of {_type_name(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type) and annotation in _SIMPLE:
        return _SIMPLE[annotation]
    return str(annotation)


def _default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "doc_default" in extra:
        return f"`{extra['doc_default']}`"
    if field.is_required():
        return "required"
    if field.default_factory is not None or field.default is PydanticUndefined:
        return ""
    value = field.default
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if any(isinstance(m, DocType) and m.name == "duration" for m in field.metadata):
        return f"`{format_duration(float(value))}`"
    if value == ():
        return "`[]`"
    return f"`{value}`"
