"""Recording conditions: what a player's vibrato, a room, a microphone and a player's gain do to a clip,
for training inputs (random, `InputAugmenter`) and for the evaluation's fixed test conditions
(`apply_condition`).

A user's recording is never the clean SoundFont rendering a model trained on: it was played in a room,
through a microphone with its own tilt, with some hiss, at some level, at some sample rate. Training
corrupts the *input* of a pair only and keeps its target clean (the Universal Music Translation Network's
rule), so the model learns to undo the conditions instead of copying them.

Rooms are image-source impulse responses from pyroomacoustics (MIT; shoebox rooms with the absorption
that gives the RT60 asked for, by Sabine's formula); EQ, hiss and gain are audiomentations' transforms
(MIT). Vibrato is a delay line read at a swinging position (no library offers it under a licence that
fits): SoundFont strings mostly play without it, every violinist plays with it, and a model that never
heard it reads each swing of the level and the partials as a new note. A soft attack (a note bowed in, a
slow-speaking sample) is a level follower per frequency over librosa's STFT, for the same reason. An
impulse response costs about half a second to compute, so each augmenter computes a small bank of rooms
once and convolves with them (scipy's FFT convolution, a few ms per clip).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from functools import lru_cache

import numpy as np

# The evaluation's conditions (fixed parameters; `rate_44k` changes only the rate the input arrives at).
CONDITIONS: dict[str, str] = {
    "vibrato": "played with vibrato: pitch +-30 cents and level +-2 dB at 5.5 Hz",
    "soft_attack": "bowed in: every rise in level, in each frequency, spread over 150 ms",
    "bow_noise": "bow noise: noise shaped like each moment's spectrum, 12 dB under it, between the partials too",
    "room": "played in a room, RT60 0.7 s (image-source impulse response)",
    "tilt_up": "EQ tilt +6 dB: high shelf +6 dB above 3 kHz, low shelf -6 dB below 300 Hz",
    "tilt_down": "EQ tilt -6 dB: high shelf -6 dB above 3 kHz, low shelf +6 dB below 300 Hz",
    "hiss": "white noise at 30 dB SNR",
    "quiet": "20 dB quieter",
    "rate_44k": "arriving at 44.1 kHz (the transfer resamples it)",
}
TEST_ROOM_SEED = 7_000_001  # the evaluation's room: never among the training banks' seeds (small integers)


@lru_cache(maxsize=8)
def room_bank(sample_rate: int, count: int, seed: int, rt60: tuple[float, float] = (0.2, 1.0)) -> tuple[np.ndarray, ...]:
    """`count` room impulse responses (unit energy, float32), RT60 drawn uniformly from `rt60`."""
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    bank = []
    for _ in range(count):
        dims = rng.uniform([4.0, 3.5, 2.5], [12.0, 9.0, 4.5])
        t60 = float(rng.uniform(*rt60))
        absorption, max_order = pra.inverse_sabine(t60, dims)
        # The image-source order Sabine asks for at long RT60s costs minutes; beyond ~20 the late tail is
        # diffuse anyway and its decay is what the RT60 sets.
        room = pra.ShoeBox(dims, fs=sample_rate, materials=pra.Material(absorption), max_order=min(max_order, 20))
        room.add_source(rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 1.0]))
        room.add_microphone(rng.uniform([0.5, 0.5, 1.0], dims - [0.5, 0.5, 1.0]))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float64)
        rir = rir[max(int(np.argmax(np.abs(rir))) - 32, 0):]  # start just before the direct path
        bank.append((rir / np.sqrt(np.sum(rir ** 2))).astype(np.float32))
    return tuple(bank)


def vibrato(wave: np.ndarray, sample_rate: int, *, rate_hz: float, depth_cents: float, tremolo_db: float,
            phase: float = 0.0) -> np.ndarray:
    """`wave` with its pitch swung by +-`depth_cents` and its level by +-`tremolo_db` at `rate_hz`: read at
    t + r sin(wt)/w, whose rate 1 + r cos(wt) is the pitch ratio (r = 2**(cents/1200) - 1)."""
    w = 2.0 * np.pi * rate_hz
    t = np.arange(len(wave)) / sample_rate
    swing = (2.0 ** (depth_cents / 1200.0) - 1.0) * np.sin(w * t + phase) / w
    read = np.clip((t + swing) * sample_rate, 0, max(len(wave) - 1, 0))
    out = np.interp(read, np.arange(len(wave)), wave)
    # the level follows the pitch a quarter cycle late, as a bow's pressure follows the finger
    return (out * 10.0 ** (tremolo_db * np.sin(w * t + phase - np.pi / 2) / 20.0)).astype(np.float32)


# The STFT of the per-frequency conditions (soft attack, bow noise). A hop of 12 ms keeps a rise of 50 ms
# four frames long; a hop of 128 took 3x as long per clip.
_N_FFT, _HOP = 1024, 256


def soft_attack(wave: np.ndarray, sample_rate: int, *, rise_seconds: float) -> np.ndarray:
    """`wave` with every rise in level spread over about `rise_seconds`, in each frequency bin on its own (a
    bow that starts a note softly, a slow-speaking sample), falls untouched.

    The gain is a level follower per STFT bin that rises slowly and falls at once, over the level itself,
    so a held note ends at its own level, and a voice entering under a held chord is softened as well as
    a note after a rest (a broadband level barely moves there). TimGM6mb's and csound's violins start every
    note with a broadband click; FluidR3's bow in without one (onset contrast 0.62 against 1.54 on the
    same chorales), and a model that learnt the click as the note's start hears no new note there.
    """
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    spec = librosa.stft(wave, n_fft=_N_FFT, hop_length=_HOP)
    level = np.ascontiguousarray(np.abs(spec).T) + 1e-7  # [frames, bins]: each step reads one contiguous frame
    step = 1.0 - np.exp(-_HOP / (rise_seconds * sample_rate))
    follow = np.empty_like(level)
    current = level[0].copy()
    for t, frame in enumerate(level):  # every bin at once; min(): a rise is slowed, a fall followed at once
        current = np.minimum(current + step * (frame - current), frame)
        follow[t] = current
    out = librosa.istft(spec * np.minimum(follow / level, 1.0).T, hop_length=_HOP, length=len(wave))
    return out.astype(np.float32)


def bow_noise(wave: np.ndarray, sample_rate: int, *, level_db: float, seed: int) -> np.ndarray:
    """`wave` plus noise that follows it: in each STFT frame, complex Gaussian noise shaped by the frame's
    spectrum smoothed over 9 bins (190 Hz at 22.05 kHz, wider than the gap between low partials), `level_db`
    under it. A bow's noise sounds with the note and fills the valleys between partials; FluidR3's violin
    has it (its chords' harmonicity 0.74 of the target's, the training sets' 1.05), a stationary hiss does
    not follow the notes, and a model that never heard it lets it through as a sustained wash."""
    import librosa
    from scipy.ndimage import uniform_filter1d

    wave = np.asarray(wave, dtype=np.float32)
    spec = librosa.stft(wave, n_fft=_N_FFT, hop_length=_HOP)
    shape = uniform_filter1d(np.abs(spec), size=9, axis=0, mode="nearest")
    rng = np.random.default_rng(seed)
    noise = (rng.standard_normal(spec.shape) + 1j * rng.standard_normal(spec.shape)) / np.sqrt(2.0)
    out = librosa.istft(spec + shape * noise * 10.0 ** (level_db / 20.0), hop_length=_HOP, length=len(wave))
    return out.astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`wave` convolved with `rir`, cut to its length, at the input's RMS."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(wave, rir)[: len(wave)].astype(np.float32)
    return wet * np.float32(_rms(wave) / max(_rms(wet), 1e-9))


def _rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0


def _shelves(low_db: float, high_db: float, p: float = 1.0) -> list:
    from audiomentations import HighShelfFilter, LowShelfFilter

    return [LowShelfFilter(min_center_freq=300.0, max_center_freq=300.0, min_gain_db=low_db, max_gain_db=low_db, p=p),
            HighShelfFilter(min_center_freq=3000.0, max_center_freq=3000.0, min_gain_db=high_db, max_gain_db=high_db,
                            p=p)]


def apply_condition(wave: np.ndarray, sample_rate: int, condition: str, *, seed: int = 0) -> tuple[np.ndarray, int]:
    """(`wave` under the evaluation condition `condition`, its sample rate); ValueError for an unknown name."""
    from audiomentations import AddGaussianSNR, Compose, Gain

    wave = np.asarray(wave, dtype=np.float32)
    if condition == "vibrato":
        return vibrato(wave, sample_rate, rate_hz=5.5, depth_cents=30.0, tremolo_db=2.0), sample_rate
    if condition == "soft_attack":
        return soft_attack(wave, sample_rate, rise_seconds=0.15), sample_rate
    if condition == "bow_noise":
        return bow_noise(wave, sample_rate, level_db=-12.0, seed=seed), sample_rate
    if condition == "room":
        return reverberate(wave, room_bank(sample_rate, 1, TEST_ROOM_SEED, (0.7, 0.7))[0]), sample_rate
    if condition == "rate_44k":
        from audiostyle.datasets.audio_io import resample

        return resample(wave, sample_rate, 44100).astype(np.float32), 44100
    chains: dict[str, Callable[[], list]] = {
        "tilt_up": lambda: _shelves(-6.0, 6.0),
        "tilt_down": lambda: _shelves(6.0, -6.0),
        "hiss": lambda: [AddGaussianSNR(min_snr_db=30.0, max_snr_db=30.0, p=1.0)],
        "quiet": lambda: [Gain(min_gain_db=-20.0, max_gain_db=-20.0, p=1.0)],
    }
    if condition not in chains:
        raise ValueError(f"unknown recording condition {condition!r}; known: {', '.join(CONDITIONS)}")
    with _seeded(seed):
        return Compose(chains[condition]())(samples=wave, sample_rate=sample_rate).astype(np.float32), sample_rate


class _seeded:
    """Seeds the global generators audiomentations draws from, and restores them afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self) -> None:
        self.saved = (random.getstate(), np.random.get_state())
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)

    def __exit__(self, *exc: object) -> None:
        random.setstate(self.saved[0])
        np.random.set_state(self.saved[1])


class InputAugmenter:
    """Random playing and recording conditions for a training input: each of vibrato, room, EQ, hiss and
    gain with probability `probability`, a soft attack (rises spread over 50-400 ms) with probability
    `soft_attack` and bow noise (8-24 dB under the spectrum) with probability `bow_noise`, in the order a
    recording chain applies them (player, room, microphone, noise, gain)."""

    def __init__(self, sample_rate: int, probability: float, *, soft_attack: float = 0.0, bow_noise: float = 0.0,
                 rooms: int = 12, seed: int = 0):
        from audiomentations import AddGaussianSNR, Gain, HighShelfFilter, LowShelfFilter

        for name, value in (("probability", probability), ("soft_attack", soft_attack), ("bow_noise", bow_noise)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        self.sample_rate = int(sample_rate)
        self.probability = float(probability)
        self.soft_attack = float(soft_attack)
        self.bow_noise = float(bow_noise)
        self.rooms = room_bank(self.sample_rate, rooms, seed) if probability > 0 else ()
        p = self.probability
        # EQ: one shelf at each end, each up or down by as much as 9 dB (a bright or dark microphone), the
        # treble down by as much as 15 dB (a dark piano, a muted string: upper partials below the whitening's
        # range, which the decoder has to write itself).
        self.eq = [LowShelfFilter(min_center_freq=150.0, max_center_freq=500.0, min_gain_db=-9.0, max_gain_db=9.0, p=p),
                   HighShelfFilter(min_center_freq=2000.0, max_center_freq=6000.0, min_gain_db=-15.0, max_gain_db=9.0,
                                   p=p)]
        self.noise = AddGaussianSNR(min_snr_db=20.0, max_snr_db=50.0, p=p)
        self.gain = Gain(min_gain_db=-25.0, max_gain_db=0.0, p=p)

    def __call__(self, wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A corrupted copy of `wave` (the argument is left untouched); `rng` picks which conditions apply
        and the room, and seeds audiomentations' own draws so a stream's seed fixes its augmentations."""
        if self.probability == 0.0 and self.soft_attack == 0.0 and self.bow_noise == 0.0:
            return wave
        out = np.array(wave, dtype=np.float32, copy=True)
        if rng.random() < self.probability:
            # a violinist's vibrato: 4.5-7 Hz, 10-50 cents, the level swinging with it by up to 3 dB
            out = vibrato(out, self.sample_rate, rate_hz=rng.uniform(4.5, 7.0), depth_cents=rng.uniform(10.0, 50.0),
                          tremolo_db=rng.uniform(0.0, 3.0), phase=rng.uniform(0.0, 2.0 * np.pi))
        # drawn only when asked for, so a stream without it keeps the draws (and the runs) it always had
        if self.soft_attack > 0.0 and rng.random() < self.soft_attack:
            out = soft_attack(out, self.sample_rate, rise_seconds=rng.uniform(0.05, 0.4))
        if self.bow_noise > 0.0 and rng.random() < self.bow_noise:
            out = bow_noise(out, self.sample_rate, level_db=rng.uniform(-24.0, -8.0), seed=int(rng.integers(2**31)))
        if self.rooms and rng.random() < self.probability:
            out = reverberate(out, self.rooms[int(rng.integers(len(self.rooms)))])
        with _seeded(int(rng.integers(2**31))):
            for transform in (*self.eq, self.noise, self.gain):
                out = transform(samples=out, sample_rate=self.sample_rate)
        return out.astype(np.float32, copy=False)
