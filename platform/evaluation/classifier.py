"""Which instrument does a clip sound like: MFCC-statistics logistic regression (scikit-learn).

The evaluation's timbre metric is P(target instrument) from this classifier. Trained on renders from
SoundFonts other than the one under test (when the data has them), it measures instrument-ness rather
than closeness to one sample set: on the study's renders it gave P(violin) 0.98 on unseen violin
SoundFonts and 0.01-0.2 on pianos (reference/instrument-audio-and-evaluation.md section 6).
The fitted model lives in memory only (nothing is pickled to disk).
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np

from audiostyle.platform.core.errors import DataError

WINDOW_SECONDS = 2.0  # a few notes: enough for stable statistics, short enough to give many examples
N_MFCC = 20


def timbre_features(audio: np.ndarray, sr: int) -> np.ndarray:
    """Mean and std over frames of 20 MFCCs and three spectral-shape descriptors (46 numbers)."""
    audio = np.asarray(audio, dtype=np.float32)
    mfcc = librosa.feature.mfcc(y=audio, sr=sr, n_mfcc=N_MFCC, n_fft=2048, hop_length=512)
    spec = np.abs(librosa.stft(audio, n_fft=2048, hop_length=512))
    shape = np.stack([
        np.log(librosa.feature.spectral_centroid(S=spec, sr=sr)[0] + 1.0),
        np.log(librosa.feature.spectral_rolloff(S=spec, sr=sr)[0] + 1.0),
        librosa.feature.spectral_flatness(S=spec)[0],
    ])
    # MFCC statistics over silent frames describe the silence, not the instrument
    rms = librosa.feature.rms(S=spec, frame_length=2048)[0]
    active = rms > rms.max() * 10 ** (-40 / 20) if rms.max() > 0 else np.ones_like(rms, dtype=bool)
    n = min(mfcc.shape[1], shape.shape[1], len(active))
    feats = np.concatenate([mfcc[:, :n], shape[:, :n]])[:, active[:n]]
    if feats.shape[1] == 0:
        feats = np.concatenate([mfcc[:, :n], shape[:, :n]])
    return np.concatenate([feats.mean(axis=1), feats.std(axis=1)])


def windows(audio: np.ndarray, sr: int, seconds: float = WINDOW_SECONDS) -> list[np.ndarray]:
    """Non-overlapping windows of `seconds` (the tail shorter than half a window is dropped)."""
    size = int(seconds * sr)
    out = [audio[i:i + size] for i in range(0, max(len(audio) - size // 2, 1), size)]
    return [w for w in out if len(w) >= size // 2 and np.max(np.abs(w)) > 1e-4]


class TimbreClassifier:
    """Logistic regression on standardized timbre features; classes are instrument names."""

    def __init__(self, instruments: Sequence[str], *, c: float = 1.0, seed: int = 0):
        self.instruments = list(instruments)
        self.c = c
        self.seed = seed
        self.pipeline = None
        self.training_windows: dict[str, int] = {}
        self.sources: list[str] = []

    def fit(self, clips: Sequence[np.ndarray], labels: Sequence[str], sr: int) -> TimbreClassifier:
        """Fit on clips (cut into WINDOW_SECONDS windows) labelled with instrument names."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x, y = [], []
        for clip, label in zip(clips, labels):
            if label not in self.instruments:
                raise DataError(f"timbre classifier: label {label!r} is not one of {self.instruments}")
            for w in windows(clip, sr):
                x.append(timbre_features(w, sr))
                y.append(self.instruments.index(label))
        present = sorted(set(y))
        self.training_windows = {self.instruments[k]: y.count(k) for k in present}
        if len(present) < 2:
            raise DataError(f"timbre classifier needs clips of at least two instruments, got {self.training_windows}")
        self.pipeline = make_pipeline(StandardScaler(),
                                      LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed))
        self.pipeline.fit(np.stack(x), np.array(y))
        return self

    def probabilities(self, audio: np.ndarray, sr: int) -> dict[str, float]:
        """P(instrument) for a clip, averaged over its windows (every class of `instruments` is present)."""
        if self.pipeline is None:
            raise RuntimeError("TimbreClassifier.probabilities called before fit")
        ws = windows(np.asarray(audio, dtype=np.float32), sr) or [np.asarray(audio, dtype=np.float32)]
        proba = self.pipeline.predict_proba(np.stack([timbre_features(w, sr) for w in ws])).mean(axis=0)
        out = dict.fromkeys(self.instruments, 0.0)
        for k, cls in enumerate(self.pipeline.classes_):
            out[self.instruments[int(cls)]] = float(proba[k])
        return out

    def accuracy(self, clips: Sequence[np.ndarray], labels: Sequence[str], sr: int) -> float:
        """Fraction of clips whose most probable instrument is the label (a held-out sanity check)."""
        hits = [max(p := self.probabilities(c, sr), key=p.get) == lab for c, lab in zip(clips, labels)]
        return float(np.mean(hits)) if hits else float("nan")
