"""Instrument datasets made ready to train on: shards first (datasets/), then statistics (stats/).

datasets/ and stats/ do not know each other's jobs: ingest and rendering write shards and a manifest,
statistics are computed from those shards. This module runs the two in that order for `data add`,
`data demo`, the quickstart and the tests, and regenerates the committed demo statistics
(`data demo-stats`), so the data flow stays one way: audio -> shards -> statistics.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiostyle.platform.core.artifact_files import STATS_FILE
from audiostyle.platform.core.atomic_files import copy_atomic, sha256_file
from audiostyle.platform.core.folder_lock import folder_lock

if TYPE_CHECKING:
    from audiostyle.datasets.ingest import IngestResult


def add_instrument_dataset(instrument: str, source: str | Path, out: str | Path, *, sample_rate: int | None = None,
                           segment_seconds: float | None = None, shard_max_bytes: int | None = None,
                           split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                           progress: bool = True, replace: bool = False) -> tuple[IngestResult, Path]:
    """`data add`: append SOURCE's new recordings to the instrument in `out` (or, `replace`, start it
    over), then bring its statistics up to date; (what the ingest did, stats path).

    The folder's lock is held across both steps, so a second `data add` cannot slip its manifest in
    between the shards and the statistics that summarise them.
    """
    from audiostyle.datasets.ingest import DEFAULT_SHARD_MAX_BYTES, ingest_recordings
    from audiostyle.datasets.manifest import MANIFEST_NAME
    from audiostyle.stats.normalization_stats import current_stats, update_default_stats

    out = Path(out)
    with folder_lock(out, purpose=f"audiostyle data add {instrument} {source}"):
        before = out / MANIFEST_NAME
        previous = sha256_file(before) if before.is_file() and not replace else None
        result = ingest_recordings(instrument, source, out, sample_rate=sample_rate, segment_seconds=segment_seconds,
                                   shard_max_bytes=shard_max_bytes or DEFAULT_SHARD_MAX_BYTES,
                                   split_fractions=split_fractions, seed=seed, progress=progress, append=not replace)
        rate = int(result.manifest["sample_rate"])
        stats = current_stats(out)  # a no-op add, or a re-run after statistics were already written
        if stats is None:
            train = set(result.manifest["splits"].get("train", {}).get("shards", []))
            stats = update_default_stats(out, sample_rate=rate, previous_manifest_sha256=previous,
                                         new_train_shards=[s for s in result.new_shards if s in train],
                                         progress=progress)
    return result, stats


def prepare_demo(out_root: str | os.PathLike, instruments: Sequence[str] = ("piano", "violin"), *,
                 seconds_per_instrument: float | None = None, minutes: float | None = None, seed: int = 0,
                 heldout_soundfont: bool = True, paired: bool = True, progress: bool = False,
                 sample_rate: int = 22050, cache_dir: str | os.PathLike | None = None,
                 soundfont_dirs: Sequence[str | os.PathLike] | None = None,
                 players: Sequence[str] = ("timgm6mb",), chords: float = 0.0, vibrato: float = 0.0) -> dict[str, Any]:
    """Render and ingest the demo instruments (datasets.demo_render.render_demo), then their statistics.

    Returns render_demo's result with each instrument's `stats` path added. Statistics that already
    summarise the current shards (a re-run with the same arguments) are kept, not recomputed.
    """
    from audiostyle.datasets.demo_render import render_demo
    from audiostyle.stats.normalization_stats import compute_default_stats, current_stats

    result = render_demo(out_root, instruments, seconds_per_instrument=seconds_per_instrument, minutes=minutes,
                         seed=seed, heldout_soundfont=heldout_soundfont, paired=paired, progress=progress,
                         sample_rate=sample_rate, cache_dir=cache_dir, soundfont_dirs=soundfont_dirs,
                         players=players, chords=chords, vibrato=vibrato)
    for name, info in result["instruments"].items():
        folder = Path(out_root) / name
        stats = current_stats(folder) or compute_default_stats(folder, sample_rate=sample_rate, progress=progress)
        info["stats"] = str(stats)
    return result


def export_plain_recordings(result: dict[str, Any], out_dir: str | os.PathLike,
                            splits: Sequence[str] = ("train", "val")) -> dict[str, int]:
    """Copy each rendered instrument's reference-player recordings of `splits` into `<out_dir>/<instrument>/`
    as plain audio files named by piece: no notes, no pairs, no test pieces. That is what a folder of a
    user's own recordings looks like, so `data add NAME <out_dir>/NAME` can stand in for one in a test of an
    instrument learned from recordings alone, whose paired renderings of the test pieces stay hidden.
    Returns the number of files per instrument; files already there with the same content are kept."""
    counts = {}
    for name, info in result["instruments"].items():
        folder = Path(out_dir) / name
        kept = sorted((piece, path) for piece, (split, path) in info["training_renders"].items() if split in splits)
        for piece, path in kept:
            target = folder / f"{piece}{Path(path).suffix}"
            if not target.is_file() or sha256_file(target) != sha256_file(path):
                copy_atomic(path, target)
        counts[name] = len(kept)
    return counts


def regenerate_demo_stats(out_dir: str | Path | None = None, *, minutes: float | None = None,
                          progress: bool = True) -> list[Path]:
    """Render the default demo instruments into a temporary folder and copy their statistics to
    `out_dir` (default: the committed `stats/demo/`), the fallback of experiments whose instrument
    folders hold no stats.npz."""
    from audiostyle.stats.normalization_stats import DEMO_INSTRUMENTS, DEMO_STATS_DIR

    target = Path(out_dir) if out_dir is not None else DEMO_STATS_DIR
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepare_demo(tmp, DEMO_INSTRUMENTS, minutes=minutes, seed=0, progress=progress)
        return [copy_atomic(Path(tmp) / name / STATS_FILE, target / f"{name}.npz") for name in DEMO_INSTRUMENTS]
