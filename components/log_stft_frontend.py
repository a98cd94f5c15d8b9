"""The `log_stft` front end: waveform -> natural-log magnitude STFT [B, 1, T, F], and back with a phase.

Log-magnitude is what the ear and the evaluation's spectral distances compare, it is already scaled
(no dataset statistics: an instrument added tomorrow needs no `stats.npz` for it), and an L1 distance
on it weighs a quiet harmonic like a loud one. Frames are those of the `stft_cqt` front end (centred,
hop-aligned, periodic Hann), so both see the same time grid.

Synthesis needs a phase. For transfer the input's own phase is the natural start (same notes, so the
same partial frequencies), refined by a few Griffin-Lim iterations so the phase agrees with the new
magnitudes across overlapping frames; without a reference it starts from zero phase. Iterations cost
two FFT passes each and run only at inference: training compares log-magnitudes and never needs a
waveform.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from audiostyle.platform.core.errors import DataError
from audiostyle.platform.core.registry import register


@register("frontend", "log_stft")
class LogStftFrontend(nn.Module):
    """Log-magnitude STFT features (no dataset statistics); Griffin-Lim synthesis from a reference phase."""

    uses_dataset_statistics = False  # stats/normalization_stats.load_stats returns None for it
    channels = 1

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop_length: int = 256, floor: float = 1e-3,
                 griffin_lim_iters: int = 16) -> None:
        super().__init__()
        if n_fft < 16 or hop_length < 1 or hop_length > n_fft:
            raise ValueError(f"need n_fft >= 16 and 1 <= hop_length <= n_fft, got {n_fft} and {hop_length}")
        if not floor > 0:
            raise ValueError(f"floor must be > 0 (the log of a silent bin), got {floor}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.floor = float(floor)  # 1e-3 is about -100 dB below a full-scale sine's peak bin: below 16-bit noise
        self.griffin_lim_iters = int(griffin_lim_iters)
        self.stft_bins = self.n_fft // 2 + 1
        self.num_bins = self.stft_bins
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        # Identity statistics, kept so every front end answers `normalization_stats()` the same way.
        self.register_buffer("mean", torch.zeros(1, self.num_bins))
        self.register_buffer("std", torch.ones(1, self.num_bins))

    def settings(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "n_fft": self.n_fft, "hop_length": self.hop_length,
                "floor": self.floor}

    def num_frames(self, num_samples: int) -> int:
        return 1 + int(num_samples) // self.hop_length

    def set_stats(self, mean: Any, std: Any) -> None:
        raise DataError("the log_stft front end uses no dataset statistics; build the model with stats=None")

    def _stft(self, wave: Tensor) -> Tensor:
        return torch.stft(wave, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # [B, F, T]

    def _istft(self, spec: Tensor, length: int) -> Tensor:
        return torch.istft(spec, self.n_fft, hop_length=self.hop_length, window=self.window, center=True,
                           length=length)

    def forward(self, wave: Tensor) -> Tensor:
        """Waveforms [B, N] -> log-magnitude features [B, 1, T, F]."""
        if wave.dim() != 2:
            raise ValueError(f"expected waveforms shaped [batch, samples], got {tuple(wave.shape)}")
        if wave.shape[-1] <= self.n_fft // 2:
            raise ValueError(f"a clip of {wave.shape[-1]} samples is too short for n_fft={self.n_fft}")
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = self._stft(wave.float())
            return torch.log(spec.abs() + self.floor).transpose(1, 2).unsqueeze(1)

    def synthesize(self, feats: Tensor, length: int, reference: Tensor | None = None) -> Tensor:
        """Log-magnitudes [B, 1, T, F] -> waveforms [B, length], phase from `reference` waveforms [B, N]
        (same frames) when given, refined by `griffin_lim_iters` Griffin-Lim iterations."""
        if feats.dim() != 4 or feats.shape[1] != 1 or feats.shape[-1] != self.stft_bins:
            raise ValueError(f"expected features shaped [batch, 1, frames, {self.stft_bins}], got {tuple(feats.shape)}")
        with torch.autocast(device_type=feats.device.type, enabled=False):
            mag = (torch.exp(feats[:, 0].float()) - self.floor).clamp_min(0.0).transpose(1, 2)  # [B, F, T]
            if reference is not None:
                ref = self._stft(reference.float())[..., : mag.shape[-1]]
                phase = ref / ref.abs().clamp_min(1e-8)
                if phase.shape[-1] < mag.shape[-1]:
                    phase = nn.functional.pad(phase, (0, mag.shape[-1] - phase.shape[-1]), value=1.0)
            else:
                phase = torch.ones_like(mag, dtype=torch.complex64)
            spec = mag * phase
            for _ in range(self.griffin_lim_iters):
                rebuilt = self._stft(self._istft(spec, length))[..., : mag.shape[-1]]
                spec = mag * rebuilt / rebuilt.abs().clamp_min(1e-8)
            return self._istft(spec, length)
