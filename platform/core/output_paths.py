"""Where outputs go: checking an output folder before any work starts, and creating it with a message.

A command that spends minutes transferring, evaluating or ingesting must not find out at its first
write that `--out` names an existing file or a folder it cannot write, and then stop with a traceback
and half its outputs. `check_output_folder` answers before anything is done or created: the path is
a folder or can be made one (no file in the way, the nearest existing folder is writable).
`make_output_folder` creates it, turning an OSError into the same kind of one-line DataError.
"""

from __future__ import annotations

import os
from pathlib import Path

from audiostyle.platform.core.errors import DataError


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_folder(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """`path` as a Path when outputs can be written there (now, or once created); DataError otherwise.
    Creates nothing."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{option} {folder}: is an existing file, not a folder; give a folder path (it is created "
                        "if missing) or move the file away")
    base = _nearest_existing(folder.absolute())
    if not base.is_dir():
        raise DataError(f"{option} {folder}: {base} is a file, so no folder can be created inside it; give another "
                        "folder path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise DataError(f"{option} {folder}: {base} is not writable by this user; choose a folder you can write to "
                        "or fix its permissions")
    return folder


def make_output_folder(path: str | os.PathLike, *, option: str = "--out") -> Path:
    """Create the output folder (and its parents) after the same checks; DataError naming the cause."""
    folder = check_output_folder(path, option=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{option} {folder}: cannot create the folder ({exc.strerror or exc}); choose a folder "
                        "you can write to") from None
    return folder
