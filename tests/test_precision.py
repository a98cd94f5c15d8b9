"""bf16 autocast in training workers (platform/training/precision.py): where it runs (a GPU; a CPU that
computes bf16 natively, when asked; fp32 elsewhere). That the recipe learns under it as in fp32:
tests/test_spectral_components.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from audiostyle.platform.config.loader import load_experiment
from audiostyle.platform.config.schema import OptimConfig
from audiostyle.platform.training import precision
from audiostyle.platform.training.precision import autocast_device

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_autocast_runs_where_the_config_and_the_cpu_allow(monkeypatch, capsys):
    optim = OptimConfig()
    assert autocast_device(optim, CPU) is None  # off on a CPU unless a recipe asks
    assert autocast_device(optim, CUDA) == "cuda"
    assert autocast_device(dataclasses.replace(optim, mixed_precision=False), CUDA) is None
    asked = dataclasses.replace(optim, cpu_mixed_precision=True)
    # which CPU this is is the one boundary a test cannot choose
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert autocast_device(asked, CPU) is None and "no native bf16" in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert autocast_device(asked, CPU) == "cpu" and "under bf16 autocast" in capsys.readouterr().out
    assert load_experiment(EXPERIMENTS / "any_player.yaml", ["optim.cpu_mixed_precision=true"]).optim.cpu_mixed_precision


def test_the_any_player_recipe_asks_for_bf16_and_the_recipes_measured_in_fp32_keep_it(monkeypatch):
    # The clarinet's and the flute's recipes inherit the chords recipe; their README numbers are fp32 ones.
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    recipe = load_experiment(EXPERIMENTS / "any_player_chords.yaml")
    assert autocast_device(recipe.optim, CPU) == "cpu"
    assert autocast_device(load_experiment(EXPERIMENTS / "any_player_three.yaml").optim, CPU) == "cpu"
    for measured_in_fp32 in ("any_player_clarinet.yaml", "any_player_flute.yaml"):
        assert autocast_device(load_experiment(EXPERIMENTS / measured_in_fp32).optim, CPU) is None
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert autocast_device(recipe.optim, CPU) is None  # the same recipe on a CPU without bf16: fp32
