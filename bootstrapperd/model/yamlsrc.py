"""Read YAML into plain Python values while remembering the source line of every key and item.

``yaml.safe_load`` forgets where things were; error messages must say ``(line 57)``. This walks
PyYAML's composed node tree with the safe constructor and records, for each key path, the line
its key (or list item) starts on. Paths are tuples of ``str`` keys and ``int`` indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@dataclass
class SourceMap:
    """Line numbers (1-based) of keys and list items, by path."""

    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int, int]] = field(default_factory=list)
    # The source text of plain (unquoted) scalars that YAML 1.1 turned into something else:
    # `off` → False, `3:00` → 180, `0123` → 83. Readers that want a string use the text.
    texts: dict[Path, str] = field(default_factory=dict)

    def line(self, path: Path) -> int | None:
        # The nearest ancestor that has a line is the best place to point at.
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


class YAMLSyntaxError(Exception):
    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def load_with_lines(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; return its value and a SourceMap. Raises YAMLSyntaxError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        smap = SourceMap()
        if node is None:
            return None, smap
        smap.lines[()] = node.start_mark.line + 1
        value = _walk(loader, node, (), smap)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise YAMLSyntaxError(f"YAML syntax error: {problem}", line) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"YAML syntax error: {exc}", None) from None
    finally:
        loader.dispose()
    return value, smap


def _walk(loader: yaml.SafeLoader, node: yaml.Node, path: Path, smap: SourceMap) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            line = key_node.start_mark.line + 1
            if key in result:
                smap.duplicates.append((child, smap.lines[child], line))
            smap.lines[child] = line
            result[key] = _walk(loader, value_node, child, smap)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            smap.lines[child] = item_node.start_mark.line + 1
            items.append(_walk(loader, item_node, child, smap))
        return items
    value = loader.construct_object(node, deep=True)
    if isinstance(node, yaml.ScalarNode) and node.style is None and not isinstance(value, str):
        smap.texts[path] = node.value
    return value
