"""Read YAML into plain Python values while remembering the source line of every key and item.

``yaml.safe_load`` forgets where things were; error messages must say ``(line 57)``. This
composes PyYAML's node tree from the parser's events (libyaml's when PyYAML has it), walks it
with the safe constructor and records, for each key path, the line its key (or list item)
starts on. Paths are tuples of ``str`` keys and ``int`` indexes.

The file is hostile until read: its size, its nesting and the number of values it expands to
(an alias counts as every value it stands for, so a "billion laughs" is refused after a few
anchors) are bounded while the node tree is composed, before anything is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any, cast

import yaml

Path = tuple[str | int, ...]
_Loader = yaml.SafeLoader | yaml.CSafeLoader
_NOT_YAML = (yaml.scanner.ScannerError, yaml.parser.ParserError, yaml.reader.ReaderError)

# Real descriptions are a few KiB, 4 levels deep and a few hundred values (config/examples/,
# tests/fixtures/sextant/); a cluster of thousands of machines stays far inside these bounds.
MAX_DOCUMENT_BYTES = 4 << 20  # the file, read no further than this
MAX_DEPTH = 64  # levels: the top value is 1, what a collection holds one more (aliases expanded)
MAX_VALUES = 100_000  # keys, values and items once every alias is expanded
# A file libyaml refuses is read again by PyYAML's slower parser up to this size (real files
# are far smaller), so that errors are worded as users know them; a larger one keeps libyaml's.
MAX_REREAD_CHARS = 256 << 10


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
    """The file is not YAML this reader accepts; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class YAMLLimitError(YAMLSyntaxError):
    """The file crosses one of the bounds; ``kind`` names which: size, depth, values, loop."""

    def __init__(self, kind: str, message: str, line: int | None) -> None:
        super().__init__(message, line)
        self.kind = kind


def read_bounded(path: FilePath) -> bytes:
    """The file's bytes; raises YAMLLimitError past MAX_DOCUMENT_BYTES without reading on."""
    with path.open("rb") as stream:
        raw = stream.read(MAX_DOCUMENT_BYTES + 1)
    check_size(raw)
    return raw


def check_size(raw: bytes) -> None:
    """Refuse a document over MAX_DOCUMENT_BYTES, naming the line the bound falls on."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        line = raw.count(b"\n", 0, MAX_DOCUMENT_BYTES) + 1
        mib = MAX_DOCUMENT_BYTES >> 20
        raise YAMLLimitError("size", f"the file is larger than {mib} MiB", line)


def load_with_lines(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document; return its value and a SourceMap. Raises YAMLSyntaxError (a
    YAMLLimitError when the document is too large, too deep or expands to too many values).

    libyaml's parser reads it when PyYAML has it: some 20 times faster than PyYAML's own,
    which holds the event loop for seconds on a large file. Where libyaml finds the text is
    not YAML, PyYAML's parser reads it again (up to MAX_REREAD_CHARS): it has the last word,
    in the words users know. (libyaml's scanner also stops at its own nesting limit, 1,000
    levels, before the composer sees level 65: PyYAML's then reports MAX_DEPTH.)
    """
    check_size(text.encode("utf-8", "surrogatepass"))
    try:
        if not yaml.__with_libyaml__:
            return _load(yaml.SafeLoader(text))
        try:
            return _load(yaml.CSafeLoader(text))
        except _NOT_YAML as exc:
            if len(text) > MAX_REREAD_CHARS:  # PyYAML would hold the loop for seconds
                nesting = _libyaml_nesting(exc)
                if nesting is not None:
                    raise nesting from None
                raise  # in libyaml's words
        return _load(yaml.SafeLoader(text))
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, text) from None
    except yaml.reader.ReaderError as exc:  # a control character: where, not the whole text
        line = text.count("\n", 0, exc.position) + 1
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else "byte"
        raise YAMLSyntaxError(f"YAML syntax error: character {what}: {exc.reason}", line) from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"YAML syntax error: {exc}", None) from None


def _syntax_error(exc: yaml.MarkedYAMLError, text: str) -> YAMLSyntaxError:
    """The error on the line a person would point at. The parser stops where it gives up,
    often lines after the mistake: an unclosed quote or bracket is found at the end of the
    file or at the next quote, a key without its ':' on the next line. Where the parser says
    what it was reading (the context), or a quoted or plain value ran on from an earlier line
    to the place of the error, the line where that began is the one named."""
    problem = exc.problem or exc.context or "invalid YAML"
    line = _line(exc.problem_mark or exc.context_mark)
    context = exc.context or ""
    began = _line(exc.context_mark)
    if began is not None and line is not None and began < line:
        if context.startswith("while scanning a quoted scalar"):
            return YAMLSyntaxError(
                f"YAML syntax error: the quoted value that starts here has no closing quote "
                f"({problem} on line {line})",
                began,
            )
        if context.startswith("while scanning a simple key"):
            return YAMLSyntaxError(f"YAML syntax error: {problem} after the key here", began)
        if context.startswith("while parsing a flow"):
            bracket = "[" if "sequence" in context else "{"
            return YAMLSyntaxError(
                f"YAML syntax error: the {bracket} here is never closed ({problem} on line {line})",
                began,
            )
    if line is not None and len(text) <= MAX_REREAD_CHARS:
        run_on = _value_running_onto(text, line - 1)
        if run_on is not None:
            start, quoted = run_on
            hint = "is a closing quote missing?" if quoted else "is a ':' missing?"
            return YAMLSyntaxError(
                f"YAML syntax error: the value that starts here runs on to line {line}, where "
                f"{problem}: {hint}",
                start,
            )
    return YAMLSyntaxError(f"YAML syntax error: {problem}", line)


def _value_running_onto(text: str, row: int) -> tuple[int, bool] | None:
    """(1-based start line, quoted?) of the last quoted or plain value that begins on an
    earlier line and ends on ``row`` (0-based), as PyYAML's scanner reads it; else None."""
    loader = yaml.SafeLoader(text)
    found: tuple[int, bool] | None = None
    seen: list[yaml.Token] = []
    try:
        while loader.check_token():
            token = loader.get_token()  # type: ignore[no-untyped-call]
            if token.start_mark.line > row:
                break
            seen.append(token)
    except yaml.YAMLError:
        seen += loader.tokens  # fetched before the scanner gave up
    finally:
        loader.dispose()
    for token in seen:
        if (
            isinstance(token, yaml.ScalarToken)
            and token.style in (None, "'", '"')  # not a | or > block: those end on any line
            and token.start_mark.line < row == token.end_mark.line
        ):
            found = (token.start_mark.line + 1, token.style is not None)
    return found


def _libyaml_nesting(exc: yaml.YAMLError) -> YAMLLimitError | None:
    """libyaml's own nesting limit, as the depth bound it implies (it lies beyond MAX_DEPTH)."""
    if isinstance(exc, yaml.MarkedYAMLError) and "nesting depth" in str(exc.problem):
        return _too_deep(_line(exc.problem_mark))
    return None


def _load(loader: _Loader) -> tuple[Any, SourceMap]:
    """The document's value and lines, composed and built by ``loader``; raises YAMLError."""
    try:
        node = _Composer(loader).single_node()
        smap = SourceMap()
        if node is None:
            return None, smap
        smap.lines[()] = node.start_mark.line + 1
        return _walk(loader, node, (), smap), smap
    finally:
        loader.dispose()


class _Composer:
    """Builds PyYAML's node graph from the parser's events, without recursion, under the
    bounds: MAX_DEPTH levels and MAX_VALUES values.

    PyYAML's composer recurses (a deep file is a RecursionError) and makes an alias the
    anchored node itself, shared, so a few lines can stand for billions of values. Here every
    node knows its expanded size and height once it is complete, and an alias is charged both
    where it is used.
    """

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.anchors: dict[str, yaml.Node] = {}
        self.shapes: dict[int, tuple[int, int]] = {}  # id(node) → (expanded size, height)
        self.values = 0  # values of the document so far, aliases expanded

    def single_node(self) -> yaml.Node | None:
        """The root of the stream's one document (None for an empty stream), as PyYAML's
        ``get_single_node``: a second document is an error."""
        loader = self.loader
        loader.get_event()  # StreamStartEvent
        root = None
        if not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # DocumentStartEvent
            root = self._document()
            loader.get_event()  # DocumentEndEvent
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                root.start_mark if root is not None else None,
                "but found another document",
                _marks(event)[0] if event is not None else None,
            )
        loader.get_event()  # StreamEndEvent
        return root

    def _document(self) -> yaml.Node:
        """The nodes of one document, from its first event to its root's last."""
        open_nodes: list[yaml.CollectionNode] = []  # collections not ended yet, outermost first
        keys: list[yaml.Node | None] = []  # for each open collection: a key awaiting its value
        while True:
            event = self.loader.get_event()
            if isinstance(event, yaml.CollectionEndEvent):
                node: yaml.Node = open_nodes.pop()
                keys.pop()
                node.end_mark = event.end_mark
                self.shapes[id(node)] = _shape_of(node, self.shapes)
            else:
                node = self._node(event, len(open_nodes) + 1)
                if open_nodes:
                    _attach(open_nodes[-1], keys, node)
                if isinstance(event, yaml.CollectionStartEvent):
                    assert isinstance(node, yaml.CollectionNode)  # noqa: S101 (made just above)
                    open_nodes.append(node)
                    keys.append(None)
                    continue
            if not open_nodes:
                return node

    def _node(self, event: yaml.Event | None, depth: int) -> yaml.Node:
        """The node an event starts (or an alias refers to), at ``depth``, charged."""
        if event is None:
            raise YAMLSyntaxError("YAML syntax error: the document ends early", None)
        start, _ = _marks(event)
        line = _line(start)
        if isinstance(event, yaml.AliasEvent):
            return self._alias(event, depth, line)
        if depth > MAX_DEPTH:
            raise _too_deep(line)
        node = self._new_node(event)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            if anchor in self.anchors:
                raise yaml.composer.ComposerError(
                    f"found duplicate anchor {anchor!r}; first occurrence",
                    self.anchors[anchor].start_mark,
                    "second occurrence",
                    start,
                )
            self.anchors[anchor] = node
        if isinstance(node, yaml.ScalarNode):
            self.shapes[id(node)] = (1, 1)
        self._charge(1, line, alias=False)
        return node

    def _new_node(self, event: yaml.Event) -> yaml.Node:
        """A scalar, sequence or mapping node for its event, its tag resolved as PyYAML does."""
        start, end = _marks(event)
        if isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag is None or tag == "!":
                tag = self._resolve(yaml.ScalarNode, event.value, event.implicit)
            style = event.style or None  # libyaml says '' for a plain scalar, PyYAML None
            return yaml.ScalarNode(tag, event.value, start, end, style)
        if isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            kind = (
                yaml.SequenceNode
                if isinstance(event, yaml.SequenceStartEvent)
                else yaml.MappingNode
            )
            tag = event.tag
            if tag is None or tag == "!":
                tag = self._resolve(kind, None, event.implicit)
            return kind(tag, [], start, None, flow_style=event.flow_style)
        raise yaml.composer.ComposerError(None, None, f"unexpected {type(event).__name__}", start)

    def _resolve(self, kind: type[yaml.Node], value: str | None, implicit: Any) -> str:
        """The tag of an untagged node, by PyYAML's implicit resolvers (YAML 1.1)."""
        tag: str = self.loader.resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        return tag

    def _alias(self, event: yaml.AliasEvent, depth: int, line: int | None) -> yaml.Node:
        """The anchored node an alias stands for, charged its expanded size and height."""
        anchor = event.anchor
        node = self.anchors.get(anchor) if anchor is not None else None
        if node is None:
            raise yaml.composer.ComposerError(
                None, None, f"found undefined alias {anchor!r}", _marks(event)[0]
            )
        shape = self.shapes.get(id(node))
        if shape is None:  # the anchored collection is still open: the alias is inside it
            raise YAMLLimitError(
                "loop", f"alias *{anchor} refers to a value that contains it", line
            )
        size, height = shape
        if depth + height - 1 > MAX_DEPTH:
            raise _too_deep(line)
        self._charge(size, line, alias=True)
        return node

    def _charge(self, values: int, line: int | None, *, alias: bool) -> None:
        self.values += values
        if self.values > MAX_VALUES:
            what = "aliases expand the document to" if alias else "the document has"
            raise YAMLLimitError("values", f"{what} more than {MAX_VALUES} values", line)


def _attach(parent: yaml.CollectionNode, keys: list[yaml.Node | None], node: yaml.Node) -> None:
    """Add ``node`` to the open collection: an item, a key, or the value of the waiting key."""
    if isinstance(parent, yaml.SequenceNode):
        parent.value.append(node)
        return
    key = keys[-1]
    if key is None:
        keys[-1] = node
    else:
        parent.value.append((key, node))
        keys[-1] = None


def _marks(event: yaml.Event) -> tuple[yaml.Mark | None, yaml.Mark | None]:
    """An event's start and end marks (libyaml's have the same fields as PyYAML's)."""
    return cast("yaml.Mark | None", event.start_mark), cast("yaml.Mark | None", event.end_mark)


def _line(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


def _too_deep(line: int | None) -> YAMLLimitError:
    return YAMLLimitError("depth", f"the document is nested deeper than {MAX_DEPTH} levels", line)


def _shape_of(node: yaml.Node, shapes: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(expanded size, height) of a node whose children have theirs in ``shapes`` already."""
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        return 1, 1
    size, height = 1, 1
    for child in children:
        child_size, child_height = shapes[id(child)]
        size += child_size
        height = max(height, child_height + 1)
    return size, height


def _walk(loader: _Loader, node: yaml.Node, path: Path, smap: SourceMap) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(loader, key_node)
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
    value = _construct(loader, node)
    if isinstance(node, yaml.ScalarNode) and node.style is None and not isinstance(value, str):
        smap.texts[path] = node.value
    return value


def _construct(loader: _Loader, node: yaml.Node) -> Any:
    """The safe constructor's value for a node. What it cannot make of a value (an int of
    5,000 digits, the 45th of month 13, a tag applied to the wrong text) names the line."""
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError:
        raise
    except Exception as exc:  # the constructor's own errors on a hostile value: ValueError, …
        text = node.value if isinstance(node, yaml.ScalarNode) else node.tag
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise YAMLSyntaxError(f"cannot read {shown!r}: {exc}", node.start_mark.line + 1) from None
