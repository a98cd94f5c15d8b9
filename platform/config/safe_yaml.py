"""Reading YAML that a person wrote: a SafeLoader that refuses what PyYAML would accept silently.

`yaml.safe_load` builds no arbitrary objects, but it still (1) keeps the last of two equal keys in one
mapping without a word, so a second `optim:` section silently replaces the first; (2) expands aliases
without bound, so a few lines of nested anchors (an "alias bomb") grow into billions of values; (3)
recurses once per nesting level, so a deeply nested file ends in a RecursionError traceback; and (4)
reads `1e-3` as the string "1e-3", because YAML 1.1 floats need a dot. `load_yaml_text` refuses the
first three with a ConfigError naming the file, the line and the dotted key, and reads the scientific
notation people write (`1e-3`, `5E+4`) as a float, as YAML 1.2 does.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from audiostyle.platform.core.errors import ConfigError

MAX_DEPTH = 40  # experiment files nest about 6 levels; 40 leaves room for any real config
MAX_NODES = 100_000  # values after alias expansion; an experiment has a few hundred
_MERGE_TAG = "tag:yaml.org,2002:merge"
# YAML 1.2's float: the 1.1 pattern PyYAML ships requires a dot, so `1e-3` would stay a string.
_FLOAT_12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class YamlSyntaxError(ConfigError):
    """The text is not YAML at all (an override value such as `a=[1,2` is then taken as text)."""


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with limits on depth and alias expansion, and YAML 1.2 scientific notation."""

    def __init__(self, stream: str, source: str = ""):
        super().__init__(stream)
        self.source = source
        self._path: list[str] = []  # dotted-path labels of the nodes being composed
        self._total = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded node count, height)

    def _fail(self, message: str, mark: Any) -> ConfigError:
        line = f"line {mark.line + 1}: " if mark is not None else ""
        parts = [p for p in self._path if p]
        if len(parts) > 8:  # a 40-level path says less than its two ends
            parts = [*parts[:4], "...", *parts[-2:]]
        path = ".".join(parts)
        return ConfigError(f"{line}{message}", file=self.source or None, path=path)

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes, height) of a finished node with every alias expanded; memoized, so shared
        subtrees cost one visit however often they are referenced."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.ScalarNode):
                children: list[yaml.Node] = []
            elif isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            else:
                children = [n for pair in node.value for n in pair]
            measured = [self._measure(c) for c in children]
            self._sizes[key] = (1 + sum(m[0] for m in measured), 1 + max((m[1] for m in measured), default=0))
        return self._sizes[key]

    def compose_node(self, parent: Any, index: Any) -> Any:
        label = index.value if isinstance(index, yaml.ScalarNode) else "" if index is None else str(index)
        self._path.append(str(label))
        try:
            event = self.peek_event()
            if len(self._path) > MAX_DEPTH:
                raise self._fail(f"nested more than {MAX_DEPTH} levels deep; an experiment config needs a "
                                 "handful: flatten this structure", event.start_mark)
            if isinstance(event, yaml.AliasEvent) and event.anchor in self.anchors:
                target = self.anchors[event.anchor]
                if getattr(target, "end_mark", True) is None:  # the anchored node is still being composed
                    raise self._fail(f"alias *{event.anchor} refers to a node that contains it; a recursive "
                                     "structure is not a config", event.start_mark)
                nodes, height = self._measure(target)
                self._total += nodes
                if len(self._path) - 1 + height > MAX_DEPTH:
                    raise self._fail(f"alias *{event.anchor} nests more than {MAX_DEPTH} levels deep",
                                     event.start_mark)
            else:
                self._total += 1
            if self._total > MAX_NODES:
                raise self._fail(f"the document expands to more than {MAX_NODES} values (nested anchors and "
                                 "aliases multiply at each level); write the values out or use fewer aliases",
                                 event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._path.pop()

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None:
            self._check_duplicates(node, [], set())
        return node

    def _check_duplicates(self, node: yaml.Node, path: list[str], seen: set[int]) -> None:
        """ConfigError at the second of two equal keys in one mapping (a merge key `<<` may be
        overridden by an explicit key: that is what it is for)."""
        if id(node) in seen or isinstance(node, yaml.ScalarNode):
            return
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._check_duplicates(item, [*path, str(i)], seen)
            return
        first: dict[tuple[str, str], Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in first:
                self._path = [*path, key_node.value]
                raise self._fail(f"duplicate key {key_node.value!r} (first at line {first[key].line + 1}): YAML "
                                 "would silently keep only the last one; remove or merge the two",
                                 key_node.start_mark)
            first[key] = key_node.start_mark
            self._check_duplicates(value_node, [*path, key_node.value], seen)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def load_yaml_text(text: str, *, source: str = "") -> Any:
    """Parse one YAML document with StrictLoader; ConfigError (file, line, key) for anything malformed."""
    loader = StrictLoader(text, source)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlSyntaxError(f"malformed YAML{where}: {getattr(exc, 'problem', None) or exc}",
                              file=source or None) from None
    finally:
        loader.dispose()
