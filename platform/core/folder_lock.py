"""One writer per folder: an exclusive lock that a second writer is refused with "in use by pid N".

`data add` and `data demo` rewrite an instrument folder's manifest and shards; two at once would
each compute a manifest from the state before the other's and the last one to rename would drop
the other's recordings. The lock is `fcntl.flock` on `<folder>/.audiostyle-lock`: the kernel
releases it when its holder exits, however it exits, so a lock left by a killed run is never
mistaken for a live one (the stale-lock problem of pid files). The holder writes its pid, host and
command into the file, which is how a refused writer can say who holds it, and how the next holder
learns that the previous one stopped before releasing (the file is emptied on a clean release).

The lock is re-entrant within a process (the data job holds it across ingest and statistics, and
ingest takes it again), and the file itself is never deleted while the folder exists: deleting a
lock file lets a waiting process lock a file that is no longer the one the next process opens.
POSIX only (Linux and macOS: where the platform and Ray run).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from audiostyle.platform.core.errors import DataError

logger = logging.getLogger(__name__)

LOCK_NAME = ".audiostyle-lock"
_held: dict[str, tuple[int, int]] = {}  # resolved folder -> (fd, depth) for the locks this process holds


def _holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?"}


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, purpose: str = "") -> Iterator[Path]:
    """Hold the folder's lock for the `with` body (creating the folder if needed); DataError naming the
    holder when another process has it. A folder this call created is removed again when the body
    fails and left it empty, so a refused or failed first `data add` leaves nothing behind."""
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _held:  # re-entrant: this process holds it already
        fd, depth = _held[key]
        _held[key] = (fd, depth + 1)
        try:
            yield folder
        finally:
            _held[key] = (fd, _held[key][1] - 1)
        return
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is an existing file, not a folder; give a folder path (it is created if missing)")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataError(f"{folder}: cannot create the folder or its lock file ({exc.strerror or exc}); choose a "
                        "folder you can write to") from None
    acquired = failed = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = _holder(fd)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["since"])) if "since" in who else "?"
            raise DataError(
                f"{folder}: in use by pid {who.get('pid', '?')} on {who.get('host', '?')} "
                f"(`{who.get('command', '?')}`, since {since}); one writer at a time: wait for it to finish and "
                "run again") from None
        acquired = True
        previous = _holder(fd)
        if previous:
            logger.warning("%s: the previous writer (pid %s on %s, `%s`) stopped before finishing; its leftovers "
                           "are cleaned up now", folder, previous.get("pid"), previous.get("host"),
                           previous.get("command"))
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                                 "command": purpose or " ".join(sys.argv)}).encode())
        _held[key] = (fd, 1)
        try:
            yield folder
        except BaseException:
            failed = True
            raise
        finally:
            del _held[key]
            os.ftruncate(fd, 0)  # empty: released cleanly (a non-empty file tells the next holder otherwise)
    finally:
        if acquired and failed and created:  # still holding the lock, so nobody else is using the file
            _remove_if_only_lock(folder)
        os.close(fd)  # closing the descriptor releases the flock


def _remove_if_only_lock(folder: Path) -> None:
    with contextlib.suppress(OSError):
        if [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            (folder / LOCK_NAME).unlink()
            folder.rmdir()
