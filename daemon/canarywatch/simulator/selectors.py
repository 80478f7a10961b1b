"""Label and field selectors, parsed and matched the way the apiserver does.

Label selectors (``apimachinery/pkg/labels``): ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``,
``k notin (a,b)``, ``k``, ``!k``; a comma is AND (commas inside parentheses belong to the set).
``!=`` and ``notin`` also match objects without the label.

Field selectors (``apimachinery/pkg/fields``): ``f=v``, ``f==v``, ``f!=v``, comma is AND, ``\\``
escapes; values compare as strings. Each resource supports only its own fields: an unknown one is
a 400, with the wording of built-in resources or of CRDs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from canarywatch.simulator.store import ApiError


class SelectorError(ApiError):
    """A selector the apiserver would reject with 400 BadRequest."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "BadRequest", message)


# -- label selectors ------------------------------------------------------------------------

_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_TERM = re.compile(r"^\s*(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)\s*$")


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    """One of ``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _check_key(key: str, text: str) -> str:
    if not _LABEL_KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"unable to parse requirement: invalid label key {key!r} in {text!r}")
    return key


def _check_value(value: str, text: str) -> str:
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise SelectorError(
            f"unable to parse requirement: invalid label value {value!r} in {text!r}"
        )
    return value


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse ``labelSelector``; empty or ``None`` selects everything."""
    if text is None or not text.strip():
        return LabelSelector()
    requirements: list[Requirement] = []
    for raw in _split_top_level(text):
        term = raw.strip()
        if not term:
            raise SelectorError(f"found '', expected: identifier in {text!r}")
        set_term = _SET_TERM.match(term)
        if set_term:
            values = frozenset(_check_value(v.strip(), text) for v in set_term["values"].split(","))
            requirements.append(
                Requirement(_check_key(set_term["key"], text), set_term["op"], values)
            )
            continue
        for op in ("!=", "==", "="):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                requirements.append(
                    Requirement(
                        _check_key(key, text),
                        "!=" if op == "!=" else "=",
                        frozenset({_check_value(value, text)}),
                    )
                )
                break
        else:
            if term.startswith("!"):
                requirements.append(Requirement(_check_key(term[1:].strip(), text), "!"))
            elif re.search(r"[\s()<>]", term):
                raise SelectorError(f"unable to parse requirement: {term!r} in {text!r}")
            else:
                requirements.append(Requirement(_check_key(term, text), "exists"))
    return LabelSelector(tuple(requirements))


# -- field selectors ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldTerm:
    field: str
    value: str
    negate: bool

    def matches(self, fields: Mapping[str, str]) -> bool:
        equal = fields.get(self.field, "") == self.value
        return not equal if self.negate else equal


@dataclass(frozen=True, slots=True)
class FieldSelector:
    terms: tuple[FieldTerm, ...] = ()

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(t.matches(fields) for t in self.terms)


def _split_escaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_field_selector(text: str | None, fields: FieldSet) -> FieldSelector:
    """Parse ``fieldSelector`` against the fields ``fields`` supports (400 otherwise)."""
    if text is None or not text.strip():
        return FieldSelector()
    terms: list[FieldTerm] = []
    for term in _split_escaped(text, ","):
        for op in ("!=", "==", "="):
            index = term.find(op)
            if index >= 0:
                name, value = term[:index].strip(), term[index + len(op) :]
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        if name not in fields.supported:
            raise SelectorError(fields.unsupported_message(name))
        terms.append(FieldTerm(name, value, op == "!="))
    return FieldSelector(tuple(terms))


@dataclass(frozen=True, slots=True)
class FieldSet:
    """The selectable fields of one API view and how to read them from an object."""

    supported: frozenset[str]
    extract: Callable[[Mapping[str, Any]], dict[str, str]]

    def unsupported_message(self, name: str) -> str:
        # kube-apiserver 1.34 says the same for built-in kinds and custom resources (checked
        # against the real server; older docs quote a CRD-specific wording it no longer uses).
        return f"field label not supported: {name}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _metadata_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    return {
        "metadata.name": _text(meta.get("name")),
        "metadata.namespace": _text(meta.get("namespace")),
    }


_OBJECT_REF = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def _event_fields(ref_field: str, reporting: str) -> Callable[[Mapping[str, Any]], dict[str, str]]:
    """Field getter for an Event view; ``ref_field`` is ``involvedObject`` or ``regarding``."""
    source_field = "source" if ref_field == "involvedObject" else "deprecatedSource"

    def extract(obj: Mapping[str, Any]) -> dict[str, str]:
        ref = obj.get(ref_field) or {}
        fields = _metadata_fields(obj)
        fields.update({f"{ref_field}.{k}": _text(ref.get(k)) for k in _OBJECT_REF})
        fields["reason"] = _text(obj.get("reason"))
        fields["type"] = _text(obj.get("type"))
        fields[reporting] = _text(obj.get(reporting))
        fields["source"] = _text((obj.get(source_field) or {}).get("component"))
        return fields

    return extract


def _event_field_set(ref_field: str, reporting: str) -> FieldSet:
    names = {f"{ref_field}.{k}" for k in _OBJECT_REF}
    names |= {"reason", "type", "source", reporting, "metadata.name", "metadata.namespace"}
    return FieldSet(frozenset(names), _event_fields(ref_field, reporting))


CORE_EVENT_FIELDS = _event_field_set("involvedObject", "reportingComponent")
EVENTS_V1_FIELDS = _event_field_set("regarding", "reportingController")
METADATA_FIELDS = FieldSet(frozenset({"metadata.name", "metadata.namespace"}), _metadata_fields)
CUSTOM_RESOURCE_FIELDS = FieldSet(METADATA_FIELDS.supported, _metadata_fields)


@dataclass(frozen=True, slots=True)
class Selection:
    """A label and a field selector applied together to one view's objects."""

    labels: LabelSelector
    fields: FieldSelector
    field_set: FieldSet

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata") or {}
        return self.labels.matches(meta.get("labels")) and self.fields.matches(
            self.field_set.extract(obj)
        )


def parse_selection(
    label_selector: str | None, field_selector: str | None, field_set: FieldSet
) -> Selection:
    return Selection(
        parse_label_selector(label_selector),
        parse_field_selector(field_selector, field_set),
        field_set,
    )
