"""`add_instrument`: turn a folder or CSV/JSONL list of recordings into an instrument's shards + manifest.

Pass 1 decodes every file once (mono, resampled, silence dropped, loudness-normalized, cut into
segments) and spools the FLAC segments to a staging folder; files that cannot be used are recorded
with their reason and never stop the batch. Recordings are then split train/val/test *by recording*
(so no recording leaks across splits), which is why the split waits until bad files are known.
Pass 2 writes the shards atomically (see shard_writer) and, last, the manifest. The output is a pure
function of the inputs and arguments: a re-run gives byte-identical shards, and a run killed midway
leaves no manifest vouching for anything unfinished, so the next run simply completes the job.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from audiostyle.datasets import audio_io
from audiostyle.datasets.manifest import SPLITS, withdraw_manifest, write_manifest
from audiostyle.datasets.shard_writer import ShardSequenceWriter, remove_stale_temps
from audiostyle.platform.core.errors import ConfigError, DataError

DEFAULT_SHARD_MAX_BYTES = 256 * 1024 * 1024  # 256 MB: a few seconds to fetch, many shards per worker
# The loader pads crops of shorter segments; under half a segment is more padding than music.
MIN_SEGMENT_FRACTION = 0.5
STAGING_PREFIX = ".staging-"
_SHARD_FILE_RE = re.compile(r"^(train|val|test|heldout)-\d{6}\.tar$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PATH_COLUMNS = ("path", "file", "filename", "audio")
_ID_COLUMNS = ("recording_id", "recording", "id")


@dataclass
class SourceFile:
    path: Path  # where to read it
    display: str  # how it is named in records and messages (relative to SOURCE)
    recording_id: str | None = None
    split: str | None = None
    id_hint: str = ""  # the recording id when none is given: path relative to SOURCE, no extension

    def __post_init__(self) -> None:
        self.id_hint = self.id_hint or str(Path(self.display).with_suffix(""))


@dataclass
class Recording:
    recording_id: str
    files: list[SourceFile] = field(default_factory=list)
    split: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)  # JSON records (+ spool offsets)


def add_instrument(instrument: str, source: str | Path, out_dir: str | Path, *, sample_rate: int = 22050,
                   segment_seconds: float = 10.0, shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES,
                   split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Ingest SOURCE (folder of audio, or CSV/JSONL list) into `out_dir`; returns the manifest written."""
    if not _NAME_RE.match(instrument):
        raise ConfigError(f"instrument name {instrument!r} must be lower-case letters, digits and '_'",
                          path="instrument")
    if sample_rate <= 0 or segment_seconds <= 0 or shard_max_bytes <= 0:
        raise ConfigError("sample_rate, segment_seconds and shard_max_bytes must be > 0")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise ConfigError(f"split_fractions must be three non-negative numbers (train, val, test), "
                          f"got {split_fractions}")
    source = Path(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    for stale in out.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)

    files, skipped = list_source(source)
    recordings = group_recordings(files, skipped)
    staging = out / f"{STAGING_PREFIX}{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}"
    staging.mkdir()
    try:
        _decode_all(instrument, recordings, staging, sample_rate, segment_seconds, skipped, progress)
        usable = [r for r in recordings if r.segments]
        assign_splits(usable, split_fractions, seed)
        manifest = _write_shards(instrument, usable, staging, out, sample_rate, segment_seconds,
                                 shard_max_bytes, progress)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest.update(
        skipped=sorted(skipped, key=lambda s: s["file"]),
        created_by="audiostyle data add",
        params={"sample_rate": sample_rate, "segment_seconds": segment_seconds, "seed": seed,
                "shard_max_bytes": shard_max_bytes, "split_fractions": list(split_fractions),
                "target_rms_db": audio_io.TARGET_RMS_DB},
    )
    write_manifest(out, manifest)
    for p in out.iterdir():  # shards of an earlier, larger run that the new manifest no longer lists
        if _SHARD_FILE_RE.match(p.name) and p.name not in manifest["shards"]:
            p.unlink()
    if not manifest["shards"]:
        raise DataError(f"{source}: no usable audio ({len(skipped)} file(s) skipped; see "
                        f"{out / 'manifest.json'} or `audiostyle data info {out}` for the reasons)")
    return manifest


# ---------------------------------------------------------------------------------------------
# sources


def list_source(source: Path) -> tuple[list[SourceFile], list[dict[str, str]]]:
    """Files named by SOURCE (a folder, searched recursively, or a .csv/.jsonl list) and rows skipped."""
    if source.is_dir():
        found = sorted(p for p in source.rglob("*")
                       if not any(part.startswith(".") for part in p.relative_to(source).parts)
                       and (p.is_file() or p.is_symlink()))
        return [SourceFile(p, p.relative_to(source).as_posix()) for p in found], []
    if not source.exists():
        raise DataError(f"{source}: SOURCE not found; give a folder of audio files or a .csv/.jsonl list "
                        "with a 'path' column")
    suffix = source.suffix.lower()
    if suffix == ".csv":
        with open(source, newline="", encoding="utf-8") as fh:
            rows = [(i + 2, row) for i, row in enumerate(csv.DictReader(fh))]  # line 1 is the header
    elif suffix in (".jsonl", ".ndjson"):
        rows, bad = [], []
        for i, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((i, json.loads(line)))
            except json.JSONDecodeError as exc:
                bad.append({"file": f"{source.name}:{i}", "reason": f"unreadable: invalid JSON ({exc.msg})"})
        files, skipped = _rows_to_files(source, rows)
        return files, bad + skipped
    else:
        raise DataError(f"{source}: SOURCE must be a folder or a manifest ending in .csv or .jsonl")
    return _rows_to_files(source, rows)


def _rows_to_files(manifest: Path, rows: list[tuple[int, Any]]) -> tuple[list[SourceFile], list[dict[str, str]]]:
    files, skipped = [], []
    for line, row in rows:
        where = f"{manifest.name}:{line}"
        if not isinstance(row, dict):
            skipped.append({"file": where, "reason": "unreadable: a row must be an object with a 'path'"})
            continue
        row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        path = next((str(row[c]).strip() for c in _PATH_COLUMNS if row.get(c)), "")
        if not path:
            raise DataError(f"{where}: no audio path (expected a column named one of {', '.join(_PATH_COLUMNS)})")
        rec = next((str(row[c]).strip() for c in _ID_COLUMNS if row.get(c)), None)
        split = str(row["split"]).strip().lower() if row.get("split") else None
        if split is not None and split not in SPLITS:
            skipped.append({"file": path, "reason": f"wrong format: split {split!r} at {where} is not one of "
                                                    f"{', '.join(SPLITS)}"})
            continue
        full = Path(path) if Path(path).is_absolute() else manifest.parent / path
        try:  # ids must not depend on where the data sits on this machine
            hint = full.relative_to(manifest.parent).with_suffix("").as_posix()
        except ValueError:
            hint = full.stem
        files.append(SourceFile(full, path, rec, split, hint))
    return files, skipped


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "recording"


def group_recordings(files: list[SourceFile], skipped: list[dict[str, str]]) -> list[Recording]:
    """Group files by recording id (given, or derived from the path); ids are unique and key-safe."""
    derived: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        base = _safe_id(f.recording_id) if f.recording_id else _safe_id(f.id_hint)
        derived[base].append(f)
    recordings: dict[str, Recording] = {}
    for base, group in derived.items():
        for f in group:
            # two different files that derive the same id (a.wav, a.flac) get a hash suffix each
            rid = base if f.recording_id or len(group) == 1 else f"{base}-{hashlib.sha1(f.display.encode()).hexdigest()[:8]}"
            rec = recordings.setdefault(rid, Recording(rid))
            if f.split and rec.split and f.split != rec.split:
                skipped.append({"file": f.display, "reason": f"wrong format: recording {rid!r} is already in split "
                                                             f"{rec.split!r}, this row says {f.split!r}"})
                continue
            rec.split = rec.split or f.split
            rec.files.append(f)
    return [recordings[k] for k in sorted(recordings)]


# ---------------------------------------------------------------------------------------------
# pass 1: decode and cut


def cut_segments(wave, sr: int, segment_seconds: float, *, name: str) -> list[tuple[int, int]]:
    """Sample ranges of segments: whole segments inside each non-silent region, plus a tail >= half."""
    seg = int(round(segment_seconds * sr))
    out = []
    for start, end in audio_io.active_regions(wave, sr, name=name):
        pos = start
        while end - pos >= seg:
            out.append((pos, pos + seg))
            pos += seg
        if end - pos >= MIN_SEGMENT_FRACTION * seg:
            out.append((pos, end))
    if not out:
        active = sum(e - s for s, e in audio_io.active_regions(wave, sr, name=name)) / sr
        raise audio_io.AudioFileError(name, "too short", f"{active:.2f} s of non-silent audio; a segment needs "
                                                         f"at least {MIN_SEGMENT_FRACTION * segment_seconds:g} s")
    return out


def _decode_all(instrument: str, recordings: list[Recording], staging: Path, sample_rate: int,
                segment_seconds: float, skipped: list[dict[str, str]], progress: bool) -> None:
    total = sum(len(r.files) for r in recordings)
    bar = tqdm(total=total, desc=f"{instrument}: decoding", unit="file", disable=not progress, leave=False)
    segments = 0
    for rec in recordings:
        spool = open(staging / f"{rec.recording_id}.flacs", "wb")
        with spool:
            for f in sorted(rec.files, key=lambda f: f.display):
                try:
                    wave, sr = audio_io.read_audio(f.path)
                    wave = audio_io.resample(wave, sr, sample_rate)
                    cuts = cut_segments(wave, sample_rate, segment_seconds, name=f.display)
                    wave, gain_db = audio_io.normalize_loudness(wave, cuts)
                except audio_io.AudioFileError as exc:
                    skipped.append({"file": f.display, "reason": exc.reason})
                    bar.update(1)
                    continue
                for start, end in cuts:
                    flac = audio_io.encode_flac(wave[start:end], sample_rate)
                    rec.segments.append({
                        "instrument": instrument, "source": f.display, "recording_id": rec.recording_id,
                        "segment_index": len(rec.segments), "offset_seconds": round(start / sample_rate, 4),
                        "duration_seconds": round((end - start) / sample_rate, 4), "sample_rate": sample_rate,
                        "loudness_db": round(audio_io.rms_db(wave[start:end]), 2), "gain_db": round(gain_db, 2),
                        "_spool": (spool.tell(), len(flac)),
                    })
                    spool.write(flac)
                segments += len(cuts)
                bar.update(1)
                bar.set_postfix(segments=segments)
    bar.close()


# ---------------------------------------------------------------------------------------------
# split by recording, pass 2: write shards


def assign_splits(recordings: list[Recording], fractions: tuple[float, float, float], seed: int) -> None:
    """Give every recording a split; recordings with a split (from the source list) keep it.

    The others go, in an order fixed by hashing (seed, id), to whichever split is furthest below its
    target count; val and test get at least one recording each when there are three or more.
    """
    free = [r for r in recordings if r.split is None]
    n = len(recordings)
    total = sum(fractions)
    target = {s: f / total * n for s, f in zip(("train", "val", "test"), fractions)}
    if n >= 3:
        for s in ("val", "test"):
            if fractions[("train", "val", "test").index(s)] > 0:
                target[s] = max(target[s], 1.0)
    count = {s: sum(r.split == s for r in recordings) for s in target}
    order = sorted(free, key=lambda r: hashlib.sha256(f"{seed}:{r.recording_id}".encode()).hexdigest())
    for rec in order:
        split = max(target, key=lambda s: (target[s] - count[s], -list(target).index(s)))
        rec.split = split
        count[split] += 1


def _write_shards(instrument: str, recordings: list[Recording], staging: Path, out: Path, sample_rate: int,
                  segment_seconds: float, shard_max_bytes: int, progress: bool) -> dict[str, Any]:
    manifest: dict[str, Any] = {"instrument": instrument, "sample_rate": sample_rate,
                                "segment_seconds": segment_seconds, "splits": {}, "shards": {},
                                "recordings": {r.recording_id: r.split for r in recordings}}
    total = sum(len(r.segments) for r in recordings)
    bar = tqdm(total=total, desc=f"{instrument}: writing shards", unit="seg", disable=not progress, leave=False)
    withdrawn = []

    def before_replace(path: Path) -> None:
        # a listed shard is about to change: the old manifest must stop vouching for it
        if not withdrawn:
            withdrawn.append(withdraw_manifest(out))

    for split in SPLITS:
        members = [r for r in recordings if r.split == split]
        if not members:
            continue
        writer = ShardSequenceWriter(out, split, shard_max_bytes, before_replace=before_replace)
        try:
            for rec in members:
                with open(staging / f"{rec.recording_id}.flacs", "rb") as spool:
                    for record in rec.segments:
                        offset, length = record.pop("_spool")
                        spool.seek(offset)
                        record["split"] = split
                        key = f"{rec.recording_id}__{record['segment_index']:05d}"
                        writer.write_segment(key, spool.read(length), record)
                        bar.update(1)
            shards = writer.close()
        except BaseException:
            writer.abort()
            raise
        manifest["splits"][split] = {"shards": [s.name for s in shards],
                                     "segments": sum(s.segments for s in shards),
                                     "seconds": round(sum(s.seconds for s in shards), 3)}
        for s in shards:
            manifest["shards"][s.name] = {"sha256": s.sha256, "segments": s.segments, "bytes": s.bytes}
    bar.close()
    return manifest
