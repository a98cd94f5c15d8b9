"""Normalization statistics of the front end's features: compute per instrument, pool, store, load by name.

Per (channel, bin) mean and variance of the raw `analyze` features ([real, imag] x STFT+CQT bins) over every
frame of an instrument's train shards, streamed shard by shard and combined exactly (Chan et al.'s pairwise
update, float64), so the pooled variance is the variance of all frames concatenated. The research averaged
per-clip variances instead, dropping the between-clip part (seed spec section 1).

Files: `<instrument_dir>/stats.npz` (written by `compute_instrument_stats`, atomically) holding mean, var, std,
count and the front-end settings they were computed with; committed fallbacks for the demo instruments in
`stats/demo/<instrument>.npz`. `load_stats(cfg)` pools the instruments of an experiment, weighted like its
batches, into the single label-free normalization the front end applies.

CLI: `python -m audiostyle.stats.normalization_stats INSTRUMENT_DIR...` or `... --demo` (re-renders the default
demo instruments and refreshes the committed demo statistics).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiostyle.datasets.audio_io import decode_bytes
from audiostyle.datasets.manifest import iter_segments, read_manifest
from audiostyle.platform.core.atomic_files import atomic_write, copy_atomic
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.core.locations import is_url

logger = logging.getLogger(__name__)

STATS_NAME = "stats.npz"
DEMO_STATS_DIR = Path(__file__).resolve().parent / "demo"
DEMO_INSTRUMENTS = ("piano", "violin", "cello")
SETTING_KEYS = ("sample_rate", "n_fft", "hop_length", "n_cqt_bins", "bins_per_octave", "fmin")
FORMAT_VERSION = 1


@dataclass
class FeatureStats:
    """Mean and population variance per (channel, bin) over `count` frames, with the front-end settings."""

    mean: np.ndarray  # (2, F) float64
    var: np.ndarray  # (2, F) float64, ddof=0
    count: int
    settings: dict[str, Any] = field(default_factory=dict)
    segments: int = 0

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    @classmethod
    def of_features(cls, feats: torch.Tensor | np.ndarray, settings: dict[str, Any] | None = None) -> FeatureStats:
        """Statistics of raw features [B, 2, T, F] (or [2, T, F]) over batch and time."""
        x = feats.detach().cpu().double().numpy() if torch.is_tensor(feats) else np.asarray(feats, np.float64)
        if x.ndim == 3:
            x = x[None]
        flat = np.moveaxis(x, 1, 0).reshape(2, -1, x.shape[-1])  # [2, B*T, F]
        return cls(flat.mean(1), flat.var(1), flat.shape[1], dict(settings or {}), segments=x.shape[0])


def pool_stats(parts: Sequence[FeatureStats], weights: Sequence[float] | None = None) -> FeatureStats:
    """Exact statistics of a mixture of `parts`.

    weights=None weights each part by its frame count: the result is the mean/variance of all frames
    concatenated (Chan's parallel update). Explicit weights (normalized to sum 1) give the mixture in which
    part i has probability w_i, as batches drawn by instrument weight see it.
    """
    if not parts:
        raise ValueError("pool_stats needs at least one FeatureStats")
    counts = np.array([p.count for p in parts], dtype=np.float64)
    w = counts if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != counts.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights {list(w)} must be non-negative, one per part, not all zero")
    w = w / w.sum()
    mean = sum(wi * p.mean for wi, p in zip(w, parts))
    # Law of total variance: within-part variance plus the spread of the part means around the pooled mean.
    var = sum(wi * (p.var + (p.mean - mean) ** 2) for wi, p in zip(w, parts))
    return FeatureStats(mean, var, int(counts.sum()), dict(parts[0].settings), sum(p.segments for p in parts))


# ---------------------------------------------------------------------------------------------- files
def write_stats(path: str | Path, stats: FeatureStats, **extra: str) -> Path:
    """Write an npz atomically (temp name in the same folder, then os.replace); returns the path."""
    arrays: dict[str, Any] = {"mean": stats.mean, "var": stats.var, "std": stats.std,
                              "count": np.int64(stats.count), "segments": np.int64(stats.segments),
                              "format_version": np.int64(FORMAT_VERSION)}
    arrays.update({k: np.asarray(v) for k, v in stats.settings.items()})
    arrays.update({k: np.asarray(str(v)) for k, v in extra.items()})
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays), fsync=True)


def read_stats(path: str | Path) -> FeatureStats:
    """Load an npz written by `write_stats`; DataError naming the file when missing, corrupt or incomplete."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {k: data[k] for k in data.files}
    except FileNotFoundError as exc:
        raise DataError(f"{path}: statistics file not found") from exc
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # truncated or not an npz
        raise DataError(f"{path}: not a readable statistics file ({type(exc).__name__}: {exc}); recompute it "
                        "with `python -m audiostyle.stats.normalization_stats INSTRUMENT_DIR`") from exc
    missing = [k for k in ("mean", "var", "count") if k not in contents]
    if missing:
        raise DataError(f"{path}: statistics file lacks {', '.join(missing)}; recompute it")
    mean, var = contents["mean"].astype(np.float64), contents["var"].astype(np.float64)
    if mean.ndim != 2 or mean.shape[0] != 2 or var.shape != mean.shape:
        raise DataError(f"{path}: mean/var must be shaped (2, bins), got {mean.shape} and {var.shape}")
    if not (np.isfinite(mean).all() and np.isfinite(var).all()) or (var < 0).any():
        raise DataError(f"{path}: statistics hold NaN, inf or negative variances; recompute them")
    settings = {k: contents[k].item() for k in SETTING_KEYS if k in contents}
    return FeatureStats(mean, var, int(contents["count"]), settings, int(contents.get("segments", 0)))


def check_settings(stats: FeatureStats, expected: dict[str, Any], *, source: str | Path) -> None:
    """DataError naming the file and each differing setting when stats were made for another front end."""
    diffs = []
    for key, want in expected.items():
        if key not in stats.settings:
            continue
        have = stats.settings[key]
        same = math.isclose(float(have), float(want), rel_tol=1e-6) if key == "fmin" else have == want
        if not same:
            diffs.append(f"{key}={have} (the experiment uses {want})")
    if diffs:
        raise DataError(
            f"{source}: statistics were computed with other front-end settings: {'; '.join(diffs)}. "
            "Recompute them for this front end with `python -m audiostyle.stats.normalization_stats "
            "INSTRUMENT_DIR --n-fft/--hop-length/...` or change model.frontend / data.sample_rate to match"
        )


# ---------------------------------------------------------------------------------------------- compute
def _frontend_settings(frontend: torch.nn.Module) -> dict[str, Any]:
    settings = getattr(frontend, "settings", None)
    if callable(settings):
        return dict(settings())
    return {"sample_rate": int(frontend.sample_rate)}


@torch.no_grad()
def compute_instrument_stats(instrument_dir: str | Path, frontend: torch.nn.Module, *, split: str = "train",
                             max_segments: int | None = None, progress: bool = False,
                             batch_size: int = 8) -> Path:
    """Stream a split's shards through `frontend.analyze`; write `<instrument_dir>/stats.npz`; return its path."""
    from tqdm import tqdm

    instrument_dir = Path(instrument_dir)
    settings = _frontend_settings(frontend)
    manifest = read_manifest(instrument_dir)
    total = manifest["splits"].get(split, {}).get("segments")
    running: FeatureStats | None = None
    pending: dict[int, list[np.ndarray]] = {}  # segments grouped by length, analyzed a batch at a time

    def flush(length: int) -> None:
        nonlocal running
        batch = pending.pop(length)
        part = FeatureStats.of_features(frontend.analyze(torch.from_numpy(np.stack(batch))), settings)
        running = part if running is None else pool_stats([running, part])

    seen = 0
    bar = tqdm(total=min(total or 0, max_segments or total or 0) or None, desc=f"stats {instrument_dir.name}",
               unit="seg", disable=not progress)
    for segment in iter_segments(instrument_dir, split):
        if max_segments is not None and seen >= max_segments:
            break
        name = f"{segment.url}:{segment.key}.flac"
        wave, sr = decode_bytes(segment.flac, name=name)
        if sr != settings["sample_rate"]:
            raise DataError(f"{name}: sample rate {sr} Hz, but the front end runs at {settings['sample_rate']} Hz; "
                            "re-ingest the instrument at data.sample_rate or change data.sample_rate")
        if wave.shape[0] <= getattr(frontend, "n_fft", 0) // 2:
            logger.warning("%s: %d samples is too short to analyze; skipped", name, wave.shape[0])
            continue
        pending.setdefault(wave.shape[0], []).append(wave)
        if len(pending[wave.shape[0]]) >= batch_size:
            flush(wave.shape[0])
        seen += 1
        bar.update(1)
    for length in list(pending):
        flush(length)
    bar.close()
    if running is None:
        raise DataError(f"{instrument_dir}: the '{split}' split holds no usable segments to compute statistics from")
    return write_stats(instrument_dir / STATS_NAME, running, instrument=manifest.get("instrument", ""), split=split)


def compute_default_stats(instrument_dir: str | Path, *, sample_rate: int, progress: bool = False) -> Path:
    """`<instrument_dir>/stats.npz` for the default front end (`stft_cqt` at its defaults), as `data add`
    and `data demo` write them; an experiment with other front-end settings is told to recompute."""
    from audiostyle.platform.core.registry import build

    frontend = build("frontend", {"component": "stft_cqt"}, path="model.frontend", sample_rate=sample_rate)
    return compute_instrument_stats(instrument_dir, frontend, progress=progress)


# ---------------------------------------------------------------------------------------------- load
def frontend_settings_of(cfg: Any) -> dict[str, Any]:
    """The analysis settings of the experiment's front end: its YAML arguments over the component's
    defaults, read from the config (building a front end just to ask would set up its CQT kernels)."""
    from audiostyle.platform.core.registry import resolved_arguments

    args = resolved_arguments("frontend", cfg.model.frontend, path="model.frontend",
                              sample_rate=cfg.data.sample_rate)
    return {key: args[key] for key in SETTING_KEYS if key in args}


def instrument_stats_path(name: str, data: str) -> Path | None:
    """`<data>/stats.npz` when it exists locally, else the committed `stats/demo/<name>.npz`, else None."""
    if not is_url(data) and (Path(data) / STATS_NAME).is_file():
        return Path(data) / STATS_NAME
    demo = DEMO_STATS_DIR / f"{name}.npz"
    if demo.is_file():
        logger.warning("instrument %r: no %s in %s; using the committed demo statistics %s", name, STATS_NAME,
                       data, demo)
        return demo
    return None


def pooled_stats(cfg: Any) -> FeatureStats:
    """The experiment's normalization statistics: `data.stats` as a file, or its instruments pooled by weight."""
    expected = frontend_settings_of(cfg)
    if cfg.data.stats != "pooled":
        path = Path(cfg.data.stats)
        if not path.is_file():
            raise DataError(f"data.stats: {path} does not exist; set data.stats=pooled to pool the instruments' "
                            "statistics, or point it at an .npz written by audiostyle.stats.normalization_stats")
        stats = read_stats(path)
        check_settings(stats, expected, source=path)
        return stats
    parts = []
    for i, inst in enumerate(cfg.instruments):
        path = instrument_stats_path(inst.name, inst.data)
        if path is None:
            raise DataError(
                f"instruments.{i} ({inst.name}): no normalization statistics: neither {inst.data}/{STATS_NAME} "
                f"nor the committed {DEMO_STATS_DIR / (inst.name + '.npz')} exists. Compute them with "
                f"`python -m audiostyle.stats.normalization_stats {inst.data}`"
            )
        stats = read_stats(path)
        check_settings(stats, expected, source=path)
        parts.append(stats)
    return pool_stats(parts, [inst.weight for inst in cfg.instruments])


def load_stats(cfg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) float32 tensors shaped (2, bins) for `frontend.set_stats`; never needs a label at use."""
    stats = pooled_stats(cfg)
    return torch.from_numpy(stats.mean).float(), torch.from_numpy(stats.std).float()


# ---------------------------------------------------------------------------------------------- CLI
def regenerate_demo_stats(out_dir: Path = DEMO_STATS_DIR, *, minutes: float | None = None,
                          progress: bool = True) -> list[Path]:
    """Render the default demo instruments into a temp folder and copy their stats into `out_dir`."""
    import tempfile

    from audiostyle.datasets.demo_render import render_demo

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        render_demo(tmp, instruments=DEMO_INSTRUMENTS, minutes=minutes, seed=0, progress=progress)
        for name in DEMO_INSTRUMENTS:
            written.append(copy_atomic(Path(tmp) / name / STATS_NAME, out_dir / f"{name}.npz"))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m audiostyle.stats.normalization_stats",
        description="Compute front-end normalization statistics (stats.npz) for instrument datasets.")
    parser.add_argument("instrument_dirs", nargs="*", help="folders holding manifest.json and shards")
    parser.add_argument("--demo", action="store_true", help="re-render the demo instruments "
                        f"({', '.join(DEMO_INSTRUMENTS)}) and refresh the committed {DEMO_STATS_DIR}")
    parser.add_argument("--minutes", type=float, default=None, help="with --demo: minutes per instrument")
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-segments", type=int, default=None)
    parser.add_argument("--sample-rate", type=int, default=22050)
    parser.add_argument("--n-fft", type=int, default=1024)
    parser.add_argument("--hop-length", type=int, default=256)
    parser.add_argument("--n-cqt-bins", type=int, default=84)
    parser.add_argument("--bins-per-octave", type=int, default=12)
    args = parser.parse_args(argv)
    if not args.demo and not args.instrument_dirs:
        parser.error("name at least one INSTRUMENT_DIR, or pass --demo")
    try:
        if args.demo:
            for path in regenerate_demo_stats(minutes=args.minutes):
                print(f"wrote {path}")
        from audiostyle.components.frontend import StftCqtFrontend

        frontend = StftCqtFrontend(args.sample_rate, n_fft=args.n_fft, hop_length=args.hop_length,
                                   n_cqt_bins=args.n_cqt_bins, bins_per_octave=args.bins_per_octave)
        for folder in args.instrument_dirs:
            path = compute_instrument_stats(folder, frontend, split=args.split, max_segments=args.max_segments,
                                            progress=True)
            stats = read_stats(path)
            print(f"wrote {path}: {stats.segments} segments, {stats.count} frames, "
                  f"median std {float(np.median(stats.std)):.4g}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
