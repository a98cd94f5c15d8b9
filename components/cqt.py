"""A complex constant-Q transform in torch, computed on the tensor's device and frame-aligned with the STFT.

The filters are librosa's own (`librosa.filters.wavelet`, Hann-windowed complex exponentials, L1-normalized,
one octave at a time exactly as `librosa.cqt` builds them), so the output matches `librosa.cqt` with its
defaults (tuning 0, filter_scale 1, scale=True, zero padding). Where librosa computes each octave by a
one-sided FFT product on a signal it has halved in rate, this module applies the same filters at the full
rate as one strided convolution per octave. That is the same sum in the time domain, minus librosa's
resampling and basis sparsification (which drop about 1% of each filter's mass), so the two agree to about a
percent of the magnitude (tests/test_frontend.py states the bound) and frames are centred on `t * hop` just
like `torch.stft(center=True)`: both give `1 + num_samples // hop` frames.

Why a convolution rather than librosa's per-octave STFT: the lowest octave's filters are ~11.7k samples
long at 22.05 kHz, and an STFT that long materializes a [B, 8193, T] complex tensor; the strided
convolution needs only its output, and maps onto cuDNN/oneDNN kernels on both GPU and CPU.
"""

from __future__ import annotations

import math

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiostyle.platform.core.errors import ConfigError


class ConstantQTransform(nn.Module):
    """Complex CQT of waveforms [B, N] -> [B, n_bins, T] (complex64), T = 1 + N // hop_length."""

    def __init__(
        self,
        sample_rate: int,
        hop_length: int = 256,
        n_bins: int = 84,
        bins_per_octave: int = 12,
        fmin: float = 32.703195662574764,  # C1, librosa's default
        filter_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.hop_length = int(hop_length)
        self.n_bins = int(n_bins)
        self.bins_per_octave = int(bins_per_octave)
        self.fmin = float(fmin)
        if self.n_bins <= 0 or self.bins_per_octave <= 0 or self.hop_length <= 0 or self.fmin <= 0:
            raise ConfigError(
                f"CQT needs positive n_cqt_bins, bins_per_octave, hop_length and fmin; got n_bins={n_bins}, "
                f"bins_per_octave={bins_per_octave}, hop_length={hop_length}, fmin={fmin}",
                path="model.frontend",
            )
        freqs = librosa.cqt_frequencies(self.n_bins, fmin=self.fmin, bins_per_octave=self.bins_per_octave)
        # Relative bandwidth of geometrically spaced bins, the value librosa's own default derives from the
        # spacing of `freqs` (by a private helper); with one ratio between all neighbours it is one number.
        r = 2.0 ** (1.0 / self.bins_per_octave)
        alpha = np.full(self.n_bins, (r**2 - 1) / (r**2 + 1))
        _, cutoff = librosa.filters.wavelet_lengths(
            freqs=freqs, sr=self.sample_rate, filter_scale=filter_scale, alpha=alpha
        )
        if cutoff > self.sample_rate / 2:
            raise ConfigError(
                f"the top CQT filter reaches {cutoff:.0f} Hz, above the Nyquist frequency "
                f"{self.sample_rate / 2:.0f} Hz of sample_rate={self.sample_rate}",
                path="model.frontend.n_cqt_bins",
                hint="use fewer CQT bins, a lower fmin, or a higher data.sample_rate",
            )

        # One convolution per octave (as librosa groups them), so each uses a kernel only as long as its
        # own longest filter: the top octave's filters are ~100 samples, the bottom one's ~11.7k.
        self._groups: list[tuple[int, int]] = []  # (left offset into the padded signal, kernel length)
        starts = list(range(self.n_bins, 0, -self.bins_per_octave))
        kernels = []
        for top in starts:
            sl = slice(max(0, top - self.bins_per_octave), top)
            basis, lengths = librosa.filters.wavelet(
                freqs=freqs[sl], sr=self.sample_rate, filter_scale=filter_scale, norm=1,
                pad_fft=True, window="hann", alpha=alpha[sl], dtype=np.complex128,
            )
            n_fft = basis.shape[1]
            # librosa: C = (1/sqrt(L)) * sum_f FFT(b * L / n_fft)[f] * FFT(frame)[f]  (one-sided), which is
            # sqrt(L) * sum_n b[n] * y[t*hop + n_fft/2 - n] in the time domain: a convolution with b centred
            # on the frame. conv1d correlates, so the weight is b reversed: w[m] = b[n_fft - m].
            w = np.zeros((basis.shape[0], n_fft + 1), dtype=np.complex128)
            w[:, 1:] = basis[:, ::-1]
            w *= np.sqrt(lengths)[:, None]
            support = np.flatnonzero(np.abs(w).max(axis=0) > 0)
            a, e = int(support[0]), int(support[-1]) + 1
            w = w[:, a:e]
            center = n_fft // 2  # the frame centre sits at index n_fft/2 of the filter buffer
            self._groups.append((center - a, e - a))
            kernels.append(w)

        # Real buffers (not complex) so DDP/gloo broadcasts and safetensors never see a complex dtype;
        # non-persistent because they follow from the settings and would bloat every checkpoint.
        for i, w in enumerate(kernels):
            stacked = np.concatenate([w.real, w.imag], axis=0)[:, None, :]  # [2K, 1, len]
            self.register_buffer(f"kernel_{i}", torch.from_numpy(stacked.astype(np.float32)), persistent=False)
        self.num_groups = len(kernels)

    def num_frames(self, num_samples: int) -> int:
        return 1 + int(num_samples) // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms shaped [batch, samples], got {tuple(wave.shape)}")
        wave = wave.float()
        num_samples = wave.shape[-1]
        frames = self.num_frames(num_samples)
        outputs = []
        # Octaves were built top-down (librosa's order); the result is ordered by ascending frequency.
        for i, (left, length) in enumerate(self._groups):
            kernel = getattr(self, f"kernel_{i}")
            # Zero padding (librosa.cqt's pad_mode="constant") so frame t is centred on sample t * hop.
            right = max(0, (frames - 1) * self.hop_length + length - left - num_samples)
            padded = F.pad(wave, (left, right)).unsqueeze(1)
            out = F.conv1d(padded, kernel, stride=self.hop_length)[..., :frames]  # [B, 2K, T]
            k = out.shape[1] // 2
            outputs.append(torch.complex(out[:, :k], out[:, k:]))
        return torch.cat(outputs[::-1], dim=1)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, hop_length={self.hop_length}, n_bins={self.n_bins}, "
                f"bins_per_octave={self.bins_per_octave}, fmin={self.fmin:.3f}")


def librosa_cqt_reference(wave: np.ndarray, cqt: ConstantQTransform) -> np.ndarray:
    """librosa.cqt with the settings of `cqt` (the research's front end), for parity checks and benchmarks."""
    return librosa.cqt(
        np.asarray(wave, dtype=np.float32), sr=cqt.sample_rate, hop_length=cqt.hop_length,
        n_bins=cqt.n_bins, bins_per_octave=cqt.bins_per_octave, fmin=cqt.fmin,
    )


def relative_error(estimate: np.ndarray, reference: np.ndarray) -> float:
    """||estimate - reference||_F / ||reference||_F (0 when equal)."""
    return float(np.linalg.norm(estimate - reference) / max(np.linalg.norm(reference), math.ulp(1.0)))
