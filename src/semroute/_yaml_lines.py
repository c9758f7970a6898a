"""YAML read with line numbers, so a configuration error can say ``file:line: field: message``.

A document is composed once into nodes (which know their lines), checked for repeated keys, then constructed from
the same nodes. ``Located.line`` maps a field's path (``["routes", 3, "name"]``) back to where it was written, and
``field_path`` names that path the way the errors print it (``routes[3].name``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

LineOf = Callable[[Sequence[str | int]], int | None]
"""A field's path -> the line it was written on (None: not in the document)."""

# libyaml's parser when present: 20x faster on large files
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def field_path(path: Sequence[str | int]) -> str:
    """``["routes", 3, "name"]`` -> ``routes[3].name``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Located:
    """Maps a path of keys/indices in a YAML document to the line it starts on."""

    def __init__(self, node: yaml.Node | None) -> None:
        self.root = node

    def line(self, path: Sequence[str | int]) -> int | None:
        node = self.root
        best = node.start_mark.line + 1 if node is not None else None
        for part in path:
            if node is None:
                break
            nxt: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == part:
                        # point at the key: that is where the user typed the field
                        best = k.start_mark.line + 1
                        nxt = v
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                nxt = node.value[part]
                best = nxt.start_mark.line + 1
            node = nxt
            if node is None:
                break
        return best


def read_yaml(text: str, file: Path) -> tuple[Any, Located]:
    """The document's data (None when empty) and its line map. Invalid YAML and repeated keys are ConfigErrors."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_duplicate_keys(node, [], file)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"invalid YAML: {e.problem}", file=file, line=line, hint="check indentation and quoting"
        ) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {e}", file=file) from e
    return data, Located(node)


def _check_duplicate_keys(node: yaml.Node, at: list[str | int], file: Path) -> None:
    """Refuse a mapping that repeats a key, at any depth: PyYAML keeps the last value silently, so a route with
    ``threshold`` twice, or a file with two ``routes:`` lists, would build from whichever came second."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                if k.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor' merges, it is not a key
                    _check_duplicate_keys(v, at, file)
                    continue
                line = k.start_mark.line + 1
                key = (k.tag, k.value)
                if key in first:
                    raise ConfigError(
                        "duplicate key", file=file, line=line, field=field_path([*at, k.value]),
                        hint=f"'{k.value}' is already set at line {first[key]}; keep one of them",
                    )
                first[key] = line
                _check_duplicate_keys(v, [*at, k.value], file)
            else:
                _check_duplicate_keys(v, at, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, [*at, i], file)
