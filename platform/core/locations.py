"""Where things are stored: the one rule that tells a URL from a local path, and opening either.

Instrument datasets (manifests, shards), run storage (checkpoints, sweeps) and bundles are named by a
location that is either a local path or a URL: `file:`, `pipe:` (a command whose output is the file),
`http(s)://`, or an object store (s3://, gs://, ...). Every part of audiostyle decides which one it has
with `is_url`, so a location that one part reads as local is never read as remote by another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse
from urllib.request import url2pathname, urlopen

from audiostyle.platform.core.errors import CheckpointError


def is_url(location: str | os.PathLike) -> bool:
    """Whether `location` names a URL (a scheme of two or more letters) rather than a local path."""
    scheme = urlparse(str(location)).scheme
    return len(scheme) > 1  # one letter is a Windows drive, not a scheme


def join_location(location: str | os.PathLike, name: str) -> str:
    """`<location>/<name>` for folders and URL prefixes alike (pipe: commands get the name appended)."""
    return str(location).rstrip("/") + "/" + name


def absolute_location(location: str | os.PathLike) -> str:
    """URLs unchanged; local paths made absolute, since Ray workers and trial drivers have other cwds."""
    return str(location) if is_url(location) else str(Path(location).expanduser().resolve())


def open_url(url: str) -> IO[bytes]:
    """Open a local path or URL for binary reading (the same rules serve manifests and shards)."""
    scheme = urlparse(url).scheme if is_url(url) else ""
    if scheme == "":
        return open(url, "rb")
    if scheme == "file":
        return open(url2pathname(urlparse(url).path), "rb")
    if scheme == "pipe":
        import webdataset as wds

        return wds.gopen(url, "rb")
    if scheme in ("http", "https"):
        return urlopen(url, timeout=60)  # noqa: S310 - a user-configured data location
    import fsspec  # object stores: s3://, gs://, az://, memory://, ... (the backend package must be installed)

    return fsspec.open(url, "rb").open()


def open_storage(location: str | os.PathLike) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for a local path or URI, as Ray's get_fs_and_path does, so
    whatever Ray Train could write to a `storage_path` can be read back here."""
    import pyarrow.fs

    text = str(location)
    if not is_url(text):
        return pyarrow.fs.LocalFileSystem(), os.path.abspath(text)
    try:
        return pyarrow.fs.FileSystem.from_uri(text)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes or credentials
        raise CheckpointError(f"{text}: cannot open this storage location ({exc})") from exc
