"""Sweeps end to end on a real local Ray: Tune driver trials running real Train V2 runs on the demo data,
OptunaSearch with a journal file, ASHA stopping weak trials, `--resume` without repeated trials, and the
best configuration written as YAML that validates and trains.

One Ray instance serves the module. Trials are tiny (1 s crops, batch 2, 32-wide model, 6 steps,
validation every 2), one worker each, two at a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiostyle.platform.config.loader import config_from_dict, load_experiment
from audiostyle.platform.config.typed_convert import to_dict

pytestmark = pytest.mark.ray

MAX_STEPS = 6
GOOD_LR, BAD_LR = 3.0e-3, 1.0e-9  # a learning rate that learns in 2 steps, and one that cannot move at all


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from audiostyle.platform.training.ray_runtime import start_local_ray, worker_env_vars

    # 4 logical CPUs on 2 cores: 2 trials' Train workers plus start-up headroom. Worker start-up gets
    # longer than Ray's 60 s default when the machine is busy (several Ray processes start per trial).
    start_local_ray(4, env_vars={**worker_env_vars(1), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"})
    yield ray
    ray.shutdown()


def sweep_config(tiny_config, **sweep):
    cfg = tiny_config(f"train.max_steps={MAX_STEPS}", "train.val_every=2", "optim.warmup_steps=0")
    raw = to_dict(cfg)
    raw["sweep"] = {"metric": "val/recon", "mode": "min", "num_trials": 4, "max_concurrent": 2, "seed": 0,
                    "reduction_factor": 2, "space": {"optim.lr": {"float": [1.0e-9, 1.0e-2], "log": True}},
                    **sweep}
    return config_from_dict(raw), raw


def test_asha_stops_weak_trials_and_best_yaml_trains(ray_local, tiny_config, tmp_path):
    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.sweeps.driver import run_sweep
    from audiostyle.platform.training.driver import run_training

    # Reduction factor 3 with the first rung at step 2 and max_t = 6 steps gives ASHA one rung that can
    # stop a trial early, step 2 (the next one, 2 x 3 = 6, is the last step). With factor 2 there was a
    # rung at step 4 too, where the GOOD_LR / 2 trial was stopped whenever trial 0 reported step 4 first.
    cfg, raw = sweep_config(tiny_config, grace_period=2, reduction_factor=3)
    # Two learning trials first, then two that cannot learn. A non-learning trial starts only once a
    # learning one has passed the rung (step 2), so the rung's cutoff (its 67th percentile, in ASHA's
    # better-is-higher terms) is already above it: with {good}, {good, good}, {good, bad} or
    # {good, good, bad} recorded, a bad value falls below the cutoff -> stopped at step 2.
    points = [{"optim.lr": GOOD_LR}, {"optim.lr": GOOD_LR / 2}, {"optim.lr": BAD_LR}, {"optim.lr": BAD_LR}]
    result = run_sweep(cfg, raw, initial_points=points)
    rows = {r.number: r for r in result.report.rows}

    assert result.new_trials == 4 and sorted(rows) == [0, 1, 2, 3]
    assert all(r.state == "COMPLETE" for r in rows.values())
    stopped = {n for n, r in rows.items() if r.stopped_early(MAX_STEPS)}
    assert {2, 3} <= stopped, {n: (r.step, r.values) for n, r in rows.items()}
    assert all(rows[n].step == 2 for n in stopped)  # stopped at the first rung, the end of phase 0 or later
    # the learning trial that reached the rung first always continues (nothing recorded to beat it)
    assert rows[0].step == MAX_STEPS or rows[1].step == MAX_STEPS
    # each trial trained as its own Train run under the sweep folder, checkpoints at the reported steps
    for n, row in rows.items():
        assert Path(row.checkpoint_path).parent == result.sweep_dir / f"trial_{n:04d}"
        state = json.loads((Path(row.checkpoint_path) / "state.json").read_text())
        assert state["step"] == row.step
    assert result.report.best.number in (0, 1)
    assert result.report.csv_path.is_file() and "optimization_history" in result.report.plots

    best = load_experiment(result.report.best_yaml)
    assert best.optim.lr == pytest.approx(rows[result.report.best.number].sample["optim.lr"])
    assert best.sweep is None and best.name.endswith("_best")
    trained = run_training(with_settings(best, {"run.storage_path": str(tmp_path / "best_runs"), "run.name": "best"}))
    assert trained.error is None and trained.metrics["step"] == MAX_STEPS


def test_resume_runs_only_the_missing_trials(ray_local, tiny_config, tmp_path):
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.sweeps.driver import run_sweep
    from audiostyle.platform.sweeps.study import open_study

    cfg, raw = sweep_config(tiny_config, num_trials=2, space={
        "optim.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
        "curriculum.phases.0.until": {"float": [0.1, 0.35]},
    })
    first = run_sweep(cfg, raw, plots=False)
    assert first.new_trials == 2
    done = {r.number: r for r in first.report.rows}
    mtimes = {p: p.stat().st_mtime_ns for n in done for p in (first.sweep_dir / f"trial_{n:04d}").rglob("*")
              if p.is_file()}

    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(cfg, raw, num_trials=4)  # an existing sweep is never silently extended or overwritten

    second = run_sweep(cfg, raw, resume=True, num_trials=4, plots=False)
    assert second.new_trials == 2
    study = open_study(second.sweep_dir / "optuna.journal", second.study_name, ["min"], create=False)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    samples = [json.dumps(t.user_attrs["sample"], sort_keys=True) for t in study.trials]
    assert len(set(samples)) == 4  # four distinct configurations, none re-run
    # the finished trials' runs were not touched again
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    assert sorted(p.name for p in second.sweep_dir.glob("trial_*")) == [f"trial_{n:04d}" for n in range(4)]
    ledger = [json.loads(line) for line in (second.sweep_dir / "trials.jsonl").read_text().splitlines()]
    assert sorted(e["optuna_trial"] for e in ledger) == [0, 1, 2, 3]

    third = run_sweep(cfg, raw, resume=True, num_trials=4, plots=False)
    assert third.new_trials == 0 and len(third.report.rows) == 4


def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(ray_local, demo_root, tmp_path):
    """One trial's config names an instrument folder that does not exist (valid YAML, fails once training
    starts): it is FAIL in the study, ERROR in trials.jsonl and the report, and the other trial finishes and
    is the best. The finished trial reports the unseen-player objective on the way (a paired recipe)."""
    from audiostyle.datasets.paired import heldout_soundfonts
    from audiostyle.platform.config.loader import load_resolved
    from audiostyle.platform.sweeps.driver import run_sweep

    unseen = [s for s in heldout_soundfonts(demo_root / "piano") if s in ("musescore", "fluidr3")]
    metric = "val/unseen_cross_recon" if unseen else "val/cross_recon"
    raw, _ = load_resolved(Path(__file__).resolve().parents[1] / "experiments" / "paired_spectral.yaml", [
        f"data.root={demo_root}", f"run.storage_path={tmp_path / 'runs'}", "run.max_failures=0",
        "data.segment_seconds=1.0", "data.batch_size=2", "data.pair_batch_size=2", "data.steps_per_epoch=3",
        "data.val_batches=1", f"data.val_unseen_players={unseen[-1:]}", "model.content_encoder.dim=16",
        "model.decoder.dim=16", "model.style_encoder.width=16", "model.style_encoder.dim=8",
        "train.max_steps=4", "train.val_every=2", "train.log_every=1", "optim.warmup_steps=0"])
    good, missing = f"{demo_root}/piano", str(tmp_path / "no_such_instrument")
    raw["sweep"] = {"metric": metric, "mode": "min", "num_trials": 2, "max_concurrent": 2, "seed": 0,
                    "space": {"instruments.0.data": {"choice": [good, missing]}}}
    result = run_sweep(config_from_dict(raw), raw, plots=False,
                       initial_points=[{"instruments.0.data": good}, {"instruments.0.data": missing}])

    rows = {r.number: r for r in result.report.rows}
    assert rows[0].state == "COMPLETE" and rows[1].state == "FAIL", {n: r.state for n, r in rows.items()}
    assert result.report.best.number == 0 and rows[0].step == 4
    assert rows[0].metrics[metric] > 0  # the objective reached Tune and the ledger
    ledger = [json.loads(line) for line in (result.sweep_dir / "trials.jsonl").read_text().splitlines()]
    status = {e["optuna_trial"]: e["status"] for e in ledger}
    assert status == {0: "TERMINATED", 1: "ERROR"}
    failed_line = next(line for line in result.report.table.splitlines()[1:] if line.split()[0] == "1")
    assert "FAIL" in failed_line.split()
