"""Experiment YAML loading: `defaults:` composition, `a.b=c` overrides, `${a.b}` references, validation.

One file is one experiment. `defaults: [base/model.yaml, ...]` lists files (relative to the one that
names them) merged in order beneath it; mappings merge key by key, everything else is replaced. Command
line overrides `a.b=c` then apply (values parsed as YAML), and `${a.b}` references resolve last, so
an override of `data.root` moves every path built from it. Every field remembers the file that set it,
so errors name the file as well as the dotted path. Nothing here builds a model or starts Ray: the
checks that need a build (the model on the meta device, the `sweep:` block) are platform/checking/'s,
which calls `read_experiment` first.

The mapping the YAML becomes once composed, overridden, referenced and pinned is called `resolved`
everywhere (here, in checking/ and in sweeps/): the typed config is parsed from it, and a sweep applies
its samples to it by dotted path.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiostyle.platform.config.dotted_paths import COMMAND_LINE, get_path, schema_has_path, set_path
from audiostyle.platform.config.safe_yaml import YamlSyntaxError, load_yaml_text
from audiostyle.platform.config.schema import ExperimentConfig, ModelConfig, parse_experiment
from audiostyle.platform.config.typed_convert import to_dict
from audiostyle.platform.core.errors import ConfigError, did_you_mean
from audiostyle.platform.core.locations import is_url
from audiostyle.platform.core.registry import COMPONENT_KEY, validate_spec

_REF = re.compile(r"\$\{([^}]*)\}")


@dataclass
class ComposedConfig:
    """The merged mapping plus, for each dotted path, the file that last set it."""

    data: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)
    root_file: str = ""

    def files_under(self, path: str) -> list[str]:
        """Every file that set `path` or a field inside it, in the order they were applied; for errors
        about a whole node (a component whose arguments came from a base file and the command line)."""
        files = [f for key, f in self.origin.items() if f and (key == path or key.startswith(path + "."))]
        return sorted(set(files), key=lambda f: (f == COMMAND_LINE, files.index(f))) or [self.file_for(path)]

    def file_for(self, path: str) -> str:
        """The file that set `path` or its nearest ancestor."""
        parts = path.split(".") if path else []
        while parts:
            key = ".".join(parts)
            if key in self.origin:
                return self.origin[key]
            parts.pop()
        return self.root_file


def _not_a_file(path: Path, role: str = "") -> str | None:
    """Why `path` cannot be read as a YAML file (None when it can be): missing, or a directory; `role`
    ("default") says which kind of file the message is about."""
    prefix = f"{role} " if role else ""
    if path.is_dir():
        return f"{prefix}{path} is a directory: a YAML file is needed here, not a folder"
    if not path.is_file():
        return f"{prefix}file not found: {path}"
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    """Load one YAML file into a mapping (config/safe_yaml.py: duplicate keys, alias bombs and deep nesting
    refused, `1e-3` read as a number), with errors that name the file and line."""
    problem = _not_a_file(path)
    if problem:
        raise ConfigError(problem, hint="check the path; `defaults:` entries are relative to the file naming them")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read this file ({exc})", file=str(path)) from None
    data = load_yaml_text(text, source=str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", file=str(path))
    return data


def _record(origin: dict[str, str], value: Any, prefix: str, file: str) -> None:
    origin[prefix] = file
    if isinstance(value, dict):
        for k, v in value.items():
            _record(origin, v, f"{prefix}.{k}" if prefix else str(k), file)


def _switches_component(old: Any, new: Any) -> bool:
    """A node naming a different component replaces the old node: its arguments belong to the old one."""
    return (isinstance(old, dict) and isinstance(new, dict) and COMPONENT_KEY in new
            and old.get(COMPONENT_KEY) != new[COMPONENT_KEY])


def _merge(base: dict[str, Any], top: Mapping[str, Any], origin: dict[str, str], file: str, prefix: str = "") -> None:
    for key, value in top.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _switches_component(base[key], value):
            origin[path] = file
            _merge(base[key], value, origin, file, path)
        else:
            base[key] = copy.deepcopy(value)
            _record(origin, value, path, file)


def compose(path: str | Path, _stack: tuple[Path, ...] = ()) -> ComposedConfig:
    """Merge a file's `defaults:` beneath it, recursively."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, resolved))
        raise ConfigError(f"`defaults:` form a cycle: {chain}", file=str(path), path="defaults")
    raw = read_yaml(path)
    defaults = raw.pop("defaults", [])
    if isinstance(defaults, str):
        defaults = [defaults]
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        raise ConfigError("`defaults` must be a list of file paths", file=str(path), path="defaults")
    out = ComposedConfig({}, {}, str(path))
    for i, rel in enumerate(defaults):
        base_path = path.parent / rel
        problem = _not_a_file(base_path, "default")
        if problem:
            raise ConfigError(problem, file=str(path), path=f"defaults.{i}",
                              hint="paths in `defaults:` are relative to the file that lists them")
        base = compose(base_path, (*_stack, resolved))
        for key, file in base.origin.items():
            out.origin[key] = file
        _merge(out.data, base.data, {}, "")
    _merge(out.data, raw, out.origin, str(path))
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=c` -> ('a.b', c) with c parsed as YAML (so `x=3` is an int, `x=[1,2]` a list)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value", file=COMMAND_LINE)
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key", file=COMMAND_LINE)
    try:
        parsed = load_yaml_text(value, source=f"{COMMAND_LINE} ({key}=...)") if value.strip() else ""
    except YamlSyntaxError:  # not YAML: the text itself (a duplicate key or alias bomb is still refused)
        parsed = value
    return key, parsed


def apply_overrides(composed: ComposedConfig, overrides: Iterable[str]) -> None:
    for text in overrides:
        key, value = parse_override(text)
        create = key.startswith("+") or schema_has_path(key)
        key = key.lstrip("+")
        set_path(composed.data, key, value, create=create)
        _record(composed.origin, value, key, COMMAND_LINE)


def resolve_references(composed: ComposedConfig) -> dict[str, Any]:
    """Replace `${a.b}`: a whole-string reference keeps the target's type; embedded ones format as text."""
    data = composed.data

    def resolve(value: Any, path: str, stack: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, f"{path}.{k}" if path else str(k), stack) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{path}.{i}", stack) for i, v in enumerate(value)]
        if not isinstance(value, str) or "${" not in value:
            return value

        def lookup(ref: str) -> Any:
            ref = ref.strip()
            if ref in stack:
                raise ConfigError(f"reference cycle: {' -> '.join((*stack, ref))}", path=path,
                                  file=composed.file_for(path))
            try:
                target = get_path(data, ref)
            except KeyError:
                head = ref.rsplit(".", 1)
                siblings: list[str] = []
                try:
                    parent = get_path(data, head[0]) if len(head) == 2 else data
                    siblings = list(map(str, parent)) if isinstance(parent, dict) else []
                except KeyError:
                    pass
                raise ConfigError(
                    f"reference ${{{ref}}} points to no field.{did_you_mean(head[-1], siblings)}",
                    path=path, file=composed.file_for(path),
                ) from None
            return resolve(target, ref, (*stack, ref))

        whole = _REF.fullmatch(value)
        if whole:
            return lookup(whole.group(1))
        return _REF.sub(lambda m: str(lookup(m.group(1))), value)

    return resolve(data, "", ())


def validate_components(cfg: ExperimentConfig) -> None:
    """Check every component name and argument against the registry, without building anything."""
    for attr, kind in ModelConfig.SLOTS:
        validate_spec(kind, getattr(cfg.model, attr), path=f"model.{attr}")
    for term, spec in cfg.losses.items():
        validate_spec("loss", spec, path=f"losses.{term}")


def absolutize_paths(data: dict[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """Make local data, stats and storage paths absolute against the directory the user ran from.

    Ray workers and Tune trial drivers run in other working directories, so a relative path must be
    pinned down once, where the user typed it. URLs and object-store URIs are left as they are.
    """
    cwd = cwd or Path.cwd()

    def pin(value: Any) -> Any:
        if isinstance(value, str) and value and not is_url(value) and not Path(value).is_absolute():
            return str((cwd / Path(value).expanduser()).resolve())
        return value

    for inst in data.get("instruments") or []:
        if isinstance(inst, dict) and "data" in inst:
            inst["data"] = pin(inst["data"])
    section = data.get("data")
    if isinstance(section, dict):
        for key in ("root", "pairs"):
            if isinstance(section.get(key), str):
                section[key] = pin(section[key])
            elif isinstance(section.get(key), list):  # data.pairs may name several paired datasets
                section[key] = [pin(item) for item in section[key]]
        stats = section.get("stats")
        if isinstance(stats, str) and stats.endswith(".npz"):
            section["stats"] = pin(stats)
    run = data.get("run")
    if isinstance(run, dict) and "storage_path" in run:
        run["storage_path"] = pin(run["storage_path"])
    return data


def load_resolved(path: str | Path, overrides: Iterable[str] = ()) -> tuple[dict[str, Any], ComposedConfig]:
    """Compose, override, resolve references and pin local paths: the resolved mapping, and its origins."""
    composed = compose(path)
    apply_overrides(composed, overrides)
    return absolutize_paths(resolve_references(composed)), composed


def config_from_dict(resolved: dict[str, Any], *, file: str = "") -> ExperimentConfig:
    """Typed, component-checked config from an already resolved mapping (a checkpoint's or a sweep's)."""
    try:
        cfg = parse_experiment(resolved)
        validate_components(cfg)
    except ConfigError as exc:
        raise exc.located(file) from None
    return cfg


@dataclass(frozen=True)
class LoadedExperiment:
    """An experiment YAML as loaded: the typed config, the resolved mapping it was validated from (a
    sweep applies its samples to that mapping by dotted path), and which file set each field."""

    config: ExperimentConfig
    resolved: dict[str, Any]
    composed: ComposedConfig

    def locate(self, exc: ConfigError) -> ConfigError:
        """`exc` attributed to the file that set its field (the experiment file when it names none)."""
        return exc.located(self.composed.file_for(exc.field_path))


def read_experiment(path: str | Path, overrides: Iterable[str] = ()) -> LoadedExperiment:
    """An experiment YAML plus overrides: its typed config (schema, rules and component signatures
    checked), the resolved mapping and each field's file. Nothing is built (platform/checking/ builds)."""
    resolved, composed = load_resolved(path, overrides)
    try:
        cfg = parse_experiment(resolved)
        validate_components(cfg)
    except ConfigError as exc:
        raise exc.located(composed.file_for(exc.field_path)) from None
    return LoadedExperiment(cfg, resolved, composed)


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The typed config of an experiment YAML plus overrides, as `read_experiment` checks it."""
    return read_experiment(path, overrides).config


def with_settings(cfg: ExperimentConfig, settings: Mapping[str, Any]) -> ExperimentConfig:
    """`cfg` with the fields named by dotted path set to typed values ({"run.name": "best"}), checked as a
    load checks them and local paths pinned: how a program holding a config sets where and how it runs."""
    data = to_dict(cfg)
    for dotted, value in settings.items():
        set_path(data, dotted, value, create=schema_has_path(dotted))
    return config_from_dict(absolutize_paths(data))
