"""Find every training checkpoint under a storage location and rank them by a reported metric.

A storage location is a local folder, an NFS mount or an object-store URI (s3://, gs://, ...), opened
with pyarrow.fs exactly as Ray Train opens `storage_path`, so whatever Ray could write here can be read.
Runs live at `<storage>/<run>/<checkpoint>/` (training/driver.py names them) and sweeps at
`<storage>/<sweep>/trial_<id>/.../<checkpoint>/` (sweeps/driver.py). A checkpoint is any folder holding `state.json` (and the weights); its step, phase and
metrics come from that file, completed by the metrics Ray kept in the run's
`checkpoint_manager_snapshot.json` (the two agree when both exist; state.json wins).

A checkpoint whose files do not have the sizes its state.json recorded (a weights file cut short by a
full disk or an interrupted copy) is listed with the reason in `damage`; ranking skips it with a
warning, so `best` and `export` never pick it. Sizes come from the same directory listing that finds
the checkpoints, so the check reads no file; checksums are verified when a checkpoint is loaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from audiostyle.platform.core.artifact_files import MODEL_FILE, STATE_FILE, size_problem
from audiostyle.platform.core.errors import CheckpointError, did_you_mean
from audiostyle.platform.core.locations import is_url, join_location, open_storage
from audiostyle.platform.core.modes import check_mode, smaller_is_better

logger = logging.getLogger(__name__)

RAY_SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # ray.train.v2 constants: the checkpoint manager's state


@dataclass
class CheckpointRecord:
    """One checkpoint: where it is, which run (and sweep trial) wrote it, and what it reported."""

    location: str  # local path or URI of the checkpoint folder
    run: str  # run folder relative to the storage root, e.g. "quickstart" or "sweep1/trial_3/quickstart"
    name: str  # checkpoint folder name
    step: int
    phase: str
    metrics: dict[str, float] = field(default_factory=dict)
    instruments: list[str] = field(default_factory=list)
    sweep: str | None = None
    trial: str | None = None
    damage: str | None = None  # why the checkpoint cannot be used (a file missing or of the wrong size)

    def value(self, metric: str) -> float | None:
        """The metric's value (`step` is rankable too), or None when this checkpoint did not report it."""
        if metric == "step":
            return float(self.step)
        v = self.metrics.get(metric)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
            return None
        return float(v)


def _read_json(fs, path: str) -> dict | None:
    try:
        with fs.open_input_stream(path) as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except Exception:  # unreadable metadata: the checkpoint is reported as unusable by the caller
        return None
    return data if isinstance(data, dict) else None


def _ray_metrics(fs, run_path: str, cache: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """checkpoint folder name -> metrics Ray recorded for it (empty when Ray left no snapshot)."""
    if run_path not in cache:
        snapshot = _read_json(fs, f"{run_path}/{RAY_SNAPSHOT_FILE}") or {}
        cache[run_path] = {r.get("checkpoint_dir_name"): r.get("metrics", {}) or {}
                           for r in snapshot.get("checkpoint_results", []) if isinstance(r, dict)}
    return cache[run_path]


def scan_checkpoints(storage: str | Path, *, skipped: list[str] | None = None) -> list[CheckpointRecord]:
    """Every checkpoint under `storage`, sorted by run then step.

    Checkpoints whose state.json is missing or unreadable are left out and described in `skipped`.
    """
    import pyarrow.fs

    fs, root = open_storage(storage)
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise CheckpointError(f"{storage}: storage location not found (give the run.storage_path of a training run)")
    if info.type != pyarrow.fs.FileType.Directory:
        raise CheckpointError(f"{storage}: not a folder (give the run.storage_path of a training run)")
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    # A checkpoint folder is recognised by its files, not its name: Ray names them checkpoint_* by
    # default, while a trainer may pass its own checkpoint_dir_name (e.g. step_00000006). A folder
    # named checkpoint_* without them is an interrupted save and is reported as skipped.
    sizes = {e.path: e.size for e in entries if e.type == pyarrow.fs.FileType.File}
    files = set(sizes)
    ckpt_dirs = sorted({str(PurePosixPath(f).parent) for f in files
                        if PurePosixPath(f).name in (STATE_FILE, MODEL_FILE)}
                       | {e.path for e in entries if e.type == pyarrow.fs.FileType.Directory
                          and PurePosixPath(e.path).name.startswith("checkpoint_")})
    if any(f"{root}/{name}" in files for name in (STATE_FILE, MODEL_FILE)):
        ckpt_dirs = [root]  # STORAGE is itself one checkpoint folder
    snapshots: dict[str, dict[str, dict]] = {}
    records = []
    for path in ckpt_dirs:
        rel = os.path.relpath(path, root) if path != root else ""
        location = (join_location(storage, rel) if rel else str(storage)) if is_url(storage) else path
        state = _read_json(fs, f"{path}/{STATE_FILE}")
        if state is None or "step" not in state:
            if skipped is not None:
                skipped.append(f"{location}: no readable {STATE_FILE} (incomplete or not an audiostyle checkpoint)")
            continue
        run_path = str(PurePosixPath(path).parent)
        run_rel = os.path.relpath(run_path, root) if path != root else PurePosixPath(run_path).name
        parts = PurePosixPath(run_rel).parts
        trial_idx = next((i for i, p in enumerate(parts) if p.startswith("trial_")), None)
        metrics = {k: v for k, v in _ray_metrics(fs, run_path, snapshots).get(PurePosixPath(path).name, {}).items()
                   if isinstance(v, (int, float))}
        metrics.update({k: v for k, v in (state.get("metrics") or {}).items() if isinstance(v, (int, float))})
        records.append(CheckpointRecord(
            location=location, run=run_rel, name=PurePosixPath(path).name, step=int(state["step"]),
            phase=str(state.get("phase", "")), metrics=metrics, instruments=list(state.get("instruments") or []),
            sweep=parts[trial_idx - 1] if trial_idx else None,
            trial=parts[trial_idx] if trial_idx is not None else None,
            damage=_damage(path, state, sizes),
        ))
    records.sort(key=lambda r: (r.run, r.step))
    return records


def _damage(path: str, state: dict, sizes: dict[str, int]) -> str | None:
    """Why the checkpoint at `path` is unusable, from the listing's file sizes; None when it looks whole."""
    listed = state.get("files")
    if not isinstance(listed, dict):  # checkpoints written before the file list: the weights must exist
        listed = {MODEL_FILE: {}}
    for name, expected in listed.items():
        problem = size_problem(sizes.get(f"{path}/{name}"), expected)
        if problem:
            return f"{name}: {problem}"
    return None


def usable(records: list[CheckpointRecord]) -> list[CheckpointRecord]:
    """The records that are not damaged; each damaged one is logged as a warning, naming the reason."""
    for r in records:
        if r.damage:
            logger.warning("skipping damaged checkpoint %s: %s", r.location, r.damage)
    return [r for r in records if not r.damage]


def rank(records: list[CheckpointRecord], metric: str, mode: str = "min") -> list[CheckpointRecord]:
    """Undamaged records that reported `metric`, best first; CheckpointError listing the metrics there
    are (or saying that every checkpoint is damaged)."""
    check_mode(mode, path="--mode")
    whole = usable(records)
    if records and not whole:
        raise CheckpointError(f"every checkpoint found is damaged (first: {records[0].location}: "
                              f"{records[0].damage}); resume training from an earlier run or re-copy the storage")
    scored = [r for r in whole if r.value(metric) is not None]
    if not scored:
        known = sorted({k for r in records for k in r.metrics} | {"step"})
        raise CheckpointError(
            f"no checkpoint reports metric {metric!r}.{did_you_mean(metric, known)} Reported metrics: {', '.join(known)}")
    # ties go to the later step: with equal scores the longer-trained model is the better guess
    return sorted(scored, key=lambda r: (smaller_is_better(r.value(metric), mode), -r.step))


def best_checkpoint(storage: str | Path, metric: str = "val/recon", mode: str = "min") -> CheckpointRecord:
    records = scan_checkpoints(storage)
    if not records:
        raise CheckpointError(f"{storage}: no checkpoints found (folders holding {STATE_FILE} and {MODEL_FILE})")
    return rank(records, metric, mode)[0]


@contextlib.contextmanager
def local_checkpoint(location: str | Path) -> Iterator[Path]:
    """A local folder with the checkpoint's files: the folder itself, or a temporary copy of a remote one."""
    if not is_url(location):
        yield Path(location)
        return
    import pyarrow.fs

    fs, path = open_storage(location)
    tmp = tempfile.mkdtemp(prefix="audiostyle-ckpt-")
    try:
        pyarrow.fs.copy_files(path, tmp, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def format_table(records: list[CheckpointRecord], metrics: list[str]) -> str:
    """A fixed-width table: run, checkpoint, step, phase and the chosen metric columns."""
    head = ["run", "checkpoint", "step", "phase", *metrics, "status"]
    rows = [[r.run, r.name, str(r.step), r.phase,
             *("-" if r.value(m) is None else f"{r.value(m):.4g}" for m in metrics),
             f"DAMAGED ({r.damage})" if r.damage else "ok"] for r in records]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    return "\n".join(lines)
