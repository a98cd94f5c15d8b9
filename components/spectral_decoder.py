"""The decoders `spectral_filter` and `spectral_generator`: non-autoregressive, frame-level, for log-magnitude
front ends (`log_stft`), conditioned on the style by FiLM.

`spectral_filter` filters the input's own spectrum. It predicts, per frame and bin, a log-gain g and an
added log-magnitude a, and outputs log|Y| = logaddexp(log|X| + g, a): the partials of the input stay
where they are (the pitch is carried by construction, at the resolution of the STFT, with no pitch
tracker), the gain reshapes them into the target instrument's spectral envelope and attack/decay, and
the added part supplies energy the input lacks (a bow's noise, a sustain after a piano note has died
away). It starts as the identity (zero gain, nothing added), so training begins from "input
unchanged" and moves towards the target.

`spectral_envelope_filter` filters the input's whitened spectrum instead (components/spectral_whitening.py:
its fine structure, the envelope taken away): the partials still come from the input, but every bit of
spectral envelope and level comes from the decoder, so an input from a player it never heard cannot pass
its own timbre through (the plain filter's identity start is such a path).

`spectral_generator` predicts log|Y| outright from content and style: the comparison that shows what
the input's own spectrum is worth (it has to re-create every partial at the right bin itself).

Neither has a previous output to feed back: `sampling_prob` and `use_cache` are accepted for interface
parity with the autoregressive decoder and ignored; `target` gives only the number of frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiostyle.components.frame_conv import LOG_MAGNITUDE_SCALE, DilatedStack
from audiostyle.components.spectral_whitening import DEFAULT_WIDTH, FINE_DEPTH, fine_structure
from audiostyle.platform.core.registry import register


class SpectralConvDecoder(nn.Module):
    """Content [B, T, content_dim] + style [B, style_dim] -> log-magnitudes [B, 1, T, out_bins]."""

    filters_input = True

    def __init__(self, out_bins: int, content_dim: int, style_dim: int, out_channels: int = 1, dim: int = 192,
                 num_layers: int = 4, kernel_size: int = 3, added_offset: float = -4.0, dilation_base: int = 2):
        super().__init__()
        if out_channels != 1:
            raise ValueError(f"{type(self).__name__} writes log-magnitudes (1 channel, e.g. the log_stft front "
                             f"end), not {out_channels}-channel features")
        self.out_bins = out_bins
        self.added_offset = added_offset  # the added part starts near e^-4 ~ -35 dB: inaudible under a note
        self.inp = nn.Conv1d(content_dim, dim, 1)
        self.stack = DilatedStack(dim, num_layers, kernel_size=kernel_size, cond_dim=style_dim,
                                  dilation_base=dilation_base)
        self.head = nn.Conv1d(dim, out_bins * (2 if self.filters_input else 1), 1)
        # zero head: the filter starts as the identity, the generator as a flat, silent-ish spectrum
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _predict(self, content: Tensor, style: Tensor, frames: int, source: Tensor | None) -> Tensor:
        if content.shape[1] != frames:
            raise ValueError(f"content has {content.shape[1]} frames, {frames} were asked for")
        x = self.stack(self.inp(content.transpose(1, 2)), style)
        out = self.head(x).transpose(1, 2) * LOG_MAGNITUDE_SCALE  # [B, T, bins or 2*bins]
        if not self.filters_input:
            return out.unsqueeze(1)
        if source is None or source.shape[-1] < self.out_bins:
            raise ValueError("spectral_filter filters the input's spectrum: pass the front-end features as `source`")
        gain, added = out.chunk(2, dim=-1)
        base = self._filtered(source[:, 0, :, : self.out_bins])
        return torch.logaddexp(base + gain, added + self.added_offset).unsqueeze(1)

    def _filtered(self, logmag: Tensor) -> Tensor:
        """What of the input's log-spectrum [B, T, bins] the gain filters: all of it."""
        return logmag

    def forward(self, content: Tensor, style: Tensor, target: Tensor, sampling_prob: float = 0.0,
                source: Tensor | None = None) -> Tensor:
        """Prediction shaped like `target` [B, 1, T, out_bins]."""
        return self._predict(content, style, target.shape[2], source)

    @torch.no_grad()
    def generate(self, content: Tensor, style: Tensor, num_frames: int, use_cache: bool = True,
                 source: Tensor | None = None) -> Tensor:
        return self._predict(content, style, num_frames, source)


@register("decoder", "spectral_filter")
class SpectralFilterDecoder(SpectralConvDecoder):
    """Filters the input's log-spectrum: logaddexp(log|X| + gain, added), both from content + style."""

    filters_input = True


@register("decoder", "spectral_envelope_filter")
class SpectralEnvelopeFilterDecoder(SpectralConvDecoder):
    """Filters the input's whitened log-spectrum: logaddexp(fine(log|X|) + gain, added); the envelope and
    the level are all the decoder's.

    `fine_depth` (natural log) is how deep the valleys between the input's partials may go. The content
    encoder reads them only 17 dB deep (FINE_DEPTH: what makes one passage by two players alike); the
    decoder's base may keep them deeper, since a valley is where a partial is not, not a colour: a base cut
    at 17 dB leaves every gap deeper than that for the gain to carve, bin by bin. With the target's own
    envelope over the input's fine structure, the L1 to the target falls from 2.7 / 3.5 (17 dB) to
    1.6 / 2.1 (35 dB), piano -> violin / violin -> piano on the demo's training pairs; a trained model with
    35 dB transferred no better than with 17 (README, "Any player": one seed), so the recipe keeps 17."""

    filters_input = True

    def __init__(self, out_bins: int, content_dim: int, style_dim: int, out_channels: int = 1, dim: int = 192,
                 num_layers: int = 4, kernel_size: int = 3, added_offset: float = -4.0, dilation_base: int = 2,
                 fine_depth: float = FINE_DEPTH):
        super().__init__(out_bins, content_dim, style_dim, out_channels=out_channels, dim=dim,
                         num_layers=num_layers, kernel_size=kernel_size, added_offset=added_offset,
                         dilation_base=dilation_base)
        if not fine_depth > 0:
            raise ValueError(f"fine_depth must be > 0 (natural log), got {fine_depth}")
        self.fine_depth = float(fine_depth)

    def _filtered(self, logmag: Tensor) -> Tensor:
        """Only its fine structure, `fine_depth` deep."""
        return fine_structure(logmag, DEFAULT_WIDTH, self.fine_depth)


@register("decoder", "spectral_generator")
class SpectralGeneratorDecoder(SpectralConvDecoder):
    """Writes the log-spectrum outright from content + style (no path from the input's own spectrum)."""

    filters_input = False
