"""YAML text -> Python data plus the line of every key.

PyYAML's node tree keeps marks that ``yaml.safe_load`` throws away; composing first and
constructing from the same nodes lets every later error name the line the user has to edit.
Duplicate keys, which YAML silently collapses to the last one, are refused here, all at once.
Unquoted scalars that YAML 1.1 reads as base-60 numbers (``19:00`` is 1140) are listed with
their text, so the loader can say so instead of complaining about the number.
"""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from canarywatch.config.resolved import Loc
from canarywatch.errors import ConfigError
from canarywatch.labels.keypath import format_key_path

_MERGE_TAG = "tag:yaml.org,2002:merge"
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})


def load_yaml(text: str, *, filename: str) -> tuple[object, dict[Loc, int], dict[Loc, str]]:
    """The document's data, a map from key path to 1-based line, and the text of every
    unquoted base-60 number (``19:00``) by key path.

    Raises ``ConfigError`` for syntax errors (without echoing the offending source line,
    which could hold a secret) and for duplicate keys.
    """
    try:
        # The reader checks every character when it is built: a control character raises here.
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise _unacceptable(exc, filename, "(control characters are not allowed) ") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, {}
        _refuse_duplicates(node, (), filename)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        raise ConfigError(
            "invalid YAML: " + ", ".join(parts or ["cannot parse"]),
            line=mark.line + 1 if mark is not None else None,
            file=filename,
        ) from None
    except yaml.reader.ReaderError as exc:
        raise _unacceptable(exc, filename) from None
    except yaml.YAMLError:
        raise ConfigError("invalid YAML", file=filename) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    _record_lines(node, (), lines)
    return data, lines, _base60(node)


def _unacceptable(exc: yaml.reader.ReaderError, filename: str, why: str = "") -> ConfigError:
    """The reader's refusal of a character, with ``why`` (ending in a space) before where."""
    return ConfigError(
        f"invalid YAML: unacceptable character #x{exc.character:04x} {why}at position "
        f"{exc.position}",
        file=filename,
    )


def _refuse_duplicates(node: yaml.Node, loc: Loc, filename: str) -> None:
    found: list[ConfigError] = []
    for parent, parent_loc in _walk(node, loc):
        if not isinstance(parent, yaml.MappingNode):
            continue
        seen: set[str] = set()
        for key, _ in parent.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            if key.value in seen:
                found.append(
                    ConfigError(
                        f"duplicate key {key.value!r}",
                        path=format_key_path((*parent_loc, key.value)),
                        line=key.start_mark.line + 1,
                        file=filename,
                    )
                )
            seen.add(key.value)
    if found:
        found.sort(key=lambda e: e.line or 0)
        first = found[0]
        raise ConfigError(
            first.message, path=first.path, line=first.line, file=filename, others=found[1:]
        )


def _base60(node: yaml.Node) -> dict[Loc, str]:
    """Plain scalars resolved as numbers although written with a colon (``19:00``)."""
    found: dict[Loc, str] = {}
    for parent, parent_loc in _walk(node, ()):
        for child_loc, _, child in _entries(parent, parent_loc):
            if (
                isinstance(child, yaml.ScalarNode)
                and child.tag in _NUMBER_TAGS
                and child.style is None
                and ":" in child.value
            ):
                found[child_loc] = child.value
    return found


def _record_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    for parent, parent_loc in _walk(node, loc):
        for child_loc, key_or_item, _ in _entries(parent, parent_loc):
            lines[child_loc] = key_or_item.start_mark.line + 1  # last wins, as in YAML merges


def _walk(root: yaml.Node, loc: Loc) -> Iterator[tuple[yaml.Node, Loc]]:
    """Every collection node once, with its path; nodes shared through aliases are visited
    at their first path only, so an alias bomb costs nothing here."""
    visited: set[int] = set()
    stack = [(root, loc)]
    while stack:
        node, node_loc = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        yield node, node_loc
        stack.extend(
            (child, child_loc)
            for child_loc, _, child in reversed(list(_entries(node, node_loc)))
            if isinstance(child, yaml.CollectionNode)
        )


def _entries(node: yaml.Node, loc: Loc) -> Iterator[tuple[Loc, yaml.Node, yaml.Node]]:
    """(path, key node, value node) for mapping entries (merge keys left out), (path, item
    node, item node) for sequence items."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                yield (*loc, key.value), key, value
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield (*loc, index), item, item
