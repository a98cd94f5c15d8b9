"""Model components on random feature tensors: shapes, gradients, cached generation, invariances."""

from __future__ import annotations

import pytest
import torch

from audiostyle.components.attention import KVCache
from audiostyle.components.autoregressive_decoder import AutoregressiveDecoder
from audiostyle.components.content_encoder import ContentTransformer
from audiostyle.components.discriminator import MLPDiscriminator
from audiostyle.components.parallel_decoder import ParallelDecoder
from audiostyle.components.style_encoder import StyleTransformer
from audiostyle.platform.core.registry import build

IN_BINS, OUT_BINS = 61, 33  # small stand-ins for 597 / 513
SMALL = {"num_layers": 1, "num_heads": 2, "dropout": 0.0}


def style_encoder(num_classes: int = 2) -> StyleTransformer:
    return StyleTransformer(IN_BINS, num_classes, dim=16, channels=(4, 8), time_stride=2, **SMALL)


def content_encoder() -> ContentTransformer:
    return ContentTransformer(IN_BINS, dim=8, width=16, channels=(4, 8), attention_window=6, **SMALL)


def ar_decoder(**kw) -> AutoregressiveDecoder:
    args = dict(dim=16, num_layers=2, num_heads=2, patch_frames=2, attention_window=6, cross_window=3,
                prev_dropout=0.0, dropout=0.0)
    args.update(kw)
    return AutoregressiveDecoder(OUT_BINS, 8, 16, **args)


def par_decoder() -> ParallelDecoder:
    return ParallelDecoder(OUT_BINS, 8, 16, dim=16, num_layers=2, num_heads=2, attention_window=6,
                           cross_window=3, dropout=0.0)


@pytest.mark.parametrize("frames", [1, 2, 9, 40])
def test_shapes_for_several_clip_lengths(frames):
    torch.manual_seed(0)
    feats = torch.randn(3, 2, frames, IN_BINS)
    style, content = style_encoder()(feats), content_encoder()(feats)
    assert style.shape == (3, 16)
    assert content.shape == (3, frames, 8)  # frame-level: one content vector per STFT frame
    target = feats[..., :OUT_BINS]
    for decoder in (ar_decoder(), par_decoder()):
        assert decoder(content, style, target).shape == target.shape
        assert decoder.generate(content, style, frames).shape == target.shape
    for num_classes in (2, 3):
        disc = MLPDiscriminator(8, num_classes, hidden=8)
        assert disc(content).shape == (3, num_classes)
        assert disc(content[:, 0]).shape == (3, num_classes)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    feats = torch.randn(2, 2, 12, IN_BINS)
    enc_s, enc_c, disc = style_encoder(3), content_encoder(), MLPDiscriminator(8, 3, hidden=8)
    for decoder in (ar_decoder(), par_decoder()):
        modules = (enc_s, enc_c, decoder, disc)
        for m in modules:
            m.zero_grad(set_to_none=True)
        style, content = enc_s(feats), enc_c(feats)
        pred = decoder(content, style, feats[..., :OUT_BINS])
        loss = (pred - feats[..., :OUT_BINS]).pow(2).mean() + disc(content).logsumexp(-1).mean()
        loss.backward()
        for m in modules:
            missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert not missing, f"{type(m).__name__} parameters without gradient: {missing}"


@pytest.mark.parametrize("patch_frames", [1, 2, 3])
def test_cached_generation_equals_uncached(patch_frames):
    torch.manual_seed(patch_frames)
    # 23 frames with a 6-frame self-attention window: the rolling cache trims many times, and the
    # uncached path re-runs the whole prefix, so agreement checks the trimming as well as the cache.
    decoder = ar_decoder(patch_frames=patch_frames).eval()
    content, style = torch.randn(2, 23, 8), torch.randn(2, 16)
    cached = decoder.generate(content, style, 23, use_cache=True)
    uncached = decoder.generate(content, style, 23, use_cache=False)
    torch.testing.assert_close(cached, uncached, rtol=1e-4, atol=1e-5)
    # Training and inference are the same function: teacher-forcing the generated output reproduces it.
    torch.testing.assert_close(decoder(content, style, cached), cached, rtol=1e-4, atol=1e-5)


def test_kv_cache_keeps_only_the_window():
    cache = KVCache(max_len=4)
    for step in range(10):
        k = torch.full((1, 2, 1, 3), float(step))
        keys, _, pos = cache.append(k, k, torch.tensor([step]))
    assert keys.shape[2] == 4 and pos.tolist() == [6, 7, 8, 9]
    assert keys[0, 0, :, 0].tolist() == [6.0, 7.0, 8.0, 9.0]


def test_scheduled_sampling_feeds_own_predictions_only_in_training():
    torch.manual_seed(0)
    decoder = ar_decoder()
    content, style, target = torch.randn(2, 10, 8), torch.randn(2, 16), torch.randn(2, 2, 10, OUT_BINS)
    teacher = decoder(content, style, target, sampling_prob=0.0)
    sampled = decoder(content, style, target, sampling_prob=1.0)
    # the first patch follows the start token either way; later ones follow different inputs
    torch.testing.assert_close(sampled[:, :, :2], teacher[:, :, :2])
    assert not torch.allclose(sampled[:, :, 2:], teacher[:, :, 2:])
    decoder.eval()
    torch.testing.assert_close(decoder(content, style, target, sampling_prob=1.0),
                               decoder(content, style, target, sampling_prob=0.0))


def test_content_ignores_a_per_clip_spectral_envelope():
    torch.manual_seed(0)
    encoder = content_encoder().eval()
    feats = 10 * torch.randn(2, 2, 16, IN_BINS)  # loud enough that the envelope floor eps is negligible
    gains = torch.exp(0.5 * torch.randn(2, 1, 1, IN_BINS))  # a different "instrument colour" per clip
    torch.testing.assert_close(encoder(feats * gains), encoder(feats), rtol=1e-3, atol=1e-3)
    # ... while the style encoder does see it
    style = style_encoder().eval()
    assert (style(feats * gains) - style(feats)).abs().max() > 1e-2


def test_style_of_a_clip_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    encoder = style_encoder().eval()
    feats = torch.randn(4, 2, 12, IN_BINS)
    torch.testing.assert_close(encoder(feats)[:1], encoder(feats[:1]), rtol=1e-4, atol=1e-5)


def test_discriminator_pools_frames_after_a_nonlinearity():
    torch.manual_seed(0)
    disc = MLPDiscriminator(4, 3, hidden=16).eval()
    seq = torch.randn(2, 9, 4)
    seq = seq - seq.mean(dim=1, keepdim=True)  # zero time-mean, like instance-normalised content
    torch.testing.assert_close(disc(seq[:, torch.randperm(9)]), disc(seq))  # order does not matter
    # Same (zero) time mean, different spread: a mean-of-inputs pool could not tell these apart.
    assert (disc(seq) - disc(3 * seq)).abs().max() > 1e-3


def test_registry_builds_components_with_injected_sizes():
    style = build("encoder", {"component": "style_transformer", "dim": 16, "channels": [4], "time_stride": 1,
                              **SMALL}, in_bins=IN_BINS, num_classes=3)
    decoder = build("decoder", {"component": "autoregressive_decoder", "dim": 16, "num_heads": 2},
                    out_bins=OUT_BINS, content_dim=8, style_dim=style.dim)
    disc = build("discriminator", {"component": "mlp_discriminator"}, in_dim=8, num_classes=3)
    assert style.num_classes == 3 and decoder.out_bins == OUT_BINS and disc.num_classes == 3
