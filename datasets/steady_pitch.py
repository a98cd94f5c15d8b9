"""Steady pitch: a player's vibrato taken out of a clip before it is transferred.

The spectral filter decoders keep the input's partials where they are: that is how the notes survive
the transfer, and it is also how a violinist's vibrato reaches a piano's output, whose partials then
wobble as no piano's do (P(piano) 0.94 from the reference violin, 0.65 from the same violin with
+-30 cents of vibrato). A vibrato is a swing of the pitch around the note's own, a few times a second;
a median over a third of a second follows the notes (a median keeps a step where the melody moves)
and not the swing, so reading the clip at the rate that cancels the difference (the inverse of
`recording_conditions.vibrato`) leaves the notes and takes the swing out.

Only what looks like a swing is touched: frames whose pitch is more than `MAX_SWING_CENTS` from the
median (a pitch tracker's octave jump, a chord, a slide) and frames too quiet to be tracked are read at
the normal rate. Pitch comes from librosa's YIN (ISC licence).
"""

from __future__ import annotations

import numpy as np

MAX_SWING_CENTS = 60.0  # wider than a violinist's vibrato (20-50 cents), narrower than a semitone step
MEDIAN_SECONDS = 0.35  # longer than a cycle of the slowest vibrato (4.5 Hz: 0.22 s), shorter than most notes
QUIET_DB = 35.0  # frames this far below the clip's loudest are left alone
HOP = 256


def pitch_swing(wave: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame times in samples, the pitch's swing around the notes' in semitones; 0 where it is not a swing)."""
    import librosa
    from scipy.ndimage import median_filter

    # a short frame (46 ms at 22 kHz): a long one averages the swing it is meant to follow
    f0 = librosa.yin(wave, fmin=65.0, fmax=min(2000.0, sample_rate / 4), sr=sample_rate, frame_length=1024,
                     hop_length=HOP)
    semitones = 12.0 * np.log2(np.maximum(f0, 1e-3) / 440.0)
    size = max(3, int(round(MEDIAN_SECONDS * sample_rate / HOP)) | 1)
    swing = semitones - median_filter(semitones, size=size, mode="nearest")
    level = librosa.amplitude_to_db(librosa.feature.rms(y=wave, frame_length=1024, hop_length=HOP)[0], ref=np.max)
    keep = (np.abs(swing) * 100.0 <= MAX_SWING_CENTS) & (level[: len(swing)] > -QUIET_DB)
    swing = np.where(keep, swing, 0.0)
    swing = np.convolve(swing, np.ones(3) / 3, mode="same")  # no step in the rate from one frame to the next
    return np.arange(len(swing)) * HOP, swing


def steady_pitch(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`wave` (mono float) with its vibrato taken out, as long as it was; a steady clip comes back as it was."""
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) < 4096:
        return wave
    frames, swing = pitch_swing(wave, sample_rate)
    if not np.any(swing):
        return wave
    # Reading at rate r multiplies every frequency by r: r = 2**(-swing/12) puts each moment back on its note.
    rate = np.interp(np.arange(len(wave)), frames, 2.0 ** (-swing / 12.0))
    read = np.concatenate([[0.0], np.cumsum(rate[:-1])])
    return np.interp(np.clip(read, 0, len(wave) - 1), np.arange(len(wave)), wave).astype(np.float32)
