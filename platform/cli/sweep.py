"""`audiostyle sweep`: run or resume the Ray Tune + Optuna sweep described by an experiment's `sweep:` block."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from audiostyle.platform.cli.argtypes import positive_int

if TYPE_CHECKING:
    from audiostyle.platform.config.schema import ExperimentConfig
    from audiostyle.platform.sweeps.driver import SweepResult

DESCRIPTION = """\
Search an experiment's hyperparameters with Ray Tune + Optuna: one Ray Train run per trial.

The experiment's `sweep:` block says what to search and how:
  metric / mode        one metric (val/recon, min) or lists for several objectives (Pareto front)
  num_trials           trials in total (a resumed sweep counts the finished ones)
  max_concurrent       trials training at once
  seed                 seed of the TPE sampler (multivariate, grouped, constant liar)
  grace_period         ASHA's first rung in steps (default and minimum: the end of the first phase)
  reduction_factor     ASHA keeps 1 of this many trials at each rung
  space                dotted config path -> {float: [lo, hi], log: true} | {int: [lo, hi]} |
                       {choice: [...]}, optionally `when: losses.adversarial` or `when: {path: value}`;
                       `*` matches every list item (curriculum.phases.*.weights.hsic); curriculum
                       boundaries curriculum.phases.K.until are sampled so phases always stay ordered.
Everything lands in STORAGE/<run name>_sweep/: the Optuna journal (optuna.journal), one Train run per
trial (trial_0000/ ...), results.csv, best.yaml (the best trial's config, ready for `audiostyle
train`) and plots/*.png (optimization history, parameter importance, parallel coordinates, Pareto
front). A sweep folder that already holds trials is continued only with --resume: finished trials are
kept, the sampler sees them, and a trial cut off mid-run restarts from its last checkpoint. A trial that
fails (a configuration that does not train, a worker that dies past its restarts) is recorded as FAIL in
trials.jsonl and results.csv, and the sweep goes on with the others.

--evaluate N exports the best N trials as bundles (bundles/trial_NNNN/) and evaluates each as `audiostyle
evaluate` does (evaluation/trial_NNNN/), inputs from sweep.evaluate_input_soundfont, then writes
evaluation.csv (objective and evaluation metrics per trial, per direction) and evaluation_ranks.csv (Spearman
rank correlation of the objective with each metric over those trials). With --resume on a finished sweep it
trains nothing and evaluates only what is not evaluated yet.
"""

EPILOG = """\
examples:
  audiostyle sweep experiments/sweep_curriculum.yaml
  audiostyle sweep experiments/sweep_curriculum.yaml train.max_steps=300 --trials 12
  audiostyle sweep experiments/sweep_curriculum.yaml --trials 24 --resume     (add 12 more trials)
  audiostyle sweep experiments/sweep_curriculum.yaml --address auto --workers-per-trial 4 \\
      run.storage_path=s3://bucket/runs sweep.storage=/nfs/sweeps/curriculum.journal
  audiostyle train runs/piano_violin_curriculum_sweep/best.yaml
  audiostyle sweep experiments/sweep_any_player.yaml --include-default
  audiostyle sweep experiments/sweep_any_player.yaml --resume --evaluate 4 --baseline-bundle bundles/any_player_chords
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="Ray Tune + Optuna sweep over an experiment's `sweep:` block",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment file with a `sweep:` block")
    p.add_argument("overrides", nargs="*", metavar="a.b=c",
                   help="config overrides as dotted paths, values parsed as YAML (e.g. train.max_steps=300)")
    p.add_argument("--address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="Ray cluster to run on (the head's GCS address HOST:6379, Ray Client, or auto); "
                        "default: start a fresh local Ray in this process")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep already in the sweep folder (finished trials are not repeated)")
    p.add_argument("--trials", type=positive_int, metavar="N", help="trials in total (default: sweep.num_trials)")
    p.add_argument("--max-concurrent", type=positive_int, metavar="N",
                   help="trials training at once (default: sweep.max_concurrent)")
    p.add_argument("--workers-per-trial", type=positive_int, metavar="N",
                   help="Ray Train workers per trial (default: scaling.num_workers)")
    p.add_argument("--storage", metavar="PATH", help="where the sweep folder goes (default: run.storage_path)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--include-default", action="store_true",
                   help="a new sweep's first trial runs the experiment's own values of the searched entries")
    p.add_argument("--evaluate", type=positive_int, metavar="N",
                   help="export and evaluate the best N trials (and the default trial), see above")
    p.add_argument("--eval-data", metavar="ROOT", help="--evaluate: data root to evaluate on (default: data.root)")
    p.add_argument("--eval-max-pieces", type=positive_int, metavar="N", help="--evaluate: only the first N test pieces")
    p.add_argument("--baseline-bundle", metavar="PATH",
                   help="--evaluate: also evaluate this bundle (e.g. the default trained outside the sweep)")
    p.add_argument("--device", default="cpu", help="--evaluate: cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiostyle.platform.checking.checked_load import read_checked_experiment
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.sweeps.driver import run_sweep

    experiment = read_checked_experiment(args.experiment, args.overrides)
    if experiment.config.sweep is None:
        raise ConfigError("no `sweep:` block: add one (see experiments/sweep_curriculum.yaml)",
                          file=args.experiment, path="sweep")
    try:
        result = run_sweep(experiment.config, experiment.resolved, address=args.address, resume=args.resume,
                           num_trials=args.trials, workers_per_trial=args.workers_per_trial,
                           max_concurrent=args.max_concurrent, storage_path=args.storage,
                           include_default=args.include_default, plots=not args.no_plots)
    except ConfigError as exc:
        raise experiment.locate(exc) from None
    report = result.report
    print(f"\nsweep {result.study_name}: {len(report.rows)} trials ({result.new_trials} run now) in "
          f"{result.sweep_dir}\n")
    print(report.table)
    print(f"\nresults table: {report.csv_path}\nreport page:   {report.page}   (open it in a browser)")
    if report.best is not None:
        print(f"best trial: {report.best.number} ({report.best.run_name}), checkpoint "
              f"{report.best.checkpoint_path or '-'}")
        print(f"best configuration: {report.best_yaml}   (train it: audiostyle train {report.best_yaml})")
    for name, path in report.plots.items():
        print(f"plot {name}: {path}")
    for name, reason in report.skipped_plots.items():
        print(f"plot {name} skipped: {reason}")
    if args.evaluate:
        evaluate_best(args, experiment.config, result)
    return 0 if report.best is not None else 1


def evaluate_best(args: argparse.Namespace, cfg: ExperimentConfig, result: SweepResult) -> None:
    """--evaluate: export and evaluate the best trials, print the table and the rank correlations."""
    from audiostyle.platform.sweeps.driver import objectives
    from audiostyle.platform.sweeps.evaluate_trials import evaluate_sweep

    metrics, modes = objectives(cfg)
    soundfont = cfg.sweep.evaluate_input_soundfont
    evaluation = evaluate_sweep(result.report.rows, sweep_dir=result.sweep_dir, metric=metrics[0], mode=modes[0],
                                count=args.evaluate, data_root=args.eval_data or cfg.data.root,
                                input_soundfont=soundfont, baseline_bundle=args.baseline_bundle,
                                max_pieces=args.eval_max_pieces, device=args.device)
    print(f"\nevaluation of the best {args.evaluate} trials (inputs: "
          f"{'heldout split, ' + soundfont if soundfont else 'test split'}):\n")
    print(evaluation.table)
    print(f"\nevaluation table: {evaluation.csv_path}\nrank correlations: {evaluation.ranks_path}\n"
          f"report page (evaluation added): {result.report.page}")
