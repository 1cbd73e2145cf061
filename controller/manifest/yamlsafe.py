"""A YAML loader with limits: manifests come from Git, pull requests and CRs, so they are hostile input.

PyYAML's SafeLoader refuses arbitrary objects but still accepts:
* duplicate keys (the last one silently wins, so a reviewer reads one value and the controller uses another);
* alias bombs ("billion laughs"): nine aliases of nine aliases expand to 10^9 nodes when validation walks them;
* deep nesting: the composer recurses per level, and ~1,000 levels end in a RecursionError;
* aliases to their own ancestor (a cyclic document that validation would walk forever).
Each is a MarkedYAMLError here, so the caller reports it with the file, line and column.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_DEPTH = 64
#: Nodes of a document with every alias expanded: a manifest has a few hundred.
MAX_EXPANDED_NODES = 100_000
MAX_MANIFEST_BYTES = 1024 * 1024

_MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitedSafeLoader(yaml.SafeLoader):
    """SafeLoader refusing duplicate keys, deep nesting, alias bombs and cyclic aliases."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node:
        node = super().compose_document()
        expanded_size(node)
        return node

    def construct_mapping(self, node: Node, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key_node.value[:40]!r} (first at line {seen[key]})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def expanded_size(root: Node) -> int:
    """Nodes of the document with aliases expanded, counted without expanding them (memoised)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # iterative post-order walk: a deep document must not recurse in Python either
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_EXPANDED_NODES:
                raise ComposerError(None, None, f"the document expands to more than {MAX_EXPANDED_NODES} "
                                    "nodes through aliases (an alias bomb?)", node.start_mark)
            continue
        if key in sizes:
            continue
        if key in active:
            raise ComposerError(None, None, "an alias refers to its own ancestor (a cyclic document)",
                                node.start_mark)
        active.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in active:
                raise ComposerError(None, None, "an alias refers to its own ancestor (a cyclic document)",
                                    child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_all(text: str) -> list[Any]:
    """Every non-empty document of `text`, under the limits above."""
    return [d for d in yaml.load_all(text, Loader=LimitedSafeLoader) if d is not None]
