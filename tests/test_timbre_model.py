"""The assembled model system: built from experiment YAMLs, its training terms, gradients, inference, and a
short reconstruction-only training run whose generated spectrogram must follow the target over time."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from audiostyle.components.timbre_transfer import ROLES, build_timbre_model
from audiostyle.platform.config.loader import config_from_dict, load_experiment
from audiostyle.platform.config.typed_convert import to_dict
from audiostyle.stats.normalization_stats import load_stats

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SR = 22050
TINY_MODEL = (
    "model.style_encoder.dim=32", "+model.style_encoder.channels=[8,16]",
    "model.content_encoder.dim=16", "model.content_encoder.width=32", "+model.content_encoder.channels=[8,16]",
    "model.decoder.dim=32", "model.discriminator.hidden=32",
)


def tiny_config(num_instruments: int = 2, *overrides: str):
    cfg = load_experiment(EXPERIMENTS / "quickstart.yaml", [*TINY_MODEL, *overrides])
    if num_instruments > 2:  # add instruments the way a user does: one more entry in the list
        raw = to_dict(cfg)
        for i in range(2, num_instruments):
            raw["instruments"].append({"name": f"extra{i}", "data": f"/nonexistent/extra{i}", "weight": 1.0})
        cfg = config_from_dict(raw)
    return cfg


def note_clip(midi_notes: list[int], kind: int, seconds: float) -> torch.Tensor:
    """A melody of harmonic tones: kind 0 decays like a struck string, kind 1 swells and sustains like a
    bowed one (different harmonic balance), so two "instruments" play the same notes."""
    n = int(seconds * SR)
    t = torch.arange(n) / SR
    y = torch.zeros(n)
    per = n // len(midi_notes)
    for i, m in enumerate(midi_notes):
        f0 = 440.0 * 2 ** ((m - 69) / 12)
        seg = slice(i * per, (i + 1) * per)
        tt = t[seg] - t[seg][0]
        env = torch.exp(-4 * tt) if kind == 0 else torch.clamp(tt * 20, max=1.0)
        for h in range(1, 6):
            amp = 0.6 / h if kind == 0 else (0.3 if h < 4 else 0.2)
            y[seg] += amp * env * torch.sin(2 * math.pi * f0 * h * tt)
    return 0.2 * y


def paired_set(seconds: float = 1.0, num_instruments: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    melodies = ([60, 64, 67, 72], [62, 65, 69, 65])
    clips, labels = [], []
    for label in range(num_instruments):
        for melody in melodies:
            clips.append(note_clip(melody, label % 2, seconds) * (1 + 0.3 * label))
            labels.append(label)
    return torch.stack(clips), torch.tensor(labels)


def install_stats(model, audio: torch.Tensor) -> None:
    # what stats/ computes on a training set, here on the clips themselves
    raw = model.frontend.analyze(audio)
    model.frontend.set_stats(raw.mean(dim=(0, 2)), raw.std(dim=(0, 2)))


@pytest.mark.parametrize("num_instruments", [2, 3])
def test_terms_gradients_and_prototypes(num_instruments):
    torch.manual_seed(0)
    cfg = tiny_config(num_instruments)
    model = build_timbre_model(cfg)
    assert model.prototypes.shape == (num_instruments, model.style_encoder.dim)
    assert model.discriminator.num_classes == num_instruments
    audio, labels = paired_set(0.5, num_instruments)
    install_stats(model, audio)
    model.train()

    roles = set(model.losses)  # every role this (unpaired) configuration builds
    assert roles <= set(ROLES)
    terms = model.generator_terms(audio, labels, sampling_prob=0.5, active=roles)
    assert roles <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms[r] for r in roles).backward()
    gen_ids = {id(p) for p in model.generator_parameters()}
    named = dict(model.named_parameters())
    no_grad = [n for n, p in named.items() if id(p) in gen_ids and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not no_grad, f"generator parameters without gradient: {no_grad}"
    assert all(p.grad is None for p in model.discriminator_parameters()), "generator terms trained D"
    assert bool(model.prototype_seen.all())  # EMA prototypes set for every class present

    model.zero_grad(set_to_none=True)
    model.discriminator_loss(audio, labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator_parameters())
    assert all(p.grad is None for n, p in named.items() if id(p) in gen_ids), "D loss reached the generator"


def test_only_active_terms_are_computed():
    model = build_timbre_model(tiny_config())
    audio, labels = paired_set(0.5)
    terms = model.generator_terms(audio, labels, sampling_prob=0.0, active={"reconstruction", "hsic"})
    assert {k for k in terms if not k.startswith("diag/")} == {"reconstruction", "hsic"}


@pytest.mark.parametrize("seconds", [0.3, 0.75, 1.2])
def test_inference_shapes_and_cache_for_several_lengths(seconds):
    torch.manual_seed(0)
    model = build_timbre_model(tiny_config()).eval()
    audio, labels = paired_set(seconds)
    install_stats(model, audio)
    style = model.style_of(audio)
    assert style.shape == (len(audio), model.style_encoder.dim)
    target_style = model.prototypes[1 - labels]  # the other instrument
    out = model.transfer(audio, target_style, use_cache=True)
    assert out.shape == audio.shape and torch.isfinite(out).all()
    torch.testing.assert_close(model.transfer(audio, target_style, use_cache=False), out, rtol=1e-3, atol=1e-4)


def test_validation_metrics_report_the_contract_keys():
    model = build_timbre_model(tiny_config(3)).eval()
    audio, labels = paired_set(0.5, 3)
    install_stats(model, audio)
    metrics = model.validation_metrics(audio, labels)
    for key in ("recon", "style_acc", "content_leak", *model.losses):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["style_acc"] <= 1.0 and 0.0 <= metrics["content_leak"] <= 1.0


def log_magnitude(spec: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.sqrt(spec[:, 0] ** 2 + spec[:, 1] ** 2 + 1e-8))  # [B, T, F]


def test_reconstruction_training_learns_a_spectrogram_that_moves_in_time():
    """The research's decoder produced time-flat spectrograms. Here, after a short reconstruction-only
    run, the free-running (autoregressive, cached) output must follow the target frame by frame."""
    torch.manual_seed(0)
    model = build_timbre_model(tiny_config(2, "+model.decoder.dropout=0.0", "+model.style_encoder.dropout=0.0",
                                           "+model.content_encoder.dropout=0.0"))
    audio, labels = paired_set(0.75)
    install_stats(model, audio)
    opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)

    def generated() -> tuple[torch.Tensor, torch.Tensor, float]:
        model.eval()
        with torch.no_grad():
            feats = model.features(audio)
            target = model.stft_part(feats)
            pred = model.decoder.generate(model.content_encoder(feats), model.style_encoder(feats), target.shape[2])
            loss = float(model.reconstruction(pred, target, audio))
        model.train()
        return pred, target, loss

    _, _, before = generated()
    steps = 120  # ~20 s of one CPU core; measured r ~ 0.6 here, ~ 0.0 before training
    for step in range(steps):
        terms = model.generator_terms(audio, labels, sampling_prob=0.5 * step / steps, active={"reconstruction"})
        opt.zero_grad(set_to_none=True)
        terms["reconstruction"].backward()
        opt.step()
    pred, target, after = generated()
    assert after < 0.6 * before, f"reconstruction loss {before:.3f} -> {after:.3f}"

    lp, lt = log_magnitude(pred), log_magnitude(target)
    flat = lt.mean(dim=1, keepdim=True)  # the best time-flat prediction: each bin's mean level

    def frame_to_frame(x: torch.Tensor) -> float:
        return float((x[:, 1:] - x[:, :-1]).pow(2).mean())

    assert frame_to_frame(lp) > 0.2 * frame_to_frame(lt)  # a flat prediction scores exactly 0 here
    dp, dt = lp - lp.mean(dim=1, keepdim=True), lt - flat  # the time-varying parts
    corr = float((dp * dt).sum() / (dp.norm() * dt.norm()))
    assert corr > 0.4, f"generated and target spectrograms are uncorrelated over time (r = {corr:.2f})"
    assert (lp - lt).pow(2).mean() < (flat.expand_as(lt) - lt).pow(2).mean()  # beats the flat prediction


def test_build_installs_pooled_statistics_and_bundle_path_keeps_identity():
    cfg = tiny_config()
    loaded = build_timbre_model(cfg, stats=load_stats(cfg))  # the committed demo stats for piano and violin
    assert not torch.allclose(loaded.frontend.scale, torch.ones_like(loaded.frontend.scale))
    restored = build_timbre_model(cfg)  # a checkpoint's state_dict brings them
    assert torch.equal(restored.frontend.scale, torch.ones_like(restored.frontend.scale))
    restored.load_state_dict(loaded.state_dict())
    torch.testing.assert_close(restored.frontend.scale, loaded.frontend.scale)
