"""The checked load of an experiment: config/'s load, then what can only be known by building, still
without data or Ray.

config/loader.py checks every field, rule and component signature. Two things are left that only trying
tells: whether the components accept their arguments together (a width that `num_heads` does not
divide, a time stride the conv stack cannot take, bins the sample rate cannot hold), and whether the
`sweep:` block fits the experiment (its paths exist, its ranges are well-formed, every value it can
draw gives a valid config). The model is built on PyTorch's meta device, which allocates no memory for
weights, so a large config is checked as cheaply as a small one; each value a sweep can give a model or
loss field is checked the same way. A constructor that cannot run on the meta device at all (a
third-party component that reads tensor values) is skipped, not reported.

This sits above config/ (it imports components/ and sweeps/), so config/ stays foundation; every command
that loads an experiment for a user (validate, config show, train, submit, sweep, quickstart) calls it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audiostyle.platform.config.cross_checks import sweep_objectives
from audiostyle.platform.config.loader import LoadedExperiment, read_experiment
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError

logger = logging.getLogger(__name__)

# Sweep entries under these prefixes change what is built, so each of their values is built too.
MODEL_PATHS = ("model.", "losses.", "data.sample_rate")


def _meta_limitation(exc: BaseException | None) -> bool:
    """Whether an error says the meta device cannot run this code, rather than the arguments are wrong."""
    while exc is not None:
        if isinstance(exc, NotImplementedError) or "meta" in str(exc).lower():
            return True
        exc = exc.__cause__
    return False


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build the whole model on the meta device; ConfigError naming the component that refuses its
    arguments (registry.build attaches the component's path)."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model

    try:
        with torch.device("meta"):
            build_timbre_model(cfg)
    except ConfigError as exc:
        if _meta_limitation(exc):
            logger.debug("model not checked on the meta device: %s", exc)
            return
        raise
    except Exception as exc:  # not an argument error of one component: the parts do not fit together
        if _meta_limitation(exc):
            logger.debug("model not checked on the meta device: %s", exc)
            return
        raise ConfigError(f"the components do not fit together: {type(exc).__name__}: {exc}", path="model",
                          hint="check the sizes the components share (dims, heads, bins)") from exc


def check_sweep(cfg: ExperimentConfig, resolved: dict[str, Any]) -> None:
    """The `sweep:` block against the experiment (`resolved`: the mapping `cfg` was parsed from): the
    space parses, names fields that exist, keeps the curriculum valid, fits ASHA's first rung, and every
    model value it can draw builds."""
    if cfg.sweep is None:
        return
    from audiostyle.platform.sweeps.space import SearchSpace, asha_grace_period

    space = SearchSpace.from_config(resolved)
    if len(sweep_objectives(cfg.sweep)[0]) == 1:  # several objectives run without ASHA
        asha_grace_period(cfg, space)
    for entry in space.independent:
        if not entry.path.startswith(MODEL_PATHS):
            continue
        for value in entry.choices if entry.kind == "choice" else (entry.low, entry.high):
            _, sampled = space.apply({entry.path: value})
            try:
                check_model_builds(sampled)
            except ConfigError as exc:
                raise ConfigError(f"the value {value!r} gives a model that cannot be built: {exc}",
                                  path=f"sweep.space.{entry.path}") from None


def check_experiment(experiment: LoadedExperiment) -> None:
    """Both checks, in the order a user fixes things (the experiment itself, then its sweep), with each
    error attributed to every file that set the component or field it names."""
    try:
        check_model_builds(experiment.config)
        check_sweep(experiment.config, experiment.resolved)
    except ConfigError as exc:  # about a whole component: name every file that set its arguments
        raise exc.located(", ".join(experiment.composed.files_under(exc.field_path))) from None


def read_checked_experiment(path: str | Path, overrides: Iterable[str] = ()) -> LoadedExperiment:
    """`config.loader.read_experiment` (typed config, resolved mapping, origins), then `check_experiment`."""
    experiment = read_experiment(path, overrides)
    check_experiment(experiment)
    return experiment


def load_checked_experiment(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """The typed config of an experiment YAML plus overrides, checked as far as it can be before Ray starts."""
    return read_checked_experiment(path, overrides).config
