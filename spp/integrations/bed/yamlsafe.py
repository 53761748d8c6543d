"""Bed files are read with a loader that refuses what a hand-written description never needs and
what could hurt: YAML tags (``!!python/object``, ``!foo``, even ``!!str``), duplicate keys (the
second would silently win), an empty document, several documents, and aliases whose expansion
grows past a fixed size (the "billion laughs"). Every value keeps the 1-based line it was written
on, so a schema error can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Nodes an expanded document may have; a bed of hundreds of processes stays far below.
MAX_EXPANDED_NODES = 20_000
#: Bytes a bed file may have.
MAX_FILE_BYTES = 1 << 20

KeyPath = tuple[str | int, ...]


@dataclass
class BedError:
    """One problem in a bed file, located by line and key path."""

    file: str
    line: int
    path: KeyPath
    message: str

    def __str__(self) -> str:
        where = format_path(self.path)
        return f"{self.file}:{self.line}: {where + ': ' if where else ''}{self.message}"


class BedFileError(ValueError):
    """A bed file that cannot be used; ``errors`` lists every problem found, in line order."""

    def __init__(self, errors: list[BedError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.line, format_path(e.path)))
        super().__init__("\n".join(str(e) for e in self.errors))


def format_path(path: KeyPath) -> str:
    """``secondaries[0].patches[1]``: the path as people write it."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Document:
    """A loaded bed file: plain data plus the line of every key path in it."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of the nearest enclosing value written in the file (a missing
        key is reported on its parent's line)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return 1

    def error(self, path: KeyPath, message: str) -> BedError:
        return BedError(self.file, self.line_of(path), path, message)


def _fail(file: str, line: int, message: str, path: KeyPath = ()) -> BedFileError:
    return BedFileError([BedError(file, line, path, message)])


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _check_events(text: str, file: str) -> None:
    """Tags and the number of documents are visible only in the event stream."""
    documents = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            tag = getattr(event, "tag", None)
            if tag is not None:
                raise _fail(file, event.start_mark.line + 1, f"YAML tag '{tag}' is not allowed in a bed file")
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _fail(file, event.start_mark.line + 1, "a bed file holds one YAML document")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise _fail(file, line, f"not valid YAML: {e.problem or e.context}") from None


def _expanded_size(node: yaml.Node, memo: dict[int, int], file: str) -> int:
    """Nodes ``node`` stands for once every alias is expanded (shared subtrees counted each time)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias ends here instead of looping
    size = 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, memo, file) + _expanded_size(v, memo, file)
            if size > MAX_EXPANDED_NODES:
                break
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            size += _expanded_size(item, memo, file)
            if size > MAX_EXPANDED_NODES:
                break
    memo[key] = size
    return size


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[KeyPath, int] = {}
        self.constructor = yaml.SafeLoader("")  # resolves plain scalars (ints, bools) as safe_load does
        self.active: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.lines.setdefault(path, _line(node))
        if id(node) in self.active:
            raise _fail(self.file, _line(node), "an alias refers to the value that contains it", path)
        if isinstance(node, yaml.ScalarNode):
            return self.constructor.construct_object(node, deep=True)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    raise _fail(self.file, _line(knode), "a key must be a plain word or number", path)
                key = self.constructor.construct_object(knode, deep=True)
                if key == "<<" and knode.tag.endswith(":merge"):
                    raise _fail(self.file, _line(knode), "merge keys ('<<') are not supported", path)
                if key in out:
                    first = self.lines.get((*path, key), "?")
                    raise _fail(
                        self.file,
                        _line(knode),
                        f"duplicate key '{key}' (first on line {first})",
                        (*path, key),
                    )
                self.lines[(*path, key)] = _line(knode)
                out[key] = self.build(vnode, (*path, key))
            return out
        finally:
            self.active.discard(id(node))


def load_text(text: str, file: str = "<bed>") -> Document:
    """Parse bed text; :class:`BedFileError` for anything the module docstring lists."""
    if len(text.encode()) > MAX_FILE_BYTES:
        raise _fail(file, 1, f"file larger than {MAX_FILE_BYTES} bytes")
    _check_events(text, file)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:  # pragma: no cover - _check_events saw the same stream
        raise _fail(file, (e.problem_mark.line + 1) if e.problem_mark else 1, str(e.problem)) from None
    if root is None or (
        isinstance(root, yaml.ScalarNode) and root.value == "" and root.tag.endswith(":null")
    ):
        raise _fail(file, 1, "the file is empty: a bed needs at least 'primary'")
    if _expanded_size(root, {}, file) > MAX_EXPANDED_NODES:
        raise _fail(file, 1, f"aliases expand to more than {MAX_EXPANDED_NODES} values (an alias bomb?)")
    builder = _Builder(file)
    data = builder.build(root, ())
    if not isinstance(data, dict):
        raise _fail(file, _line(root), "a bed file is a mapping of sections (primary:, secondaries:, ...)")
    return Document(file, data, builder.lines)


def load_file(path: str | Path) -> Document:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise _fail(str(path), 1, f"cannot read: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _fail(str(path), 1, f"file larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise _fail(str(path), line, "not UTF-8 text") from None
    return load_text(text, str(path))
