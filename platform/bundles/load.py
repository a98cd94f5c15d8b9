"""Loading an exported bundle: checked file by file, then the model rebuilt from its own config.

A bundle is a folder written by `bundles/export.py` (file names in core/artifact_files.py):
    model.safetensors  weights and buffers, including `prototypes` [C, style_dim] from the training set
    config.yaml        the resolved experiment config the model was trained with
    stats.npz          normalization statistics (mean, std), arrays only
    bundle.json        format_version, instruments, sample_rate, provenance, and every file's size and
                       sha256, so a truncated or corrupt copy is caught by name before anything is built
Nothing in it is a pickle, and loading needs neither Ray nor the training data: transfer and
evaluation run on any machine that has the package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audiostyle.platform.core.artifact_files import (
    BUNDLE_META_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    STATS_FILE,
    read_mean_std,
    verify_files,
)
from audiostyle.platform.core.errors import AudiostyleError, CheckpointError

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel
    from audiostyle.platform.config.schema import ExperimentConfig

FORMAT_VERSION = 1
META_FILE = BUNDLE_META_FILE
REEXPORT = "copy or export the bundle again"


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
    verify_files(root, meta.get("files", {}), remedy=REEXPORT, required=(MODEL_FILE, CONFIG_FILE, STATS_FILE),
                 listing=meta_path)
    return meta


def build_untrained_model(cfg: ExperimentConfig) -> TimbreTransferModel:
    """The model `cfg` describes, with identity statistics: the front end's statistics are buffers that
    the weights restore, so building needs no data or stats files."""
    from audiostyle.components.timbre_transfer import build_timbre_model

    return build_timbre_model(cfg)


def load_bundle(path: str | Path, *, map_location: str = "cpu") -> tuple[TimbreTransferModel, ExperimentConfig,
                                                                        dict[str, Any]]:
    """(TimbreTransferModel in eval mode, ExperimentConfig, bundle.json) - no Ray, no data, no pickle."""
    from safetensors.torch import load

    from audiostyle.platform.config.loader import config_from_dict
    from audiostyle.platform.config.safe_yaml import load_yaml_text

    root = Path(path)
    meta = read_bundle_meta(root)
    config_path = root / CONFIG_FILE
    try:
        raw = load_yaml_text(config_path.read_text(), source=str(config_path))  # ConfigError names file and line
        weights = load((root / MODEL_FILE).read_bytes())
        read_mean_std(root / STATS_FILE)  # reading both arrays catches a damaged or incomplete npz
    except AudiostyleError:
        raise
    except Exception as exc:  # safetensors / numpy raise their own types on damaged files
        raise CheckpointError(f"{root}: cannot read the bundle's weights or statistics ({exc})") from None
    cfg = config_from_dict(raw, file=str(config_path))
    model = build_untrained_model(cfg)
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
    """Instruments, provenance, prototype source and metrics of a bundle, for `checkpoints export`."""
    p = meta.get("provenance", {})
    metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(p.get("metrics", {}).items()) if isinstance(v, (int, float)))
    return (f"instruments: {', '.join(meta['instruments'])} at {meta['sample_rate']} Hz\n"
            f"run {p.get('run')} step {p.get('step')} ({p.get('phase')}), commit {p.get('source_commit')}\n"
            f"prototypes: {p.get('prototypes', {}).get('source')}\nmetrics: {metrics or '-'}")
