"""`audiostyle submit` (and `train --submit`): run an experiment as a Ray Job on a cluster's Jobs API."""

from __future__ import annotations

import argparse
import json

from audiostyle.platform.cli.argtypes import worker_count

DESCRIPTION = """\
Submit an experiment to a Ray cluster as a Ray Job and print its id. The job trains on the cluster
exactly as `audiostyle train` would there, and keeps running when this terminal closes.

The experiment is resolved and validated here (defaults, overrides, references); the resolved YAML and,
from a source checkout, the audiostyle package travel in the job's runtime environment. The cluster's
nodes need the dependencies (torch, ray[default] on the head for the dashboard) and must see the data
and the storage: use an object store (--storage s3://bucket/runs) or a folder mounted on every node.
Follow the job with `audiostyle jobs logs JOB_ID --follow`, stop it with `audiostyle jobs stop JOB_ID`.
"""

EPILOG = """\
examples:
  audiostyle submit experiments/piano_violin.yaml train.max_steps=5000 --address http://10.0.0.5:8265 \\
      --workers 4-8 --gpu --storage s3://bucket/runs
  audiostyle jobs list --address http://10.0.0.5:8265
  audiostyle jobs logs raysubmit_XXXX --follow --address http://10.0.0.5:8265
"""


def add_options(p: argparse.ArgumentParser) -> None:
    """Options `submit` shares with `train` (which submits with --submit)."""
    p.add_argument("--workers", type=worker_count, metavar="N|MIN-MAX",
                   help="training workers, or an elastic range: sets scaling.num_workers")
    p.add_argument("--gpu", action="store_true", default=None, help="one GPU per worker: sets scaling.use_gpu")
    p.add_argument("--storage", metavar="PATH", help="shared storage for the run: s3://, gs:// or a folder on every "
                                                    "node: sets run.storage_path")
    p.add_argument("--name", help="run name (default: the experiment name); same name = resume: sets run.name")
    p.add_argument("--resize-every", type=float, metavar="SECONDS",
                   help="elastic runs: how often a healthy group checks whether more workers fit (default 60)")


# Each run option is an override of one config field, so one typed config carries it to the workers,
# the checkpoints and a job's resolved YAML.
RUN_OPTION_FIELDS = {"workers": "scaling.num_workers", "gpu": "scaling.use_gpu", "storage": "run.storage_path",
                     "name": "run.name"}


def run_option_overrides(args: argparse.Namespace) -> list[str]:
    """The overrides (`a.b=value`, values as JSON, which the loader reads as YAML) of the run options given."""
    out = []
    for option, dotted in RUN_OPTION_FIELDS.items():
        value = getattr(args, option, None)
        if value is not None:
            out.append(f"{dotted}={json.dumps(list(value) if isinstance(value, tuple) else value)}")
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("submit", help="run an experiment as a Ray Job on a cluster (survives this terminal)",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="experiment file (see experiments/)")
    p.add_argument("overrides", nargs="*", metavar="a.b=c", help="config overrides as dotted paths")
    p.add_argument("--address", required=True, metavar="http://HEAD:8265", help="the cluster's dashboard (Jobs API)")
    add_options(p)
    p.set_defaults(func=submit_from_args)


def submit_from_args(args: argparse.Namespace) -> int:
    from audiostyle.platform.checking.checked_load import load_checked_experiment
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.training.jobs import submit_training

    if not args.address:
        raise ConfigError("submitting needs the cluster's dashboard address", path="--address",
                          hint="--address http://HEAD:8265")
    overrides = [*args.overrides, *run_option_overrides(args)]
    cfg = load_checked_experiment(args.experiment, overrides)
    job_id, run = submit_training(cfg, args.address, resize_every_s=args.resize_every,
                                  note=" ".join(overrides) or None)
    print(f"submitted job {job_id} (run {run!r}) to {args.address}")
    print(f"  follow it:  audiostyle jobs logs {job_id} --follow --address {args.address}")
    print(f"  stop it:    audiostyle jobs stop {job_id} --address {args.address}")
    print(job_id)
    return 0
