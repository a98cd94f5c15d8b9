"""Loss terms: hand-checked values (recomputed with numpy), and the behaviours the research's versions lacked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiostyle.components.losses import (
    ContentAdversarial,
    HsicRbf,
    PrototypeMargin,
    SpectralReconstructionLoss,
    SupervisedInfoNCE,
    grad_reverse,
)
from audiostyle.platform.core.registry import build


def _np_magnitude(wave: np.ndarray, n_fft: int, eps: float) -> np.ndarray:
    hop = n_fft // 4
    padded = np.pad(wave, (n_fft // 2, n_fft // 2))
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = [padded[s : s + n_fft] * window for s in range(0, len(padded) - n_fft + 1, hop)]
    spec = np.fft.rfft(np.array(frames), axis=-1)
    return np.sqrt(np.maximum(np.abs(spec) ** 2, eps))


def test_spectral_reconstruction_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    pf, tf = rng.standard_normal((2, 1, 2, 3, 4))
    pw, tw = rng.standard_normal((2, 1, 64))
    loss = SpectralReconstructionLoss(fft_sizes=(16, 32), complex_weight=2.0, stft_weight=0.5)
    got = loss(*(torch.tensor(a, dtype=torch.float32) for a in (pf, tf, pw, tw)))
    l1 = np.abs(pf - tf).mean()
    sc, lm = [], []
    for n in (16, 32):
        p, t = _np_magnitude(pw[0], n, 1e-7), _np_magnitude(tw[0], n, 1e-7)
        sc.append(np.linalg.norm(t - p) / np.linalg.norm(t))
        lm.append(np.abs(np.log(t) - np.log(p)).mean())
    expected = 2.0 * l1 + 0.5 * (np.mean(sc) + np.mean(lm))
    assert float(got) == pytest.approx(expected, rel=1e-4)
    # Features only (no waveforms): the complex L1 alone; identical inputs give exactly zero.
    assert float(loss(torch.tensor(pf), torch.tensor(tf))) == pytest.approx(2.0 * l1, rel=1e-6)
    same = torch.tensor(pw, dtype=torch.float32)
    assert float(loss(torch.tensor(pf), torch.tensor(pf), same, same)) == 0.0


def _np_supcon(z: np.ndarray, labels: np.ndarray, tau: float) -> float:
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / tau
    losses = []
    for i in range(len(z)):
        others = [j for j in range(len(z)) if j != i]
        lse = math.log(sum(math.exp(s[i, j]) for j in others))
        pos = [j for j in others if labels[j] == labels[i]]
        if pos:
            losses.append(-np.mean([s[i, p] - lse for p in pos]))
    return float(np.mean(losses))


def test_infonce_matches_numpy_with_several_items_per_class() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((7, 5))
    labels = np.array([0, 0, 0, 1, 1, 2, 2])  # uneven classes, three of them
    got = SupervisedInfoNCE(temperature=0.1)(torch.tensor(z, dtype=torch.float32), torch.tensor(labels))
    assert float(got) == pytest.approx(_np_supcon(z, labels, 0.1), rel=1e-4)
    # An item with no positive contributes no anchor term, but the others still count.
    lone = np.array([0, 0, 0, 1, 1, 2, 3])
    got = SupervisedInfoNCE(0.1)(torch.tensor(z, dtype=torch.float32), torch.tensor(lone))
    assert float(got) == pytest.approx(_np_supcon(z, lone, 0.1), rel=1e-4)


def test_infonce_falls_as_classes_separate_down_to_its_floor() -> None:
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(4)  # 4 classes x 4 items
    centres = torch.randn(4, 32) * 3
    noise = torch.randn(16, 32)
    loss = SupervisedInfoNCE(0.1)
    values = [float(loss((1 - a) * noise + a * centres[labels], labels)) for a in (0.0, 0.3, 0.6, 1.0)]
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert values[-1] == pytest.approx(math.log(3), abs=1e-3)  # identical positives, far negatives: ln(#pos)


def _np_margin(z: np.ndarray, labels: np.ndarray, m: float) -> float:
    classes = sorted(set(labels.tolist()))
    protos = [z[labels == c].mean(0) for c in classes]
    s = np.linalg.norm(z, axis=1).mean()
    pairs = [(a, b) for a in range(len(classes)) for b in range(a + 1, len(classes))]
    return float(np.mean([max(0.0, m - np.linalg.norm(protos[a] - protos[b]) / s) ** 2 for a, b in pairs]))


def test_prototype_margin_matches_numpy_and_does_not_saturate_at_large_norm() -> None:
    rng = np.random.default_rng(2)
    labels = np.array([0, 0, 1, 1, 2, 2])
    z = rng.standard_normal((6, 4)) * 0.3 + np.array([1.0, 0, 0, 0])  # prototypes close together
    loss = PrototypeMargin(margin=1.0)
    got = loss(torch.tensor(z, dtype=torch.float32), torch.tensor(labels))
    assert float(got) == pytest.approx(_np_margin(z, labels, 1.0), rel=1e-5)
    # The research's problem: with ||z|| ~ 16 an absolute margin is always met. Here the value and a
    # non-zero gradient survive any rescaling.
    big = torch.tensor(z * 16 / np.linalg.norm(z, axis=1).mean(), dtype=torch.float32, requires_grad=True)
    value = loss(big, torch.tensor(labels))
    value.backward()
    assert float(value) == pytest.approx(float(got), rel=1e-4) and float(value) > 0.05
    assert float(big.grad.abs().sum()) > 0
    # Prototypes far apart (relative to the norm): exactly zero; a single class: zero, not an error.
    apart = torch.eye(3).repeat_interleave(2, 0)
    assert float(loss(apart, torch.tensor(labels))) == 0.0
    assert float(loss(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))) == 0.0


def _np_gram(a: np.ndarray) -> np.ndarray:
    d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    off = d2[np.triu_indices(len(a), 1)]
    return np.exp(-d2 / (2 * np.median(off[off > 0])))


def _np_hsic_biased(x: np.ndarray, y: np.ndarray) -> float:
    b = len(x)
    h = np.eye(b) - 1.0 / b
    return float(np.trace(_np_gram(x) @ h @ _np_gram(y) @ h) / (b - 1) ** 2)


def _np_hsic_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    # Song et al. 2012, eq. 5, written out term by term with loops over the off-diagonal kernels.
    b = len(x)
    k, ell = _np_gram(x), _np_gram(y)
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(ell, 0.0)
    one = np.ones(b)
    first = np.trace(k @ ell)
    second = (one @ k @ one) * (one @ ell @ one) / ((b - 1) * (b - 2))
    third = 2.0 / (b - 2) * (one @ k @ ell @ one)
    return float((first + second - third) / (b * (b - 3)))


def test_hsic_matches_numpy_and_pools_content_over_time() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 5)) * 100  # very different scales per set
    tx, ty = torch.tensor(x), torch.tensor(y)
    assert float(HsicRbf()(tx, ty)) == pytest.approx(_np_hsic_unbiased(x, y), rel=1e-6)
    assert float(HsicRbf("biased")(tx, ty)) == pytest.approx(_np_hsic_biased(x, y), rel=1e-6)
    seq = ty[:, None, :].repeat(1, 4, 1)  # [B, T, dc] with the same mean over T
    assert float(HsicRbf()(tx, seq)) == pytest.approx(float(HsicRbf()(tx, ty)), rel=1e-6)
    # Styles repeated beside several frames each (exact duplicates): the bandwidth ignores the zero distances.
    rep = np.repeat(x, 3, axis=0)
    frames = rng.standard_normal((18, 5))
    assert float(HsicRbf()(torch.tensor(rep), torch.tensor(frames))) == pytest.approx(
        _np_hsic_unbiased(rep, frames), rel=1e-6)


@pytest.mark.parametrize("dim", [16, 256])
def test_hsic_larger_for_dependent_than_independent_inputs(dim: int) -> None:
    hsic = HsicRbf()
    dep, ind = [], []
    for seed in range(5):
        torch.manual_seed(seed)
        style = torch.randn(32, dim)
        dep.append(float(hsic(style, torch.tanh(style @ torch.randn(dim, 24) / dim**0.5) * 50)))
        ind.append(float(hsic(style, torch.randn(32, 24) * 50)))
    assert min(dep) > max(ind) and np.mean(dep) > 4 * abs(np.mean(ind)), (dep, ind)
    # Gradients reach both encoders' outputs.
    s, c = torch.randn(8, dim, requires_grad=True), torch.randn(8, 5, requires_grad=True)
    (hsic(s, c) + HsicRbf("biased")(s, c)).backward()
    assert float(s.grad.abs().sum()) > 0 and float(c.grad.abs().sum()) > 0


def test_content_adversarial_uniform_target_and_discriminator_ce() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    adv = ContentAdversarial()
    # Row 1 is uniform (0); row 2 has p = (3/4, 1/4): KL(U||p) = -(ln .75 + ln .25)/2 - ln 2.
    expected = 0.5 * (0.0 + (-(math.log(0.75) + math.log(0.25)) / 2 - math.log(2)))
    assert float(adv(logits)) == pytest.approx(expected, rel=1e-6)
    three = torch.zeros(5, 3)
    assert float(adv(three)) == pytest.approx(0.0, abs=1e-7)  # C from the logits: 3 classes work
    labels = torch.tensor([0, 1])
    ce = -0.5 * (math.log(0.5) + math.log(0.25))
    assert float(adv.discriminator_loss(logits, labels)) == pytest.approx(ce, rel=1e-6)
    assert float(ContentAdversarial("negative_ce")(logits, labels)) == pytest.approx(-ce, rel=1e-6)
    # Confident wrong discriminator: the gradient is strong, not vanishing as with the entropy term.
    confident = torch.tensor([[12.0, -12.0]], requires_grad=True)
    adv(confident).backward()
    assert float(confident.grad.abs().max()) > 0.4


def test_gradient_reversal_and_registry() -> None:
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3,), -0.5))
    for name in ("spectral_reconstruction", "supervised_infonce", "prototype_margin", "hsic_rbf",
                 "content_adversarial"):
        assert isinstance(build("loss", {"component": name}, path=f"losses.{name}", sample_rate=22050),
                          torch.nn.Module)
    with pytest.raises(ValueError, match="mode"):
        ContentAdversarial("entropy")
