"""Checkpoint index and bundle export: ranking across runs and sweeps, export, fresh-process load, bad bundles.

Checkpoints are written with the training code's own writer (platform/checkpoints/format.py) in the
contract's layout, including a Ray Train V2 `checkpoint_manager_snapshot.json`, so the index reads
exactly what a training run leaves on disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.platform.core.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(demo_root, tmp_path_factory):
    """(cfg, model, stats): one tiny random-weight model on the demo instruments."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.stats.normalization_stats import load_stats

    cfg = load_experiment(REPO / "experiments" / "quickstart.yaml", [
        f"data.root={demo_root}", "data.segment_seconds=1.0", "model.style_encoder.dim=32",
        "model.content_encoder.dim=32", "model.decoder.dim=32", "model.discriminator.hidden=32"])
    torch.manual_seed(0)
    mean, std = load_stats(cfg)
    model = build_timbre_model(cfg, stats=(mean, std))
    return cfg, model, (mean.numpy(), std.numpy())


def write_ckpt(trained, directory: Path, step: int, metrics: dict, run: str = "run") -> Path:
    from audiostyle.platform.checkpoints.format import TrainingCheckpoint, save_checkpoint
    from audiostyle.platform.config.typed_convert import to_dict

    cfg, model, stats = trained
    state = {"step": step, "phase": "reconstruction" if step < 20 else "adversarial", "metrics": metrics,
             "instruments": cfg.instrument_names, "run_name": run, "seed": 0}
    return save_checkpoint(directory, TrainingCheckpoint(model.state_dict(), {}, state, to_dict(cfg), stats))


@pytest.fixture(scope="module")
def storage(trained, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage")
    # named as the trainer names them (Ray's checkpoint_dir_name); Ray's default is checkpoint_*
    write_ckpt(trained, root / "run_a" / "step_00000010", 10, {"val/recon": 0.9, "val/style_acc": 0.5}, "run_a")
    write_ckpt(trained, root / "run_a" / "step_00000020", 20, {"val/recon": 0.4, "val/style_acc": 0.6}, "run_a")
    # a sweep trial; its second checkpoint's metrics are only in Ray's snapshot, as when state.json lacks them
    trial = root / "sweep1" / "trial_0001" / "run_b"
    write_ckpt(trained, trial / "checkpoint_000000", 10, {"val/recon": 0.7, "val/style_acc": 0.9}, "run_b")
    write_ckpt(trained, trial / "checkpoint_000001", 30, {}, "run_b")
    (trial / "checkpoint_manager_snapshot.json").write_text(json.dumps({"checkpoint_results": [
        {"checkpoint_dir_name": "checkpoint_000001", "metrics": {"val/recon": 0.3, "val/style_acc": 0.8}}]}))
    # an interrupted save: the folder exists, state.json does not
    (root / "run_c" / "checkpoint_000000").mkdir(parents=True)
    return root


def test_scan_finds_runs_and_sweep_trials_and_ranks_by_any_metric(storage):
    from audiostyle.platform.checkpoints.index import best_checkpoint, rank, scan_checkpoints

    skipped: list[str] = []
    records = scan_checkpoints(storage, skipped=skipped)
    assert [(r.run, r.step) for r in records] == [
        ("run_a", 10), ("run_a", 20), ("sweep1/trial_0001/run_b", 10), ("sweep1/trial_0001/run_b", 30)]
    assert len(skipped) == 1 and "run_c" in skipped[0]
    sweep = records[3]
    assert (sweep.sweep, sweep.trial, sweep.metrics["val/recon"]) == ("sweep1", "trial_0001", 0.3)
    assert best_checkpoint(storage, "val/recon", "min").step == 30
    assert [r.value("val/style_acc") for r in rank(records, "val/style_acc", "max")] == [0.9, 0.8, 0.6, 0.5]
    with pytest.raises(CheckpointError, match="val/recon"):  # close match suggested, metrics listed
        rank(records, "val/recn", "min")


def test_uri_storage_goes_through_pyarrow_like_ray(storage):
    from audiostyle.platform.checkpoints.index import local_checkpoint, scan_checkpoints

    uri = storage.as_uri()  # file:// is a real pyarrow URI: the object-store code path without a bucket
    records = scan_checkpoints(uri)
    assert len(records) == 4 and all(r.location.startswith("file://") for r in records)
    with local_checkpoint(records[0].location) as local:
        assert (local / "model.safetensors").is_file() and local != storage


def test_cli_list_and_best(storage, capsys):
    from audiostyle.platform.cli.main import main

    assert main(["checkpoints", "list", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "sweep1/trial_0001/run_b" in out and "4 checkpoints in 2 runs" in out
    assert main(["checkpoints", "best", str(storage), "--metric", "val/style_acc"]) == 0  # mode max for *acc*
    assert "sweep1/trial_0001/run_b/checkpoint_000000" in capsys.readouterr().out
    assert main(["checkpoints", "best", str(storage), "--metric", "nope"]) == 2


def test_export_then_fresh_process_load_and_transfer_without_pickle_or_ray(storage, demo_root, tmp_path, capsys):
    from audiostyle.platform.bundles.load import read_bundle_meta
    from audiostyle.platform.cli.main import main

    bundle = tmp_path / "bundle"
    assert main(["checkpoints", "export", str(storage), "--out", str(bundle), "--data", str(demo_root)]) == 0
    assert "bundle written" in capsys.readouterr().out
    files = sorted(p.name for p in bundle.iterdir())
    assert files == ["bundle.json", "config.yaml", "model.safetensors", "stats.npz"]
    assert not list(tmp_path.glob(".bundle.tmp-*"))  # built aside, renamed into place
    meta = read_bundle_meta(bundle)
    prov = meta["provenance"]
    assert (prov["step"], prov["metrics"]["val/recon"]) == (30, 0.3)
    assert prov["prototypes"]["source"] == "training set"
    assert set(prov["prototypes"]["seconds_per_instrument"]) == set(meta["instruments"])
    assert prov["source_commit"] is None or len(prov["source_commit"]) >= 40

    clip = tmp_path / "in.wav"
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 22050) / 22050), 22050)
    script = textwrap.dedent(f"""
        import pickle, sys, torch
        real_pickle_load = pickle.load
        def refuse_bundle_pickles(f, *a, **k):  # numba's own cache may unpickle; the bundle never may
            assert not str(getattr(f, "name", "")).startswith({str(bundle)!r}), "unpickled a bundle file"
            return real_pickle_load(f, *a, **k)
        pickle.load = refuse_bundle_pickles
        real_load = torch.load
        def safe_only(*a, **k):
            assert k.get("weights_only", True), "torch.load without weights_only"
            return real_load(*a, **k)
        torch.load = safe_only
        from audiostyle.platform.bundles.load import load_bundle
        from audiostyle.platform.inference.transfer import Transferer, transfer_files
        model, cfg, meta = load_bundle({str(bundle)!r})
        assert not any(m == "ray" or m.startswith("ray.") for m in sys.modules), "loading a bundle imported Ray"
        protos = model.prototypes
        assert protos.abs().sum() > 0 and not torch.allclose(protos[0], protos[1])
        transfer_files(Transferer(loaded=(model, cfg, meta)), [{str(clip)!r}], "violin", out_dir={str(tmp_path / 'out')!r})
        print("OK", cfg.instrument_names)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OK" in done.stdout
    out = sf.info(tmp_path / "out" / "in.violin.wav")
    assert out.samplerate == 22050 and out.frames == 3 * 22050


def test_export_without_training_data_falls_back_to_checkpoint_prototypes(storage, tmp_path):
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.bundles.load import read_bundle_meta

    ckpt = storage / "run_a" / "step_00000020"
    bundle = export_bundle(ckpt, tmp_path / "b", data_root=tmp_path / "no_data_here")
    prov = read_bundle_meta(bundle)["provenance"]
    assert prov["prototypes"]["source"].startswith("checkpoint running average")
    assert "no_data_here" in prov["prototypes"]["reason"]
    with pytest.raises(CheckpointError, match="already exists"):
        export_bundle(ckpt, bundle)


def test_truncated_or_corrupt_bundle_is_named_and_transfer_writes_nothing(storage, tmp_path, capsys):
    import shutil

    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.bundles.load import load_bundle
    from audiostyle.platform.cli.main import main

    good = export_bundle(storage / "run_a" / "step_00000010", tmp_path / "good", data_root=tmp_path / "none")
    truncated = shutil.copytree(good, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        load_bundle(truncated)
    flipped = shutil.copytree(good, tmp_path / "flipped")
    data = bytearray((flipped / "stats.npz").read_bytes())
    data[-10] ^= 0xFF
    (flipped / "stats.npz").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="stats.npz.*corrupt"):
        load_bundle(flipped)
    broken = shutil.copytree(good, tmp_path / "broken")
    (broken / "bundle.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bundle.json"):
        load_bundle(broken)

    clip = tmp_path / "x.wav"
    sf.write(clip, 0.3 * np.sin(np.arange(22050) / 3.0), 22050)
    assert main(["transfer", str(truncated), "--to", "violin", str(clip), "-o", str(tmp_path / "out")]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
