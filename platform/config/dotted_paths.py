"""Dotted paths into a config mapping: `train.max_steps`, `curriculum.phases.0.until`, `...phases.*.weights.hsic`.

Command-line overrides (config/loader.py) and sweep search spaces (sweeps/space.py) both name config
fields this way; these functions are the one reading of such a path. List items are addressed by
index, and a `*` segment (sweeps only) stands for every key or item that holds the rest of the path.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError, did_you_mean

COMMAND_LINE = "command line"  # the "file" an override comes from, in error messages


def get_path(data: Any, dotted: str) -> Any:
    """The value at `dotted` in nested dicts/lists; KeyError(dotted) when any segment is absent."""
    node = data
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(dotted)
    return node


def set_path(data: dict[str, Any], dotted: str, value: Any, *, create: bool = False, file: str = COMMAND_LINE) -> None:
    """Set `a.b.0.c` in nested dicts/lists; a missing key is an error (with the closest key) unless `create`."""
    parts = dotted.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        here = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"no list item {part!r} (the list has {len(node)} items)", path=here, file=file)
            if last:
                node[int(part)] = value
                return
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                if not create:
                    raise ConfigError(
                        f"no such field.{did_you_mean(part, map(str, node))} Fields here: {', '.join(map(str, node))}",
                        path=here, file=file,
                        hint="prefix the override with '+' to add a new key (+a.b=c)",
                    )
                node[part] = value if last else {}
            if last:
                node[part] = value
                return
            node = node[part]
        else:
            raise ConfigError(f"cannot descend into {type(node).__name__} value {node!r}", path=here, file=file)


def expand_path(data: Any, path: str) -> list[str]:
    """The concrete dotted paths that `path` (which may hold `*` segments) names in `data`."""
    def walk(node: Any, parts: list[str], prefix: str) -> list[str]:
        if not parts:
            return [prefix]
        head, rest = parts[0], parts[1:]
        if isinstance(node, list):
            keys = [str(i) for i in range(len(node))]
            children = dict(zip(keys, node))
        elif isinstance(node, dict):
            keys = [str(k) for k in node]
            children = {str(k): v for k, v in node.items()}
        else:
            return []
        chosen = keys if head == "*" else [head] if head in children else []
        found: list[str] = []
        for key in chosen:
            found += walk(children[key], rest, f"{prefix}.{key}" if prefix else key)
        return found

    return walk(data, path.split("."), "")


def schema_has_path(dotted: str) -> bool:
    """Whether `a.b.c` names a field of the typed config (through sections and list items), so that an
    override may set a field the YAML leaves at its default without a '+'."""
    tp: Any = ExperimentConfig
    for part in dotted.split("."):
        tp = _strip_optional(tp)
        if typing.get_origin(tp) is list and part.isdigit():
            tp = typing.get_args(tp)[0]
        elif dataclasses.is_dataclass(tp) and part in {f.name for f in dataclasses.fields(tp)}:
            tp = typing.get_type_hints(tp)[part]
        else:
            return False
    return True


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1 else tp
