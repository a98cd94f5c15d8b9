"""Export a training checkpoint as a self-contained bundle folder, and load one without Ray or data.

A bundle (contract.md) is a folder of:
    model.safetensors  weights and buffers; `prototypes` [C, style_dim] recomputed on the training set
    config.yaml        the resolved experiment config the model was trained with
    stats.npz          normalization statistics (mean, std), arrays only
    bundle.json        format_version, instruments, sample_rate, provenance, and every file's size and
                       sha256, so a truncated or corrupt copy is caught by name before anything is built
Nothing in it is a pickle. The prototypes are the mean style embedding of each instrument's training
split (the research used one test clip instead, which leaks test data); when the training data cannot
be read, the checkpoint's running-average prototypes are kept and provenance says so. Export builds in
a temporary folder beside the destination and renames it into place.
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
from typing import Any

import numpy as np
import torch
import yaml

from audiostyle.platform.core.atomic_files import sha256_file
from audiostyle.platform.core.errors import AudiostyleError, CheckpointError

FORMAT_VERSION = 1
MODEL_FILE, CONFIG_FILE, STATS_FILE, META_FILE = "model.safetensors", "config.yaml", "stats.npz", "bundle.json"
PROTOTYPE_SECONDS = 600.0  # per instrument: the mean of 150 four-second crops is stable to a few percent




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


def iter_split_audio(location: str | Path, split: str, *, max_seconds: float | None = None
                     ) -> Iterator[tuple[str, np.ndarray, int, dict]]:
    """(key, mono audio, sample rate, segment JSON) for each segment of one instrument's split."""
    from audiostyle.datasets.audio_io import decode_bytes
    from audiostyle.datasets.manifest import iter_segments

    seconds = 0.0
    for segment in iter_segments(location, split):
        audio, sr = decode_bytes(segment.flac, name=f"{segment.url}:{segment.key}.flac")
        yield segment.key, audio, sr, segment.record
        seconds += len(audio) / sr
        if max_seconds is not None and seconds >= max_seconds:
            return


def _training_crops(location: str, crop: int, sample_rate: int, max_seconds: float) -> Iterator[np.ndarray]:
    from audiostyle.datasets.audio_io import resample

    for _, audio, sr, _ in iter_split_audio(location, "train", max_seconds=max_seconds):
        audio = resample(audio, sr, sample_rate)
        for start in range(0, len(audio) - crop + 1, crop):
            piece = audio[start:start + crop]
            if np.max(np.abs(piece)) > 1e-3:  # silent crops carry no timbre
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
def training_set_prototypes(model: torch.nn.Module, cfg, *, data_root: str | Path | None = None,
                            max_seconds: float = PROTOTYPE_SECONDS, device: str = "cpu",
                            batch_size: int = 16) -> tuple[torch.Tensor, dict[str, float]]:
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


def _build_model(cfg) -> torch.nn.Module:
    from audiostyle.components.timbre_transfer import build_timbre_model

    # the front end's statistics are buffers restored from the weights: building needs no data or stats files
    return build_timbre_model(cfg, load_statistics=False)


def export_bundle(checkpoint: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                  metrics: dict[str, float] | None = None, device: str = "cpu", overwrite: bool = False,
                  prototype_seconds: float = PROTOTYPE_SECONDS) -> Path:
    """Write the bundle of a checkpoint folder (local path or URI) to `out`; returns `out`."""
    from safetensors.torch import save_file

    from audiostyle.platform.checkpoints.format import load_checkpoint
    from audiostyle.platform.checkpoints.index import local_checkpoint
    from audiostyle.platform.config.loader import config_from_dict

    out = Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists; choose another --out or remove it first")
    with local_checkpoint(checkpoint) as ckpt_dir:
        ckpt = load_checkpoint(ckpt_dir)
        cfg = config_from_dict(ckpt.config, file=str(Path(ckpt_dir) / "config.yaml"))
        model = _build_model(cfg)
        model.load_state_dict(ckpt.model_state)
    model.to(device).eval()
    provenance: dict[str, Any] = {
        "checkpoint": str(checkpoint), "run": ckpt.state.get("run_name"), "step": ckpt.step,
        "phase": ckpt.state.get("phase"), "metrics": {**ckpt.state.get("metrics", {}), **(metrics or {})},
        "seed": ckpt.state.get("seed"), "source_commit": source_commit(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        protos, used = training_set_prototypes(model, cfg, data_root=data_root, max_seconds=prototype_seconds,
                                               device=device)
        model.prototypes.copy_(protos.to(model.prototypes))
        if hasattr(model, "prototype_seen"):
            model.prototype_seen.fill_(True)
        provenance["prototypes"] = {"source": "training set", "seconds_per_instrument": used}
    except (AudiostyleError, OSError) as exc:
        provenance["prototypes"] = {"source": "checkpoint running average (training data unavailable)",
                                    "reason": str(exc)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(ckpt.config, sort_keys=False))
        with open(tmp / STATS_FILE, "wb") as fh:
            np.savez(fh, mean=np.asarray(ckpt.stats[0], np.float32), std=np.asarray(ckpt.stats[1], np.float32))
        meta = {
            "format_version": FORMAT_VERSION, "instruments": cfg.instrument_names,
            "sample_rate": cfg.data.sample_rate, "segment_seconds": cfg.data.segment_seconds,
            "style_dim": int(model.prototypes.shape[1]), "provenance": provenance,
            "files": {n: {"bytes": (tmp / n).stat().st_size, "sha256": sha256_file(tmp / n)}
                      for n in (MODEL_FILE, CONFIG_FILE, STATS_FILE)},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=float))
        if out.exists():  # overwrite: move the old bundle aside first, so a failure keeps one intact
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_bundle_meta(path: str | Path) -> dict[str, Any]:
    """bundle.json, checked: every listed file present with the recorded size and checksum."""
    root = Path(path)
    meta_path = root / META_FILE
    if not root.is_dir():
        raise CheckpointError(f"{root}: bundle folder not found (export one with `audiostyle checkpoints export`)")
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: missing; {root} is not an audiostyle bundle") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable or corrupt ({exc}); export the bundle again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: format_version {meta.get('format_version') if isinstance(meta, dict) else None!r}"
                              f" is not {FORMAT_VERSION}; export the bundle with this version of audiostyle")
    for name in (MODEL_FILE, CONFIG_FILE, STATS_FILE):
        expected = meta.get("files", {}).get(name)
        file = root / name
        if expected is None:
            raise CheckpointError(f"{meta_path}: lists no '{name}'; export the bundle again")
        if not file.is_file():
            raise CheckpointError(f"{file}: missing from the bundle; export it again")
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise CheckpointError(f"{file}: {size} bytes, expected {expected['bytes']}: the file is truncated "
                                  "or was replaced; copy or export the bundle again")
        if sha256_file(file) != expected["sha256"]:
            raise CheckpointError(f"{file}: checksum mismatch: the file is corrupt; copy or export the bundle again")
    return meta


def load_bundle(path: str | Path, *, map_location: str = "cpu") -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(TimbreTransferModel in eval mode, ExperimentConfig, bundle.json) - no Ray, no data, no pickle."""
    from safetensors.torch import load

    from audiostyle.platform.config.loader import config_from_dict

    root = Path(path)
    meta = read_bundle_meta(root)
    config_path = root / CONFIG_FILE
    try:
        raw = yaml.safe_load(config_path.read_text())
        weights = load((root / MODEL_FILE).read_bytes())
        with np.load(root / STATS_FILE, allow_pickle=False) as st:
            _ = (st["mean"], st["std"])  # touching both arrays catches a damaged or incomplete npz
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{config_path}: not valid YAML ({exc})") from None
    except Exception as exc:  # safetensors / numpy raise their own types on damaged files
        raise CheckpointError(f"{root}: cannot read the bundle's weights or statistics ({exc})") from None
    cfg = config_from_dict(raw, file=str(config_path))
    model = _build_model(cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{root / MODEL_FILE}: the weights do not fit the model the config describes ({exc})") from None
    model.to(map_location).eval()
    if list(meta.get("instruments", [])) != cfg.instrument_names:
        raise CheckpointError(f"{root / META_FILE}: instruments {meta.get('instruments')} differ from the config's "
                              f"{cfg.instrument_names}; the bundle was edited - export it again")
    return model, cfg, meta


def bundle_summary(meta: dict[str, Any]) -> str:
    p = meta.get("provenance", {})
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(p.get("metrics", {}).items()) if isinstance(v, (int, float)))
    return (f"instruments: {', '.join(meta['instruments'])} at {meta['sample_rate']} Hz\n"
            f"run {p.get('run')} step {p.get('step')} ({p.get('phase')}), commit {p.get('source_commit')}\n"
            f"prototypes: {p.get('prototypes', {}).get('source')}\nmetrics: {metrics or '-'}")
