"""The `stft_cqt` front end: waveform -> normalized complex STFT+CQT features, and STFT features -> waveform.

Features are [B, 2, T, F]: channel 0/1 = real/imaginary part, T frames (hop-aligned, `1 + N // hop`),
F = STFT bins (n_fft // 2 + 1) followed by CQT bins. This is the research's layout (seed spec section 1),
with its normalization defects fixed:

- One set of statistics for every instrument (pooled by `audiostyle.stats.normalization_stats.load_stats`),
  so the label is never needed to analyze audio, and the average spectral envelope of each instrument (a
  timbre cue) is no longer whitened away before the encoders see it.
- Each bin's std is floored at `std_floor` x the median std of its part (STFT or CQT): the research divided
  by stds down to 2e-5 (and exactly 0 for the imaginary DC/Nyquist bins), amplifying near-silent bins by
  up to 4.5e4 so that noise there dominated the loss.
- `denormalize` is the exact inverse of `normalize` (same buffers, affine), and `synthesize` applies it
  before the inverse STFT; the research fed z-scores straight into iSTFT.

The CQT is an encoder input only; waveforms come back from the STFT part through `torch.istft` with the
same Hann window, which reconstructs exactly (Hann at 75% overlap satisfies the overlap-add condition).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from audiostyle.components.cqt import ConstantQTransform
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.core.registry import register


@register("frontend", "stft_cqt")
class StftCqtFrontend(nn.Module):
    """Complex STFT + CQT (real/imag) features, class-agnostic normalization, inverse STFT synthesis."""

    uses_dataset_statistics = True  # pooled per-bin mean/std (stats/normalization_stats.load_stats)
    channels = 2  # real, imaginary

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_cqt_bins: int = 84,
        bins_per_octave: int = 12,
        fmin: float = 32.703195662574764,  # C1, the lowest note the research's CQT covered
        std_floor: float = 0.1,  # x median std of the part; caps the gain of a near-silent bin at ~10x median
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_cqt_bins = int(n_cqt_bins)
        self.bins_per_octave = int(bins_per_octave)
        self.fmin = float(fmin)
        self.std_floor = float(std_floor)
        self.stft_bins = self.n_fft // 2 + 1
        self.num_bins = self.stft_bins + self.n_cqt_bins
        self.cqt = ConstantQTransform(
            self.sample_rate, hop_length=self.hop_length, n_bins=self.n_cqt_bins,
            bins_per_octave=self.bins_per_octave, fmin=self.fmin,
        )
        # periodic Hann, as torch.stft in the research; non-persistent: it follows from n_fft.
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        # Identity statistics until set_stats: the model can be built and tested without any data.
        self.register_buffer("mean", torch.zeros(2, self.num_bins))
        self.register_buffer("std", torch.ones(2, self.num_bins))
        self.register_buffer("scale", torch.ones(2, self.num_bins))  # std after the floor; what divides

    # ------------------------------------------------------------------ settings and statistics
    def settings(self) -> dict[str, Any]:
        """The analysis settings that statistics must have been computed with."""
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "n_cqt_bins": self.n_cqt_bins, "bins_per_octave": self.bins_per_octave, "fmin": self.fmin}

    def num_frames(self, num_samples: int) -> int:
        """Frames of `analyze` for a clip of `num_samples` samples (centred frames every hop)."""
        return 1 + int(num_samples) // self.hop_length

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray) -> None:
        """Install per-(channel, bin) statistics shaped (2, num_bins); flooring happens here."""
        mean_t = torch.as_tensor(np.asarray(mean) if not torch.is_tensor(mean) else mean, dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std) if not torch.is_tensor(std) else std, dtype=torch.float32)
        expected = (2, self.num_bins)
        for name, t in (("mean", mean_t), ("std", std_t)):
            if tuple(t.shape) != expected:
                raise DataError(
                    f"normalization {name} has shape {tuple(t.shape)}, the front end needs {expected} "
                    f"([real, imag] x {self.stft_bins} STFT + {self.n_cqt_bins} CQT bins); the statistics "
                    "were computed with other front-end settings: recompute them"
                )
            if not torch.isfinite(t).all():
                raise DataError(f"normalization {name} contains NaN or inf values; recompute the statistics")
        if (std_t < 0).any():
            raise DataError("normalization std has negative entries; the statistics file is corrupt")
        scale = std_t.clone()
        for part in (slice(0, self.stft_bins), slice(self.stft_bins, self.num_bins)):
            block = std_t[:, part]
            if block.numel() == 0:
                continue
            median = float(block.median())
            # A part that is entirely silent has median 0; keep unit scale there rather than dividing by 0.
            floor = self.std_floor * median if median > 0 else 1.0
            scale[:, part] = block.clamp_min(max(floor, 1e-12))
        self.mean.copy_(mean_t)
        self.std.copy_(std_t)
        self.scale.copy_(scale)

    def normalize(self, feats: torch.Tensor) -> torch.Tensor:
        """Raw [B, 2, T, num_bins] -> normalized; needs no label (one set of stats for all instruments)."""
        return (feats - self.mean[:, None, :]) / self.scale[:, None, :]

    def denormalize(self, feats: torch.Tensor) -> torch.Tensor:
        """Exact inverse of `normalize`. Accepts all bins, or only the STFT bins (decoder outputs)."""
        bins = feats.shape[-1]
        if bins not in (self.num_bins, self.stft_bins):
            raise ValueError(f"expected {self.num_bins} or {self.stft_bins} bins on the last axis, got {bins}")
        return feats * self.scale[:, None, :bins] + self.mean[:, None, :bins]

    # ------------------------------------------------------------------ analysis and synthesis
    def analyze(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms [B, N] -> raw features [B, 2, T, num_bins] (STFT then CQT bins, frames aligned)."""
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms shaped [batch, samples], got {tuple(wave.shape)}")
        if wave.shape[-1] <= self.n_fft // 2:
            raise ValueError(
                f"a clip of {wave.shape[-1]} samples is too short for n_fft={self.n_fft}: "
                f"it needs more than {self.n_fft // 2} samples"
            )
        # Spectra stay float32 under autocast: half precision loses the quiet bins and FFTs reject bf16.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            wave = wave.float()
            stft = torch.stft(wave, self.n_fft, hop_length=self.hop_length, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)  # [B, F, T]
            cqt = self.cqt(wave)  # [B, K, T]
            spec = torch.cat([stft, cqt], dim=1)
            return torch.view_as_real(spec).permute(0, 3, 2, 1).contiguous()  # [B, 2, T, F+K]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """normalize(analyze(wave))."""
        return self.normalize(self.analyze(wave))

    def synthesize(self, stft_norm: torch.Tensor, length: int, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized STFT features [B, 2, T, stft_bins] (or all bins; CQT ignored) -> waveforms [B, length].

        The features hold the phase already, so `reference` (accepted for interface parity with magnitude
        front ends, which take their phase from it) is not used."""
        if stft_norm.dim() != 4 or stft_norm.shape[1] != 2:
            raise ValueError(f"expected features shaped [batch, 2, frames, bins], got {tuple(stft_norm.shape)}")
        with torch.autocast(device_type=stft_norm.device.type, enabled=False):
            raw = self.denormalize(stft_norm.float())[..., : self.stft_bins]
            spec = torch.complex(raw[:, 0], raw[:, 1]).transpose(1, 2)  # [B, F, T]
            return torch.istft(spec, self.n_fft, hop_length=self.hop_length, window=self.window,
                               center=True, length=int(length))
