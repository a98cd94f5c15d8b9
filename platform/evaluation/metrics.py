"""Objective metrics for timbre transfer, computed on mono float audio arrays (no model, no data set).

Two families, so our numbers sit beside the research's own:
- the suite of design.md: raw pitch accuracy (50 cents) and chroma cosine of the output against the
  input, note onset F1 (+-50 ms) against the score's notes, multi-resolution STFT distance to the
  paired target rendering (SC + log-magnitude, FFT 512/1024/2048, hop n/4, as auraloss computes it);
- the research's metrics as its evaluation scripts computed them (seed-model-spec.md section 6):
  per-frame onset F1 with no tolerance, piptrack pitch correlation, per-chroma-bin Pearson similarity.
Every function takes arrays at one sample rate `sr` and truncates to the shorter signal where it
compares two, because a transfer may differ from its input by a few samples.
"""

from __future__ import annotations

import librosa
import numpy as np

PITCH_TOLERANCE_CENTS = 50.0  # MIREX raw pitch accuracy: within a quarter tone counts as the same note
ONSET_TOLERANCE_S = 0.05  # mir_eval / Demerle et al. 2024 onset window
# F0 search range: C2 (cello's lowest C is 65 Hz) to C7 (above the violin's practical top)
FMIN_HZ, FMAX_HZ = 65.0, 2100.0
VOICED_DB_BELOW_PEAK = 35.0  # frames quieter than this below the loudest frame count as silence


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    return np.asarray(a[:n], dtype=np.float32), np.asarray(b[:n], dtype=np.float32)


def f0_track(audio: np.ndarray, sr: int, *, hop: int = 512, method: str = "yin") -> np.ndarray:
    """Frame-wise F0 in Hz, NaN where unvoiced. 'yin' (+ an energy gate) is ~20x cheaper than 'pyin'."""
    audio = np.asarray(audio, dtype=np.float32)
    frame = 2048
    if method == "pyin":
        f0, voiced, _ = librosa.pyin(audio, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sr, frame_length=frame, hop_length=hop)
        return np.where(voiced, f0, np.nan)
    if method != "yin":
        raise ValueError(f"unknown F0 method {method!r}; use 'yin' or 'pyin'")
    f0 = librosa.yin(audio, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=sr, frame_length=frame, hop_length=hop)
    rms = librosa.feature.rms(y=audio, frame_length=frame, hop_length=hop)[0][: len(f0)]
    db = 20 * np.log10(np.maximum(rms, 1e-8))
    voiced = db > db.max() - VOICED_DB_BELOW_PEAK
    return np.where(voiced[: len(f0)], f0, np.nan)


def pitch_accuracy(output: np.ndarray, reference: np.ndarray, sr: int, *, method: str = "yin") -> float:
    """Fraction of the reference's voiced frames where the output's F0 lies within 50 cents.

    Octave errors count as wrong: a transfer that moves the melody an octave has not kept the notes.
    """
    output, reference = _pair(output, reference)
    f_ref = f0_track(reference, sr, method=method)
    f_out = f0_track(output, sr, method=method)
    n = min(len(f_ref), len(f_out))
    f_ref, f_out = f_ref[:n], f_out[:n]
    voiced = np.isfinite(f_ref)
    if not voiced.any():
        return float("nan")
    with np.errstate(invalid="ignore"):
        cents = 1200 * np.abs(np.log2(f_out[voiced] / f_ref[voiced]))
    return float(np.mean(np.nan_to_num(cents, nan=np.inf) <= PITCH_TOLERANCE_CENTS))


def chroma_cosine(output: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Mean per-frame cosine between chroma vectors (same notes ~0.91, wrong notes ~0.36 on renders)."""
    output, reference = _pair(output, reference)
    c_out = librosa.feature.chroma_stft(y=output, sr=sr, n_fft=2048, hop_length=512)
    c_ref = librosa.feature.chroma_stft(y=reference, sr=sr, n_fft=2048, hop_length=512)
    num = (c_out * c_ref).sum(axis=0)
    den = np.linalg.norm(c_out, axis=0) * np.linalg.norm(c_ref, axis=0)
    active = den > 1e-8
    if not active.any():
        return float("nan")
    return float(np.mean(num[active] / den[active]))


def detect_onsets(audio: np.ndarray, sr: int) -> np.ndarray:
    """Onset times in seconds (spectral flux, backtracked to the preceding energy minimum)."""
    return librosa.onset.onset_detect(y=np.asarray(audio, dtype=np.float32), sr=sr, hop_length=256,
                                      backtrack=True, units="time")


def onset_f1(estimated: np.ndarray, reference: np.ndarray, *, tolerance: float = ONSET_TOLERANCE_S) -> float:
    """F-measure of onset times matched one-to-one within +-tolerance (mir_eval.onset.f_measure).

    Greedy matching in time order is a maximum matching here: with a symmetric window on a line, taking
    the earliest unmatched estimate that fits each reference never blocks a later pair.
    """
    est = np.sort(np.asarray(estimated, dtype=float))
    ref = np.sort(np.asarray(reference, dtype=float))
    if len(est) == 0 and len(ref) == 0:
        return 1.0
    if len(est) == 0 or len(ref) == 0:
        return 0.0
    matched, j = 0, 0
    for r in ref:
        while j < len(est) and est[j] < r - tolerance:
            j += 1
        if j < len(est) and est[j] <= r + tolerance:
            matched += 1
            j += 1
    precision, recall = matched / len(est), matched / len(ref)
    return 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)


def note_onsets(notes: list[dict], *, merge_within: float = 0.03) -> np.ndarray:
    """Distinct onset times of a note list (chord notes struck together count once)."""
    times = np.sort(np.array([float(n["onset"]) for n in notes], dtype=float))
    if len(times) == 0:
        return times
    keep = np.concatenate([[True], np.diff(times) > merge_within])
    return times[keep]


def note_f1(estimated: list[dict], reference: list[dict], *, tolerance: float = ONSET_TOLERANCE_S) -> float:
    """Note-level F-measure: notes matched one-to-one on pitch (within 50 cents) and onset (within
    +-tolerance), offsets ignored (mir_eval.transcription, the MIREX note-onset measure). Every voice of a
    chord is a note of its own, so it counts what one F0 track cannot; 1.0 for the score against itself."""
    import mir_eval

    if not reference:
        return float("nan")
    if not estimated:
        return 0.0

    def arrays(notes: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        onsets = np.array([float(n["onset"]) for n in notes])
        # offsets are not scored; mir_eval still wants positive durations
        offsets = np.maximum(np.array([float(n["offset"]) for n in notes]), onsets + 1e-3)
        return np.stack([onsets, offsets], axis=1), 440.0 * 2.0 ** ((np.array([n["pitch"] for n in notes]) - 69) / 12)

    (ref_iv, ref_hz), (est_iv, est_hz) = arrays(reference), arrays(estimated)
    _, _, f, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_iv, ref_hz, est_iv, est_hz, onset_tolerance=tolerance, offset_ratio=None)
    return float(f)


def mr_stft_distance(output: np.ndarray, target: np.ndarray, *, ffts: tuple[int, ...] = (512, 1024, 2048)) -> float:
    """Multi-resolution STFT distance: mean over resolutions of spectral convergence + mean |log-mag|."""
    output, target = _pair(output, target)
    total = 0.0
    for n_fft in ffts:
        m_out = np.abs(librosa.stft(output, n_fft=n_fft, hop_length=n_fft // 4, window="hann"))
        m_tgt = np.abs(librosa.stft(target, n_fft=n_fft, hop_length=n_fft // 4, window="hann"))
        sc = np.linalg.norm(m_tgt - m_out) / max(np.linalg.norm(m_tgt), 1e-8)
        log_mag = np.mean(np.abs(np.log(np.maximum(m_tgt, 1e-7)) - np.log(np.maximum(m_out, 1e-7))))
        total += sc + log_mag
    return float(total / len(ffts))


# ---------------------------------------------------------------------------------------------
# The research's metrics, as its evaluation scripts computed them (for side-by-side comparison)


def research_onset_f1(output: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Per-frame binary onset vectors compared with F1, exact frame match (evaluation_reconstruction.py)."""
    from sklearn.metrics import f1_score

    output, reference = _pair(output, reference)
    frames_out = librosa.onset.onset_detect(y=output, sr=sr)
    frames_ref = librosa.onset.onset_detect(y=reference, sr=sr)
    if len(frames_out) == 0 and len(frames_ref) == 0:
        return 1.0
    if len(frames_out) == 0 or len(frames_ref) == 0:
        return 0.0
    # The research sized the vectors with hop 256 while onsets use hop 512; the extra zeros do not
    # change a binary F1, so the frame count of the signal at hop 512 suffices.
    n = 1 + len(reference) // 512
    v_out = np.zeros(n, dtype=int)
    v_ref = np.zeros(n, dtype=int)
    v_out[frames_out[frames_out < n]] = 1
    v_ref[frames_ref[frames_ref < n]] = 1
    return float(f1_score(v_ref, v_out, zero_division=0.0))


def research_pitch_correlation(output: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Pearson r of the per-frame mean of librosa.piptrack's pitch matrix (NaN -> 0)."""
    output, reference = _pair(output, reference)
    p_out, _ = librosa.piptrack(y=output, sr=sr)
    p_ref, _ = librosa.piptrack(y=reference, sr=sr)
    a, b = p_out.mean(axis=0), p_ref.mean(axis=0)
    n = min(len(a), len(b))
    if n < 2 or np.std(a[:n]) == 0 or np.std(b[:n]) == 0:
        return 0.0
    r = np.corrcoef(a[:n], b[:n])[0, 1]
    return float(np.nan_to_num(r))


def research_chroma_similarity(output: np.ndarray, reference: np.ndarray, sr: int) -> float:
    """Mean over the 12 chroma bins of the Pearson r across time (chroma_stft, n_fft 1024, hop 256)."""
    output, reference = _pair(output, reference)
    c_out = librosa.feature.chroma_stft(y=output, sr=sr, n_fft=1024, hop_length=256)
    c_ref = librosa.feature.chroma_stft(y=reference, sr=sr, n_fft=1024, hop_length=256)
    rs = []
    for k in range(12):
        a, b = c_out[k], c_ref[k]
        if np.std(a) == 0 or np.std(b) == 0:
            rs.append(0.0)
        else:
            rs.append(float(np.nan_to_num(np.corrcoef(a, b)[0, 1])))
    return float(np.mean(rs))


HARMONIC_FLOOR_BINS = 31  # ~330 Hz of a 2048-point FFT at 22,050 Hz: wider than a partial, narrower than a formant


def _active_frames(spec: np.ndarray) -> np.ndarray:
    energy = np.sqrt((spec**2).mean(axis=0))
    db = 20 * np.log10(np.maximum(energy, 1e-10))
    return db > db.max() - VOICED_DB_BELOW_PEAK


def partial_prominence(audio: np.ndarray, sr: int) -> float:
    """How far, in dB, the strongest partials stand above the spectrum's local floor (a median over
    ~330 Hz), averaged over sounding frames: tens of dB for notes, a few dB for smeared or noisy audio."""
    from scipy.ndimage import median_filter

    spec = np.abs(librosa.stft(np.asarray(audio, dtype=np.float32), n_fft=2048, hop_length=512))
    active = _active_frames(spec)
    if not active.any():
        return float("nan")
    db = 20 * np.log10(spec[:, active] + 1e-6)
    prominence = np.clip(db - median_filter(db, size=(HARMONIC_FLOOR_BINS, 1), mode="nearest"), 0, None)
    top = np.sort(prominence, axis=0)[-max(1, prominence.shape[0] // 20):]  # the top 5 % of bins: partials
    return float(top.mean())


def onset_contrast(audio: np.ndarray, sr: int) -> float:
    """How much note onsets stand out of the steady level: the spread (std over mean) of the onset-strength
    envelope. Renders of notes give 1.5-3; audio smeared in time or noise with the same spectrum, 0.2-0.5
    (both fluctuate everywhere a little, and nowhere much)."""
    strength = librosa.onset.onset_strength(y=np.asarray(audio, dtype=np.float32), sr=sr, hop_length=512)
    mean = float(strength.mean())
    return float(strength.std() / mean) if mean > 0 else float("nan")


def _ratio(value: float, reference: float) -> float:
    return float(value / reference) if np.isfinite(value) and np.isfinite(reference) and reference > 0 else float("nan")


# name -> (higher is better?, short description); the report and the JSON use these names
METRICS: dict[str, tuple[bool, str]] = {
    "pitch_acc": (True, "raw pitch accuracy (50 c) of the output vs the input's F0"),
    "chroma_cos": (True, "chroma cosine, output vs input"),
    "onset_f1": (True, "note onset F1 (+-50 ms) vs the score's notes"),
    "note_f1": (True, "note F1 (pitch and onset +-50 ms) of Basic Pitch's notes of the output vs the score's: "
                      "every voice of a chord counts"),
    "mr_stft": (False, "multi-resolution STFT distance to the paired target rendering"),
    "p_target": (True, "P(target instrument) from the timbre judge (held-out SoundFonts, rejects degraded audio)"),
    "harmonicity": (True, "partial prominence over the paired target's (1 = partials as sharp as the target's)"),
    "sharpness": (True, "onset contrast over the paired target's (1 = onsets as sharp as the target's; a smear ~0.2)"),
    "research_onset_f1": (True, "research: per-frame onset F1 vs input (no tolerance)"),
    "research_pitch_corr": (True, "research: piptrack pitch correlation vs input"),
    "research_chroma_sim": (True, "research: per-bin chroma Pearson vs input"),
}


def content_and_fidelity(output: np.ndarray, source: np.ndarray, target: np.ndarray | None, sr: int,
                         notes: list[dict] | None = None, *, f0_method: str = "yin") -> dict[str, float]:
    """All audio-only metrics of METRICS except p_target, for one output clip.

    `source` is the transfer's input (content reference), `target` the paired rendering of the same
    notes on the target instrument (None for an instrument known from recordings alone: the metrics
    against it are NaN); `notes` gives the onsets (when None, the input's detected onsets).
    """
    ref_onsets = note_onsets(notes) if notes else detect_onsets(source, sr)
    nan = float("nan")
    return {
        "pitch_acc": pitch_accuracy(output, source, sr, method=f0_method),
        "chroma_cos": chroma_cosine(output, source, sr),
        "onset_f1": onset_f1(detect_onsets(output, sr), ref_onsets),
        "mr_stft": nan if target is None else mr_stft_distance(output, target),
        "harmonicity": nan if target is None else _ratio(partial_prominence(output, sr), partial_prominence(target, sr)),
        "sharpness": nan if target is None else _ratio(onset_contrast(output, sr), onset_contrast(target, sr)),
        "research_onset_f1": research_onset_f1(output, source, sr),
        "research_pitch_corr": research_pitch_correlation(output, source, sr),
        "research_chroma_sim": research_chroma_similarity(output, source, sr),
    }
