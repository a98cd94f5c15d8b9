"""Configs that used to pass `validate` and fail later (or never): every numeric field has a domain,
cross-section rules run at load time, the `sweep:` block is checked against the experiment, and
component arguments are checked item by item and by building the model on the meta device."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

from audiostyle.platform.checking.checked_load import load_checked_experiment
from audiostyle.platform.config import schema
from audiostyle.platform.config.loader import load_experiment
from audiostyle.platform.core.errors import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
BASE = EXPERIMENTS / "piano_violin.yaml"
SWEEP = EXPERIMENTS / "sweep_curriculum.yaml"


def numeric(tp) -> bool:
    """Whether a field type holds numbers (directly, optionally, or as list items / mapping values)."""
    if tp in (int, float):
        return True
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType, list, dict):
        return any(numeric(a) for a in args if a is not str)
    return False


def sections(cls=schema.ExperimentConfig, seen=None):
    seen = seen if seen is not None else set()
    if cls in seen:
        return
    seen.add(cls)
    yield cls
    for tp in typing.get_type_hints(cls).values():
        for candidate in (tp, *typing.get_args(tp)):
            for inner in (candidate, *typing.get_args(candidate)):
                if dataclasses.is_dataclass(inner):
                    yield from sections(inner, seen)


def test_every_numeric_field_of_the_schema_has_a_domain():
    missing = []
    for cls in sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if numeric(hints[f.name]) and f.name not in getattr(cls, "DOMAINS", {}):
                missing.append(f"{cls.__name__}.{f.name}")
    assert not missing, f"numeric fields without a domain in their section's DOMAINS: {missing}"
    assert {c.__name__ for c in sections()} >= {"OptimConfig", "TrainConfig", "PhaseConfig", "SweepConfig"}


BAD_VALUES = [  # (overrides, field path, message part)
    (["optim.lr=.nan"], "optim.lr", "must be > 0, got NaN"),
    (["optim.lr=-1e-4"], "optim.lr", "must be > 0"),
    (["optim.lr=.inf"], "optim.lr", "must be > 0"),
    (["optim.disc_lr=0"], "optim.disc_lr", "must be > 0"),
    (["optim.grad_accum=0"], "optim.grad_accum", "must be >= 1, got 0"),
    (["optim.betas=[0.9]"], "optim.betas", "must hold exactly 2 numbers"),
    (["optim.betas=[0.9, 1.0]"], "optim.betas.1", "within [0, 1)"),
    (["optim.weight_decay=-0.1"], "optim.weight_decay", "must be >= 0"),
    (["curriculum.phases.1.weights.hsic=-1"], "curriculum.phases.1.weights.hsic", "must be >= 0"),
    (["instruments.0.weight=0"], "instruments.0.weight", "must be > 0"),
    (["train.keep_top_k=0"], "train.keep_top_k", "must be >= 1"),
    (["train.scheduled_sampling=1.5"], "train.scheduled_sampling", "within [0, 1]"),
    (["data.shuffle_buffer=0"], "data.shuffle_buffer", "must be >= 1"),
    (["run.max_failures=-2"], "run.max_failures", "-1: retry forever"),
    (["seed=-3"], "seed", "non-negative"),
    # cross-section rules that used to wait for `train` (or never ran)
    (["curriculum.phases.0.until=0.5", "curriculum.phases.1.until=100"], "curriculum.phases.1.until",
     "would never run: it ends at step 100 but starts at step 1000"),
    (["train.max_steps=100", "curriculum.phases.0.until=150", "curriculum.phases.1.until=200",
      "curriculum.phases.2.until=250"], "curriculum.phases.1.until", "at or after train.max_steps=100"),
    (["data.batch_size=1"], "data.batch_size", "smaller than the 2 instruments"),
    (["instruments.1.data=${data.root}/piano/"], "instruments.1.data", "reads the same data as instruments.0"),
]


@pytest.mark.parametrize("overrides,path,message", BAD_VALUES, ids=[b[1] + ":" + b[2][:20] for b in BAD_VALUES])
def test_bad_value_is_refused_at_load_naming_the_field(overrides, path, message):
    with pytest.raises(ConfigError) as info:
        load_experiment(BASE, overrides)
    assert info.value.field_path == path and message in str(info.value)


SWEEP_BAD = [  # (a YAML line added under `sweep:` of the sweep experiment, or overrides; field path; message part)
    ("  space: {optim.lrr: {float: [1.0e-4, 1.0e-3]}}", "sweep.space.optim.lrr", "'optim.lrr' is not a field"),
    ("  space: {optim.weight_decay: {float: [0.1, 0.01]}}", "sweep.space.optim.weight_decay", "is empty"),
    ("  space: {optim.weight_decay: {float: [0.0, 0.1], log: true}}", "sweep.space.optim.weight_decay",
     "a log range needs lo > 0"),
    ("  space: {optim.grad_clip: {float: [-1.0, 1.0]}}", "sweep.space.optim.grad_clip",
     "the value -1.0 does not fit the experiment: must be > 0"),
    ("  space: {model.style_encoder.num_heads: {choice: [3, 4]}}", "sweep.space.model.style_encoder.num_heads",
     "must split into 3 heads"),
    (["sweep.mode=maximize"], "sweep.mode", "mode must be 'min' or 'max'"),
    (["sweep.metric=[val/recon, val/style_acc]", "sweep.mode=[min]"], "sweep.mode", "2 metrics but 1 modes"),
    (["sweep.metric=recon"], "sweep.metric", "not reported by training"),
    (["sweep.reduction_factor=1"], "sweep.reduction_factor", "must be >= 2"),
    (["sweep.grace_period=50000"], "sweep.grace_period", "beyond train.max_steps"),
]


@pytest.mark.parametrize("change,path,message", SWEEP_BAD, ids=[b[1] for b in SWEEP_BAD])
def test_sweep_block_is_checked_when_the_experiment_loads(change, path, message, tmp_path):
    if isinstance(change, str):
        exp = tmp_path / "sweep.yaml"
        exp.write_text(f"defaults: [{SWEEP}]\nsweep:\n{change}\n")
        change, where = [], exp
    else:
        where = SWEEP
    with pytest.raises(ConfigError) as info:
        load_checked_experiment(where, change)
    assert info.value.field_path.startswith(path) and message in str(info.value)


COMPONENT_BAD = [
    (["+model.style_encoder.channels=[8, '16', 32, 64]"], "model.style_encoder.channels.1",
     "expected an integer, got '16'"),
    (["+model.content_encoder.channels=[8, 16.5]"], "model.content_encoder.channels.1", "expected an integer"),
    (["model.style_encoder.num_heads=3"], "model.style_encoder", "dim 256 must split into 3 heads"),
    (["model.decoder.dim=-4"], "model.decoder", "negative dimension"),
    (["+model.style_encoder.time_stride=32"], "model.style_encoder", "time_stride must be a power of two"),
    (["+model.decoder.patch_frames=0"], "model.decoder", "patch_frames must be >= 1"),
]


@pytest.mark.parametrize("overrides,path,message", COMPONENT_BAD, ids=[b[2][:24] for b in COMPONENT_BAD])
def test_component_arguments_are_checked_before_anything_runs(overrides, path, message):
    with pytest.raises(ConfigError) as info:
        load_checked_experiment(BASE, overrides)
    assert info.value.field_path == path and message in str(info.value)
    if "." not in path.removeprefix("model."):  # a whole-component error names every file that set it
        assert "base/model.yaml" in str(info.value) and "command line" in str(info.value)


def test_the_loader_builds_nothing_and_the_checked_load_builds_the_model():
    """config/ is foundation: its loader checks fields and signatures only; building is platform/checking/'s."""
    overrides = ["model.style_encoder.num_heads=3"]
    assert load_experiment(BASE, overrides).model.style_encoder["num_heads"] == 3
    with pytest.raises(ConfigError, match="must split into 3 heads"):
        load_checked_experiment(BASE, overrides)


def test_validate_catches_a_shape_error_without_ray_or_memory(tmp_path):
    """`audiostyle validate` builds the model on the meta device: a huge config costs nothing, a bad one
    fails there with the component named, and Ray is never imported."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"defaults: [{BASE}]\nmodel:\n  decoder: {{dim: 96, num_heads: 5}}\n")
    huge = tmp_path / "huge.yaml"
    huge.write_text(f"defaults: [{BASE}]\nmodel:\n  decoder: {{dim: 16384, num_layers: 48}}\n")  # hundreds of GB of weights
    code = ("import sys, resource; from audiostyle.platform.cli.main import main; "
            f"rc = main(['validate', {str(huge)!r}, {str(bad)!r}]); "
            "print('ray imported' if 'ray' in sys.modules else 'no ray', rc, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    out = done.stdout
    assert "ok      " in out and "huge.yaml" in out
    assert "INVALID" in out and "model.decoder" in out and "must split into 5 heads" in out
    ray, rc, peak_mb = out.strip().splitlines()[-1].rsplit(" ", 2)
    assert ray == "no ray" and rc == "2" and int(peak_mb) < 4000
