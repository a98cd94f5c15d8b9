"""Benchmark: what a small sweep buys on the demo data, beside the default configuration at equal budget.

Run: `python tests/benchmarks/bench_sweep.py [--trials 6] [--steps 30] [--data DEMO_ROOT] [--out DIR]`.
In one run, on the same demo data, validation batches and (quickstart-sized) model:
  sweep            experiments/sweep_curriculum.yaml: TPE over phase boundaries, loss weights and lr,
                   ASHA on; --trials trials of --steps steps each (stopped trials use fewer)
  default, same    the default curriculum and lr (piano_violin.yaml) for --steps steps: one trial's budget
  default, total   the default for as many steps as the whole sweep trained: the same total budget
  best, total      the sweep's best configuration (best.yaml) retrained for that total too
Prints val/recon (lower is better) of each run's last validation. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[2]
# The quickstart's model and data sizes: the full model does not train in minutes on a CPU.
SMALL = ("data.segment_seconds=2.0", "data.batch_size=4", "data.steps_per_epoch=20", "data.val_batches=2",
         "model.style_encoder.dim=64", "model.style_encoder.num_layers=1", "model.style_encoder.num_heads=2",
         "model.content_encoder.dim=64", "model.content_encoder.num_layers=1", "model.content_encoder.num_heads=2",
         "model.decoder.dim=64", "model.decoder.num_layers=1", "model.decoder.num_heads=2",
         "model.discriminator.hidden=64", "optim.warmup_steps=5", "train.log_every=10")


def train_default(overrides: list[str], steps: int, storage: Path, name: str) -> tuple[float, float]:
    from audiostyle.platform.config.loader import load_experiment, with_settings
    from audiostyle.platform.training.driver import run_training

    cfg = load_experiment(ROOT / "experiments" / "piano_violin.yaml",
                          [*overrides, f"train.max_steps={steps}", f"train.val_every={max(1, steps // 3)}"])
    start = time.perf_counter()
    result = run_training(with_settings(cfg, {"run.storage_path": str(storage), "run.name": name}))
    return float(result.metrics["val/recon"]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30, help="training steps per trial")
    parser.add_argument("--data", type=Path, help="demo root (default: render one into --out)")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    data = args.data
    if data is None:
        from audiostyle.platform.data.prepare import prepare_demo

        data = out / "demo"
        prepare_demo(data, instruments=("piano", "violin"), seconds_per_instrument=60, seed=0)

    import ray

    from audiostyle.platform.config.loader import (
        config_from_dict,
        load_experiment,
        load_resolved,
        with_settings,
    )
    from audiostyle.platform.sweeps.driver import run_sweep
    from audiostyle.platform.training.driver import run_training
    from audiostyle.platform.training.ray_runtime import start_local_ray, worker_env_vars

    start_local_ray(4, env_vars={**worker_env_vars(1), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"})
    common = [f"data.root={data}", f"run.storage_path={out / 'runs'}", *SMALL]
    raw, _ = load_resolved(ROOT / "experiments" / "sweep_curriculum.yaml",
                      [*common, f"train.max_steps={args.steps}", f"train.val_every={max(1, args.steps // 3)}"])
    cfg = config_from_dict(raw)
    start = time.perf_counter()
    sweep = run_sweep(cfg, raw, num_trials=args.trials, plots=True)
    sweep_s = time.perf_counter() - start
    rows = [r for r in sweep.report.rows if r.step is not None]
    total = sum(r.step for r in rows)
    best = sweep.report.best
    assert best is not None, "no trial completed"

    same, same_s = train_default(common, args.steps, out / "runs", "default_same_steps")
    budget, budget_s = train_default(common, total, out / "runs", "default_total_budget")
    best_cfg = load_experiment(sweep.report.best_yaml,
                               [f"train.max_steps={total}", f"train.val_every={max(1, total // 3)}"])
    start = time.perf_counter()
    retrained = run_training(with_settings(best_cfg, {"run.storage_path": str(out / "runs"), "run.name": "best_total_budget"}))
    best_total, best_total_s = float(retrained.metrics["val/recon"]), time.perf_counter() - start
    ray.shutdown()

    stopped = sum(r.stopped_early(args.steps) for r in rows)
    print(f"\nsweep: {len(rows)} trials x up to {args.steps} steps, {stopped} stopped early by ASHA, "
          f"{total} steps in all, {sweep_s:.0f} s; data {data}")
    print(f"best trial {best.number}: " + ", ".join(f"{p}={v:.4g}" if isinstance(v, float) else f"{p}={v}"
                                                    for p, v in best.sample.items()))
    print(f"\n{'run':<40}{'steps':>7}{'val/recon':>11}{'seconds':>9}")
    for label, steps, value, secs in [
        (f"sweep best trial ({best.number}; sweep wall time)", best.step, best.values[0], sweep_s),
        ("default, same steps as one trial", args.steps, same, same_s),
        ("default, same total budget", total, budget, budget_s),
        ("sweep best config, same total budget", total, best_total, best_total_s),
    ]:
        print(f"{label:<40}{steps:>7}{value:>11.4f}{secs:>9.0f}")
    print(f"\nsweep folder: {sweep.sweep_dir}")


if __name__ == "__main__":
    main()
