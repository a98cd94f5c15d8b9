"""`add_instrument`: turn a folder or CSV/JSONL list of recordings into an instrument's shards + manifest.

Pass 1 decodes every file once (mono, resampled, silence dropped, loudness-normalized, cut into
segments) and spools the FLAC segments to a staging folder; files that cannot be used are recorded
with their reason and never stop the batch. Recordings are then split train/val/test *by recording*
(so no recording leaks across splits), which is why the split waits until bad files are known.
Pass 2 writes the shards atomically (see shard_writer) and, last, the manifest.

Onto an existing instrument, `append=True` (`data add`) adds the recordings it does not hold yet:
each file is known by its sha256, so re-adding one is a no-op and two copies of one recording can
never land in two splits; earlier recordings keep their split and shards (dataset_state.py).
`append=False` (`data add --replace`, `data demo`) makes the folder exactly SOURCE's dataset, a pure
function of the inputs: a re-run gives byte-identical shards. Either way, nothing in the folder changes
until the new data is complete (a source with no usable audio changes nothing), one writer at a time
holds the folder (core/folder_lock.py), and a run killed midway is completed by the next.
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
from audiostyle.datasets.dataset_state import Existing, merged_manifest, remove_unlisted_shards
from audiostyle.datasets.manifest import SPLITS, write_manifest
from audiostyle.datasets.shard_writer import ShardSequenceWriter, record_split, remove_stale_temps
from audiostyle.platform.config.schema import check_instrument_name
from audiostyle.platform.core.atomic_files import sha256_file
from audiostyle.platform.core.errors import ConfigError, DataError
from audiostyle.platform.core.folder_lock import folder_lock

DEFAULT_SHARD_MAX_BYTES = 256 * 1024 * 1024  # 256 MB: a few seconds to fetch, many shards per worker
DEFAULT_SAMPLE_RATE = 22050
DEFAULT_SEGMENT_SECONDS = 10.0
# The loader pads crops of shorter segments; under half a segment is more padding than music.
MIN_SEGMENT_FRACTION = 0.5
STAGING_PREFIX = ".staging-"
_PATH_COLUMNS = ("path", "file", "filename", "audio")
_ID_COLUMNS = ("recording_id", "recording", "id")


@dataclass
class SourceFile:
    path: Path  # where to read it
    display: str  # how it is named in records and messages (relative to SOURCE)
    recording_id: str | None = None
    split: str | None = None
    id_hint: str = ""  # the recording id when none is given: path relative to SOURCE, no extension
    sha256: str = ""  # of the file's bytes: what identifies a recording across runs

    def __post_init__(self) -> None:
        self.id_hint = self.id_hint or str(Path(self.display).with_suffix(""))


@dataclass
class Recording:
    recording_id: str
    files: list[SourceFile] = field(default_factory=list)
    split: str | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)  # JSON records (+ spool offsets)
    first_index: int = 0  # segments the dataset already holds of this recording (appending to it)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # sha256 -> {file, recording_id, segments}


@dataclass
class IngestResult:
    """What one ingest did: the manifest now in the folder and what this run added to it."""

    manifest: dict[str, Any]
    added_recordings: list[str] = field(default_factory=list)
    added_segments: int = 0
    already_present: list[str] = field(default_factory=list)  # source files whose content was there already
    new_shards: list[str] = field(default_factory=list)
    changed: bool = False  # whether the manifest was rewritten


def add_instrument(instrument: str, source: str | Path, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Ingest SOURCE into `out_dir` (arguments of `ingest_recordings`); returns the folder's manifest."""
    return ingest_recordings(instrument, source, out_dir, **kwargs).manifest


def ingest_recordings(instrument: str, source: str | Path, out_dir: str | Path, *, sample_rate: int | None = None,
                      segment_seconds: float | None = None, shard_max_bytes: int = DEFAULT_SHARD_MAX_BYTES,
                      split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
                      progress: bool = True, append: bool = False) -> IngestResult:
    """Ingest SOURCE (folder of audio, or CSV/JSONL list) into `out_dir`, appending to the instrument
    there (`append`) or replacing it. sample_rate/segment_seconds: None keeps an appended dataset's
    (else 22050 Hz, 10 s)."""
    check_instrument_name(instrument, "instrument")
    for name, value in (("sample_rate", sample_rate), ("segment_seconds", segment_seconds),
                        ("shard_max_bytes", shard_max_bytes)):
        if value is not None and not value > 0:
            raise ConfigError(f"must be > 0, got {value}", path=name)
    if len(split_fractions) != 3 or min(split_fractions) < 0 or sum(split_fractions) <= 0:
        raise ConfigError(f"split_fractions must be three non-negative numbers (train, val, test), "
                          f"got {split_fractions}")
    source, out = Path(source), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is an existing file, not a folder; give the instrument's folder (created if missing)")
    if source.is_dir() and out.resolve().is_relative_to(source.resolve()):
        raise DataError(f"{out} is inside SOURCE {source}: its shards would be read back as recordings; put the "
                        "dataset outside the folder of recordings")
    files, skipped = list_source(source)  # SOURCE missing or malformed: refused before the folder is touched
    with folder_lock(out, purpose=f"audiostyle data add {instrument} {source}"):
        remove_stale_temps(out)
        for stale in out.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        existing = Existing.read(out, instrument, append=append, sample_rate=sample_rate,
                                 segment_seconds=segment_seconds)
        old = existing.manifest or {}
        sample_rate = sample_rate or old.get("sample_rate", DEFAULT_SAMPLE_RATE)
        segment_seconds = segment_seconds or old.get("segment_seconds", DEFAULT_SEGMENT_SECONDS)
        files, present = _identify(files, skipped, existing.sources)
        recordings = group_recordings(files, skipped, existing)
        staging = out / f"{STAGING_PREFIX}{hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:8]}"
        staging.mkdir()
        try:
            _decode_all(instrument, recordings, staging, sample_rate, segment_seconds, skipped, progress)
            usable = [r for r in recordings if r.segments]
            if not usable:
                if present and existing.manifest is not None:  # everything was there already: a no-op
                    return IngestResult(existing.manifest, already_present=present)
                raise _nothing_usable(source, files, skipped)
            joined = {r.recording_id for r in usable}  # counted once: as the recording being added to
            placeholders = [Recording(rid, split=split) for rid, split in existing.recordings.items()
                            if rid not in joined]
            assign_splits([*placeholders, *usable], split_fractions, seed)
            new = _write_shards(instrument, usable, staging, out, sample_rate, segment_seconds, shard_max_bytes,
                                existing, progress)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        new.update(created_by="audiostyle data add",
                   params={"sample_rate": sample_rate, "segment_seconds": segment_seconds, "seed": seed,
                           "shard_max_bytes": shard_max_bytes, "split_fractions": list(split_fractions),
                           "target_rms_db": audio_io.TARGET_RMS_DB})
        added = sum(len(r.segments) for r in usable)
        addition = {"source": str(source), "recordings": len(usable), "segments": added,
                    "already_present": len(present), "skipped": len(skipped)}
        manifest = merged_manifest(existing, new, skipped=skipped, addition=addition)
        write_manifest(out, manifest)  # the one step that makes the new data visible (atomic rename)
        remove_unlisted_shards(out, manifest)
    return IngestResult(manifest, [r.recording_id for r in usable], added, present, list(new["shards"]), True)


def _nothing_usable(source: Path, files: list[SourceFile], skipped: list[dict[str, str]]) -> DataError:
    if not files and not skipped:
        return DataError(f"{source}: no audio files found; SOURCE must hold (or list) wav, flac, ogg or mp3 files")
    reasons = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:5]) + ("; ..." if len(skipped) > 5 else "")
    return DataError(f"{source}: no usable audio, nothing was changed ({len(skipped)} file(s) skipped: {reasons})")


def _identify(files: list[SourceFile], skipped: list[dict[str, str]], known: dict[str, dict[str, Any]]
              ) -> tuple[list[SourceFile], list[str]]:
    """Checksum every file: (files to ingest, files whose content the dataset already holds). A second
    copy of one content in SOURCE is skipped: as two recordings it could land in train and test."""
    fresh, present, first = [], [], {}
    for f in sorted(files, key=lambda f: f.display):
        try:
            f.sha256 = sha256_file(f.path)
        except OSError as exc:
            skipped.append({"file": f.display, "reason": audio_io.AudioFileError(f.display, "unreadable",
                                                                                exc.strerror or str(exc)).reason})
            continue
        if f.sha256 in known:
            present.append(f.display)
        elif f.sha256 in first:
            skipped.append({"file": f.display, "reason": f"duplicate: the same bytes as {first[f.sha256]}"})
        else:
            first[f.sha256] = f.display
            fresh.append(f)
    return fresh, present


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


def group_recordings(files: list[SourceFile], skipped: list[dict[str, str]], existing: Existing | None = None
                     ) -> list[Recording]:
    """Group files by recording id (given, or derived from the path); ids are unique and key-safe.

    A file naming (by recording_id) a recording the dataset holds joins it, in its split; a derived id
    that an earlier recording has already gets the file's checksum as a suffix (another recording)."""
    existing = existing or Existing()
    held = existing.recordings
    derived: dict[str, list[SourceFile]] = defaultdict(list)
    for f in files:
        base = _safe_id(f.recording_id) if f.recording_id else _safe_id(f.id_hint)
        derived[base].append(f)
    recordings: dict[str, Recording] = {}
    for base, group in derived.items():
        for f in group:
            # two different files that derive the same id (a.wav, a.flac, or a take added before) get a
            # suffix of their content's checksum each
            clash = len(group) > 1 or base in held
            rid = base if f.recording_id or not clash else f"{base}-{f.sha256[:8] or hashlib.sha1(f.display.encode()).hexdigest()[:8]}"
            if rid not in recordings:
                recordings[rid] = Recording(rid, split=held.get(rid), first_index=existing.segments_of(rid))
            rec = recordings[rid]
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
                        "segment_index": rec.first_index + len(rec.segments), "offset_seconds": round(start / sample_rate, 4),
                        "duration_seconds": round((end - start) / sample_rate, 4), "sample_rate": sample_rate,
                        "loudness_db": round(audio_io.rms_db(wave[start:end]), 2), "gain_db": round(gain_db, 2),
                        "_spool": (spool.tell(), len(flac)),
                    })
                    spool.write(flac)
                rec.sources[f.sha256] = {"file": f.display, "recording_id": rec.recording_id, "segments": len(cuts)}
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
        # the minimums come out of train's share, or with 3-4 recordings train would still take them all
        target["train"] = min(target["train"], n - target["val"] - target["test"])
    count = {s: sum(r.split == s for r in recordings) for s in target}
    order = sorted(free, key=lambda r: hashlib.sha256(f"{seed}:{r.recording_id}".encode()).hexdigest())
    for rec in order:
        split = max(target, key=lambda s: (target[s] - count[s], -list(target).index(s)))
        rec.split = split
        count[split] += 1


def _write_shards(instrument: str, recordings: list[Recording], staging: Path, out: Path, sample_rate: int,
                  segment_seconds: float, shard_max_bytes: int, existing: Existing, progress: bool) -> dict[str, Any]:
    """This run's recordings as new shards (names the current manifest does not list, so its shards stay
    whole until the new manifest replaces it); returns this run's part of the manifest."""
    manifest: dict[str, Any] = {"instrument": instrument, "sample_rate": sample_rate,
                                "segment_seconds": segment_seconds, "splits": {}, "shards": {},
                                "recordings": {r.recording_id: r.split for r in recordings},
                                "sources": {sha: info for r in recordings for sha, info in r.sources.items()}}
    total = sum(len(r.segments) for r in recordings)
    bar = tqdm(total=total, desc=f"{instrument}: writing shards", unit="seg", disable=not progress, leave=False)
    for split in SPLITS:
        members = [r for r in recordings if r.split == split]
        if not members:
            continue
        # appending: numbered after the kept shards; replacing: from 0, reusing identical listed shards
        first = existing.first_index(split) if existing.manifest is not None else 0
        with ShardSequenceWriter(out, split, shard_max_bytes, listed=existing.listed, first_index=first) as writer:
            for rec in members:
                with open(staging / f"{rec.recording_id}.flacs", "rb") as spool:
                    for record in rec.segments:
                        offset, length = record.pop("_spool")
                        spool.seek(offset)
                        record["split"] = split
                        key = f"{rec.recording_id}__{record['segment_index']:05d}"
                        writer.write_segment(key, spool.read(length), record)
                        bar.update(1)
        record_split(manifest, split, writer.shards)
    bar.close()
    return manifest
