"""Atomic WebDataset shard writing: `{split}-{NNNNNN}.tar` files of FLAC + JSON segments, with checksums.

Each shard is written under a hidden temporary name in the destination folder and renamed with
os.replace only once complete, so a reader never sees a partial tar. The tar bytes are reproducible
(fixed mtime, owner and mode), so re-running an ingest yields byte-identical shards with identical
sha256 sums, and an unchanged shard is not rewritten at all. The two members of a segment
(`<key>.flac`, `<key>.json`) are always adjacent, as WebDataset requires.

A shard that the folder's current manifest lists is never replaced by different bytes: the writer is
told those names (`listed`) and numbers its shards past them, so readers of the old manifest keep
reading whole, unchanged shards until the new manifest replaces it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import webdataset as wds

from audiostyle.platform.core.atomic_files import sha256_file

TEMP_PREFIX = ".partial-"
# Keys become tar member names `<key>.<ext>`; WebDataset splits at the first dot, so no dots.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TAR_BLOCK = 512


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def remove_stale_temps(folder: str | Path) -> list[str]:
    """Delete temporary shards left by a killed run (they were never renamed, so nothing reads them)."""
    removed = []
    for p in Path(folder).glob(f"{TEMP_PREFIX}*"):
        p.unlink(missing_ok=True)
        removed.append(p.name)
    return removed


def _member_bytes(payload_len: int) -> int:
    """Bytes a member takes in a tar: one header block plus the payload padded to whole blocks."""
    return _TAR_BLOCK + -(-payload_len // _TAR_BLOCK) * _TAR_BLOCK


class _HashingFile:
    """Write-through wrapper that hashes and counts every byte on its way to the file."""

    def __init__(self, fh: BinaryIO):
        self.fh = fh
        self.sha = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.bytes += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


@dataclass
class ShardInfo:
    name: str
    sha256: str
    segments: int
    bytes: int
    seconds: float


class ShardSequenceWriter:
    """Writes one split's segments into consecutive shards of at most `max_bytes` each.

    listed: {shard name: sha256} of the shards the current manifest lists. Their names are skipped
    (numbering starts at `first_index`), except that a shard identical to a listed one of the same
    name is kept as it is: re-ingesting the same input rewrites nothing. Without `listed`,
    `before_replace(path)` is called just before an existing shard is replaced by different bytes (the
    pair dataset uses it to withdraw the manifest that vouched for the old shard).

    Use it as a context manager: a clean exit finishes the last shard (`shards` then lists every shard
    written), while an exception, Ctrl-C included, drops the shard in progress so no temporary file is left.
    """

    def __init__(self, folder: str | Path, split: str, max_bytes: int, *, listed: Mapping[str, str] | None = None,
                 first_index: int = 0, before_replace: Callable[[Path], None] | None = None):
        self.folder = Path(folder)
        self.split = split
        self.max_bytes = int(max_bytes)
        self.before_replace = before_replace
        self.listed = dict(listed or {})
        self.index = first_index
        self.shards: list[ShardInfo] = []
        self._tar: wds.TarWriter | None = None
        self._fh: BinaryIO | None = None
        self._hash: _HashingFile | None = None
        self._temp: Path | None = None
        self._count = 0
        self._seconds = 0.0
        self._keys: set[str] = set()

    def write_segment(self, key: str, flac: bytes, record: dict[str, Any]) -> None:
        """Append one segment (FLAC bytes + JSON record); starts a new shard when this one is full."""
        self.write_sample(key, {"flac": flac}, record)

    def write_sample(self, key: str, members: dict[str, bytes], record: dict[str, Any]) -> None:
        """Append one sample: `<key>.<ext>` per member plus `<key>.json` (a paired passage has one
        `<instrument>.flac` member per instrument)."""
        if not _KEY_RE.match(key):
            raise ValueError(f"segment key {key!r} must use only letters, digits, '_' and '-'")
        if key in self._keys:
            raise ValueError(f"duplicate segment key {key!r} in split {self.split!r}")
        self._keys.add(key)
        meta = json.dumps(record, sort_keys=True).encode("utf-8")
        size = sum(_member_bytes(len(b)) for b in members.values()) + _member_bytes(len(meta))
        # 2 blocks of end-of-archive zeros; a shard always takes at least one segment
        if self._tar is not None and self._count and self._hash.bytes + size + 2 * _TAR_BLOCK > self.max_bytes:
            self._finish()
        if self._tar is None:
            self._start()
        # TarWriter writes members in sorted extension order, all of one key adjacent
        self._tar.write({"__key__": key, **members, "json": meta})
        self._count += 1
        self._seconds += float(record.get("duration_seconds", 0.0))

    def __enter__(self) -> ShardSequenceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.close()
        except BaseException:  # finishing the last shard failed (a full disk): leave no temporary file
            self.abort()
            raise

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and return every shard written, in order."""
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file), keeping finished shards."""
        if self._tar is not None:
            try:
                self._tar.close()
            finally:
                self._fh.close()
                self._temp.unlink(missing_ok=True)
                self._tar = None

    def _start(self) -> None:
        self._temp = self.folder / f"{TEMP_PREFIX}{self.split}-{self.index:06d}.tar.{os.getpid()}"
        self._fh = open(self._temp, "wb")
        self._hash = _HashingFile(self._fh)
        # fixed mtime/owner/mode: the same segments always give the same bytes (and sha256)
        self._tar = wds.TarWriter(self._hash, encoder=False, compress=False, mtime=0.0,
                                  user="audiostyle", group="audiostyle", mode=0o444)
        self._count = 0
        self._seconds = 0.0

    def _finish(self) -> None:
        self._tar.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        digest = self._hash.sha.hexdigest()
        name = shard_name(self.split, self.index)
        while name in self.listed and self.listed[name] != digest:  # never overwrite what a manifest vouches for
            self.index += 1
            name = shard_name(self.split, self.index)
        dest = self.folder / name
        if dest.exists() and sha256_file(dest) == digest:
            self._temp.unlink()  # identical shard already in place: leave it untouched
        else:  # a free name, a leftover no manifest lists, or the very bytes the manifest vouches for
            if dest.exists() and self.before_replace is not None:
                self.before_replace(dest)
            os.replace(self._temp, dest)
        self.shards.append(ShardInfo(name, digest, self._count, self._hash.bytes, round(self._seconds, 3)))
        self.index += 1
        self._tar = None


def record_split(manifest: dict[str, Any], split: str, shards: list[ShardInfo]) -> None:
    """Enter a split's finished shards in a manifest: the split's list, segment count and seconds, and each
    shard's checksum, segment count and size."""
    manifest["splits"][split] = {"shards": [s.name for s in shards],
                                 "segments": sum(s.segments for s in shards),
                                 "seconds": round(sum(s.seconds for s in shards), 3)}
    for s in shards:
        manifest["shards"][s.name] = {"sha256": s.sha256, "segments": s.segments, "bytes": s.bytes}
