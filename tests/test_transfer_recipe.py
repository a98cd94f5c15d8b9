"""The CPU recipe (experiments/paired_spectral.yaml) learns to transfer: a few minutes of real training on
tiny paired data (Ray Train, shards, pairs streamed beside unpaired clips), exported and evaluated like a
user would, beats "wrong notes" on content and "input unchanged" on the distance to the target, and
keeps note-shaped harmonics. The quality numbers at real budgets live in tests/benchmarks/bench_quality.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audiostyle.platform.config.loader import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def embedded_ray():
    """run_training starts the embedded Ray itself (the user's path); it is shut down after the module."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_minutes_of_the_recipe_keep_the_notes_and_move_towards_the_target(embedded_ray, demo_root, tmp_path):
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.evaluation.evaluate import evaluate
    from audiostyle.platform.training.driver import run_training

    cfg = load_experiment(EXPERIMENTS / "paired_spectral.yaml", [
        f"data.root={demo_root}", f"run.storage_path={tmp_path / 'runs'}", "scaling.cpus_per_worker=1",
        "data.segment_seconds=2.0", "data.steps_per_epoch=40", "data.val_batches=2", "data.pair_batch_size=6",
        "train.max_steps=160", "train.val_every=80", "train.log_every=40", "optim.warmup_steps=20",
        "model.content_encoder.dim=96", "model.decoder.dim=96"])
    result = run_training(cfg)
    best = result.get_best_checkpoint(cfg.train.checkpoint_metric, cfg.train.checkpoint_mode)
    history = result.metrics_dataframe
    assert history["val/cross_recon"].iloc[-1] < history["val/cross_recon"].iloc[0]
    bundle = export_bundle(best.path, tmp_path / "bundle", data_root=demo_root)
    summary = evaluate(bundle, demo_root, out_dir=tmp_path / "eval", instruments=["piano", "violin"],
                       max_pieces=2, report=False, progress=False, baselines=False)["summary"]
    model, identity, wrong = summary["model"], summary["identity"], summary["wrong_notes"]
    assert model["chroma_cos"] > wrong["chroma_cos"] + 0.3, (model, wrong)
    assert model["pitch_acc"] > wrong["pitch_acc"] + 0.3, (model, wrong)
    assert model["mr_stft"] < 0.8 * identity["mr_stft"], (model, identity)  # it moved towards the target
    assert model["harmonicity"] > 0.7 and model["sharpness"] > 0.5, model  # partials and onsets, not a smear
