"""Checking a component argument from YAML against its parameter's type annotation, items included.

`validate_spec` (core/registry.py) calls `check_argument` for every argument a YAML node sets, so
`channels: [8, "16", 32]` or `num_heads: 2.5` is refused by `audiostyle validate` with the dotted
path of the bad item, instead of a TypeError inside a Ray worker. Annotations are read with
`typing.get_type_hints`; a parameter without one (or with one that cannot be resolved) is checked
against the type of its default, as before. Types YAML cannot produce (modules, tensors) pass: the
model assembly supplies those, never the YAML.
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

from audiostyle.platform.core.errors import ConfigError

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SCALARS = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def parameter_types(target: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of a component's parameters ({} when they cannot be resolved)."""
    func = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(func)
    except Exception:  # a forward reference the module cannot resolve: fall back to the defaults' types
        return {}


def describe(tp: Any) -> str:
    """A type as the message says it: 'an integer', 'a list of integers', 'an integer or null'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in _SEQUENCES:
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)} items ({', '.join(describe(a) for a in args)})"
        return f"a list of {_PLURALS.get(args[0], 'values')}" if args else "a list"
    if origin in _MAPPINGS:
        return "a mapping"
    return _SCALARS.get(tp, getattr(tp, "__name__", str(tp)))


def _mismatch(value: Any, tp: Any, path: str) -> tuple[str, str] | None:
    """(path, reason) of the first place where `value` does not fit `tp`, or None when it fits."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty or isinstance(tp, (typing.TypeVar, str)):
        return None
    if tp is type(None):
        return None if value is None else (path, f"expected null, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        results = [_mismatch(value, a, path) for a in args]
        if any(r is None for r in results):
            return None
        deeper = [r for r in results if r[0] != path]  # the right container, a wrong item: name the item
        return deeper[0] if deeper else (path, f"expected {describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        return None if value in args else (path, f"expected {describe(tp)}, got {value!r}")
    if origin in _SEQUENCES or tp in _SEQUENCES:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return path, f"expected {describe(tp)}, got {value!r}"
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                return path, f"expected {describe(tp)}, got {len(value)} items: {list(value)!r}"
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        for i, (item, item_tp) in enumerate(zip(value, item_types)):
            found = _mismatch(item, item_tp, f"{path}.{i}")
            if found:
                return found[0], f"{found[1]} (in {list(value)!r})" if found[0] == f"{path}.{i}" else found[1]
        return None
    if origin in _MAPPINGS or tp in _MAPPINGS:
        if not isinstance(value, dict):
            return path, f"expected a mapping, got {value!r}"
        value_tp = args[1] if len(args) == 2 else Any
        for key, item in value.items():
            found = _mismatch(item, value_tp, f"{path}.{key}")
            if found:
                return found
        return None
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        return None  # modules, tensors, callables: supplied by the assembly, never by YAML
    if ok:
        return None
    hint = " (write scientific notation as 1.0e-4 or 1e-4)" if tp is float and isinstance(value, str) else ""
    return path, f"expected {describe(tp)}, got {value!r}{hint}"


def check_argument(value: Any, annotation: Any, default: Any, *, path: str) -> None:
    """ConfigError at the (item) path where `value` does not fit the annotation (or, with none, the
    type of the default)."""
    if annotation is inspect.Parameter.empty:
        if default in (inspect.Parameter.empty, None):
            return
        annotation = float if isinstance(default, float) else (list if isinstance(default, (list, tuple))
                                                                else type(default))
    found = _mismatch(value, annotation, path)
    if found:
        raise ConfigError(found[1], path=found[0])
