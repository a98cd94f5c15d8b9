"""Benchmark: transfer quality of the CPU recipe at several training budgets, beside the baselines.

Run: `python tests/benchmarks/bench_quality.py --data data/demo --steps 1000,2000,3000
      [--experiment experiments/paired_spectral.yaml] [--variants filter,generator,unpaired,research]
      [--inputs test,fluidr3,musescore] [--conditions room,tilt_up,tilt_down,hiss,quiet,rate_44k]
      [--bundle DIR] [--out DIR]`
By player and condition (the recipe that transfers any player, experiments/any_player.yaml, on
`data demo --players timgm6mb,csound`, so FluidR3 and MuseScore General are players it never heard):
  python tests/benchmarks/bench_quality.py --data data/players --experiment experiments/any_player.yaml \
      --steps 3000 --inputs test,fluidr3,musescore --conditions room,tilt_up,tilt_down,hiss,quiet,rate_44k
`--inputs` rotates where the inputs come from: `test` is the test split (the reference player, which
trained), a sound set's name is its `heldout` rendering of the same test pieces (a player the model never
trained on when the data was rendered without it). Each condition is a row of its own on the test split's
inputs. `--bundle` evaluates a bundle already trained instead of training (`--steps` is then ignored).
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
METRICS = ("pitch_acc", "chroma_cos", "note_f1", "mr_stft", "harmonicity", "sharpness", "p_target")


def thresholds(row: dict, oracle: dict, identity: dict, wrong: dict, mr_stft_factor: float = 0.7) -> list[str]:
    """The issue's bars that `row` misses (empty: all met); MR-STFT at most `mr_stft_factor` x the input's."""
    missed = []
    if row["pitch_acc"] < 0.9 * oracle["pitch_acc"]:
        missed.append(f"pitch {row['pitch_acc']:.3f} < 0.9 x oracle {oracle['pitch_acc']:.3f}")
    if row["chroma_cos"] < 0.9 * oracle["chroma_cos"]:
        missed.append(f"chroma {row['chroma_cos']:.3f} < 0.9 x oracle {oracle['chroma_cos']:.3f}")
    if row["mr_stft"] > mr_stft_factor * identity["mr_stft"]:
        missed.append(f"MR-STFT {row['mr_stft']:.3f} > {mr_stft_factor} x input {identity['mr_stft']:.3f}")
    if row["p_target"] < 0.8:
        missed.append(f"P(target) {row['p_target']:.3f} < 0.8")
    if row["pitch_acc"] <= wrong["pitch_acc"] or row["chroma_cos"] <= wrong["chroma_cos"]:
        missed.append("not better than wrong notes on content")
    if row["p_target"] <= identity["p_target"] or row["mr_stft"] >= identity["mr_stft"]:
        missed.append("not better than the input unchanged on timbre")
    return missed


def train(variant: str, steps: int, data: Path, out: Path, experiment: Path | None) -> dict:
    """Train one run and export its best checkpoint: {"variant", "steps", "train_seconds", "load_before",
    "load_after", "bundle"}."""
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.config.loader import load_experiment
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
    return {"variant": variant, "steps": steps, "train_seconds": round(train_seconds, 1),
            "load_before": [round(x, 2) for x in load], "load_after": [round(x, 2) for x in os.getloadavg()],
            "bundle": str(bundle)}


def evaluate_run(run: dict, data: Path, out: Path, *, inputs: str, condition: str | None, baselines: bool,
                 steady: bool | None = None) -> dict:
    """`run` (from `train`) evaluated on inputs from `inputs` ("test" or a held-out sound set) under
    `condition` (None: as rendered); the row's label says which."""
    from audiostyle.platform.evaluation.evaluate import evaluate

    label = inputs + (f"+{condition}" if condition else "")
    name = f"{run['variant']}_{run['steps']}_{label}"
    load = os.getloadavg()
    results = evaluate(run["bundle"], data, out_dir=out / "reports" / name, progress=False, baselines=baselines,
                       input_soundfont=None if inputs == "test" else inputs, input_condition=condition,
                       steady=steady)
    return {**run, "inputs": label, "load_eval": [round(x, 2) for x in load],
            "report": str(out / "reports" / name / "index.html"), "pairs": results["pairs"],
            "judge": results["classifier"]["checks"], "judge_trained_on": results["classifier"]["trained_on"]}


def print_table(runs: list[dict], mr_stft_factor: float) -> None:
    """Per direction: every run's model row with the bars it misses; per input source, the reference
    systems of that source (input unchanged and transcribe-and-re-render depend on the input)."""
    for pair in runs[0]["pairs"]:
        print(f"\n{pair}")
        print(f"  {'system':<36}" + "".join(f"{m:>11}" for m in METRICS) + "   thresholds")
        for run in runs:
            base = run["pairs"][pair]
            row = base["model"]
            missed = thresholds(row, base["oracle"], base["identity"], base["wrong_notes"], mr_stft_factor)
            label = f"{run['variant']} {run['steps']} ({run['train_seconds'] / 60:.0f} min) {run['inputs']}"
            print(f"  {label:<36}" + "".join(f"{row[m]:>11.3f}" for m in METRICS)
                  + ("   all met" if not missed else "   missed: " + "; ".join(missed)))
            for system in ("transcribe_rerender", "identity"):
                if system in base:
                    print(f"    {system + ' ' + run['inputs']:<34}" + "".join(f"{base[system][m]:>11.3f}" for m in METRICS))
        for system in ("wrong_notes", "oracle"):
            print(f"  {system:<36}" + "".join(f"{runs[0]['pairs'][pair][system][m]:>11.3f}" for m in METRICS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="demo root (default: `data demo --minutes 20` into --out)")
    parser.add_argument("--experiment", type=Path, help="the recipe (default experiments/paired_spectral.yaml)")
    parser.add_argument("--steps", default="1000,2000,3000", help="training budgets in steps, comma-separated")
    parser.add_argument("--variants", default="filter", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--inputs", default="test", help="input sources, comma-separated: test (the test split) "
                                                         "or held-out sound sets (fluidr3, musescore, ...)")
    parser.add_argument("--conditions", default="", help="recording conditions of the test split's inputs, "
                                                         "comma-separated (room, tilt_up, tilt_down, hiss, quiet, rate_44k)")
    parser.add_argument("--bundle", type=Path, help="evaluate this bundle instead of training")
    parser.add_argument("--steady-pitch", action=argparse.BooleanOptionalAction, default=None,
                        help="take the inputs' vibrato out first (default: as each bundle's model.steady_pitch)")
    parser.add_argument("--mr-stft-factor", type=float, default=0.7,
                        help="bar: MR-STFT at most this x the input unchanged (0.7; 0.75 for unseen players)")
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
    if args.bundle is not None:
        trained = [{"variant": args.bundle.name, "steps": 0, "train_seconds": 0.0, "load_before": [],
                    "load_after": [], "bundle": str(args.bundle.resolve())}]
    else:
        trained = [train(variant, int(steps), data, out, args.experiment)
                   for variant in variants for steps in args.steps.split(",")]
    sources = [(i.strip(), None) for i in args.inputs.split(",") if i.strip()]
    sources += [("test", c.strip()) for c in args.conditions.split(",") if c.strip()]
    runs = []
    for run in trained:
        for inputs, condition in sources:
            # the baseline depends on the input, so it runs on every source (of the first trained run)
            runs.append(evaluate_run(run, data, out, inputs=inputs, condition=condition, baselines=run is trained[0],
                                     steady=args.steady_pitch))
            (out / "quality.json").write_text(json.dumps(runs, indent=1))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores; data {data}")
    for run in trained:
        print(f"{run['variant']} {run['steps']} steps: {run['train_seconds']:.0f} s training, load average "
              f"{run['load_before']} before, {run['load_after']} after; bundle {run['bundle']}")
    for run in runs:
        print(f"  {run['inputs']}: judge trusted {run['judge']['trusted']} ({run['judge_trained_on']}), load "
              f"{run['load_eval']}; report {run['report']}")
    print_table(runs, args.mr_stft_factor)
    print(f"\nresults: {out / 'quality.json'}")


if __name__ == "__main__":
    main()
