"""Reading and writing one training checkpoint directory (the contents of a reported Ray checkpoint).

Layout (file names in core/artifact_files.py; the index, export and resume read these):
    model.safetensors  the TimbreTransferModel state_dict (weights and buffers such as prototypes)
    optim.pt           optimizers, schedulers, step, data position and RNG states: plain tensors,
                       dicts, lists and numbers only, so it loads with torch.load(weights_only=True)
    state.json         {step, phase, metrics, instruments, run_name, seed, ..., files}, written last
    config.yaml        the resolved experiment config (to_dict(cfg)); config_from_dict rebuilds it
    stats.npz          the normalization statistics (mean, std) the model was trained with

Every file is written under a temporary name in the same folder and moved into place with os.replace,
so a crash never leaves a half-written file under a real name. Loading checks each file and raises
CheckpointError naming the one that is missing or unreadable. Nothing here knows about Ray.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from audiostyle.platform.core.artifact_files import (
    CHECKPOINT_FILES,
    CONFIG_FILE,
    MODEL_FILE,
    OPTIM_FILE,
    STATE_FILE,
    STATS_FILE,
    describe_files,
    read_mean_std,
    save_weights,
    verify_files,
    write_mean_std,
)
from audiostyle.platform.core.atomic_files import atomic_write
from audiostyle.platform.core.errors import CheckpointError

REQUIRED_FILES = CHECKPOINT_FILES
DAMAGED = "the checkpoint is incomplete or damaged - resume from an earlier checkpoint"


@dataclass
class TrainingCheckpoint:
    """Everything a checkpoint holds, as plain data (tensors, dicts, numbers)."""

    model_state: dict[str, torch.Tensor]
    optim_state: dict[str, Any]
    state: dict[str, Any]
    config: dict[str, Any]
    stats: tuple[np.ndarray, np.ndarray]
    directory: Path | None = field(default=None, compare=False)

    @property
    def step(self) -> int:
        return int(self.state["step"])


def save_checkpoint(directory: str | Path, ckpt: TrainingCheckpoint) -> Path:
    """Write the five checkpoint files into `directory` (created if needed); returns the directory.

    state.json is written last and records the size and sha256 of the other four, so it doubles as the
    commit marker: a file truncated or swapped after the fact (a YAML cut short still parses) is caught.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / MODEL_FILE, lambda tmp: save_weights(tmp, ckpt.model_state))
    atomic_write(out / OPTIM_FILE, lambda tmp: torch.save(ckpt.optim_state, tmp))
    atomic_write(out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(ckpt.config, sort_keys=False)))
    atomic_write(out / STATS_FILE, lambda tmp: write_mean_std(tmp, *ckpt.stats))
    state = {**ckpt.state, "files": describe_files(out, (MODEL_FILE, OPTIM_FILE, CONFIG_FILE, STATS_FILE))}
    atomic_write(out / STATE_FILE, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))
    return out


def _read(path: Path, what: str, read: Callable[[Path], Any]) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {what}; the checkpoint is incomplete "
                              f"(a checkpoint folder holds {', '.join(REQUIRED_FILES)})")
    try:
        return read(path)
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors, pickle, zip, JSON, YAML and numpy each raise their own type
        raise CheckpointError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc}); the file is "
                              "truncated or corrupt - resume from an earlier checkpoint") from None


def _read_mapping(text: str, path: Path, fmt: str) -> dict[str, Any]:
    data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def load_checkpoint(directory: str | Path, *, map_location: str | torch.device = "cpu") -> TrainingCheckpoint:
    """Read a checkpoint directory; CheckpointError names the missing or damaged file."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory not found")
    state = _read(root / STATE_FILE, "training state", lambda p: _read_mapping(p.read_text(), p, "json"))
    if "step" not in state:
        raise CheckpointError(f"{root / STATE_FILE}: no 'step' field; not a training checkpoint")
    verify_files(root, state.get("files", {}), remedy=DAMAGED)  # checkpoints before the list had none
    model_state = _read(root / MODEL_FILE, "model weights", lambda p: load_file(str(p), device=str(map_location)))
    optim_state = _read(root / OPTIM_FILE, "optimizer state",
                        lambda p: torch.load(p, map_location=map_location, weights_only=True))
    config = _read(root / CONFIG_FILE, "resolved config", lambda p: _read_mapping(p.read_text(), p, "yaml"))
    stats = _read(root / STATS_FILE, "normalization statistics", read_mean_std)
    return TrainingCheckpoint(model_state, optim_state, state, config, stats, directory=root)


# ----------------------------------------------------------------------------------------------
# RNG state as weights_only-loadable data (numpy's state holds an ndarray, which torch.load refuses)


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA, when present) generator states as plain lists and tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
