"""Reading and writing one training checkpoint directory (the contents of a reported Ray checkpoint).

Layout (the contract other parts read):
    model.safetensors  the TimbreTransferModel state_dict (weights and buffers such as prototypes)
    optim.pt           optimizers, schedulers, grad scaler, step and RNG states: plain tensors, dicts,
                       lists and numbers only, so it loads with torch.load(weights_only=True)
    state.json         {step, phase, metrics, instruments, run_name, seed, ...}
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
from safetensors.torch import load_file, save_file

from audiostyle.platform.core.atomic_files import atomic_write, sha256_file
from audiostyle.platform.core.errors import CheckpointError

MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
STATS_FILE = "stats.npz"
REQUIRED_FILES = (MODEL_FILE, OPTIM_FILE, STATE_FILE, CONFIG_FILE, STATS_FILE)


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
    # clone() drops storage sharing (tied weights), which safetensors refuses to serialize
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in ckpt.model_state.items()}
    atomic_write(out / MODEL_FILE, lambda tmp: save_file(tensors, tmp))
    atomic_write(out / OPTIM_FILE, lambda tmp: torch.save(ckpt.optim_state, tmp))
    atomic_write(out / CONFIG_FILE, lambda tmp: Path(tmp).write_text(yaml.safe_dump(ckpt.config, sort_keys=False)))
    mean, std = (np.asarray(a, dtype=np.float32) for a in ckpt.stats)

    def write_stats(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append '.npz' to the temp name
            np.savez(fh, mean=mean, std=std)

    atomic_write(out / STATS_FILE, write_stats)
    files = {name: {"bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name)}
             for name in (MODEL_FILE, OPTIM_FILE, CONFIG_FILE, STATS_FILE)}
    state = {**ckpt.state, "files": files}
    atomic_write(out / STATE_FILE, lambda tmp: Path(tmp).write_text(json.dumps(state, indent=2)))
    return out


def _verify(root: Path, files: dict[str, Any]) -> None:
    for name, meta in files.items():
        path = root / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; the checkpoint is incomplete "
                                  f"(a checkpoint folder holds {', '.join(REQUIRED_FILES)})")
        size = path.stat().st_size
        if size != meta.get("bytes", size) or sha256_file(path) != meta.get("sha256"):
            raise CheckpointError(f"{path}: truncated or modified ({size} bytes, {meta.get('bytes')} were "
                                  f"written; checksum differs) - resume from an earlier checkpoint")


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


def _read_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["mean"], data["std"]


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
    _verify(root, state.get("files", {}))
    model_state = _read(root / MODEL_FILE, "model weights", lambda p: load_file(str(p), device=str(map_location)))
    optim_state = _read(root / OPTIM_FILE, "optimizer state",
                        lambda p: torch.load(p, map_location=map_location, weights_only=True))
    config = _read(root / CONFIG_FILE, "resolved config", lambda p: _read_mapping(p.read_text(), p, "yaml"))
    stats = _read(root / STATS_FILE, "normalization statistics", _read_stats)
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
