"""`audiostyle sweep`: run or resume the Ray Tune + Optuna sweep described by an experiment's `sweep:` block."""

from __future__ import annotations

import argparse

from audiostyle.platform.cli.argtypes import positive_int

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
kept, the sampler sees them, and a trial cut off mid-run restarts from its last checkpoint.
"""

EPILOG = """\
examples:
  audiostyle sweep experiments/sweep_curriculum.yaml
  audiostyle sweep experiments/sweep_curriculum.yaml train.max_steps=300 --trials 12
  audiostyle sweep experiments/sweep_curriculum.yaml --trials 24 --resume     (add 12 more trials)
  audiostyle sweep experiments/sweep_curriculum.yaml --address auto --workers-per-trial 4 \\
      run.storage_path=s3://bucket/runs sweep.storage=/nfs/sweeps/curriculum.journal
  audiostyle train runs/piano_violin_curriculum_sweep/best.yaml
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
                           max_concurrent=args.max_concurrent, storage_path=args.storage, plots=not args.no_plots)
    except ConfigError as exc:
        raise experiment.locate(exc) from None
    report = result.report
    print(f"\nsweep {result.study_name}: {len(report.rows)} trials ({result.new_trials} run now) in "
          f"{result.sweep_dir}\n")
    print(report.table)
    print(f"\nresults table: {report.csv_path}")
    if report.best is not None:
        print(f"best trial: {report.best.number} ({report.best.run_name}), checkpoint "
              f"{report.best.checkpoint_path or '-'}")
        print(f"best configuration: {report.best_yaml}   (train it: audiostyle train {report.best_yaml})")
    for name, path in report.plots.items():
        print(f"plot {name}: {path}")
    for name, reason in report.skipped_plots.items():
        print(f"plot {name} skipped: {reason}")
    return 0 if report.best is not None else 1
