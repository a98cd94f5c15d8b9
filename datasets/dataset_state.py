"""What an instrument folder already holds, for ingest to append to it or replace it safely.

`data add` onto an existing instrument appends: a recording is known by the sha256 of its file, so
adding the same file again is a no-op, while earlier recordings keep their split, their shards and
their segment keys. `--replace` starts the instrument over. Either way nothing in the folder changes
until the new shards are complete: they get names the current manifest does not list, and the new
manifest (the only thing readers trust) replaces the old one in one rename.

`Existing.read` refuses, before anything is decoded: an append onto another instrument's folder, onto
a manifest it cannot read, or with another sample rate or segment length than the shards have.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiostyle.datasets.manifest import MANIFEST_NAME, SPLITS, read_manifest
from audiostyle.platform.core.errors import DataError

SHARD_FILE_RE = re.compile(r"^(train|val|test|heldout)-(\d{6})\.tar$")
REPLACE_HINT = "pass --replace to start the instrument over (its current shards are removed once the new ones are written)"


@dataclass
class Existing:
    """The parts of the current manifest that an ingest builds on (empty for a new folder)."""

    manifest: dict[str, Any] | None = None
    listed: dict[str, str] = field(default_factory=dict)  # shard name -> sha256, never overwritten

    @property
    def recordings(self) -> dict[str, str]:
        return dict(self.manifest.get("recordings", {})) if self.manifest else {}

    @property
    def sources(self) -> dict[str, dict[str, Any]]:
        """sha256 of each source file ingested -> {file, recording_id, segments}."""
        return dict(self.manifest.get("sources", {})) if self.manifest else {}

    def segments_of(self, recording_id: str) -> int:
        """Segments a recording has already, so appended files of it continue its segment keys."""
        return sum(int(s.get("segments", 0)) for s in self.sources.values() if s.get("recording_id") == recording_id)

    def first_index(self, split: str) -> int:
        """The number after the highest listed shard of `split` (new shards are numbered from it)."""
        found = [int(m.group(2)) for name in self.listed if (m := SHARD_FILE_RE.match(name)) and m.group(1) == split]
        return max(found, default=-1) + 1

    @classmethod
    def read(cls, out: Path, instrument: str, *, append: bool, sample_rate: int | None,
             segment_seconds: float | None) -> Existing:
        """The folder's state; DataError when an append cannot build on it."""
        if not (out / MANIFEST_NAME).exists():
            return cls()
        try:
            manifest = read_manifest(out)
        except DataError as exc:
            if append:
                raise DataError(f"{exc}\n  The folder cannot be appended to; {REPLACE_HINT}") from None
            return cls()  # replacing: an unreadable manifest vouches for nothing
        listed = {name: str(info.get("sha256")) for name, info in manifest["shards"].items()}
        if not append:
            return cls(None, listed)
        where = out / MANIFEST_NAME
        if manifest["instrument"] != instrument:
            raise DataError(f"{out} holds instrument {manifest['instrument']!r}, not {instrument!r}: adding would mix "
                            f"two instruments in one class. Give {instrument} its own folder (e.g. --out "
                            f"{out.parent / instrument}), or {REPLACE_HINT}")
        if "sources" not in manifest:
            raise DataError(f"{where}: written by an older audiostyle that did not record each file's checksum, so "
                            f"re-added files could not be recognised; {REPLACE_HINT}")
        for name, given, have in (("--sample-rate", sample_rate, manifest["sample_rate"]),
                                  ("--segment-seconds", segment_seconds, manifest["segment_seconds"])):
            if given is not None and float(given) != float(have):
                raise DataError(f"{name} {given:g} differs from the {have:g} of the shards in {out}; leave it out to "
                                f"append at {have:g}, or {REPLACE_HINT}")
        return cls(manifest, listed)


def merged_manifest(existing: Existing, new: dict[str, Any], *, skipped: list[dict[str, str]],
                    addition: dict[str, Any]) -> dict[str, Any]:
    """The manifest after an ingest: `new` (this run's splits, shards, recordings, sources) on top of
    the existing one when appending, alone when replacing; skipped files and the additions log merged."""
    if existing.manifest is None:
        merged = copy.deepcopy(new)
        merged["skipped"] = sorted(skipped, key=lambda s: (s["file"], s["reason"]))
        merged["additions"] = [addition]
        return merged
    merged = copy.deepcopy(existing.manifest)
    for split in SPLITS:
        add = new["splits"].get(split)
        if not add:
            continue
        have = merged["splits"].setdefault(split, {"shards": [], "segments": 0, "seconds": 0.0})
        have["shards"] += add["shards"]
        have["segments"] += add["segments"]
        have["seconds"] = round(have["seconds"] + add["seconds"], 3)
    for key in ("shards", "recordings", "sources"):
        merged[key] = {**merged.get(key, {}), **new[key]}
    known = {(s["file"], s["reason"]) for s in merged.get("skipped", [])}
    merged["skipped"] = sorted([*merged.get("skipped", []), *(s for s in skipped if (s["file"], s["reason"]) not in known)],
                               key=lambda s: (s["file"], s["reason"]))
    merged["additions"] = [*merged.get("additions", []), addition]
    return merged


def remove_unlisted_shards(out: Path, manifest: dict[str, Any]) -> list[str]:
    """Delete shard files the (new) manifest does not list: replaced ones, leftovers of killed runs."""
    removed = []
    for p in out.iterdir():
        if SHARD_FILE_RE.match(p.name) and p.name not in manifest["shards"]:
            p.unlink()
            removed.append(p.name)
    return removed
