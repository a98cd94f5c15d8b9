"""Runs stored on an object store end to end: checkpoints, resume, `checkpoints list/best/export` and a sweep
on an `s3://` storage path, against a real S3-compatible server started here (moto's server mode on
127.0.0.1) and reached through pyarrow's S3 filesystem, as Ray Train itself reaches it.

The endpoint comes from AWS_ENDPOINT_URL, which pyarrow reads like the AWS SDKs do, so the storage path
is the plain `s3://bucket/prefix` a user would write; the local Ray instance and its workers inherit it.
One curriculum phase and 4 steps keep each run short.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from audiostyle.platform.training.test_hooks import WorkerTestHooks

pytestmark = pytest.mark.ray

BUCKET = "audiostyle-test"
ONE_PHASE = "curriculum.phases=[{name: reconstruction, until: 1.0, weights: {reconstruction: 1.0}}]"


@pytest.fixture(scope="module")
def s3_ray():
    """A moto S3 server on loopback with one bucket, and a local Ray whose workers can reach it."""
    import pyarrow.fs
    import ray
    from moto.server import ThreadedMotoServer

    from audiostyle.platform.training.ray_runtime import start_local_ray, worker_env_vars

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        pyarrow.fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], allow_bucket_creation=True).create_dir(BUCKET)
        start_local_ray(4, env_vars={**worker_env_vars(1), **env})
        yield f"s3://{BUCKET}"
        ray.shutdown()
    server.stop()


def s3_files(uri: str) -> set[str]:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    return {e.path[len(root) + 1:] for e in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
            if e.type == pyarrow.fs.FileType.File}


def test_runs_resume_and_export_from_s3(s3_ray, tiny_config, demo_root, tmp_path, capsys):
    from audiostyle.platform.bundles.load import read_bundle_meta
    from audiostyle.platform.cli.main import main
    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.training.driver import run_training

    storage = f"{s3_ray}/runs"
    cfg = tiny_config(ONE_PHASE, "train.max_steps=4", "train.val_every=2", "train.keep_top_k=2")
    cfg = with_settings(cfg, {"run.storage_path": storage, "run.name": "s3run"})
    first = run_training(cfg, test_hooks=WorkerTestHooks(stop_after_step=2))
    assert first.metrics["step"] == 2
    resumed = run_training(cfg, test_hooks=WorkerTestHooks(probe_dir=str(tmp_path / "probe")))
    probe = json.loads((tmp_path / "probe" / "rank0.json").read_text())
    assert probe["started_at"] == 2 and resumed.metrics["step"] == 4  # resumed from the checkpoint on S3

    files = s3_files(storage)
    for step in (2, 4):
        assert {f"s3run/step_{step:08d}/{name}" for name in
                ("model.safetensors", "optim.pt", "state.json", "config.yaml", "stats.npz")} <= files
    assert any(f.startswith("s3run/checkpoint_manager_snapshot") for f in files)
    assert not any(f.startswith("s3run/tensorboard") for f in files)  # TensorBoard only beside local runs

    assert main(["checkpoints", "list", storage]) == 0
    listing = capsys.readouterr().out
    assert "s3run" in listing and "step_00000002" in listing and "step_00000004" in listing
    assert main(["checkpoints", "best", storage, "--metric", "val/recon"]) == 0
    best = capsys.readouterr().out.strip().splitlines()[-1]
    assert best.startswith(f"{storage}/s3run/step_0000000")
    out = tmp_path / "bundle"
    assert main(["checkpoints", "export", storage, "--metric", "val/recon", "--out", str(out),
                 "--data", str(demo_root)]) == 0
    meta = read_bundle_meta(out)
    assert meta["provenance"]["checkpoint"] == best and meta["instruments"] == ["piano", "violin"]
    assert meta["provenance"]["prototypes"]["source"] == "training set"


def test_sweep_on_s3_keeps_runs_there_and_the_report_beside_its_journal(s3_ray, tiny_config, tmp_path):
    from audiostyle.platform.checkpoints.index import scan_checkpoints
    from audiostyle.platform.config.loader import config_from_dict, load_experiment
    from audiostyle.platform.config.typed_convert import to_dict
    from audiostyle.platform.sweeps.driver import run_sweep

    storage = f"{s3_ray}/sweeps"
    cfg = tiny_config(ONE_PHASE, "train.max_steps=4", "train.val_every=2", f"run.storage_path={storage}")
    raw = to_dict(cfg)
    journal = tmp_path / "journals" / "s3.journal"
    raw["sweep"] = {"metric": "val/recon", "mode": "min", "num_trials": 2, "max_concurrent": 2, "seed": 0,
                    "storage": str(journal), "space": {"optim.lr": {"float": [1.0e-4, 1.0e-2], "log": True}}}
    result = run_sweep(config_from_dict(raw), raw, plots=False)

    assert result.sweep_dir == journal.parent / result.study_name and journal.is_file()
    assert [r.state for r in result.report.rows] == ["COMPLETE", "COMPLETE"]
    assert result.report.csv_path.parent == result.sweep_dir and result.report.csv_path.is_file()
    assert load_experiment(result.report.best_yaml).sweep is None
    # the trials' Train runs (and Tune's state) are on S3, under the sweep's name
    records = scan_checkpoints(storage)
    assert {r.run.split("/")[-1] for r in records} == {"trial_0000", "trial_0001"}
    assert all(r.location.startswith(f"{storage}/{result.study_name}/trial_000") for r in records)
    assert {r.step for r in records} == {2, 4}
    assert any(f.startswith(f"{result.study_name}/tune_00/") for f in s3_files(storage))
    assert not list(Path(result.sweep_dir).glob("trial_*"))  # nothing of the runs on local disk
