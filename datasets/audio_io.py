"""Audio files in and out, for every caller: decode (paths or bytes), mono, resample, loudness, silence,
FLAC encode, and the two helpers inference/ and evaluation/ share: reading a clip to transfer
(`read_input_clip`) and writing an output file atomically (`write_audio_atomic`).

Every decode failure becomes an `AudioFileError` (a DataError) naming the file and one of the problem
kinds in `PROBLEM_KINDS`, so ingest can record why a file was skipped and the loader can say which
shard member is bad. soundfile (libsndfile) does all decoding: torchaudio's load/save need torchcodec
from 2.9 on and are slower on short clips.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from audiostyle.platform.core.atomic_files import atomic_write
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.core.output_paths import make_output_folder

# Extensions libsndfile 1.1+ decodes. m4a/aac/wma are absent on purpose: soundfile cannot read them.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")
PROBLEM_KINDS = ("unreadable", "corrupt", "empty", "silent", "too short", "wrong format")

# A file whose loudest ~93 ms frame stays under -60 dBFS is silence or hiss, not an instrument.
SILENT_PEAK_DB = -60.0
# Frames more than 40 dB below the loudest frame count as silence (librosa.effects.split's default 60
# keeps reverb tails and room noise; 40 keeps note decays but drops pauses between takes).
SILENCE_BELOW_PEAK_DB = 40.0
# Pauses shorter than this are musical rests and stay inside a segment; longer ones split the audio.
MIN_SILENCE_SECONDS = 0.5
# Active audio is scaled to this RMS level, then pulled down if its peak would pass PEAK_LIMIT_DB.
TARGET_RMS_DB = -20.0
PEAK_LIMIT_DB = -1.0
# A clip to transfer is refused below this peak (-80 dBFS): it holds no notes. Far below SILENT_PEAK_DB,
# because a quiet recording is still worth transferring, whereas ingest wants training material.
SILENT_INPUT_PEAK = 1e-4
FRAME = 2048  # ~93 ms at 22.05 kHz: long enough to average over a vibrato cycle
HOP = 512


class AudioFileError(DataError):
    """An audio file that cannot be used; `kind` is one of PROBLEM_KINDS, `file` names it."""

    def __init__(self, file: str | Path, kind: str, detail: str):
        self.file = str(file)
        self.kind = kind
        self.detail = detail
        super().__init__(f"{file}: {kind}: {detail}")

    @property
    def reason(self) -> str:
        return f"{self.kind}: {self.detail}"


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file to (mono float32 waveform, sample rate); raises AudioFileError."""
    path = Path(path)
    if path.suffix.lower() not in AUDIO_EXTENSIONS:
        raise AudioFileError(path, "wrong format",
                             f"'{path.suffix or '(no extension)'}' is not an audio format soundfile reads "
                             f"(use one of {', '.join(AUDIO_EXTENSIONS)}; convert others with ffmpeg)")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise AudioFileError(path, "unreadable", exc.strerror or str(exc)) from exc
    return decode_bytes(data, name=str(path))


def decode_bytes(data: bytes, *, name: str) -> tuple[np.ndarray, int]:
    """Decode encoded audio bytes to (mono float32 waveform, sample rate); `name` goes in errors."""
    if not data:
        raise AudioFileError(name, "empty", "the file has 0 bytes")
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFileError(name, "corrupt", f"soundfile cannot decode it ({_libsndfile_message(exc)})") from exc
    if wave.shape[0] == 0:
        raise AudioFileError(name, "empty", "the file decodes to 0 samples")
    mono = to_mono(wave)
    if not np.all(np.isfinite(mono)):
        raise AudioFileError(name, "corrupt", "the decoded audio holds NaN or infinite samples")
    return mono, int(sr)


def read_crop(data: bytes, num_samples: int, rng: np.random.Generator, *, name: str) -> np.ndarray:
    """Decode only a random `num_samples` window of encoded bytes (zero-padded when shorter).

    Seeking inside the FLAC means a 4 s crop of a 10 s segment decodes 4 s, not 10.
    """
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            start = int(rng.integers(0, max(f.frames - num_samples, 0) + 1))
            return _read_from(f, start, num_samples)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFileError(name, "corrupt", f"soundfile cannot decode it ({_libsndfile_message(exc)})") from exc


def read_window(data: bytes, start: int, num_samples: int, *, name: str) -> np.ndarray:
    """Decode `num_samples` samples from sample `start` on (zero-padded past the end): the same window
    of every instrument of a paired passage."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            return _read_from(f, min(max(start, 0), f.frames), num_samples)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioFileError(name, "corrupt", f"soundfile cannot decode it ({_libsndfile_message(exc)})") from exc


def _read_from(f: sf.SoundFile, start: int, num_samples: int) -> np.ndarray:
    if start:
        f.seek(start)
    wave = f.read(min(num_samples, f.frames - start), dtype="float32")  # 1-D for mono: no channel mean
    mono = to_mono(wave)
    if mono.shape[0] < num_samples:
        mono = np.pad(mono, (0, num_samples - mono.shape[0]))
    return mono


def _libsndfile_message(exc: Exception) -> str:
    # str(exc) names the BytesIO object by memory address, which would make manifests differ run to run
    return getattr(exc, "error_string", None) or str(exc)


def to_mono(wave: np.ndarray) -> np.ndarray:
    """[frames, channels] or [frames] -> [frames] float32, averaging channels."""
    if wave.ndim == 1:
        return wave.astype(np.float32, copy=False)
    return wave.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc); a no-op when the rates match."""
    if orig_sr == target_sr:
        return wave
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig_sr, target_sr)
    return out.numpy().astype(np.float32, copy=False)


def frame_rms_db(wave: np.ndarray, frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    """RMS level in dBFS of each frame (a clip shorter than one frame is one frame)."""
    if wave.shape[0] < frame:
        wave = np.pad(wave, (0, frame - wave.shape[0]))
    n = 1 + (wave.shape[0] - frame) // hop
    windows = np.lib.stride_tricks.as_strided(wave, (n, frame), (wave.strides[0] * hop, wave.strides[0]))
    power = np.einsum("ij,ij->i", windows, windows, dtype=np.float64) / frame
    return (10.0 * np.log10(np.maximum(power, 1e-20))).astype(np.float32)


def rms_db(wave: np.ndarray) -> float:
    """RMS level of a whole clip in dBFS."""
    power = float(np.mean(np.square(wave, dtype=np.float64))) if wave.size else 0.0
    return 10.0 * float(np.log10(max(power, 1e-20)))


def active_regions(wave: np.ndarray, sr: int, *, name: str = "audio") -> list[tuple[int, int]]:
    """Sample ranges [start, end) of non-silent audio, split at pauses longer than MIN_SILENCE_SECONDS.

    Raises AudioFileError(kind="silent") when the loudest frame is under SILENT_PEAK_DB.
    """
    levels = frame_rms_db(wave)
    loudest = float(levels.max())
    if loudest < SILENT_PEAK_DB:
        raise AudioFileError(name, "silent", f"the loudest frame is {loudest:.1f} dBFS "
                                             f"(below {SILENT_PEAK_DB:.0f} dBFS everywhere)")
    active = levels > loudest - SILENCE_BELOW_PEAK_DB
    min_gap = max(1, int(round(MIN_SILENCE_SECONDS * sr / HOP)))
    regions: list[tuple[int, int]] = []
    start = None
    gap = 0
    last_active = 0
    for i, is_active in enumerate(active):
        if is_active:
            if start is None:
                start = i
            last_active = i
            gap = 0
        elif start is not None:
            gap += 1
            if gap >= min_gap:
                regions.append((start, last_active))
                start = None
    if start is not None:
        regions.append((start, last_active))
    n = wave.shape[0]
    return [(min(a * HOP, n), min(b * HOP + FRAME, n)) for a, b in regions]


def normalize_loudness(wave: np.ndarray, regions: list[tuple[int, int]]) -> tuple[np.ndarray, float]:
    """Scale so the active regions sit at TARGET_RMS_DB without peaks over PEAK_LIMIT_DB; returns gain dB."""
    active = np.concatenate([wave[a:b] for a, b in regions]) if regions else wave
    gain_db = TARGET_RMS_DB - rms_db(active)
    peak = float(np.max(np.abs(active))) if active.size else 0.0
    if peak > 0:
        peak_db = 20.0 * np.log10(peak)
        gain_db = min(gain_db, PEAK_LIMIT_DB - peak_db)
    return (wave * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32), float(gain_db)


def encode_flac(wave: np.ndarray, sr: int, subtype: str = "PCM_16") -> bytes:
    """Mono float waveform -> FLAC bytes (deterministic: same samples, same bytes)."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), sr, format="FLAC", subtype=subtype)
    return buf.getvalue()


def to_rate_float32(audio: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
    """`resample` with float32 in and out, whatever dtype the caller's array has."""
    return np.asarray(resample(np.asarray(audio, dtype=np.float32), sr, sample_rate), dtype=np.float32)


def read_input_clip(path: str | Path, sample_rate: int) -> np.ndarray:
    """A file to transfer as mono float32 at `sample_rate`; DataError naming the file if unusable or silent.

    Unlike `read_audio` (the file as it is), this refuses silence and resamples."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such audio file")
    audio, sr = read_audio(path)  # AudioFileError (a DataError) names the file and the problem
    peak = float(np.max(np.abs(audio)))
    if peak < SILENT_INPUT_PEAK:
        raise DataError(f"{path}: silent: the audio is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS); "
                        "there are no notes to transfer")
    return to_rate_float32(audio, sr, sample_rate)


def write_audio_atomic(path: Path, audio: np.ndarray, sample_rate: int, *, option: str = "-o/--out") -> Path:
    """Write 16-bit WAV/FLAC (by suffix) under a temporary name in the same folder, then rename; `option`
    is the command-line option that chose the folder, for the message when it cannot be made."""
    make_output_folder(path.parent, option=option)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0.999:  # a decoder can overshoot; scale rather than clip, which would add distortion
        audio = audio * (0.99 / peak)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    try:
        return atomic_write(path, lambda tmp: sf.write(tmp, audio, sample_rate, subtype="PCM_16", format=fmt))
    except (OSError, sf.LibsndfileError) as exc:  # a full disk, a folder made read-only mid-run
        raise DataError(f"{path}: cannot be written ({exc}); free space or choose another {option} folder") from None
