"""Benchmark: transfer quality of the CPU recipe at several training budgets, beside the baselines.

Run: `python tests/benchmarks/bench_quality.py --data data/demo --steps 1000,2000,3000
      [--experiment experiments/paired_spectral.yaml] [--variants filter,generator,unpaired,research]
      [--out DIR]`
For each variant and budget it trains a fresh run with `run_training` (the embedded Ray, one worker, the
experiment's scaling), exports the best checkpoint by the experiment's metric with the training-set
prototypes, and runs `evaluate` on the paired test pieces, exactly as `audiostyle train`, `checkpoints
export` and `evaluate` do. Variants, for choosing components by evidence:
  filter     the recipe as written (spectral_filter decoder, cross-reconstruction on pairs)
  generator  the same with spectral_generator: the decoder writes the spectrum without the input's own
  unpaired   the same without cross-reconstruction (weight 0): self-reconstruction only, as without pairs
  research   experiments/quickstart.yaml (the research architecture, CPU-sized) for the same steps
Prints, per direction, pitch accuracy, chroma cosine, MR-STFT to the target, harmonicity, sharpness and
P(target) of every run beside transcribe-and-re-render, input unchanged, wrong notes and the oracle,
the training wall time, the machine's load average, and which of the issue's thresholds each run meets.
Results go to <out>/quality.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "filter": ("paired_spectral", []),
    "generator": ("paired_spectral", ["model.decoder.component=spectral_generator"]),
    "unpaired": ("paired_spectral", ["curriculum.phases.0.weights.cross_reconstruction=0.0"]),
    "research": ("quickstart", ["train.checkpoint_metric=val/recon"]),
}
METRICS = ("pitch_acc", "chroma_cos", "mr_stft", "harmonicity", "sharpness", "p_target")


def thresholds(row: dict, oracle: dict, identity: dict, wrong: dict) -> list[str]:
    """The issue's bars that `row` misses (empty: all met)."""
    missed = []
    if row["pitch_acc"] < 0.9 * oracle["pitch_acc"]:
        missed.append(f"pitch {row['pitch_acc']:.3f} < 0.9 x oracle {oracle['pitch_acc']:.3f}")
    if row["chroma_cos"] < 0.9 * oracle["chroma_cos"]:
        missed.append(f"chroma {row['chroma_cos']:.3f} < 0.9 x oracle {oracle['chroma_cos']:.3f}")
    if row["mr_stft"] > 0.7 * identity["mr_stft"]:
        missed.append(f"MR-STFT {row['mr_stft']:.3f} > 0.7 x input {identity['mr_stft']:.3f}")
    if row["p_target"] < 0.8:
        missed.append(f"P(target) {row['p_target']:.3f} < 0.8")
    if row["pitch_acc"] <= wrong["pitch_acc"] or row["chroma_cos"] <= wrong["chroma_cos"]:
        missed.append("not better than wrong notes on content")
    if row["p_target"] <= identity["p_target"] or row["mr_stft"] >= identity["mr_stft"]:
        missed.append("not better than the input unchanged on timbre")
    return missed


def train_and_evaluate(variant: str, steps: int, data: Path, out: Path, experiment: Path | None,
                       baselines: bool) -> dict:
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.evaluation.evaluate import evaluate
    from audiostyle.platform.training.driver import run_training

    name, overrides = VARIANTS[variant]
    path = experiment if (experiment is not None and variant != "research") else ROOT / "experiments" / f"{name}.yaml"
    run_name = f"{variant}_{steps}"
    cfg = load_experiment(path, [f"data.root={data}", f"run.storage_path={out / 'runs'}", f"run.name={run_name}",
                                 f"train.max_steps={steps}", f"train.val_every={max(1, steps // 4)}", *overrides])
    load = os.getloadavg()
    start = time.perf_counter()
    result = run_training(cfg)
    train_seconds = time.perf_counter() - start
    best = result.get_best_checkpoint(cfg.train.checkpoint_metric, cfg.train.checkpoint_mode)
    bundle = export_bundle(best.path, out / "bundles" / run_name, data_root=data, overwrite=True)
    results = evaluate(bundle, data, out_dir=out / "reports" / run_name, progress=False, baselines=baselines)
    return {"variant": variant, "steps": steps, "train_seconds": round(train_seconds, 1),
            "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
            "report": str(out / "reports" / run_name / "index.html"), "pairs": results["pairs"],
            "judge": results["classifier"]["checks"], "judge_trained_on": results["classifier"]["trained_on"]}


def print_table(runs: list[dict]) -> None:
    pairs = list(runs[0]["pairs"])
    for pair in pairs:
        base = runs[0]["pairs"][pair]
        print(f"\n{pair}")
        print(f"  {'system':<28}" + "".join(f"{m:>12}" for m in METRICS) + "   thresholds")
        for run in runs:
            row = run["pairs"][pair]["model"]
            missed = thresholds(row, base["oracle"], base["identity"], base["wrong_notes"])
            label = f"{run['variant']} {run['steps']} steps ({run['train_seconds'] / 60:.0f} min)"
            print(f"  {label:<28}" + "".join(f"{row[m]:>12.3f}" for m in METRICS)
                  + ("   all met" if not missed else "   missed: " + "; ".join(missed)))
        for system in ("transcribe_rerender", "identity", "wrong_notes", "oracle"):
            if system in base:
                print(f"  {system:<28}" + "".join(f"{base[system][m]:>12.3f}" for m in METRICS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="demo root (default: `data demo --minutes 20` into --out)")
    parser.add_argument("--experiment", type=Path, help="the recipe (default experiments/paired_spectral.yaml)")
    parser.add_argument("--steps", default="1000,2000,3000", help="training budgets in steps, comma-separated")
    parser.add_argument("--variants", default="filter", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="bench-quality-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = args.data
    if data is None:
        from audiostyle.platform.data.prepare import prepare_demo

        data = out / "demo"
        prepare_demo(data, instruments=("piano", "violin"), minutes=20, seed=0, progress=True)
    data = data.resolve()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    runs = []
    for variant in variants:
        for steps in (int(s) for s in args.steps.split(",")):
            runs.append(train_and_evaluate(variant, steps, data, out, args.experiment, baselines=not runs))
            (out / "quality.json").write_text(json.dumps(runs, indent=1))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores; data {data}")
    for run in runs:
        print(f"{run['variant']} {run['steps']} steps: {run['train_seconds']:.0f} s training, load average "
              f"{run['load_before']} before, {run['load_after']} after; judge trusted: {run['judge']['trusted']} "
              f"({run['judge_trained_on']}); report {run['report']}")
    print_table(runs)
    print(f"\nresults: {out / 'quality.json'}")


if __name__ == "__main__":
    main()
