"""Shared fixtures: a tiny real demo dataset (SoundFont renders -> WebDataset shards + stats), rendered once
per session, and a factory for tiny experiment configs pointing at it.

Test modules cannot import each other (pytest runs in importlib mode), so everything shared lives here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

# Two CPU cores run the whole suite: one thread per process keeps torch, Ray workers and helpers from
# oversubscribing them (measured: 2 threads per process on 2 cores made Ray tests slower, not faster).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """piano, violin and cello rendered from real SoundFont samples, sharded, with stats and notes."""
    from audiostyle.platform.data.prepare import prepare_demo

    root = tmp_path_factory.mktemp("demo")
    prepare_demo(root, instruments=("piano", "violin", "cello"), seconds_per_instrument=40, seed=0)
    return root


TINY = (
    "data.segment_seconds=1.0",
    "data.batch_size=4",  # two items per class: supervised InfoNCE needs a positive for each anchor
    "data.steps_per_epoch=3",
    "data.val_batches=1",
    "model.style_encoder.dim=32",
    "model.content_encoder.dim=32",
    "model.decoder.dim=32",
    "model.discriminator.hidden=32",
    "train.max_steps=6",
    "train.val_every=3",
    "train.log_every=1",
    "optim.warmup_steps=1",
)


@pytest.fixture
def tiny_config(demo_root, tmp_path) -> Callable[..., object]:
    """`make(*overrides)` -> a validated tiny ExperimentConfig on the demo data, runs under tmp_path."""
    from audiostyle.platform.config.loader import load_experiment

    def make(*overrides: str):
        return load_experiment(
            EXPERIMENTS / "quickstart.yaml",
            [f"data.root={demo_root}", f"run.storage_path={tmp_path / 'runs'}", *TINY, *overrides],
        )

    return make
