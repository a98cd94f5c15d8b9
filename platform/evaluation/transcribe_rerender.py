"""The baseline a user would reach for: transcribe the input to notes, play the notes on the target instrument.

Transcription is Spotify's Basic Pitch: its ONNX model (`nmp.onnx`, 230 KB) ships inside the basic-pitch
wheel and runs on onnxruntime. Its metadata pins TensorFlow (and resampy<0.4.3), which the ONNX model does
not need, hence `pip install --no-deps basic-pitch` in the set-up command, after audiostyle so that pip's
resolver never checks those pins. Re-rendering uses the demo's own renderer
with the training SoundFont and the target instrument's General MIDI program, the very samples the
paired targets were rendered with, so the baseline's distance to the target is as small as a
transcription allows. It exists for the demo instruments only: one added from recordings has no preset.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from audiostyle.platform.core.errors import DataError

SYSTEM = "transcribe_rerender"
DESCRIPTION = "transcribe (Basic Pitch) and re-render the notes with the target instrument's SoundFont preset"
# Thresholds chosen on the demo's validation pieces (see README, Transfer quality): the library's defaults
# (0.5, 0.3, 127 ms) split bowed notes into fragments; longer minimum notes drop a fiddle tune's quick ones.
ONSET_THRESHOLD, FRAME_THRESHOLD, MINIMUM_NOTE_MS = 0.6, 0.3, 100.0


def unavailable_reason() -> str | None:
    """None when Basic Pitch and onnxruntime import, else what to install."""
    try:
        _model()
    except ImportError as exc:
        return (f"Basic Pitch is not installed ({exc}); `python3 -m pip install --no-deps basic-pitch==0.4.0` "
                "(onnxruntime, mir_eval and resampy come with audiostyle)")
    return None


_MODEL = None


def _model():
    """The ONNX Basic Pitch model, loaded once; basic_pitch's import-time notices about TensorFlow,
    CoreML and TFLite (none of which the ONNX model needs) are silenced."""
    global _MODEL
    if _MODEL is None:
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            from basic_pitch import ICASSP_2022_MODEL_PATH
            from basic_pitch.inference import Model
        finally:
            logging.disable(previous)
        _MODEL = Model(Path(ICASSP_2022_MODEL_PATH).parent / "nmp.onnx")
    return _MODEL


def transcribe(audio: np.ndarray, sr: int) -> list[dict]:
    """Notes {onset, offset, pitch, velocity} (seconds, MIDI) that Basic Pitch hears in mono `audio`, chords
    included (it is polyphonic): the baseline's first half, and what the note F-measure reads."""
    import soundfile as sf
    from basic_pitch.inference import predict

    with tempfile.TemporaryDirectory(prefix="audiostyle-transcribe-") as tmp:
        path = Path(tmp) / "input.wav"
        sf.write(path, np.asarray(audio, dtype=np.float32), sr, subtype="FLOAT")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Predicting MIDI for ..." per file
            _, _, events = predict(path, _model(), onset_threshold=ONSET_THRESHOLD,
                                   frame_threshold=FRAME_THRESHOLD, minimum_note_length=MINIMUM_NOTE_MS)
    notes = [{"onset": float(start), "offset": float(end), "pitch": int(pitch),
              "velocity": int(np.clip(round(40 + 80 * float(amplitude)), 1, 127))}
             for start, end, pitch, amplitude, *_ in events]
    return sorted(notes, key=lambda n: (n["onset"], n["pitch"]))


class TranscribeRerender:
    """`transfer_array(audio, sr, to=instrument)` like a Transferer, by transcription and re-rendering."""

    def __init__(self, sample_rate: int):
        from audiostyle.datasets.soundfonts import TRAINING_SOUNDFONT, NoteRenderer, find_soundfonts

        reason = unavailable_reason()
        if reason:
            raise DataError(reason)
        self.sample_rate = int(sample_rate)
        soundfont = next(sf for sf in find_soundfonts([]) if sf.name == TRAINING_SOUNDFONT)
        self.renderer = NoteRenderer(soundfont, self.sample_rate)

    @staticmethod
    def supports(instrument: str) -> bool:
        from audiostyle.datasets.soundfonts import INSTRUMENTS

        return instrument in INSTRUMENTS

    def transfer_array(self, audio: np.ndarray, sr: int, to: str, *, notes: list[dict] | None = None) -> np.ndarray:
        """The input's transcribed notes (`notes`, when the caller has them already) played by `to`, at
        `self.sample_rate`, as long as the input, at the loudness instrument datasets are normalized to (as
        the paired targets are)."""
        from audiostyle.datasets import audio_io
        from audiostyle.datasets.soundfonts import instrument_spec

        notes = transcribe(audio, sr) if notes is None else notes
        length = int(round(len(audio) * self.sample_rate / sr))
        if not notes:
            return np.zeros(length, dtype=np.float32)
        out = self.renderer.render(instrument_spec(to).program, notes, tail_seconds=0.0)
        out = np.pad(out, (0, max(0, length - len(out))))[:length].astype(np.float32)
        try:
            out, _ = audio_io.normalize_loudness(out, audio_io.active_regions(out, self.sample_rate))
        except audio_io.AudioFileError:  # silent: nothing to scale
            pass
        return out
