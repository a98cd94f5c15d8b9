"""The component registry: one namespace per kind, filled by `@register` at import time.

Kinds are the pluggable slots of the model (frontend, encoder, decoder, discriminator, loss). A YAML
node `{component: NAME, arg: value, ...}` names a registered class or function and its arguments;
`validate_spec` checks that node against the signature (names, and each value against its annotation,
list items included; core/argument_types.py) without building anything, `resolved_arguments`
says what it would be called with (defaults included), and `build` calls it.

Some arguments are never written in YAML because they follow from the rest of the config (the number
of instrument classes, the front end's bin count, the sample rate). Each kind declares those names as
*injected*; the model assembly passes them at build time and validation treats them as supplied.

Third-party packages add components through the entry-point group `audiostyle.components`: each entry
names a module whose import runs its `@register` decorators.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from audiostyle.platform.core.argument_types import check_argument, parameter_types
from audiostyle.platform.core.errors import ConfigError, did_you_mean

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "audiostyle.components"
# What a constructor raises when the values it was given do not fit together (e.g. heads that do not
# divide the width); `build` reports these as the YAML's fault, naming the component.
# (RuntimeError: torch's own refusals, e.g. a negative dimension; NotImplementedError, its subclass, is
# an unsupported operation, not a bad argument, and passes through.)
BUILD_ERRORS = (ValueError, TypeError, AssertionError, ZeroDivisionError, RuntimeError)
COMPONENT_KEY = "component"
T = TypeVar("T", bound=Callable[..., Any])

# Arguments the model assembly supplies from the config, per kind. A YAML that sets one is rejected,
# because two sources of truth for the class count is exactly how the research code broke at N != 2.
INJECTED: dict[str, tuple[str, ...]] = {
    "frontend": ("sample_rate",),
    "encoder": ("in_bins", "in_channels", "num_classes"),
    "decoder": ("out_bins", "out_channels", "content_dim", "style_dim"),
    "discriminator": ("in_dim", "num_classes"),
    "loss": ("sample_rate",),
}


@dataclass
class Registry:
    """Named constructors of one kind of component."""

    kind: str
    injected: tuple[str, ...] = ()
    _entries: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            key = name or obj.__name__
            if key in self._entries and self._entries[key] is not obj:
                existing = self._entries[key]
                raise ValueError(
                    f"{self.kind} '{key}' is already registered by "
                    f"{existing.__module__}.{existing.__qualname__}; pick another name for "
                    f"{obj.__module__}.{obj.__qualname__}"
                )
            self._entries[key] = obj
            return obj

        return decorate

    def names(self) -> list[str]:
        load_components()
        return sorted(self._entries)

    def get(self, name: str, *, path: str = "") -> Callable[..., Any]:
        load_components()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise ConfigError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} Known {self.kind}s: {known}",
                path=path,
                hint="`audiostyle components` lists every registered component and its arguments",
            )
        return self._entries[name]


REGISTRIES: dict[str, Registry] = {kind: Registry(kind, injected) for kind, injected in INJECTED.items()}


def registry(kind: str) -> Registry:
    if kind not in REGISTRIES:
        raise KeyError(f"unknown component kind '{kind}'.{did_you_mean(kind, REGISTRIES)} Kinds: {sorted(REGISTRIES)}")
    return REGISTRIES[kind]


def register(kind: str, name: str | None = None) -> Callable[[T], T]:
    """Class or function decorator: `@register("encoder", "style_transformer")`."""
    return registry(kind).register(name)


_loaded = False


def load_components() -> None:
    """Import the built-in catalog and every entry-point plugin once, so their registrations run."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: catalog modules call register(), which must not recurse into here
    importlib.import_module("audiostyle.components.catalog")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not hide the built-in components
            logger.warning("could not load audiostyle plugin %s (%s): %s", ep.name, ep.value, exc)


def split_spec(spec: Mapping[str, Any], *, kind: str, path: str) -> tuple[str, dict[str, Any]]:
    """`{component: name, **kwargs}` -> (name, kwargs), with a located error when malformed."""
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"expected a mapping with a '{COMPONENT_KEY}' key naming a {kind}, got {type(spec).__name__} {spec!r}",
            path=path,
        )
    if COMPONENT_KEY not in spec:
        raise ConfigError(f"missing '{COMPONENT_KEY}': name the {kind} to use", path=path,
                          hint=f"known {kind}s: {', '.join(registry(kind).names())}")
    name = spec[COMPONENT_KEY]
    if not isinstance(name, str):
        raise ConfigError(f"'{COMPONENT_KEY}' must be a string, got {name!r}", path=f"{path}.{COMPONENT_KEY}")
    return name, {k: v for k, v in spec.items() if k != COMPONENT_KEY}


def _accepts_var_kwargs(sig: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def validate_spec(kind: str, spec: Mapping[str, Any], *, path: str) -> None:
    """Check a component node against its signature without building it (torchtune's validate)."""
    reg = registry(kind)
    name, kwargs = split_spec(spec, kind=kind, path=path)
    target = reg.get(name, path=f"{path}.{COMPONENT_KEY}")
    sig = inspect.signature(target)
    params = {p.name: p for p in sig.parameters.values() if p.name != "self"}
    for key in kwargs:
        if key in reg.injected:
            raise ConfigError(
                f"'{key}' is set from the rest of the config and must not be written here",
                path=f"{path}.{key}",
                hint="the class count comes from `instruments`, bin counts from the front end",
            )
        if key not in params and not _accepts_var_kwargs(sig):
            allowed = [p for p in params if p not in reg.injected]
            raise ConfigError(
                f"{kind} '{name}' has no argument '{key}'.{did_you_mean(key, allowed)} "
                f"Arguments: {', '.join(allowed) or '(none)'}",
                path=f"{path}.{key}",
            )
    hints = parameter_types(target)
    for pname, p in params.items():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if p.default is inspect.Parameter.empty and pname not in kwargs and pname not in reg.injected:
            raise ConfigError(f"{kind} '{name}' requires argument '{pname}'", path=f"{path}.{pname}")
        if pname in kwargs:  # the annotation, items of lists included (or the default's type)
            check_argument(kwargs[pname], hints.get(pname, inspect.Parameter.empty), p.default,
                           path=f"{path}.{pname}")


def _taken(sig: inspect.Signature, injected: Mapping[str, Any]) -> dict[str, Any]:
    """The injected arguments a signature takes (a component need not accept every injected name)."""
    return {k: v for k, v in injected.items() if k in sig.parameters or _accepts_var_kwargs(sig)}


def build(kind: str, spec: Mapping[str, Any], *, path: str = "", **injected: Any) -> Any:
    """Build a component from its YAML node, passing only the injected arguments its signature takes."""
    validate_spec(kind, spec, path=path)
    name, kwargs = split_spec(spec, kind=kind, path=path)
    target = registry(kind).get(name, path=path)
    try:
        return target(**kwargs, **_taken(inspect.signature(target), injected))
    except NotImplementedError:
        raise
    except BUILD_ERRORS as exc:
        # A constructor that refuses its arguments (num_heads must divide dim, ...) describes the user's
        # YAML, not a bug: say which component and which arguments, without a traceback.
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its defaults"
        raise ConfigError(f"{kind} '{name}' cannot be built with {shown}: {exc}", path=path,
                          hint=f"`audiostyle components {kind}` lists its arguments and defaults") from exc


def resolved_arguments(kind: str, spec: Mapping[str, Any], *, path: str = "", **injected: Any) -> dict[str, Any]:
    """The arguments `build` would call the component with, its signature's defaults included, without
    building it (statistics are checked against the front end's settings this way, with no STFT set up)."""
    validate_spec(kind, spec, path=path)
    name, kwargs = split_spec(spec, kind=kind, path=path)
    sig = inspect.signature(registry(kind).get(name, path=path))
    defaults = {p.name: p.default for p in sig.parameters.values()
                if p.name != "self" and p.default is not inspect.Parameter.empty}
    return {**defaults, **_taken(sig, injected), **kwargs}


def describe(kind: str) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, summary, [(argument, default)]) for every component of a kind, for `audiostyle components`."""
    reg = registry(kind)
    rows = []
    for name in reg.names():
        target = reg._entries[name]
        doc = (inspect.getdoc(target) or "").split("\n", 1)[0]
        args = []
        for p in inspect.signature(target).parameters.values():
            if p.name == "self" or p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if p.name in reg.injected:
                args.append((p.name, "<from config>"))
            else:
                args.append((p.name, "<required>" if p.default is inspect.Parameter.empty else repr(p.default)))
        rows.append((name, doc, args))
    return rows
