"""The paired dataset: the same passage played by several instruments, cut at the same sample ranges, as
WebDataset shards (`<key>.<instrument>.flac` per instrument + `<key>.json`) under its own manifest.

Per-instrument datasets are cut at each recording's own pauses (datasets/ingest.py): a piano decays into
a pause where a violin still sounds, so their segments do not line up. Pairs need one cut for all
instruments, made here from aligned recordings of a piece (the demo's renderings of one score). Each
instrument's recording is loudness-normalized on its own, as ingest does, so a paired target sounds at
the level the per-instrument data has. The manifest lists the instruments, the pieces and their splits;
the segment JSON carries the piece id and the time offset of the passage.

A passage may also hold the same notes by other players of an instrument (other sound sets or programs
of its family) as `<key>.<instrument>.<player>.flac`: the inputs of pairs across players, whose target
is always the reference rendering `<key>.<instrument>.flac`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audiostyle.datasets import audio_io
from audiostyle.datasets.manifest import read_manifest, withdraw_manifest, write_manifest
from audiostyle.datasets.shard_writer import ShardSequenceWriter, record_split, remove_stale_temps
from audiostyle.platform.core.errors import DataError

PAIRS_DIR = "pairs"  # the paired dataset's folder under a demo root
PAIRS_KIND = "pairs"
PAIRS_REQUIRED_KEYS = ("kind", "instruments", "sample_rate", "segment_seconds", "splits", "shards")
PAIR_SPLITS = ("train", "val", "test")
_MEMBER_RE = re.compile(r"^([a-z][a-z0-9_]*)\.flac$")
_PLAYER_MEMBER_RE = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z0-9_]+)\.flac$")


@dataclass(frozen=True)
class AlignedRecording:
    """One piece as several instruments played it, sample-aligned: `paths[instrument]` are audio files
    of the same notes at the same times (their lengths may differ by release tails); `players[instrument]`
    other renderings of the same notes by tag (other sound sets or programs), aligned the same way."""

    piece_id: str
    split: str
    paths: dict[str, Path]
    players: dict[str, dict[str, Path]] = field(default_factory=dict)

    def all_paths(self) -> list[Path]:
        return [*self.paths.values(), *(p for tags in self.players.values() for p in tags.values())]


def _cuts(length: int, sample_rate: int, segment_seconds: float) -> list[tuple[int, int]]:
    """Whole segments from the start, and a tail of at least half a segment (as ingest keeps)."""
    seg = int(round(segment_seconds * sample_rate))
    cuts = [(start, start + seg) for start in range(0, length - seg + 1, seg)]
    end = cuts[-1][1] if cuts else 0
    if length - end >= seg // 2:
        cuts.append((end, length))
    return cuts


def _normalized(path: Path, sample_rate: int) -> tuple[np.ndarray, float]:
    wave, sr = audio_io.read_audio(path)
    wave = audio_io.resample(wave, sr, sample_rate)
    return audio_io.normalize_loudness(wave, audio_io.active_regions(wave, sample_rate, name=str(path)))


def write_pair_dataset(out_dir: str | Path, recordings: Iterable[AlignedRecording], instruments: Sequence[str], *,
                       sample_rate: int, segment_seconds: float = 10.0,
                       shard_max_bytes: int = 256 * 1024 * 1024) -> dict[str, Any]:
    """Cut every aligned recording into passages shared by all `instruments` and write the shards and
    manifest.json to `out_dir`; returns the manifest.

    A passage where any instrument is silent is left out (it teaches nothing about that instrument).
    Shards are written atomically and the manifest last, as for instrument datasets; re-running with the
    same inputs rewrites nothing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    by_split: dict[str, list[AlignedRecording]] = {s: [] for s in PAIR_SPLITS}
    for rec in recordings:
        missing = [name for name in instruments if name not in rec.paths]
        if missing:
            raise DataError(f"paired piece {rec.piece_id!r} has no recording of {', '.join(missing)}")
        by_split.setdefault(rec.split, []).append(rec)
    manifest: dict[str, Any] = {"kind": PAIRS_KIND, "instruments": list(instruments), "sample_rate": sample_rate,
                                "segment_seconds": segment_seconds, "splits": {}, "shards": {}, "pieces": {}}
    withdrawn: list[bool] = []

    def before_replace(path: Path) -> None:
        if not withdrawn:
            withdrawn.append(withdraw_manifest(out))

    for split, members in by_split.items():
        if not members:
            continue
        with ShardSequenceWriter(out, split, shard_max_bytes, before_replace=before_replace) as writer:
            for rec in sorted(members, key=lambda r: r.piece_id):
                _write_piece(writer, rec, instruments, sample_rate, segment_seconds)
                manifest["pieces"][rec.piece_id] = split
        record_split(manifest, split, writer.shards)
    write_manifest(out, manifest)
    return manifest


def _write_piece(writer: ShardSequenceWriter, rec: AlignedRecording, instruments: Sequence[str],
                 sample_rate: int, segment_seconds: float) -> None:
    waves, gains = {}, {}
    for name in instruments:
        waves[name], gains[name] = _normalized(rec.paths[name], sample_rate)
        for tag, path in rec.players.get(name, {}).items():
            waves[f"{name}.{tag}"], gains[f"{name}.{tag}"] = _normalized(path, sample_rate)
    length = min(len(w) for w in waves.values())
    for index, (start, end) in enumerate(_cuts(length, sample_rate, segment_seconds)):
        clips = {name: wave[start:end] for name, wave in waves.items()}
        if any(audio_io.rms_db(clip) < audio_io.SILENT_PEAK_DB for clip in clips.values()):
            continue
        record = {"piece_id": rec.piece_id, "offset_seconds": round(start / sample_rate, 4),
                  "duration_seconds": round((end - start) / sample_rate, 4), "sample_rate": sample_rate,
                  "split": writer.split, "instruments": list(instruments),
                  "gain_db": {name: round(g, 2) for name, g in gains.items()}}
        members = {f"{name}.flac": audio_io.encode_flac(clip, sample_rate) for name, clip in clips.items()}
        writer.write_sample(f"{rec.piece_id}__{index:05d}", members, record)


def read_pair_manifest(location: str | Path) -> dict[str, Any]:
    """The manifest of a paired dataset; DataError naming it when it is not one."""
    manifest = read_manifest(location, required=PAIRS_REQUIRED_KEYS)
    if manifest["kind"] != PAIRS_KIND:
        raise DataError(f"{location}/manifest.json: kind {manifest['kind']!r} is not a paired dataset "
                        f"(kind {PAIRS_KIND!r}); point data.pairs at the `{PAIRS_DIR}/` folder `data demo` writes")
    return manifest


def instrument_members(sample: dict[str, Any]) -> dict[str, bytes]:
    """{instrument: FLAC bytes} of a decoded-from-tar pair sample (keys `<instrument>.flac`)."""
    out = {}
    for key, value in sample.items():
        match = _MEMBER_RE.match(key)
        if match:
            out[match.group(1)] = value
    return out


def player_members(sample: dict[str, Any]) -> dict[str, list[bytes]]:
    """{instrument: [FLAC bytes of the reference rendering, then of each other player]} of a pair sample."""
    out: dict[str, list[bytes]] = {name: [data] for name, data in instrument_members(sample).items()}
    for key in sorted(sample):
        match = _PLAYER_MEMBER_RE.match(key)
        if match and match.group(1) in out:
            out[match.group(1)].append(sample[key])
    return out


def describe(manifest: dict[str, Any]) -> str:
    """One line per split for `data info` and the demo summary."""
    lines = [f"pairs of {', '.join(manifest['instruments'])}: {len(manifest.get('pieces', {}))} pieces, "
             f"{manifest['segment_seconds']:g} s passages"]
    for split, info in manifest["splits"].items():
        lines.append(f"  {split:<8} {info['segments']:>7} passages {info['seconds'] / 3600:8.3f} h")
    return "\n".join(lines)


def record_of(sample: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a decoded-from-tar pair sample."""
    raw = sample.get("json")
    if raw is None:
        raise DataError(f"{sample.get('__url__')}: pair sample {sample.get('__key__')!r} has no JSON record")
    return json.loads(raw)
