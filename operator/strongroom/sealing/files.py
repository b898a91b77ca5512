"""Editing ManagedSecret files in place, for ``strongroom seal --in-place`` and ``seal reseal``:
only the ``sealed:`` scalars change, byte for byte everything else stays (comments, order,
quoting, blank lines, other documents).

Why not load and dump: PyYAML's dump drops comments and reorders keys, and a GitOps file is
reviewed as a diff. PyYAML's *composer* gives every node its character span in the text, so
the blob is written exactly where the old one was, or inserted on a line of its own after the
item's ``key`` (block style) or before the closing brace (flow style). No extra dependency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KIND = "ManagedSecret"


class FileError(ValueError):
    """The file is not what a sealed value can be written into; the message says why."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One ``spec.data`` item of a ManagedSecret in a file."""

    namespace: str
    name: str
    key: str
    node: MappingNode
    sealed: ScalarNode | None
    other_sources: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Document:
    namespace: str
    name: str
    data: SequenceNode | None
    items: tuple[Item, ...]


def _get(node: Node, field: str) -> Node | None:
    if not isinstance(node, MappingNode):
        return None
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.value == field:
            return value  # type: ignore[no-any-return]
    return None


def _text(node: Node | None) -> str | None:
    return str(node.value) if isinstance(node, ScalarNode) else None


def documents(text: str) -> Iterator[Document]:
    """Every ManagedSecret in the file (other documents are skipped)."""
    try:
        nodes = list(yaml.compose_all(text))
    except yaml.YAMLError as exc:
        raise FileError(f"not valid YAML ({type(exc).__name__})") from None
    for root in nodes:
        if root is None or _text(_get(root, "kind")) != KIND:
            continue
        meta = _get(root, "metadata")
        name, namespace = _text(_get(meta, "name")) if meta else None, (
            _text(_get(meta, "namespace")) if meta else None)  # fmt: skip
        if not name or not namespace:
            raise FileError("a ManagedSecret in the file lacks metadata.name or "
                            "metadata.namespace (a sealed value is bound to both)")  # fmt: skip
        spec = _get(root, "spec")
        data = _get(spec, "data") if spec is not None else None
        items = []
        if isinstance(data, SequenceNode):
            for raw in data.value:
                key = _text(_get(raw, "key"))
                if isinstance(raw, MappingNode) and key:
                    sealed = _get(raw, "sealed")
                    others = tuple(s for s in ("generate", "fromSecret") if _get(raw, s) is not None)
                    items.append(Item(namespace, name, key, raw,
                                      sealed if isinstance(sealed, ScalarNode) else None, others))  # fmt: skip
        yield Document(namespace, name, data if isinstance(data, SequenceNode) else None,
                       tuple(items))  # fmt: skip


def _line_end(text: str, index: int) -> int:
    """The index just after the line holding ``index`` (its newline included)."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _indent_of_line(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    line = text[start:index]
    return line[: len(line) - len(line.lstrip(" "))]


def _insertion(text: str, item: Item, blob: str) -> tuple[int, int, str]:
    node = item.node
    if node.flow_style:
        close = node.end_mark.index - 1  # the closing brace
        return close, close, f", sealed: {blob}"
    key_node = next(k for k, _v in node.value if isinstance(k, ScalarNode) and k.value == "key")
    value_node = _get(node, "key")
    assert value_node is not None  # noqa: S101 - an Item has a key
    at = _line_end(text, value_node.end_mark.index)
    indent = " " * key_node.start_mark.column
    prefix = "" if text[:at].endswith("\n") else "\n"
    return at, at, f"{prefix}{indent}sealed: {blob}\n"


def _last_end(node: Node) -> int:
    """Where a node's own text ends: a block collection's end mark lies past any comments and
    blank lines after it, so take its last scalar (or flow collection) instead."""
    if isinstance(node, ScalarNode) or getattr(node, "flow_style", False) or not node.value:
        return int(node.end_mark.index)
    last = node.value[-1]
    return _last_end(last[1] if isinstance(node, MappingNode) else last)


def _new_item(text: str, doc: Document, key: str, blob: str) -> tuple[int, int, str]:
    data = doc.data
    if data is None:
        raise FileError(f"ManagedSecret {doc.namespace}/{doc.name} has no spec.data list to add "
                        f"key {key} to")  # fmt: skip
    if data.flow_style or not data.value:
        if not data.flow_style:
            raise FileError("spec.data is empty; write the item as a block list")
        close = data.end_mark.index - 1
        sep = ", " if data.value else ""
        return close, close, f"{sep}{{key: {key}, sealed: {blob}}}"
    last = data.value[-1]
    first = data.value[0]
    dash = _indent_of_line(text, first.start_mark.index)
    inner = " " * (first.start_mark.column - len(dash))
    at = _line_end(text, _last_end(last))
    prefix = "" if text[:at].endswith("\n") else "\n"
    return at, at, f"{prefix}{dash}-{inner[1:]}key: {key}\n{dash}{inner}sealed: {blob}\n"


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def set_sealed(text: str, namespace: str, name: str, key: str, blob: str) -> str:
    """``text`` with ``data[key].sealed`` of ManagedSecret ``namespace/name`` set to ``blob``."""
    for doc in documents(text):
        if (doc.namespace, doc.name) != (namespace, name):
            continue
        for item in doc.items:
            if item.key != key:
                continue
            if item.other_sources:
                raise FileError(f"data item {key} already takes its value from "
                                f"{item.other_sources[0]}; remove that first")  # fmt: skip
            if item.sealed is not None:
                return _apply(text, [(item.sealed.start_mark.index, item.sealed.end_mark.index,
                                      blob)])  # fmt: skip
            return _apply(text, [_insertion(text, item, blob)])
        return _apply(text, [_new_item(text, doc, key, blob)])
    raise FileError(f"the file has no ManagedSecret {namespace}/{name}")


def replace_sealed(text: str, change: Callable[[Item, str], str | None]) -> tuple[str, int]:
    """Ask ``change`` about every sealed item (with its current blob); write what it returns
    (None: leave it). Returns the new text and how many blobs changed."""
    edits = []
    for doc in documents(text):
        for item in doc.items:
            if item.sealed is None:
                continue
            new = change(item, str(item.sealed.value))
            if new is not None and new != item.sealed.value:
                edits.append((item.sealed.start_mark.index, item.sealed.end_mark.index, new))
    return _apply(text, edits), len(edits)
