"""The CPU recipe's components: the log_stft front end, frame-convolution encoders, the spectral filter and
generator decoders, log_spectral_l1, and the cross_reconstruction role of the model system (in fp32 and
under CPU bf16 autocast)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from audiostyle.components.timbre_transfer import build_timbre_model
from audiostyle.platform.config.loader import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SR = 22050


def harmonic_tone(f0: float, seconds: float, decay: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    wave = sum(torch.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.2 * wave * torch.exp(-decay * t)).float()


def one_pair(piano: torch.Tensor, violin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A batch of the two clips (piano 0, violin 1) and the pair piano -> violin, as the loader names them."""
    pairs = {"pair_source": piano[None], "pair_target": violin[None], "pair_source_label": torch.tensor([0]),
             "pair_target_label": torch.tensor([1])}
    return torch.stack([piano, violin]), torch.tensor([0, 1]), pairs


def recipe(*overrides: str):
    return load_experiment(EXPERIMENTS / "paired_spectral.yaml",
                           ["model.content_encoder.dim=32", "model.decoder.dim=32", "model.style_encoder.width=32",
                            "model.style_encoder.dim=16", *overrides])


def test_log_stft_is_scaled_log_magnitude_and_resynthesizes_from_a_reference_phase():
    from audiostyle.components.log_stft_frontend import LogStftFrontend

    fe = LogStftFrontend(SR)
    wave = torch.stack([harmonic_tone(220.0, 1.0), harmonic_tone(330.0, 1.0, decay=3.0)])
    feats = fe(wave)
    assert feats.shape == (2, 1, fe.num_frames(wave.shape[1]), 513)
    spec = torch.stft(wave, 1024, 256, window=torch.hann_window(1024), return_complex=True)
    torch.testing.assert_close(feats[:, 0], torch.log(spec.abs() + fe.floor).transpose(1, 2))
    # with its own phase as the start, Griffin-Lim keeps a signal whose magnitudes are already consistent
    back = fe.synthesize(feats, wave.shape[1], reference=wave)
    snr = 10 * torch.log10(wave.pow(2).sum() / (back - wave).pow(2).sum())
    assert snr > 30, f"round trip SNR {snr:.1f} dB"
    # another signal's phase gives the right magnitudes only approximately, and no reference still gives audio
    other = fe.synthesize(feats[:1], wave.shape[1], reference=harmonic_tone(180.0, 1.0)[None])
    assert torch.isfinite(other).all() and (fe(other) - feats[:1]).abs().mean() < 1.5
    assert torch.isfinite(fe.synthesize(feats[:1], wave.shape[1])).all()


def test_recipe_builds_without_dataset_statistics():
    from audiostyle.stats.normalization_stats import load_stats

    cfg = recipe()
    assert load_stats(cfg) is None  # no stats.npz needed for a log_stft experiment
    model = build_timbre_model(cfg)
    mean, std = model.normalization_stats()
    assert mean.shape == (1, 513) and float(mean.abs().sum()) == 0.0 and float((std - 1).abs().sum()) == 0.0
    with pytest.raises(Exception, match="no dataset statistics"):
        build_timbre_model(cfg, stats=(np.zeros((2, 597)), np.ones((2, 597))))


def test_spectral_filter_starts_as_the_identity_and_the_generator_does_not():
    torch.manual_seed(0)
    model = build_timbre_model(recipe()).eval()
    audio = torch.stack([harmonic_tone(220.0, 1.0), harmonic_tone(440.0, 1.0, decay=2.0)])
    style = model.prototypes_for(torch.tensor([1, 0]))
    out = model.transfer(audio, style)
    assert out.shape == audio.shape
    assert float((out - audio).pow(2).mean() / audio.pow(2).mean()) < 1e-3, "an untrained filter changes nothing"
    generator = build_timbre_model(recipe("model.decoder.component=spectral_generator")).eval()
    assert float((generator.transfer(audio, style) - audio).pow(2).mean() / audio.pow(2).mean()) > 0.5


def test_envelope_filter_keeps_the_gaps_between_partials_as_deep_as_fine_depth_says():
    """The untrained envelope filter writes the input's fine structure: its partials at the top, the gaps
    between them no deeper than `fine_depth` below (17 dB by default, what the content encoder reads), and
    deeper with a deeper `fine_depth`; the partials stay where they were either way."""
    from audiostyle.components.log_stft_frontend import LogStftFrontend
    from audiostyle.components.spectral_decoder import SpectralEnvelopeFilterDecoder

    feats = LogStftFrontend(SR)(harmonic_tone(220.0, 1.0)[None])
    frames = feats.shape[2]

    @torch.no_grad()
    def output(**kwargs):
        decoder = SpectralEnvelopeFilterDecoder(513, content_dim=8, style_dim=4, dim=8, **kwargs)
        return decoder(torch.zeros(1, frames, 8), torch.zeros(1, 4), feats, source=feats)[0, 0, frames // 2]

    shallow, deep = output(), output(fine_depth=4.0, added_offset=-8.0)
    gaps = slice(60, 300)  # between the partials of 220 Hz and up to 6 kHz: mostly gaps
    assert float(shallow[gaps].min()) > -2.01 and float(deep[gaps].min()) < -3.5
    assert int(shallow.argmax()) == int(deep.argmax()) == int(feats[0, 0, frames // 2].argmax())
    with pytest.raises(ValueError, match="fine_depth"):
        SpectralEnvelopeFilterDecoder(513, content_dim=8, style_dim=4, fine_depth=0.0)


def test_cross_reconstruction_trains_content_style_and_decoder_from_pairs():
    torch.manual_seed(0)
    model = build_timbre_model(recipe()).train()
    piano, violin = harmonic_tone(220.0, 1.0, decay=4.0), harmonic_tone(220.0, 1.0)
    audio, labels, pairs = one_pair(piano, violin)
    terms = model.generator_terms(audio, labels, **pairs)
    assert {"reconstruction", "cross_reconstruction", "diag/cross_time_variation"} <= set(terms)
    without = model.generator_terms(audio, labels)  # no pairs in this batch: the role is skipped, not faked
    assert "cross_reconstruction" not in without
    # the decoder's head starts at zero (the identity filter), so only the head learns at the first step;
    # after it, the gradient reaches every part
    opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    terms["cross_reconstruction"].backward()
    opt.step()
    opt.zero_grad()
    model.generator_terms(audio, labels, **pairs)["cross_reconstruction"].backward()
    for part in (model.content_encoder, model.decoder, model.style_encoder):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert any(g is not None and float(g.abs().sum()) > 0 for g in grads), type(part).__name__
    # a few steps on the one pair lower its cross-reconstruction error
    first = float(model.generator_terms(audio, labels, **pairs)["cross_reconstruction"])
    for _ in range(30):
        opt.zero_grad()
        model.generator_terms(audio, labels, **pairs)["cross_reconstruction"].backward()
        opt.step()
    assert float(model.generator_terms(audio, labels, **pairs)["cross_reconstruction"]) < 0.7 * first
    metrics = model.eval().validation_metrics(audio, labels, **pairs)
    assert math.isfinite(metrics["cross_recon"]) and math.isfinite(metrics["cross_reconstruction"])


def _train_any_player_on_one_pair(where: str | None) -> tuple[float, float, torch.dtype]:
    """Cross-reconstruction error of one pair before and after 30 Adam steps of the any-player recipe (small)
    under `where`'s bf16 autocast (platform/training/precision.py), and the dtype its decoder computed in."""
    from audiostyle.platform.training.precision import autocast_context

    torch.manual_seed(0)
    cfg = load_experiment(EXPERIMENTS / "any_player.yaml",
                          ["model.content_encoder.dim=32", "model.decoder.dim=32", "model.style_encoder.width=32",
                           "model.style_encoder.dim=16"])
    model = build_timbre_model(cfg).train()
    audio, labels, pairs = one_pair(harmonic_tone(220.0, 1.0, decay=4.0), harmonic_tone(220.0, 1.0))
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


def test_the_any_player_recipe_learns_a_pair_under_cpu_bf16_as_in_fp32():
    first32, last32, dtype32 = _train_any_player_on_one_pair(None)
    first16, last16, dtype16 = _train_any_player_on_one_pair("cpu")
    assert (dtype32, dtype16) == (torch.float32, torch.bfloat16)  # bf16 really ran
    assert last16 < 0.7 * first16 and last32 < 0.7 * first32
    assert abs(last16 - last32) < 0.2 * last32, f"bf16 {last16:.4f} against fp32 {last32:.4f}"


def test_validation_compares_runs_whatever_onset_weight_they_train_with():
    """The same weights with onset_weight 0 and 3: the training term differs (attacks weigh more), the transfer
    metric (val/cross_recon, val/unseen_cross_recon, a sweep's objective) and `recon` do not. A sweep searching
    onset_weight once ranked trials by a yardstick that moved with it."""
    torch.manual_seed(0)
    piano, violin = harmonic_tone(220.0, 1.0, decay=4.0), harmonic_tone(330.0, 1.0)
    audio, labels, pairs = one_pair(piano, violin)
    plain = build_timbre_model(recipe()).eval()
    weighted = build_timbre_model(recipe("+losses.cross_reconstruction.onset_weight=3.0",
                                         "+losses.reconstruction.onset_weight=3.0")).eval()
    weighted.load_state_dict(plain.state_dict())
    assert weighted.losses["cross_reconstruction"].onset_weight == 3.0
    with torch.no_grad():
        a = plain.validation_metrics(audio, labels, **pairs)
        b = weighted.validation_metrics(audio, labels, **pairs)
    assert b["cross_reconstruction"] != pytest.approx(a["cross_reconstruction"], rel=1e-3)  # the loss weighs attacks
    for metric in ("cross_recon", "recon", "recon_teacher_forced"):
        assert b[metric] == pytest.approx(a[metric], rel=1e-6), metric
    loss = weighted.losses["cross_reconstruction"]
    assert loss.as_metric().onset_weight == 0.0 and loss.onset_weight == 3.0  # the training loss is untouched
    assert plain.losses["cross_reconstruction"].as_metric() is plain.losses["cross_reconstruction"]


def test_log_spectral_l1_is_the_mean_absolute_log_difference():
    from audiostyle.platform.core.registry import build

    loss = build("loss", {"component": "log_spectral_l1"}, path="losses.x", sample_rate=SR)
    a, b = torch.zeros(2, 1, 3, 4), torch.full((2, 1, 3, 4), 0.5)
    assert float(loss(a, b)) == pytest.approx(0.5) and loss.needs_waveforms is False
    with pytest.raises(ValueError, match="differ"):
        loss(a, b[:, :, :2])


def test_onset_weight_makes_a_missed_attack_cost_more_than_the_same_error_in_a_sustain():
    """A target that is silent, then struck at frame 10 and sustained: an error of 1 nat on the attack frame
    costs more with `onset_weight` than without, the same error on a sustained frame less; an error of the
    same size on every frame costs what it did (the weights keep the loss's scale)."""
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.core.registry import build

    plain = build("loss", {"component": "log_spectral_l1"}, path="losses.x", sample_rate=SR)
    onset = build("loss", {"component": "log_spectral_l1", "onset_weight": 2.0}, path="losses.x", sample_rate=SR)
    target = torch.full((1, 1, 40, 8), -6.0)
    target[:, :, 10:] = 0.0  # struck at frame 10, held
    at_attack, in_sustain = target.clone(), target.clone()
    at_attack[:, :, 10] += 1.0
    in_sustain[:, :, 30] += 1.0
    assert float(onset(at_attack, target)) > 5 * float(plain(at_attack, target))
    assert float(onset(in_sustain, target)) < float(plain(in_sustain, target))
    assert float(onset(target + 0.5, target)) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="onset_weight"):
        build("loss", {"component": "log_spectral_l1", "onset_weight": -1.0}, path="losses.x", sample_rate=SR)


@pytest.mark.parametrize("base,layers,reach", [(2, 4, 15), (3, 4, 40), (3, 5, 121)])
def test_dilated_stack_reaches_exactly_as_far_as_its_dilations_say(base, layers, reach):
    """Kernel 3 with dilations base**i: an input frame `reach` away moves the centre frame's output, one
    frame further does not; with base 3 every offset within the reach is covered (no holes). The blocks'
    GroupNorm pools statistics over the whole clip, so it is taken out to see the convolutions' reach."""
    from audiostyle.components.frame_conv import DilatedStack

    torch.manual_seed(0)
    stack = DilatedStack(8, layers, dilation_base=base).double().eval()  # far taps pass 5 gates: tiny effects
    for block in stack.blocks:
        block.norm = torch.nn.Identity()
    frames, centre = 2 * reach + 41, reach + 20
    x = torch.randn(1, 8, frames, dtype=torch.float64)
    base_out = stack(x)[0, :, centre]
    moved = []
    for offset in range(reach + 2):
        poked = x.clone()
        poked[0, :, centre + offset] += 1.0
        moved.append(bool((stack(poked)[0, :, centre] - base_out).abs().max() > 1e-12))
    assert all(moved[: reach + 1]) and not any(moved[reach + 1:]), [i for i, m in enumerate(moved) if not m]
    with pytest.raises(ValueError, match="dilation_base"):
        DilatedStack(8, 2, kernel_size=3, dilation_base=4)
