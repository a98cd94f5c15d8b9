"""Timbre transfer of audio arrays and files of any length with an exported bundle.

Long audio is cut into chunks of about the length the model was trained on, transferred in batches,
and put back together by overlap-add with a Hann (sin^2/cos^2) crossfade. The two fades sum to exactly
one, so where neighbouring chunks agree the seam is invisible, and where they differ the output moves
from one to the other smoothly instead of jumping. Files are read with soundfile (wav, flac, ogg, mp3),
mixed to mono, resampled to the model rate, checked (unreadable, empty, silent -> DataError naming the
file) before anything is written, and each output is written under a temporary name then renamed (the
file helpers live in datasets/audio_io.py, which evaluation/ uses too).
Outputs never collide: a file found in an input folder keeps its path relative to that folder, and two
inputs that would still write one output (song.wav and song.flac, or two folders holding the same
names) stop the run before anything is written, as does an output folder that cannot be written.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audiostyle.datasets import audio_io
from audiostyle.datasets.audio_io import read_input_clip, to_rate_float32, write_audio_atomic
from audiostyle.datasets.steady_pitch import steady_pitch
from audiostyle.platform.core.errors import ConfigError, DataError, did_you_mean
from audiostyle.platform.core.output_paths import check_output_folder

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel
    from audiostyle.platform.config.schema import ExperimentConfig

LoadedBundle = tuple["TimbreTransferModel", "ExperimentConfig", dict[str, Any]]  # what load_bundle returns

AUDIO_EXTENSIONS = audio_io.AUDIO_EXTENSIONS  # wav, flac, ogg, mp3 and the other formats libsndfile reads
DEFAULT_OVERLAP_SECONDS = 0.5  # several STFT frames of crossfade; long enough to hide chunk-edge artefacts
MIN_CHUNK_SECONDS = 0.25  # a few dozen frames: shorter chunks are mostly crossfade and decoder warm-up


def hann_fades(overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) of length `overlap` with fade_in + fade_out == 1 sample by sample."""
    t = (np.arange(overlap) + 0.5) / max(overlap, 1)
    fade_in = np.sin(0.5 * np.pi * t) ** 2
    return fade_in.astype(np.float32), (1.0 - fade_in).astype(np.float32)


def overlap_add(audio: np.ndarray, process: Callable[[np.ndarray], np.ndarray], *, chunk: int, overlap: int,
                batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Apply `process` ([B, chunk] -> [B, chunk]) to overlapping chunks of `audio` and crossfade them.

    The last chunk is zero-padded; the output has the input's length.
    """
    if overlap < 0 or overlap >= chunk:
        raise ValueError(f"overlap ({overlap} samples) must be >= 0 and shorter than the chunk ({chunk})")
    audio = np.asarray(audio, dtype=np.float32)
    n = len(audio)
    hop = chunk - overlap
    n_chunks = max(1, math.ceil(max(n - overlap, 1) / hop))
    padded = np.zeros((n_chunks - 1) * hop + chunk, dtype=np.float32)
    padded[:n] = audio
    starts = [i * hop for i in range(n_chunks)]
    fade_in, fade_out = hann_fades(overlap)
    out = np.zeros_like(padded)
    batches = range(0, n_chunks, batch_size)
    if progress and n_chunks > batch_size:
        from tqdm import tqdm

        batches = tqdm(batches, desc="transfer", unit="batch", leave=False)
    for b0 in batches:
        idx = list(range(b0, min(b0 + batch_size, n_chunks)))
        result = np.asarray(process(np.stack([padded[starts[i]:starts[i] + chunk] for i in idx])), dtype=np.float32)
        if result.shape != (len(idx), chunk):
            raise RuntimeError(f"chunk processor returned shape {result.shape}, expected {(len(idx), chunk)}")
        for row, i in zip(result, idx):
            if overlap:
                if i > 0:
                    row[:overlap] *= fade_in
                if i < n_chunks - 1:
                    row[-overlap:] *= fade_out
            out[starts[i]:starts[i] + chunk] += row
    return out[:n]


def plan_outputs(inputs: Iterable[str | Path], out_dir: str | Path, to: str, suffix: str = ".wav"
                 ) -> list[tuple[Path, Path]]:
    """(input file, output path) for each audio file the inputs name, in a stable order.

    A file given directly is written as OUT/<stem>.<to><suffix>; a file found in a folder (searched
    recursively) keeps its path relative to that folder. A file named twice is transferred once. DataError,
    before anything is written, when two inputs would write one output or an output would overwrite an input.
    """
    out_dir = Path(out_dir)
    pairs: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                raise DataError(f"{p}: the folder holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            pairs += [(f, out_dir / f.relative_to(p).parent / f"{f.stem}.{to}{suffix}") for f in found]
        elif p.is_file():
            pairs.append((p, out_dir / f"{p.stem}.{to}{suffix}"))
        else:
            raise DataError(f"{p}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for src, dest in pairs:
        unique.setdefault(src.resolve(), (src, dest))
    by_output: dict[Path, list[Path]] = {}
    for src, dest in unique.values():
        by_output.setdefault(dest.resolve(), []).append(src)
    for dest, sources in by_output.items():
        if len(sources) > 1:
            raise DataError(f"{' and '.join(map(str, sources))} would both be written to {dest}; nothing was written. "
                            "Transfer them in separate runs with different -o folders, or give their common folder "
                            "so each output keeps its path relative to it")
        if dest in unique:
            raise DataError(f"the output of {sources[0]} would overwrite the input {dest}; choose another -o folder")
    return list(unique.values())


def output_label(reference: str | Path) -> str:
    """The name a reference clip gives outputs transferred to its style: its file name without the extension,
    in letters, digits, '-' and '_' (so `my flute.flac` gives `<input>.my_flute.wav`)."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(reference).stem).strip("_")
    return label or "reference"


class Transferer:
    """A loaded bundle ready to transfer audio: `Transferer(bundle, "cpu").transfer_array(x, sr, to="violin")`."""

    def __init__(self, bundle: str | Path | None = None, device: str = "cpu", *, chunk_seconds: float | None = None,
                 overlap_seconds: float | None = None, use_cache: bool = True, batch_size: int = 8,
                 loaded: LoadedBundle | None = None, steady: bool | None = None):
        if loaded is None:
            from audiostyle.platform.bundles.load import load_bundle

            loaded = load_bundle(bundle)
        self.model, self.cfg, self.meta = loaded
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.sample_rate = int(self.cfg.data.sample_rate)
        self.instruments = list(self.cfg.instrument_names)
        if chunk_seconds is not None and not (math.isfinite(chunk_seconds) and chunk_seconds >= MIN_CHUNK_SECONDS):
            raise ConfigError(f"must be at least {MIN_CHUNK_SECONDS:g} seconds, got {chunk_seconds:g}",
                              path="--chunk-seconds", hint="leave it out to use the training segment length")
        chunk_seconds = float(self.cfg.data.segment_seconds) if chunk_seconds is None else chunk_seconds
        if overlap_seconds is not None and not (math.isfinite(overlap_seconds)
                                                and 0 <= overlap_seconds <= chunk_seconds / 2):
            raise ConfigError(f"must be within [0, {chunk_seconds / 2:g}] seconds (at most half the "
                              f"{chunk_seconds:g} s chunk), got {overlap_seconds:g}", path="--overlap-seconds")
        self.chunk = int(round(chunk_seconds * self.sample_rate))
        # the default crossfade shrinks to half a chunk shorter than 1 s; an explicit one was checked above
        overlap = DEFAULT_OVERLAP_SECONDS if overlap_seconds is None else overlap_seconds
        self.overlap = min(int(round(overlap * self.sample_rate)), self.chunk // 2)
        self.use_cache = use_cache
        self.batch_size = batch_size
        # None: as the bundle's config says (model.steady_pitch); True/False: asked for at transfer time
        self.steady = bool(self.cfg.model.steady_pitch) if steady is None else steady

    @classmethod
    def from_model(cls, model: TimbreTransferModel, cfg: ExperimentConfig, meta: dict[str, Any] | None = None,
                   device: str = "cpu", **kwargs: Any) -> Transferer:
        """Wrap an in-memory TimbreTransferModel (e.g. straight after training) instead of a bundle."""
        return cls(device=device, loaded=(model, cfg, meta or {}), **kwargs)

    def check_instrument(self, name: str) -> int:
        if name not in self.instruments:
            raise DataError(f"unknown instrument {name!r}: this bundle transfers between "
                            f"{', '.join(self.instruments)}.{did_you_mean(name, self.instruments)}")
        return self.instruments.index(name)

    @torch.no_grad()
    def style_for(self, to: str | None = None, reference: str | Path | np.ndarray | None = None,
                  reference_sr: int | None = None) -> torch.Tensor:
        """The style vector [1, d]: the training-set prototype of `to`, or the mean style of a reference clip."""
        if reference is None:
            return self.model.prototype(self.check_instrument(to)).detach().to(self.device)[None]
        if isinstance(reference, (str, Path)):
            ref = read_input_clip(reference, self.sample_rate)
        else:
            ref = to_rate_float32(np.asarray(reference, dtype=np.float32), reference_sr or self.sample_rate, self.sample_rate)
        size = min(self.chunk, len(ref))
        pieces = np.stack([ref[i:i + size] for i in range(0, len(ref) - size + 1, size)])
        styles = self.model.style_of(torch.from_numpy(pieces).to(self.device))
        return styles.mean(dim=0, keepdim=True)

    @torch.no_grad()
    def transfer_array(self, audio: np.ndarray, sr: int, to: str | None = None, *,
                       reference: str | Path | np.ndarray | None = None, style: torch.Tensor | None = None,
                       progress: bool = False) -> np.ndarray:
        """Transfer mono `audio` at `sr` to instrument `to` (or to the style of `reference`, or `style`).

        A reference array is taken to be at `sr`. Returns float32 audio at the model's sample rate
        (`self.sample_rate`).
        """
        if reference is None and to is None and style is None:
            raise ValueError("give a target instrument (to=...), a reference clip or a style vector")
        if style is None:
            style = self.style_for(to, reference, sr)
        audio = to_rate_float32(np.asarray(audio, dtype=np.float32).reshape(-1), sr, self.sample_rate)
        if self.steady:
            audio = steady_pitch(audio, self.sample_rate)  # the whole clip: a vibrato spans chunk edges

        def process(chunks: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(chunks).to(self.device)
            y = self.model.transfer(x, style.expand(len(chunks), -1), use_cache=self.use_cache)
            return y.float().cpu().numpy()

        return overlap_add(audio, process, chunk=self.chunk, overlap=self.overlap, batch_size=self.batch_size,
                           progress=progress)


def transfer_files(bundle_or_model: str | Path | Transferer, inputs: Sequence[str | Path],
                   target_instrument: str | None, *, out_dir: str | Path, reference: str | Path | None = None,
                   device: str = "cpu",
                   chunk_seconds: float | None = None, overlap_seconds: float | None = None,
                   use_cache: bool = True, out_format: str = "wav", log: Callable[[str], None] | None = None,
                   steady: bool | None = None) -> list[Path]:
    """Transfer every input file (or folder of them) to `target_instrument`; returns the written paths.

    With a `reference` clip its style is the target instead of the instrument's prototype (an instrument the
    bundle was never told of, a player's own sound); without `target_instrument` the outputs are named after
    the reference, `<name>.<reference name>.<format>`. Everything is checked first (output folder,
    instrument, output names, every file readable and non-silent, the reference), so a bad input stops the
    run before any output exists. Prints each file's real-time factor through `log`.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    if target_instrument is None and reference is None:
        raise DataError("give a target instrument (--to NAME) or a reference clip (--reference FILE) to transfer to")
    out_dir = check_output_folder(out_dir, option="-o/--out")  # before the model is even loaded
    tr = bundle_or_model if isinstance(bundle_or_model, Transferer) else Transferer(
        bundle_or_model, device, chunk_seconds=chunk_seconds, overlap_seconds=overlap_seconds, use_cache=use_cache,
        steady=steady)
    if target_instrument is not None:
        tr.check_instrument(target_instrument)
    label = target_instrument or output_label(reference)
    plan = plan_outputs(inputs, out_dir, label, f".{out_format}")
    for f, _ in plan:  # decode cost is small next to the model; failing before writing anything matters more
        read_input_clip(f, tr.sample_rate)
    style = None if reference is None else tr.style_for(reference=reference)
    written, total_audio, total_time = [], 0.0, 0.0
    for f, dest in plan:
        audio = read_input_clip(f, tr.sample_rate)
        t0 = time.perf_counter()
        y = tr.transfer_array(audio, tr.sample_rate, to=target_instrument, style=style, progress=True)
        elapsed = time.perf_counter() - t0
        dest = write_audio_atomic(dest, y, tr.sample_rate)
        seconds = len(audio) / tr.sample_rate
        total_audio, total_time = total_audio + seconds, total_time + elapsed
        log(f"{f} ({seconds:.1f} s) -> {dest}  [{elapsed:.1f} s, real-time factor {elapsed / seconds:.3f}]")
        written.append(dest)
    if len(plan) > 1:
        log(f"{len(plan)} files, {total_audio:.1f} s of audio in {total_time:.1f} s: "
            f"real-time factor {total_time / max(total_audio, 1e-9):.3f} on {tr.device} (<1 is faster than real time)")
    return written

