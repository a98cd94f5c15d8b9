"""Writing files so that no reader ever sees half of one, and checksumming them.

Everything the platform writes for someone else to read (manifests, statistics, checkpoints, bundles,
reports, transferred audio, sweep results) goes through `atomic_write`: the bytes land in a hidden
temporary file in the same folder (same filesystem, so the rename is atomic) that replaces the
destination only once complete. An interrupted run leaves at most a hidden temporary file, never a
truncated file under the real name, and an existing file is never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temp_path_for(path: Path) -> Path:
    """A hidden, per-process name beside `path` that keeps its suffix (soundfile, numpy and matplotlib
    choose the format from the suffix)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], *, fsync: bool = False) -> Path:
    """Call `write(temp_path)`, then move the finished file to `path`; returns `path`.

    fsync: flush the bytes to disk before the rename, for files whose loss after a power cut would
    orphan other files (a shard manifest); everything else relies on the rename alone.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        write(str(tmp))
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), fsync=fsync)


def write_json_atomic(path: str | os.PathLike, payload: Any, *, fsync: bool = False, **dump_kwargs: Any) -> Path:
    """`payload` as JSON; pass `indent`/`sort_keys` through (sorted keys make equal content equal bytes)."""
    return write_text_atomic(path, json.dumps(payload, **dump_kwargs) + "\n", fsync=fsync)


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    return atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks so multi-GB shards need no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
