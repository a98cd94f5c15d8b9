"""Plain YAML data <-> typed dataclasses: a strict converter that names the dotted path of every error.

`convert(value, tp, path)` checks `value` against the type hint `tp` (dataclasses, lists, mappings, unions,
literals, the scalars): unknown keys are refused with the closest valid one, missing required fields named,
numbers never taken from booleans; a dataclass's `DOMAINS` table (field_domains.py) is checked, then its
`check(path)` method, so each section's cross-field rules run as it is built. `to_dict` goes back to plain
data. Nothing here knows the experiment's sections: schema.py holds them and calls `convert`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from audiostyle.platform.config.field_domains import check_domains
from audiostyle.platform.core.errors import ConfigError, did_you_mean


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {type(None): "null", float: "a number", int: "an integer", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(value: Any, tp: Any, path: str) -> Any:
    """`value` as type `tp`, checked; raises ConfigError naming `path` (dotted) and what was expected."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return convert(value, opt, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", path=path)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"got {value!r}; allowed: {', '.join(repr(a) for a in allowed)}", path=path)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"expected {_type_name(tp)}, got {value!r}", path=path)
        (item_tp,) = typing.get_args(tp)
        return [convert(v, item_tp, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"expected a mapping, got {value!r}", path=path)
        _, val_tp = typing.get_args(tp)
        return {str(k): convert(v, val_tp, _join(path, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(value, tp, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true/false, got {value!r}", path=path)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", path=path)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"expected a number, got {value!r}", path=path)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", path=path)
        return value
    raise TypeError(f"config schema uses an unsupported type {tp!r} at {path}")


def _convert_dataclass(value: Any, cls: type, path: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"expected a mapping, got {value!r}", path=path or "(top level)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields:
            raise ConfigError(
                f"unknown key '{key}'.{did_you_mean(str(key), fields)} Valid keys here: {', '.join(fields)}",
                path=_join(path, key),
            )
    kwargs = {}
    for name, f in fields.items():
        if name in value:
            kwargs[name] = convert(value[name], hints[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required field '{name}'", path=_join(path, name))
    obj = cls(**kwargs)
    check_domains(obj, getattr(cls, "DOMAINS", {}), path)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def to_dict(cfg: Any) -> Any:
    """The typed config back to plain YAML-able data (for `config show`, checkpoints and sweeps)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
