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


@pytest.fixture(scope="session")
def tiny_export(demo_root, tmp_path_factory) -> dict[str, Path]:
    """{"storage", "checkpoint", "bundle"}: a random-weight tiny model on the demo instruments, saved as a
    training checkpoint by the training code's own writer and exported as a bundle (prototypes from the
    demo training split). Tests that damage them work on copies."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.checkpoints.format import TrainingCheckpoint, save_checkpoint
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.config.typed_convert import to_dict
    from audiostyle.stats.normalization_stats import load_stats

    root = tmp_path_factory.mktemp("tiny_export")
    cfg = load_experiment(EXPERIMENTS / "quickstart.yaml", [f"data.root={demo_root}", "data.segment_seconds=1.0",
                                                           *(o for o in TINY if o.startswith("model."))])
    torch.manual_seed(0)
    mean, std = load_stats(cfg)
    model = build_timbre_model(cfg, stats=(mean, std))
    state = {"step": 6, "phase": "adversarial", "metrics": {"val/recon": 1.5}, "instruments": cfg.instrument_names,
             "run_name": "tiny", "seed": 0}
    checkpoint = save_checkpoint(root / "runs" / "tiny" / "checkpoint_000000", TrainingCheckpoint(
        model.state_dict(), {}, state, to_dict(cfg), (mean.numpy(), std.numpy())))
    bundle = export_bundle(checkpoint, root / "bundle", data_root=demo_root, prototype_seconds=20)
    return {"storage": root / "runs", "checkpoint": checkpoint, "bundle": bundle}


@pytest.fixture(scope="session")
def recordings(demo_root, tmp_path_factory) -> dict[str, Path]:
    """Folders of real SoundFont recordings to ingest: first/ (4 cello files), second/ (3 other cello
    files) and violin/ (3 files), the demo dataset's segments written out as FLAC files."""
    from audiostyle.datasets.manifest import iter_segments

    root = tmp_path_factory.mktemp("recordings")
    cello = [s.flac for split in ("train", "val", "test") for s in iter_segments(demo_root / "cello", split)]
    violin = [s.flac for s in iter_segments(demo_root / "violin", "train")]
    assert len(cello) >= 7 and len(violin) >= 3
    for folder, clips in (("first", cello[:4]), ("second", cello[4:7]), ("violin", violin[:3])):
        (root / folder).mkdir()
        for i, flac in enumerate(clips):
            (root / folder / f"take{i}.flac").write_bytes(flac)
    return {name: root / name for name in ("first", "second", "violin")}


@pytest.fixture
def train_in_process() -> Callable[..., object]:
    """`train(model, cfg, steps)`: the small learning tests' loop, without Ray: the recipe's first-phase loss
    weights, Adam at 2e-3, batches from the train loader (a new seed each pass); returns the model in eval mode."""

    def train(model, cfg, steps: int, lr: float = 2e-3):
        import torch

        from audiostyle.datasets.streaming import make_loader

        optimizer = torch.optim.Adam(model.generator_parameters(), lr=lr)
        weights = cfg.curriculum.phases[0].weights
        epoch, batches = 0, iter(make_loader(cfg, "train", seed=0))
        for _ in range(steps):
            batch = next(batches, None)
            if batch is None:
                epoch += 1
                batches = iter(make_loader(cfg, "train", seed=epoch))
                batch = next(batches)
            terms = model.generator_terms(batch["audio"], batch["label"], active=set(weights),
                                          **{k: v for k, v in batch.items() if k.startswith("pair_")})
            loss = sum(weights[k] * terms[k] for k in weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return model.eval()

    return train
