"""bf16 autocast in training workers (platform/training/precision.py): where it runs (a GPU; a CPU that
computes bf16 natively, when asked; fp32 elsewhere), and that the any-player recipe learns under it on a CPU
as it does in fp32."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from audiostyle.components.timbre_transfer import build_timbre_model
from audiostyle.platform.config.loader import load_experiment
from audiostyle.platform.config.schema import OptimConfig
from audiostyle.platform.training import precision
from audiostyle.platform.training.precision import autocast_context, autocast_device

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SR = 22050
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_autocast_runs_where_the_config_and_the_cpu_allow(monkeypatch, capsys):
    optim = OptimConfig()
    assert autocast_device(optim, CPU) is None  # off on a CPU unless asked: a run's numbers stay the CPU's own
    assert autocast_device(optim, CUDA) == "cuda"
    assert autocast_device(dataclasses.replace(optim, mixed_precision=False), CUDA) is None
    asked = dataclasses.replace(optim, cpu_mixed_precision=True)
    # which CPU this is is the one boundary a test cannot choose
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert autocast_device(asked, CPU) is None and "no native bf16" in capsys.readouterr().out
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert autocast_device(asked, CPU) == "cpu"
    assert load_experiment(EXPERIMENTS / "any_player.yaml", ["optim.cpu_mixed_precision=true"]).optim.cpu_mixed_precision


def _tone(f0: float, decay: float) -> torch.Tensor:
    t = torch.arange(SR) / SR
    return (0.2 * sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8)) * torch.exp(-decay * t)).float()


def _train_on_one_pair(where: str | None) -> tuple[float, float, torch.dtype]:
    """Cross-reconstruction error of one pair before and after 30 Adam steps under `where`'s autocast, and the
    dtype the decoder's convolutions computed in."""
    torch.manual_seed(0)
    cfg = load_experiment(EXPERIMENTS / "any_player.yaml",
                          ["model.content_encoder.dim=32", "model.decoder.dim=32", "model.style_encoder.width=32",
                           "model.style_encoder.dim=16"])
    model = build_timbre_model(cfg).train()
    piano, violin = _tone(220.0, 4.0), _tone(220.0, 0.0)
    audio, labels = torch.stack([piano, violin]), torch.tensor([0, 1])
    pairs = {"pair_source": piano[None], "pair_target": violin[None], "pair_source_label": torch.tensor([0]),
             "pair_target_label": torch.tensor([1])}
    seen: list[torch.dtype] = []
    model.decoder.inp.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    losses = []
    for _ in range(31):
        opt.zero_grad()
        with autocast_context(where):
            loss = model.generator_terms(audio, labels, **pairs)["cross_reconstruction"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1], seen[-1]


def test_the_recipe_learns_a_pair_under_cpu_bf16_as_in_fp32():
    first32, last32, dtype32 = _train_on_one_pair(None)
    first16, last16, dtype16 = _train_on_one_pair("cpu")
    assert (dtype32, dtype16) == (torch.float32, torch.bfloat16)  # bf16 really ran
    assert last16 < 0.7 * first16 and last32 < 0.7 * first32
    assert abs(last16 - last32) < 0.2 * last32, f"bf16 {last16:.4f} against fp32 {last32:.4f}"
