"""The sweep search space: the `sweep.space` block parsed, checked against the experiment, sampled, applied.

Each entry maps a dotted config path to a range or a list of choices, optionally conditional:

    optim.lr:                       {float: [1.0e-4, 1.0e-3], log: true}
    model.decoder.num_layers:       {int: [1, 4]}
    model.decoder.component:        {choice: [autoregressive_decoder, parallel_decoder]}
    curriculum.phases.*.weights.adversarial: {float: [0.01, 1.0], log: true, when: losses.adversarial}
    model.decoder.num_heads:        {choice: [2, 4], when: {model.decoder.component: parallel_decoder}}

`when: losses.X` searches the entry only when loss term X is defined and weighted above 0 in some phase;
`when: {path: value, ...}` only when every listed path holds that value (conditions see the values already
sampled, in YAML order). A `*` segment matches every item holding the rest of the path, so
`curriculum.phases.*.weights.hsic` sets the HSIC weight of every phase that uses HSIC.

Curriculum boundaries (`curriculum.phases.K.until`) are never drawn independently: each is drawn as a
position in [0, 1] between one step after the previous boundary and the latest step that still leaves
every later phase a step, so each sample is a valid phase order. They are sampled in whole steps and
written back in the unit of their range (fractions of train.max_steps if hi <= 1, else step counts).

Everything here is pure (no Ray, nothing built): the whole space is checked against the experiment when it
is parsed, and `suggest` works with any `optuna.Trial` as an Optuna define-by-run function.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from audiostyle.platform.config.dotted_paths import expand_path, get_path, set_path
from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError, did_you_mean
from audiostyle.platform.training.curriculum import boundary_step

KINDS = ("float", "int", "choice")
ENTRY_KEYS = (*KINDS, "log", "when")
POSITION_SUFFIX = "~position"  # Optuna name suffix of a boundary's position between its neighbours
_BOUNDARY = re.compile(r"^curriculum\.phases\.(\d+)\.until$")
_LOSS_TERM = re.compile(r"^losses\.([^.]+)$")
# Searching these would change what the sweep compares (budget, storage, the sweep itself), not the model.
_FORBIDDEN = ("sweep", "run", "train.max_steps", "name")


@dataclass(frozen=True)
class SpaceEntry:
    """One searched entry: a config path (maybe with `*`), its kind and range or choices, its condition."""

    path: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: str | dict[str, Any] | None = None

    @property
    def phase(self) -> int | None:
        """The phase index K when this entry is the boundary `curriculum.phases.K.until`."""
        match = _BOUNDARY.match(self.path)
        return int(match.group(1)) if match else None

    @property
    def param_name(self) -> str:
        """The name Optuna records: the path, or for a boundary its relative position."""
        return self.path + POSITION_SUFFIX if self.phase is not None else self.path

    @property
    def labels(self) -> list[Any]:
        """Choices as Optuna can store them (it takes only None/bool/int/float/str): others as JSON text."""
        primitive = (type(None), bool, int, float, str)
        return [c if isinstance(c, primitive) else json.dumps(c) for c in self.choices]

    def distribution(self) -> Any:
        """The optuna distribution of this entry's config values (for plots of the values actually run)."""
        import optuna

        if self.kind == "choice":
            return optuna.distributions.CategoricalDistribution(self.labels)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def display_value(self, value: Any) -> Any:
        """A sampled config value as `distribution()` expects it."""
        if self.kind == "choice":
            return self.labels[self.choices.index(value)]
        return value


def _parse_entry(path: str, spec: Any) -> SpaceEntry:
    where = f"sweep.space.{path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"expected a mapping such as {{float: [lo, hi]}}, got {spec!r}", path=where)
    for key in spec:
        if key not in ENTRY_KEYS:
            raise ConfigError(f"unknown key {key!r}.{did_you_mean(str(key), ENTRY_KEYS)} "
                              f"Valid keys: {', '.join(ENTRY_KEYS)}", path=where)
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        raise ConfigError(f"give exactly one of {', '.join(KINDS)} (got {', '.join(kinds) or 'none'})", path=where)
    kind, value = kinds[0], spec[kinds[0]]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"log must be true or false, got {log!r}", path=f"{where}.log")
    when = spec.get("when")
    if when is not None and not (isinstance(when, str) or (isinstance(when, dict) and when)):
        raise ConfigError("when must be a path such as losses.adversarial or a mapping {path: value}",
                          path=f"{where}.when")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise ConfigError(f"choice needs a non-empty list, got {value!r}", path=f"{where}.choice")
        if log:
            raise ConfigError("log applies to float and int ranges, not to a choice", path=f"{where}.log")
        return SpaceEntry(path, kind, choices=tuple(value), when=when)
    number = int if kind == "int" else (int, float)
    if not isinstance(value, list) or len(value) != 2:
        raise ConfigError(f"{kind} needs a range [lo, hi], got {value!r}", path=f"{where}.{kind}")
    for bound in value:
        if isinstance(bound, bool) or not isinstance(bound, number):
            hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(bound, str) else ""
            raise ConfigError(f"range bounds must be {'integers' if kind == 'int' else 'numbers'}, "
                              f"got {bound!r}{hint}", path=f"{where}.{kind}")
    low, high = value
    if not low < high:
        raise ConfigError(f"the range [{low}, {high}] is empty: lo must be below hi", path=f"{where}.{kind}")
    if log and low <= 0:
        raise ConfigError(f"a log range needs lo > 0, got {low}", path=f"{where}.{kind}")
    return SpaceEntry(path, kind, low=low, high=high, log=log, when=when)


def condition_holds(data: dict[str, Any], when: str | dict[str, Any] | None) -> bool:
    """Whether a `when:` condition holds in a (partly sampled) resolved config mapping."""
    if when is None:
        return True
    if isinstance(when, str):
        try:
            value = get_path(data, when)
        except KeyError:
            return False
        term = _LOSS_TERM.match(when)
        if term:  # a loss term is enabled when some phase gives it weight
            phases = data.get("curriculum", {}).get("phases", [])
            return any(float((p.get("weights") or {}).get(term.group(1), 0) or 0) > 0 for p in phases)
        return value is not None and value is not False and value != 0
    for path, expected in when.items():
        try:
            if get_path(data, path) != expected:
                return False
        except KeyError:
            return False
    return True


class SearchSpace:
    """A checked search space over one experiment's resolved config mapping (`resolved`)."""

    def __init__(self, space: dict[str, Any], resolved: dict[str, Any]):
        self.resolved = copy.deepcopy(resolved)
        parsed = [_parse_entry(str(path), spec) for path, spec in space.items()]
        # entries drawn on their own; boundaries are drawn in phase order, each after the one before
        self.independent = [d for d in parsed if d.phase is None]
        self.boundaries = sorted((d for d in parsed if d.phase is not None), key=lambda d: d.phase)
        for entry in parsed:
            self._check_path(entry)
        for entry in self.boundaries:
            self._check_boundary_entry(entry)
        self._check_boundary_order()
        for entry in self.independent:
            self._check_values(entry)

    @classmethod
    def from_config(cls, resolved: dict[str, Any]) -> SearchSpace:
        """The space of a resolved experiment mapping's `sweep.space` block."""
        space = (resolved.get("sweep") or {}).get("space") or {}
        if not space:
            raise ConfigError("the experiment has no search space: add a `sweep:` block with `space:` entries "
                              "(see experiments/sweep_curriculum.yaml)", path="sweep.space")
        return cls(space, resolved)

    @property
    def entries(self) -> list[SpaceEntry]:
        return [*self.independent, *self.boundaries]

    @property
    def paths(self) -> list[str]:
        return [d.path for d in self.entries]

    # ------------------------------------------------------------------ checks
    def _check_path(self, entry: SpaceEntry) -> None:
        where = f"sweep.space.{entry.path}"
        if any(entry.path == f or entry.path.startswith(f + ".") for f in _FORBIDDEN):
            raise ConfigError("this field cannot be searched: trials must share one budget, storage and sweep",
                              path=where, hint="set it outside `sweep.space` (or on the command line)")
        if isinstance(entry.when, str):
            self._require(entry.when, f"{where}.when")
        elif isinstance(entry.when, dict):
            for path in entry.when:
                if path not in self.paths:
                    self._require(path, f"{where}.when")
        if entry.phase is not None and entry.when is not None:
            raise ConfigError("curriculum boundaries cannot be conditional", path=f"{where}.when")
        if "*" in entry.path.split("."):
            if not expand_path(self.resolved, entry.path) and condition_holds(self.resolved, entry.when):
                raise ConfigError("the pattern matches no field of the experiment", path=where)
        else:
            self._require(entry.path, where)

    def _require(self, path: str, where: str) -> None:
        try:
            get_path(self.resolved, path)
        except KeyError:
            try:  # set_path names the first missing key and its closest existing siblings
                set_path(copy.deepcopy(self.resolved), path, None)
            except ConfigError as exc:
                raise ConfigError(f"{path!r} is not a field of the experiment ({exc.field_path}: {exc.reason})",
                                  path=where) from None
            raise ConfigError(f"{path!r} is not a field of the experiment", path=where) from None

    def _check_values(self, entry: SpaceEntry) -> None:
        """Apply each range end (or each choice) alone and validate, so type errors surface now."""
        values = list(entry.choices) if entry.kind == "choice" else [entry.low, entry.high]
        for value in values:
            try:
                self.apply({entry.path: value})
            except ConfigError as exc:
                raise ConfigError(f"the value {value!r} does not fit the experiment: {exc.reason}",
                                  path=f"sweep.space.{entry.path}") from None

    def _check_boundary_entry(self, entry: SpaceEntry) -> None:
        where = f"sweep.space.{entry.path}"
        if entry.kind == "choice" or entry.log:
            raise ConfigError("a phase boundary takes a plain range {float: [lo, hi]} or {int: [lo, hi]}",
                              path=where)
        if entry.low < 1 < entry.high or (entry.kind == "int" and entry.low <= 1):
            raise ConfigError(f"the range [{entry.low}, {entry.high}] mixes units: boundaries <= 1 are fractions "
                              "of train.max_steps, larger ones step counts", path=where)

    # ------------------------------------------------------------------ boundaries
    @staticmethod
    def _steps_range(entry: SpaceEntry, max_steps: int) -> tuple[int, int]:
        scale = max_steps if entry.high <= 1 else 1
        return math.ceil(entry.low * scale - 1e-9), math.floor(entry.high * scale + 1e-9)

    def _walk_boundaries(self, data: dict[str, Any], choose: Callable[[SpaceEntry, int, int], int]) -> dict[int, int]:
        """Each searched phase's end step, phase by phase, as `choose(entry, earliest, latest)` picks it.

        earliest is one step after the previous phase's end (as chosen), latest the last step that still
        leaves every later phase a step. Returns {phase index: end step} in phase order; ConfigError
        when a range leaves no valid step even after the earliest choices before it."""
        phases = data["curriculum"]["phases"]
        max_steps = int(data["train"]["max_steps"])
        searched = {d.phase: d for d in self.boundaries}
        for k in searched:
            if k >= len(phases):
                raise ConfigError(f"the curriculum has {len(phases)} phases (0 to {len(phases) - 1})",
                                  path=f"sweep.space.{searched[k].path}")
        fixed = {k: boundary_step(float(phases[k]["until"]), max_steps) for k in range(len(phases)) if k not in searched}
        latest: dict[int, int] = {}
        following = math.inf
        for k in reversed(range(len(phases))):
            if k in searched:
                latest[k] = following = int(min(self._steps_range(searched[k], max_steps)[1], following - 1))
            else:
                following = fixed[k]
        chosen: dict[int, int] = {}
        previous = 0
        for k in range(len(phases)):
            if k not in searched:
                previous = fixed[k]
                continue
            entry = searched[k]
            earliest = max(self._steps_range(entry, max_steps)[0], previous + 1)
            if earliest > latest[k]:
                raise ConfigError(
                    f"the range [{entry.low}, {entry.high}] leaves no valid boundary: after the previous phase "
                    f"(step {previous}) it must end by step {latest[k]} so later phases keep a step "
                    f"(train.max_steps={max_steps})", path=f"sweep.space.{entry.path}",
                    hint="widen the range or move the neighbouring boundaries")
            chosen[k] = previous = choose(entry, earliest, latest[k])
        return chosen

    def _check_boundary_order(self) -> None:
        """Raise when the boundary ranges admit no valid phase order (the earliest choices are the test)."""
        self._walk_boundaries(self.resolved, lambda entry, earliest, latest: earliest)

    def latest_first_phase_end(self) -> int:
        """The latest step at which the first phase can end under any sample (ASHA's earliest fair rung)."""
        ends = self._walk_boundaries(self.resolved, lambda entry, earliest, latest: latest)
        phases = self.resolved["curriculum"]["phases"]
        return ends.get(0, boundary_step(float(phases[0]["until"]), int(self.resolved["train"]["max_steps"])))

    def _suggest_boundaries(self, trial: Any, data: dict[str, Any]) -> dict[str, Any]:
        """Draw each searched boundary as a position in [0, 1] between its earliest and latest step."""
        max_steps = int(data["train"]["max_steps"])

        def draw(entry: SpaceEntry, earliest: int, latest: int) -> int:
            return earliest + int(round(trial.suggest_float(entry.param_name, 0.0, 1.0) * (latest - earliest)))

        by_phase = {d.phase: d for d in self.boundaries}
        sample: dict[str, Any] = {}
        for k, step in self._walk_boundaries(data, draw).items():
            entry = by_phase[k]
            # written back in the unit of the entry's range: a fraction of max_steps if hi <= 1, else a step count
            value: Any = step if entry.kind == "int" else (step / max_steps if entry.high <= 1 else float(step))
            set_path(data, entry.path, value)
            sample[entry.path] = value
        return sample

    # ------------------------------------------------------------------ sampling
    def suggest(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run: draw every active entry; returns {path: config value}."""
        data = copy.deepcopy(self.resolved)
        sample: dict[str, Any] = {}
        for entry in self.independent:
            if not condition_holds(data, entry.when):
                continue
            if entry.kind == "choice":
                label = trial.suggest_categorical(entry.param_name, entry.labels)
                value = entry.choices[entry.labels.index(label)]
            elif entry.kind == "int":
                value = trial.suggest_int(entry.param_name, int(entry.low), int(entry.high), log=entry.log)
            else:
                value = trial.suggest_float(entry.param_name, float(entry.low), float(entry.high), log=entry.log)
            self._set(data, entry.path, value)
            sample[entry.path] = value
        sample.update(self._suggest_boundaries(trial, data))
        return sample

    @staticmethod
    def _set(data: dict[str, Any], path: str, value: Any) -> None:
        for concrete in expand_path(data, path) if "*" in path.split(".") else [path]:
            set_path(data, concrete, copy.deepcopy(value))

    def apply_dict(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The resolved mapping with a sample's values set (not validated)."""
        data = copy.deepcopy(self.resolved)
        for path, value in sample.items():
            if path not in self.paths:
                raise ConfigError(f"{path!r} is not an entry of the search space ({', '.join(self.paths)})",
                                  path="sweep.space")
            self._set(data, path, value)
        return data

    def apply(self, sample: dict[str, Any]) -> tuple[dict[str, Any], ExperimentConfig]:
        """The resolved mapping and the validated typed config of one sample."""
        data = self.apply_dict(sample)
        return data, config_from_dict(data)


def asha_grace_period(cfg: ExperimentConfig, space: SearchSpace) -> int:
    """ASHA's first rung in steps: by default the latest end of the first phase over the whole space."""
    assert cfg.sweep is not None
    floor = space.latest_first_phase_end()
    grace = cfg.sweep.grace_period
    if grace is None:
        return max(1, floor)
    first = cfg.curriculum.phases[0].name
    if grace < floor:
        raise ConfigError(
            f"grace_period {grace} falls before the end of the first curriculum phase ({first!r}, which ends "
            f"as late as step {floor} in this search space): ASHA would compare trials still in that phase "
            "with trials already in the next, and prune the loss jump at the phase switch as a regression",
            path="sweep.grace_period", hint=f"set it to {floor} or more, or leave it out (default: {floor})")
    return grace  # grace <= train.max_steps is a rule of the config itself (config/cross_checks.py)
