"""The files of training checkpoints and bundles: their names, and the size + sha256 list that proves
each one is the file that was written.

A checkpoint folder (written by worker rank 0, read on resume and by export) and a bundle folder
(written by export, read by transfer and evaluation) share three files: the weights, the resolved
config and the normalization statistics. Both record every other file's size and checksum in their
last-written JSON file (state.json, bundle.json), which so doubles as the commit marker: a file that
was truncated, swapped or corrupted after the fact (a YAML cut short still parses) is named before
anything is built from it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audiostyle.platform.core.atomic_files import sha256_file
from audiostyle.platform.core.errors import CheckpointError

MODEL_FILE = "model.safetensors"  # weights and buffers (front-end statistics, prototypes); no pickle
CONFIG_FILE = "config.yaml"  # the resolved experiment config the weights were trained with
# Normalization statistics: in a checkpoint or bundle the (mean, std) arrays only; in an instrument's
# dataset folder the running moments stats/normalization_stats.py pools and updates.
STATS_FILE = "stats.npz"
OPTIM_FILE = "optim.pt"  # checkpoints only: optimizer/scheduler/RNG state, plain data (weights_only)
STATE_FILE = "state.json"  # checkpoints only: step, phase, metrics, ... and the file list; written last
BUNDLE_META_FILE = "bundle.json"  # bundles only: instruments, provenance and the file list; written last

CHECKPOINT_FILES = (MODEL_FILE, OPTIM_FILE, STATE_FILE, CONFIG_FILE, STATS_FILE)
BUNDLE_FILES = (MODEL_FILE, CONFIG_FILE, STATS_FILE, BUNDLE_META_FILE)

FileList = dict[str, dict[str, Any]]  # file name -> {"bytes": int, "sha256": hex str}


def describe_files(root: str | os.PathLike, names: Sequence[str]) -> FileList:
    """Size and sha256 of each named file in `root`, for the folder's JSON file to record."""
    root = Path(root)
    return {name: {"bytes": (root / name).stat().st_size, "sha256": sha256_file(root / name)} for name in names}


def size_problem(size: int | None, expected: Any) -> str | None:
    """Why a listed file of `size` bytes (None: absent) is not the one recorded in `expected`
    ({"bytes": ...}); None when its size matches. Cheap: no byte of the file is read."""
    if size is None:
        return "missing"
    want = expected.get("bytes") if isinstance(expected, Mapping) else None
    if isinstance(want, int) and size != want:
        return f"{size} bytes, expected {want}: the file is truncated or was replaced"
    return None


def verify_files(root: str | os.PathLike, files: Mapping[str, Mapping[str, Any]], *, remedy: str,
                 required: Sequence[str] = (), listing: str | os.PathLike | None = None) -> None:
    """CheckpointError naming the first file that is unlisted, missing, of another size or checksum.

    files: the recorded list; required: names the list must hold (a bundle's); listing: the JSON
    file that holds the list, for the message; remedy: what the user should do, ending each message.
    """
    root = Path(root)
    if not isinstance(files, Mapping) or not all(isinstance(v, Mapping) for v in files.values()):
        raise CheckpointError(f"{listing or root}: the file list is not a mapping of name -> "
                              f"{{bytes, sha256}}; {remedy}")
    for name in required:
        if name not in files:
            raise CheckpointError(f"{listing or root}: lists no '{name}'; {remedy}")
    for name, expected in files.items():
        path = root / name
        problem = size_problem(path.stat().st_size if path.is_file() else None, expected)
        if problem:
            raise CheckpointError(f"{path}: {problem}; {remedy}")
        if sha256_file(path) != expected.get("sha256"):
            raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt; {remedy}")


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, Any]) -> None:
    """A state_dict as safetensors (on CPU, contiguous, unshared: clone() drops the storage sharing of
    tied weights, which safetensors refuses to serialize)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}, str(path))


def write_mean_std(path: str | os.PathLike, mean: Any, std: Any) -> None:
    """Normalization statistics as float32 arrays `mean` and `std` in an npz."""
    import numpy as np

    with open(path, "wb") as fh:  # a file object, so numpy does not append '.npz' to a temporary name
        np.savez(fh, mean=np.asarray(mean, dtype=np.float32), std=np.asarray(std, dtype=np.float32))


def read_mean_std(path: str | os.PathLike) -> tuple[Any, Any]:
    """(mean, std) arrays of an npz written by `write_mean_std`; reading both catches a damaged file."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return data["mean"], data["std"]
