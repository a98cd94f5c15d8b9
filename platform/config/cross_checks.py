"""Rules that relate fields of different sections of the typed experiment config (and the sweep's
objectives, which the sweep driver reads through `sweep_objectives`).

Each section's own rules (domains, `check` methods) live beside its fields in config/schema.py; the
rules here need two sections at once: a batch must hold every instrument, two instruments must not
read one folder, every curriculum phase must get a step of `train.max_steps` whatever mix of
fractions and step counts its boundaries use, a sweep's first ASHA rung must fall inside the run.
None needs data, so `audiostyle validate` applies them all instead of `train` failing inside Ray.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING

from audiostyle.platform.config.field_domains import worker_range
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.locations import is_url
from audiostyle.platform.core.modes import check_mode

if TYPE_CHECKING:
    from audiostyle.platform.config.schema import ExperimentConfig, PhaseConfig, SweepConfig


def boundary_step(until: float, max_steps: int) -> int:
    """A phase boundary as a step count: fractions (<= 1) of max_steps, or a step count (> 1)."""
    return int(round(until * max_steps)) if until <= 1 else int(until)


def check_phase_steps(phases: Sequence[PhaseConfig], max_steps: int, path: str = "curriculum") -> None:
    """Boundaries increase in steps and every phase starts before `max_steps`, so each one runs (the
    last phase runs on to max_steps, but its boundary must still come after the one before)."""
    ends = [boundary_step(p.until, max_steps) for p in phases]
    for i, (start, end) in enumerate(zip([0, *ends[:-1]], ends)):
        if end <= start or start >= max_steps:
            why = (f"starts at step {start}, at or after train.max_steps={max_steps}" if start >= max_steps
                   else f"ends at step {end} but starts at step {start}")
            raise ConfigError(
                f"phase {phases[i].name!r} would never run: it {why}", path=f"{path}.phases.{i}.until",
                hint="boundaries <= 1 are fractions of train.max_steps, larger ones are step counts; make "
                     "them increase and leave each phase at least one step before max_steps")


def sweep_objectives(sweep: SweepConfig) -> tuple[list[str], list[str]]:
    """The sweep's metrics and modes as lists (one mode written for several metrics applies to each)."""
    metrics = sweep.metric if isinstance(sweep.metric, list) else [sweep.metric]
    modes = sweep.mode if isinstance(sweep.mode, list) else [sweep.mode] * len(metrics)
    return metrics, modes


def check_objectives(sweep: SweepConfig, path: str = "sweep") -> None:
    """At least one metric, one mode ('min' or 'max') per metric, and only metrics training reports."""
    metrics, modes = sweep_objectives(sweep)
    if not metrics:
        raise ConfigError("name at least one metric to optimize, e.g. val/recon", path=f"{path}.metric")
    if len(modes) != len(metrics):
        raise ConfigError(f"{len(metrics)} metrics but {len(modes)} modes: give one mode per metric",
                          path=f"{path}.mode")
    for i, (metric, mode) in enumerate(zip(metrics, modes)):
        check_mode(mode, path=f"{path}.mode" + (f".{i}" if isinstance(sweep.mode, list) else ""))
        if not metric.startswith(("val/", "train/")):
            raise ConfigError(f"metric {metric!r} is not reported by training: use a validation metric such as "
                              "val/recon, val/style_acc or val/content_leak", path=f"{path}.metric")


def _folder_key(location: str) -> str:
    """One spelling per folder: `data/piano/` and `./data/piano` are the same (URLs: no trailing '/')."""
    return location.rstrip("/") if is_url(location) else posixpath.normpath(location)


def check_across_sections(cfg: ExperimentConfig) -> None:
    """ConfigError at the first rule broken (each section's own rules have run already)."""
    n = len(cfg.instruments)
    if cfg.data.batch_size < n:
        raise ConfigError(f"batch_size {cfg.data.batch_size} is smaller than the {n} instruments; every batch "
                          f"holds every instrument, so set data.batch_size >= {n}", path="data.batch_size")
    folders: dict[str, int] = {}
    for i, inst in enumerate(cfg.instruments):
        key = _folder_key(inst.data)
        if key in folders:
            j = folders[key]
            raise ConfigError(f"reads the same data as instruments.{j} ({cfg.instruments[j].name}): {inst.data}; "
                              f"each instrument needs its own folder (`audiostyle data add {inst.name} SOURCE "
                              "--out DIR`)", path=f"instruments.{i}.data")
        folders[key] = i
    for i, direction in enumerate(cfg.data.skipped_directions):
        for name in direction:
            if name not in cfg.instrument_names:
                raise ConfigError(f"{cfg.data.pair_skip[i]!r} names {name!r}, which is not one of the experiment's instruments "
                                  f"({', '.join(cfg.instrument_names)})", path=f"data.pair_skip.{i}")
    check_phase_steps(cfg.curriculum.phases, cfg.train.max_steps)
    worker_range(cfg.scaling.num_workers, "scaling.num_workers")
    grace = cfg.sweep.grace_period if cfg.sweep is not None else None
    if grace is not None and grace > cfg.train.max_steps:
        raise ConfigError(f"grace_period {grace} is beyond train.max_steps={cfg.train.max_steps}: ASHA would "
                          "never stop a trial", path="sweep.grace_period")
