"""An instrument folder's manifest.json: atomic write, read from local paths or URLs, a summary, and
sequential reading of the segments of a split, as bytes or decoded audio (for statistics, prototypes,
the timbre classifier and the paired test set; training streams through datasets/streaming.py instead).

The manifest is the only thing readers trust: a shard not listed in it is invisible, so ingest writes
the manifest last (temp name, then os.replace) and withdraws it before changing a listed shard.
Locations may be local folders or URL prefixes (`file:`, `pipe:`, `http(s)://`, s3://, ...); which one a
location is, and how either is opened, is `audiostyle.platform.core.locations`' rule.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from audiostyle.datasets.audio_io import decode_bytes
from audiostyle.platform.core.atomic_files import write_json_atomic
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.core.locations import join_location, open_url

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test", "heldout")
REQUIRED_KEYS = ("instrument", "sample_rate", "segment_seconds", "splits", "shards")


def read_manifest(location: str | Path, required: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, Any]:
    """Load and check `<location>/manifest.json` (an instrument's, or with `required` another kind's,
    e.g. a paired dataset's); DataError naming the file when missing or malformed."""
    path = join_location(location, MANIFEST_NAME)
    try:
        with open_url(path) as fh:
            raw = fh.read()
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: no readable manifest ({exc}). Create the dataset with "
                        f"`audiostyle data add INSTRUMENT SOURCE --out {location}` (or `audiostyle data demo`); "
                        "an interrupted `data add` leaves no manifest until it is re-run to completion.") from exc
    if not raw:
        raise DataError(f"{path}: the manifest is empty (a failed `pipe:` command or download?)")
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: manifest is not valid JSON ({exc}); re-run `audiostyle data add`") from exc
    missing = [k for k in required if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise DataError(f"{path}: manifest lacks {', '.join(missing)}; re-run `audiostyle data add`")
    return manifest


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `<folder>/manifest.json` atomically (sorted keys, so equal content gives equal bytes)."""
    # fsync: the manifest is what makes a folder's shards visible, so it must survive a power cut whole
    return write_json_atomic(Path(folder) / MANIFEST_NAME, manifest, fsync=True, indent=1, sort_keys=True)


def withdraw_manifest(folder: str | Path) -> bool:
    """Remove the manifest (before a shard it lists changes); True if there was one."""
    path = Path(folder) / MANIFEST_NAME
    if path.exists():
        path.unlink()
        return True
    return False


def shard_urls(location: str | Path, manifest: dict[str, Any], split: str) -> list[str]:
    """URLs of a split's shards; DataError naming the manifest when the split has none."""
    shards = manifest["splits"].get(split, {}).get("shards", [])
    if not shards:
        present = [s for s, v in manifest["splits"].items() if v.get("shards")]
        raise DataError(
            f"{join_location(location, MANIFEST_NAME)}: {manifest.get('instrument', 'the dataset')!r} has no "
            f"'{split}' shards (splits present: {', '.join(present) or 'none'}). Give it more recordings "
            "(splits are made by recording) or set split fractions so this split gets at least one.")
    return [join_location(location, name) for name in shards]


class Segment(NamedTuple):
    url: str  # the shard it came from, for error messages
    key: str
    record: dict[str, Any]  # the segment's JSON (instrument, recording_id, offset_seconds, ...)
    flac: bytes


def iter_segments(location: str | Path, split: str, manifest: dict[str, Any] | None = None) -> Iterator[Segment]:
    """Every segment of a split, streamed shard by shard in manifest order.

    A segment's members are adjacent in the tar (the writer guarantees it), so at most one segment is
    held in memory; a damaged shard, or a segment missing its .flac or .json, is a DataError naming it.
    """
    manifest = manifest if manifest is not None else read_manifest(location)
    for url in shard_urls(location, manifest, split):
        pending: dict[str, dict[str, bytes]] = {}
        try:
            with open_url(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.partition(".")
                    data = tar.extractfile(member)
                    pending.setdefault(key, {})[ext] = data.read() if data is not None else b""
                    if {"flac", "json"} <= pending[key].keys():
                        parts = pending.pop(key)
                        yield Segment(url, key, json.loads(parts["json"]), parts["flac"])
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise DataError(f"{url}: cannot read this shard ({exc}); re-create it with `audiostyle data add` "
                            "(or `data demo`)") from exc
        for key, parts in pending.items():
            raise DataError(f"{url}: segment {key!r} has only its {', '.join(sorted(parts))} member; the shard is "
                            "damaged, re-create it with `audiostyle data add` (or `data demo`)")


def iter_split_audio(location: str | Path, split: str, *, max_seconds: float | None = None
                     ) -> Iterator[tuple[str, np.ndarray, int, dict[str, Any]]]:
    """(key, mono audio, sample rate, segment JSON) for each segment of a split, in manifest order,
    stopping once `max_seconds` of audio have been read."""
    seconds = 0.0
    for segment in iter_segments(location, split):
        audio, sr = decode_bytes(segment.flac, name=f"{segment.url}:{segment.key}.flac")
        yield segment.key, audio, sr, segment.record
        seconds += len(audio) / sr
        if max_seconds is not None and seconds >= max_seconds:
            return


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """Human-readable summary: segments and hours per split, shard count, skipped files with reasons."""
    lines = [f"instrument {manifest['instrument']}: {manifest['sample_rate']} Hz, "
             f"{manifest['segment_seconds']:g} s segments, {len(manifest['shards'])} shards, "
             f"{len(manifest.get('recordings', {}))} recordings"]
    for split in SPLITS:
        info = manifest["splits"].get(split)
        if info:
            lines.append(f"  {split:<8} {info['segments']:>7} segments {info['seconds'] / 3600:8.3f} h "
                         f"in {len(info['shards'])} shard(s)")
    skipped = manifest.get("skipped", [])
    lines.append(f"  skipped  {len(skipped)} file(s)" + (":" if skipped else ""))
    for item in skipped:
        lines.append(f"    {item['file']}: {item['reason']}")
    return lines
