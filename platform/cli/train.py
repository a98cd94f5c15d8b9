"""`audiostyle train`: train an experiment YAML on Ray Train (the embedded local Ray or a cluster)."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Train an experiment YAML on Ray Train V2 (a TorchTrainer; DDP over gloo on CPU, NCCL on GPU).

By default a local Ray instance starts inside this process and trains on this machine's CPUs.
--address connects to a running cluster instead; the audiostyle package is shipped to its workers
as a wheel, and --storage must then be shared storage (s3://, gs://, or an NFS mount on every node).

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
  tensorboard --logdir runs/piano_violin/tensorboard
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an experiment YAML on Ray Train (local or cluster)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment file (see experiments/)")
    p.add_argument("overrides", nargs="*", metavar="a.b=c",
                   help="config overrides as dotted paths, values parsed as YAML (e.g. train.max_steps=500); "
                        "write them before the --options")
    p.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="Ray cluster to run on: 'auto' (this node is part of a cluster) or a Ray Client "
                        "address; default: start a local Ray in this process")
    p.add_argument("--workers", type=int, metavar="N", help="training workers (default: scaling.num_workers)")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker (default: scaling.use_gpu)")
    p.add_argument("--storage", metavar="PATH", help="where runs are stored: a folder or s3://, gs:// URI "
                                                    "(default: run.storage_path)")
    p.add_argument("--name", help="run name (default: run.name or the experiment name); same name = resume")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.training.driver import TrainingFailed, run_training

    cfg = load_experiment(args.experiment, args.overrides)
    note = " ".join(args.overrides) or None
    logging.getLogger("audiostyle").info("training %s (%s)", args.experiment, note or "no overrides")
    try:
        result = run_training(cfg, address=args.address, workers=args.workers, use_gpu=args.gpu,
                              storage_path=args.storage, name=args.name, overrides_note=note)
    except TrainingFailed as exc:
        print(f"error: {exc}")
        return 1
    return 0 if result.error is None else 1
