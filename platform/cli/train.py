"""`audiostyle train`: train an experiment YAML on Ray Train (the embedded local Ray or a cluster)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Train an experiment YAML on Ray Train V2 (a TorchTrainer; DDP over gloo on CPU, NCCL on GPU).

By default a fresh local Ray instance starts inside this process (never one left running on this
machine) and trains on this machine's CPUs. --address connects to a running cluster instead; the
audiostyle package is shipped to its workers as a wheel, and --storage must then be shared storage
(s3://, gs://, or an NFS mount on every node). An address that does not answer fails within about
30 s, saying what was tried. --submit runs the same training as a Ray Job instead (see `audiostyle
submit --help`): it keeps running when this terminal closes.

--workers MIN-MAX (or scaling.num_workers: [MIN, MAX]) makes the run elastic: when a node is lost the
run continues from its latest checkpoint on the workers that are left (at least MIN), and grows back
to MAX when nodes return (checked every --resize-every seconds). The global batch stays that of MAX
workers: fewer workers accumulate more micro-batches per step.

The run is named after the experiment (or --name / run.name) and stored in STORAGE/NAME/:
checkpoints in checkpoint_*/ folders (the best train.keep_top_k by train.checkpoint_metric plus the
latest) and TensorBoard logs in tensorboard/. Running the same command again resumes from the latest
checkpoint; raise train.max_steps to train further, or pass another --name to start afresh.
"""

EPILOG = """\
examples:
  audiostyle data demo --out data/demo
  audiostyle train experiments/quickstart.yaml
  audiostyle train experiments/piano_violin.yaml train.max_steps=500 optim.lr=1e-4 --workers 2
  audiostyle train experiments/piano_violin.yaml --address auto --workers 8 --gpu --storage s3://bucket/runs
  audiostyle train experiments/piano_violin.yaml --address 10.0.0.5:6379 --workers 4-8 --storage s3://bucket/runs
  audiostyle train experiments/piano_violin.yaml --submit --address http://10.0.0.5:8265 --storage s3://bucket/runs
  tensorboard --logdir runs/piano_violin/tensorboard
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from audiostyle.platform.cli.submit import add_options

    p = sub.add_parser("train", help="train an experiment YAML on Ray Train (local or cluster)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment file (see experiments/)")
    p.add_argument("overrides", nargs="*", metavar="a.b=c",
                   help="config overrides as dotted paths, values parsed as YAML (e.g. train.max_steps=500); "
                        "write them before the --options")
    p.add_argument("--address", metavar="auto|HOST:PORT|ray://HOST:PORT",
                   help="Ray cluster to run on: 'auto' (this node is part of a cluster), the head's GCS "
                        "address HOST:6379, or a Ray Client address; with --submit, the dashboard's "
                        "http://HOST:8265; default: start a fresh local Ray in this process")
    p.add_argument("--submit", action="store_true",
                   help="submit as a Ray Job to the dashboard at --address instead of training from here")
    add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.submit:
        from audiostyle.platform.cli.submit import submit_from_args

        return submit_from_args(args)
    import logging

    from audiostyle.platform.checking.checked_load import load_checked_experiment
    from audiostyle.platform.cli.submit import run_option_overrides
    from audiostyle.platform.training.driver import TrainingFailed, run_training

    overrides = [*args.overrides, *run_option_overrides(args)]
    cfg = load_checked_experiment(args.experiment, overrides)
    note = " ".join(overrides) or None
    logging.getLogger("audiostyle").info("training %s (%s)", args.experiment, note or "no overrides")
    try:
        result = run_training(cfg, address=args.address, overrides_note=note, resize_every_s=args.resize_every)
    except TrainingFailed as exc:
        print(f"error: {exc}")
        return 1
    return 0 if result.error is None else 1
