"""Degraded versions of a rendering: what a failed transfer sounds like, for training and checking the judge.

A transfer that has lost the notes tends to sound like one of these, and a timbre judge that gives them a
high P(instrument) cannot be trusted (the research's model scored 0.96 P(violin) with a smear):
  smear       the magnitude spectrum averaged over `seconds` of time (notes and onsets gone, the
              instrument's average colour kept), random phase
  lowpass     everything above `cutoff_hz` removed (a muffled, band-limited output)
  ltas_noise  noise shaped by the clip's long-term average spectrum (the colour with no notes at all)
  vocoded     noise carrying the clip's coarse band envelopes (onsets and brightness, no partials)
The judge learns them as a class of their own (`classifier.REJECT`); the evaluation checks it on the
paired targets with other settings than it learned from (`CHECKS`).
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np
from scipy.ndimage import uniform_filter1d

N_FFT, HOP = 1024, 256


def _stft(audio: np.ndarray) -> np.ndarray:
    return librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=N_FFT, hop_length=HOP)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    return librosa.istft(spec, hop_length=HOP, length=length).astype(np.float32)


def _random_phase(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    return np.exp(2j * np.pi * rng.random(shape))


def smear(audio: np.ndarray, sr: int, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    mag = np.abs(_stft(audio))
    frames = max(1, int(round(seconds * sr / HOP)))
    smooth = uniform_filter1d(mag, size=frames, axis=1, mode="nearest")
    return _istft(smooth * _random_phase(mag.shape, rng), len(audio))


def lowpass(audio: np.ndarray, sr: int, rng: np.random.Generator, cutoff_hz: float = 1500.0) -> np.ndarray:
    spec = _stft(audio)
    spec[librosa.fft_frequencies(sr=sr, n_fft=N_FFT) > cutoff_hz] = 0
    return _istft(spec, len(audio))


def ltas_noise(audio: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    mag = np.abs(_stft(audio))
    ltas = np.sqrt((mag**2).mean(axis=1, keepdims=True))
    return _istft(np.broadcast_to(ltas, mag.shape) * _random_phase(mag.shape, rng), len(audio))


def vocoded(audio: np.ndarray, sr: int, rng: np.random.Generator, bands: int = 24) -> np.ndarray:
    mag = np.abs(_stft(audio))
    edges = np.unique(np.geomspace(1, mag.shape[0], bands + 1).astype(int))
    out = np.zeros_like(mag)
    for lo, hi in zip(edges[:-1], edges[1:]):
        out[lo:hi] = mag[lo:hi].mean(axis=0, keepdims=True)
    return _istft(out * _random_phase(mag.shape, rng), len(audio))


Degradation = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

# What the judge learns to reject: settings drawn at random per window.
TRAINING: dict[str, Degradation] = {
    "smear": lambda a, sr, rng: smear(a, sr, rng, seconds=float(rng.uniform(0.3, 3.0))),
    "lowpass": lambda a, sr, rng: lowpass(a, sr, rng, cutoff_hz=float(rng.uniform(400.0, 2500.0))),
    "ltas_noise": ltas_noise,
    "vocoded": vocoded,
}

# What the evaluation checks the judge with, on the paired targets (pieces and a SoundFont it never
# learned from): the degradations at fixed settings, reported beside the oracle.
CHECKS: dict[str, tuple[str, Degradation]] = {
    "smeared_1s": ("target, spectrum averaged over 1 s", lambda a, sr, rng: smear(a, sr, rng, seconds=1.0)),
    "smeared_2s": ("target, spectrum averaged over 2 s", lambda a, sr, rng: smear(a, sr, rng, seconds=2.0)),
    "lowpassed": ("target, low-passed at 1.5 kHz", lambda a, sr, rng: lowpass(a, sr, rng, cutoff_hz=1500.0)),
    "ltas_noise": ("noise with the target's long-term spectrum", ltas_noise),
}
