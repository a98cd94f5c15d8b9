"""Exporting a training checkpoint as a self-contained bundle folder (its layout: bundles/load.py).

The prototypes written into the bundle are the mean style embedding of each instrument's training
split (the research used one test clip instead, which leaks test data); when the training data cannot
be read, the checkpoint's running-average prototypes are kept and the provenance says so. The bundle
is written in a temporary folder beside the destination and renamed into place, so a failed export
leaves any earlier bundle of that name intact.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from audiostyle.platform.bundles.load import FORMAT_VERSION, META_FILE, build_untrained_model
from audiostyle.platform.core.artifact_files import (
    CONFIG_FILE,
    MODEL_FILE,
    STATS_FILE,
    describe_files,
    save_weights,
    write_mean_std,
)
from audiostyle.platform.core.errors import AudiostyleError, CheckpointError, DataError
from audiostyle.platform.core.output_paths import check_output_folder, make_output_folder

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel
    from audiostyle.platform.checkpoints.format import TrainingCheckpoint
    from audiostyle.platform.config.schema import ExperimentConfig

PROTOTYPE_SECONDS = 600.0  # per instrument: the mean of 150 four-second crops is stable to a few percent
SILENT_CROP_PEAK = 1e-3  # -60 dBFS: a crop this quiet carries no timbre and would pull a prototype to 0


def source_commit() -> str | None:
    """The audiostyle source tree's git commit (with '+dirty' if it has local changes), when available."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _training_crops(location: str, crop: int, sample_rate: int, max_seconds: float) -> Iterator[np.ndarray]:
    from audiostyle.datasets.audio_io import resample
    from audiostyle.datasets.manifest import iter_split_audio

    for _, audio, sr, _ in iter_split_audio(location, "train", max_seconds=max_seconds):
        audio = resample(audio, sr, sample_rate)
        for start in range(0, len(audio) - crop + 1, crop):
            piece = audio[start:start + crop]
            if np.max(np.abs(piece)) > SILENT_CROP_PEAK:
                yield piece


def _batched(items: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def training_set_prototypes(model: TimbreTransferModel, cfg: ExperimentConfig, *,
                            data_root: str | Path | None = None, max_seconds: float = PROTOTYPE_SECONDS,
                            device: str = "cpu", batch_size: int = 16) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean style embedding of each instrument's train split, cut into crops of the training length.

    Instruments are read from `<data_root>/<name>` when data_root is given, else from the config's paths.
    Returns ([C, style_dim], seconds used per instrument).
    """
    crop = int(round(cfg.data.segment_seconds * cfg.data.sample_rate))
    protos, used = [], {}
    for inst in cfg.instruments:
        location = str(Path(data_root) / inst.name) if data_root is not None else inst.data
        total, count = None, 0
        for batch in _batched(_training_crops(location, crop, cfg.data.sample_rate, max_seconds), batch_size):
            style = model.style_of(torch.from_numpy(np.stack(batch)).to(device)).float().sum(dim=0)
            total = style if total is None else total + style
            count += len(batch)
        if count == 0:
            raise CheckpointError(f"{location}: the train split holds no non-silent {cfg.data.segment_seconds} s crops")
        protos.append((total / count).cpu())
        used[inst.name] = count * cfg.data.segment_seconds
    return torch.stack(protos), used


def _load_checkpoint_model(checkpoint: str | Path) -> tuple[TrainingCheckpoint, ExperimentConfig,
                                                            TimbreTransferModel]:
    """The checkpoint (a local folder or URI), its config, and the model with its weights."""
    from audiostyle.platform.checkpoints.format import load_checkpoint
    from audiostyle.platform.checkpoints.index import local_checkpoint
    from audiostyle.platform.config.loader import config_from_dict

    with local_checkpoint(checkpoint) as ckpt_dir:
        ckpt = load_checkpoint(ckpt_dir)
        cfg = config_from_dict(ckpt.config, file=str(Path(ckpt_dir) / CONFIG_FILE))
        model = build_untrained_model(cfg)
        model.load_state_dict(ckpt.model_state)
    return ckpt, cfg, model


def _provenance(checkpoint: str | Path, ckpt: TrainingCheckpoint, metrics: dict[str, float] | None) -> dict[str, Any]:
    """Where the bundle came from: checkpoint, run, step, phase, metrics, seed, source commit, time."""
    return {
        "checkpoint": str(checkpoint), "run": ckpt.state.get("run_name"), "step": ckpt.step,
        "phase": ckpt.state.get("phase"), "metrics": {**ckpt.state.get("metrics", {}), **(metrics or {})},
        "seed": ckpt.state.get("seed"), "source_commit": source_commit(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _install_training_prototypes(model: TimbreTransferModel, cfg: ExperimentConfig, *,
                                 data_root: str | Path | None, max_seconds: float, device: str) -> dict[str, Any]:
    """Replace the running-average prototypes by training-set ones; returns their provenance entry.

    Unreadable training data is not an error: the running averages the checkpoint holds still work,
    and the provenance says which prototypes the bundle carries and why.
    """
    try:
        protos, used = training_set_prototypes(model, cfg, data_root=data_root, max_seconds=max_seconds,
                                               device=device)
    except (AudiostyleError, OSError) as exc:
        return {"source": "checkpoint running average (training data unavailable)", "reason": str(exc)}
    model.set_prototypes(protos)
    return {"source": "training set", "seconds_per_instrument": used}


def _write_bundle_files(folder: Path, model: TimbreTransferModel, cfg: ExperimentConfig, ckpt: TrainingCheckpoint,
                        provenance: dict[str, Any]) -> None:
    """Weights, config and statistics, then bundle.json recording the others' sizes and checksums."""
    save_weights(folder / MODEL_FILE, model.state_dict())
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(ckpt.config, sort_keys=False))
    write_mean_std(folder / STATS_FILE, *ckpt.stats)
    meta = {
        "format_version": FORMAT_VERSION, "instruments": cfg.instrument_names,
        "sample_rate": cfg.data.sample_rate, "segment_seconds": cfg.data.segment_seconds,
        "style_dim": model.style_dim, "provenance": provenance,
        "files": describe_files(folder, (MODEL_FILE, CONFIG_FILE, STATS_FILE)),
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=float))


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an existing bundle is moved aside first and removed only
    once the new one is in place, so a failure keeps one intact."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_bundle(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                  metrics: dict[str, float] | None = None, device: str = "cpu", overwrite: bool = False,
                  prototype_seconds: float = PROTOTYPE_SECONDS) -> Path:
    """Write the bundle of a checkpoint folder (local path or URI) to `out`; returns `out`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: is an existing file, not a bundle folder; choose another --out")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists; choose another --out, pass --overwrite, or remove it first")
    check_output_folder(out.parent, option="--out")  # before minutes of prototypes, not at the first write
    ckpt, cfg, model = _load_checkpoint_model(checkpoint)
    model.to(device).eval()
    provenance = _provenance(checkpoint, ckpt, metrics)
    provenance["prototypes"] = _install_training_prototypes(model, cfg, data_root=data_root,
                                                            max_seconds=prototype_seconds, device=device)
    make_output_folder(out.parent, option="--out")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise DataError(f"--out {out}: cannot write in {out.parent} ({exc.strerror or exc})") from None
    try:
        _write_bundle_files(tmp, model, cfg, ckpt, provenance)
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
