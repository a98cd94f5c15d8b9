"""Benchmark: what a small sweep buys on the demo data, beside the default configuration at equal budget.

Run: `python tests/benchmarks/bench_sweep.py [--trials 6] [--steps 30] [--seeds 3] [--sweep YAML] [--data DEMO_ROOT]
[--out DIR]`. In one run, on the same data and validation batches:
  sweep            --sweep (default experiments/sweep_curriculum.yaml, at the quickstart's model size): TPE
                   over its space, ASHA on; --trials trials of --steps steps each (stopped trials use fewer)
  default, same    the sweep YAML's own values (its `sweep:` block dropped) for --steps steps: one trial's budget
  default, total   the default for as many steps as the whole sweep trained: the same total budget
  best, total      the sweep's best configuration (best.yaml) retrained for that total too
Each configuration is trained with --seeds seeds (the config's top-level `seed`: weights, dropout and data
order); the table gives the sweep objective's mean +- sample standard deviation and the range over the seeds,
so a gain can be told from seed noise. Asserts nothing.
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


def train_seeds(path: Path, overrides: list[str], steps: int, storage: Path, name: str, metric: str,
                seeds: int) -> tuple[list[float], float]:
    """`metric` at the last validation of `path` trained for `steps` steps with seeds 0..seeds-1, and the
    mean seconds per run."""
    from audiostyle.platform.config.loader import load_experiment, with_settings
    from audiostyle.platform.training.driver import run_training

    values, seconds = [], 0.0
    for seed in range(seeds):
        cfg = load_experiment(path, [*overrides, "sweep=null", f"seed={seed}", f"train.max_steps={steps}",
                                     f"train.val_every={max(1, steps // 3)}"])
        start = time.perf_counter()
        result = run_training(with_settings(cfg, {"run.storage_path": str(storage), "run.name": f"{name}_seed{seed}"}))
        seconds += time.perf_counter() - start
        values.append(float(result.metrics[metric]))
    return values, seconds / seeds


def spread(values: list[float]) -> str:
    """'mean +- sample std [min, max]' (no std for one seed)."""
    import statistics

    std = f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{std} [{min(values):.4f}, {max(values):.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=30, help="training steps per trial")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per compared configuration (3 tells gain from noise)")
    parser.add_argument("--sweep", type=Path, default=ROOT / "experiments" / "sweep_curriculum.yaml",
                        help="sweep YAML (the quickstart's model size is applied to sweep_curriculum.yaml only)")
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

    from audiostyle.platform.config.loader import config_from_dict, load_resolved
    from audiostyle.platform.sweeps.driver import objectives, run_sweep
    from audiostyle.platform.training.ray_runtime import start_local_ray, worker_env_vars

    start_local_ray(4, env_vars={**worker_env_vars(1), "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "600"})
    small = SMALL if args.sweep.name == "sweep_curriculum.yaml" else ()
    common = [f"data.root={data}", f"run.storage_path={out / 'runs'}", *small]
    raw, _ = load_resolved(args.sweep, [*common, f"train.max_steps={args.steps}",
                                        f"train.val_every={max(1, args.steps // 3)}"])
    cfg = config_from_dict(raw)
    metric = objectives(cfg)[0][0]
    start = time.perf_counter()
    sweep = run_sweep(cfg, raw, num_trials=args.trials, include_default=True, plots=True)
    sweep_s = time.perf_counter() - start
    rows = [r for r in sweep.report.rows if r.step is not None]
    total = sum(r.step for r in rows)
    best = sweep.report.best
    assert best is not None, "no trial completed"

    runs = out / "runs"
    same, same_s = train_seeds(args.sweep, common, args.steps, runs, "default_same_steps", metric, args.seeds)
    budget, budget_s = train_seeds(args.sweep, common, total, runs, "default_total_budget", metric, args.seeds)
    best_same, best_same_s = train_seeds(sweep.report.best_yaml, [], args.steps, runs, "best_same_steps", metric,
                                         args.seeds)
    best_total, best_total_s = train_seeds(sweep.report.best_yaml, [], total, runs, "best_total_budget", metric,
                                           args.seeds)
    ray.shutdown()

    stopped = sum(r.stopped_early(args.steps) for r in rows)
    print(f"\nsweep {args.sweep.name}: {len(rows)} trials x up to {args.steps} steps, {stopped} stopped early by "
          f"ASHA, {total} steps in all, {sweep_s:.0f} s; data {data}")
    print(f"best trial {best.number}: " + ", ".join(f"{p}={v:.4g}" if isinstance(v, float) else f"{p}={v}"
                                                    for p, v in best.sample.items()))
    print(f"\n{metric} (lower is better unless the sweep maximizes it), mean +- std [min, max] over "
          f"{args.seeds} seed(s)")
    print(f"{'run':<40}{'steps':>7}  {metric:<44}{'s/run':>7}")
    for label, steps, values, secs in [
        (f"sweep best trial ({best.number}; seed 0)", best.step, [best.values[0]], sweep_s / max(1, len(rows))),
        ("default, same steps as one trial", args.steps, same, same_s),
        ("sweep best config, same steps", args.steps, best_same, best_same_s),
        ("default, same total budget", total, budget, budget_s),
        ("sweep best config, same total budget", total, best_total, best_total_s),
    ]:
        print(f"{label:<40}{steps:>7}  {spread(values):<44}{secs:>7.0f}")
    print(f"\nsweep folder: {sweep.sweep_dir}")


if __name__ == "__main__":
    main()
