"""`run_training`: one experiment as a Ray Train V2 TorchTrainer run, on the embedded Ray or a cluster.

This is the driver side: it runs in the process that calls it (the CLI's, or a Tune trial's driver in a
sweep), starts or joins Ray, and builds and fits the TorchTrainer; the Train controller then starts the
worker ranks, which run `training/worker.py`. The driver knows nothing about the model beyond its config.

The run is named deterministically (`--name`, else `run.name`, else the experiment name) and stored at
`<storage_path>/<name>/`, so running the same command again finds Ray's checkpoint snapshot there and
resumes from the latest checkpoint. Checkpoints are ranked by `train.checkpoint_metric`; Ray keeps the
best `train.keep_top_k` and never deletes the latest, which is what resuming needs. Worker failures are
retried `run.max_failures` times from the latest checkpoint (FailureConfig).

A worker range `[min, max]` (scaling.num_workers or --workers MIN-MAX) makes the run elastic (Ray Train
V2's ScalingConfig(num_workers=(min, max))): a lost node fails the group, which restarts from the latest
checkpoint with the workers the cluster still has (>= min) instead of waiting for the lost ones; every
`resize_every_s` a healthy group checks whether it could have more and, if so, restarts from the latest
checkpoint with them. The restart counts only live nodes (live_nodes.py: a killed node stays "alive" in
Ray's view for ~15 s), and a start that the live nodes cannot hold gives up at once rather than after
Ray's worker-group start timeout (both hooked in by private_apis.py); a fixed worker count still waits
for its workers. How the workers adapt to the world size is worker_scaling.py's business.

Sweeps call `run_training` from a Tune trial's driver function with `callbacks=[TuneReportCallback()]`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audiostyle.platform.config.field_domains import worker_range
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.config.typed_convert import to_dict
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.locations import absolute_location, is_url, join_location, open_storage
from audiostyle.platform.training.curriculum import Curriculum
from audiostyle.platform.training.ray_runtime import (
    check_shared_storage,
    ensure_ray,
    worker_env_vars,
)
from audiostyle.platform.training.test_hooks import WorkerTestHooks

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
RAY_SNAPSHOT_GLOB = "checkpoint_manager_snapshot*.json"  # Ray Train's record of a run's checkpoints
RESIZE_EVERY_S = 60.0  # Ray's default: how often a healthy elastic group checks whether it can grow


class TrainingFailed(RuntimeError):
    """The run failed after `run.max_failures` restarts (Ray's TrainingFailedError, re-raised here so
    that callers such as the CLI need not import Ray to catch it)."""


@dataclass(frozen=True)
class RunPlan:
    """Where and how one run trains, settled from cfg.run and cfg.scaling before Ray starts."""

    name: str
    storage: str  # absolute local path or URI
    min_workers: int
    max_workers: int
    use_gpu: bool
    threads: int  # CPUs (and BLAS threads) per worker
    resize_every_s: float = RESIZE_EVERY_S

    @property
    def location(self) -> str:
        return join_location(self.storage, self.name)

    @property
    def elastic(self) -> bool:
        return self.min_workers < self.max_workers

    @property
    def workers_text(self) -> str:
        return f"{self.min_workers}-{self.max_workers}" if self.elastic else str(self.max_workers)


def settle_run(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with its run name decided (run.name, else the experiment's) and its storage absolute: what the
    workers train by and the checkpoints record."""
    run = dataclasses.replace(cfg.run, name=cfg.run_name, storage_path=absolute_location(cfg.run.storage_path))
    return dataclasses.replace(cfg, run=run)


def build_loop_config(cfg: ExperimentConfig, *, overrides_note: str | None = None,
                      test_hooks: WorkerTestHooks | None = None) -> dict[str, Any]:
    """What each worker receives: the settled config (`settle_run`) as plain data, where to log, test-only hooks."""
    storage, name = cfg.run.storage_path, cfg.run_name
    # TensorBoard writes ordinary files, so it lives beside the checkpoints only when storage is a folder
    tensorboard = None if is_url(storage) else join_location(join_location(storage, name), TENSORBOARD_DIR)
    loop = {"config": to_dict(cfg), "tensorboard_dir": tensorboard, "overrides": overrides_note}
    if test_hooks is not None:
        loop["test_hooks"] = test_hooks
    return loop


def preflight(cfg: ExperimentConfig) -> None:
    """Check the data and statistics from this process before starting workers: a DataError raised inside a
    worker would be retried `run.max_failures` times and buried in worker logs. (On a cluster the data may
    be visible to the workers only, so this runs for the embedded Ray.)"""
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.stats.normalization_stats import load_stats

    for split in ("train", "val"):
        make_loader(cfg, split, seed=cfg.seed)  # reads each instrument's manifest, iterates nothing
    load_stats(cfg)


def plan_run(cfg: ExperimentConfig, *, resize_every_s: float | None = None) -> RunPlan:
    """The run's name, storage and scaling, read off cfg.run and cfg.scaling (the CLI's --workers, --gpu,
    --storage and --name are overrides of those fields); a bad worker count or phase boundary fails here,
    once, not in every worker and every retry."""
    low, high = worker_range(cfg.scaling.num_workers, "scaling.num_workers")
    if resize_every_s is not None and resize_every_s <= 0:
        raise ConfigError(f"must be > 0 seconds, got {resize_every_s}", path="--resize-every")
    Curriculum.from_config(cfg)
    return RunPlan(name=cfg.run_name, storage=absolute_location(cfg.run.storage_path), min_workers=low,
                   max_workers=high, use_gpu=cfg.scaling.use_gpu, threads=max(1, cfg.scaling.cpus_per_worker),
                   resize_every_s=resize_every_s or RESIZE_EVERY_S)


def start_ray(cfg: ExperimentConfig, plan: RunPlan, address: str | None) -> None:
    """Check the data locally (embedded Ray), start or join Ray, then check what needs the cluster:
    shared storage and enough GPUs."""
    if address is None:
        preflight(cfg)
    ensure_ray(address, num_cpus=plan.max_workers * plan.threads, num_gpus=None, threads=plan.threads)
    if address is not None:
        check_shared_storage(plan.storage)
    if plan.use_gpu:
        import ray

        available = ray.cluster_resources().get("GPU", 0)
        if available < plan.min_workers:
            raise ConfigError(f"{plan.min_workers} GPU worker(s) requested but the Ray cluster has {available:g} GPUs",
                              path="scaling.use_gpu", hint="drop --gpu, lower --workers, or add GPU nodes")


def make_trainer(cfg: ExperimentConfig, plan: RunPlan, loop_config: dict[str, Any], callbacks: Sequence[Any]) -> Any:
    """The TorchTrainer of the run: scaling, storage, checkpoint ranking and retries."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from audiostyle.platform.training.worker import train_loop_per_worker

    gpu = plan.use_gpu
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        # gloo on CPU (the only backend there), NCCL between GPUs
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=(plan.min_workers, plan.max_workers) if plan.elastic else plan.max_workers, use_gpu=gpu,
            resources_per_worker={"CPU": plan.threads, **({"GPU": 1} if gpu else {})},
            elastic_resize_monitor_interval_s=plan.resize_every_s),
        run_config=RunConfig(
            name=plan.name,
            storage_path=plan.storage,
            checkpoint_config=CheckpointConfig(
                # Ray keeps the best `num_to_keep` by the score and never deletes the latest checkpoint
                # (checkpoint_manager._save_state_and_delete_old_checkpoints): top k plus the latest.
                num_to_keep=cfg.train.keep_top_k,
                checkpoint_score_attribute=cfg.train.checkpoint_metric,
                checkpoint_score_order=cfg.train.checkpoint_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=list(callbacks) or None,
            worker_runtime_env={"env_vars": worker_env_vars(plan.threads)},
        ),
    )


def run_training(cfg: ExperimentConfig, *, address: str | None = None, callbacks: Sequence[Any] = (),
                 overrides_note: str | None = None, test_hooks: WorkerTestHooks | None = None,
                 resize_every_s: float | None = None) -> Any:
    """Train `cfg` with Ray Train V2 and return the `ray.train.Result`.

    Where and how it runs is cfg's: run.name and run.storage_path, scaling.num_workers (N or [min, max]),
    scaling.use_gpu (a program holding a config sets them with loader.with_settings). address: None starts
    a fresh embedded local Ray (unless one is already initialized in this process); "auto", "HOST:PORT" or
    "ray://HOST:PORT" connects to a cluster. callbacks: Ray Train UserCallbacks (a sweep passes
    TuneReportCallback). resize_every_s: elastic runs, how often a healthy group checks for more workers
    (default 60 s).
    """
    cfg = settle_run(cfg)
    plan = plan_run(cfg, resize_every_s=resize_every_s)
    start_ray(cfg, plan, address)
    loop_config = build_loop_config(cfg, overrides_note=overrides_note, test_hooks=test_hooks)
    trainer = make_trainer(cfg, plan, loop_config, callbacks)
    resumed = has_snapshot(plan.location)
    logger.info("%s run %r: %s %s worker(s)%s, checkpoints under %s", "resuming" if resumed else "starting",
                plan.name, plan.workers_text, "GPU" if plan.use_gpu else "CPU",
                " (elastic: the global batch is that of the maximum)" if plan.elastic else "", plan.location)
    from ray.train import TrainingFailedError

    try:
        result = trainer.fit()
    except TrainingFailedError as exc:
        raise TrainingFailed(f"training failed after {cfg.run.max_failures} restart(s): {exc}") from exc
    print(summary(result, plan.storage, plan.name, loop_config["tensorboard_dir"], cfg.train.checkpoint_metric,
                  cfg.train.checkpoint_mode), flush=True)
    return result


def has_snapshot(location: str) -> bool:
    """Whether Ray Train left its checkpoint record in a run folder (local or object store): a resume."""
    import fnmatch

    import pyarrow.fs

    fs, root = open_storage(location)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return any(fnmatch.fnmatch(e.base_name, RAY_SNAPSHOT_GLOB) for e in entries)


def summary(result: Any, storage: str, name: str, tensorboard_dir: str | None, metric: str, mode: str) -> str:
    """Where things are, for the person who ran the command."""
    lines = [f"run {name!r} finished: {join_location(storage, name)}"]
    metrics = result.metrics or {}
    if metrics:
        lines.append(f"  last report: step {metrics.get('step')} ({metrics.get('phase')}), "
                     + ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())
                                 if k.startswith("val/") and isinstance(v, float)))
    if result.checkpoint is not None:
        lines.append(f"  latest checkpoint: {result.checkpoint.path}")
    try:
        best = result.get_best_checkpoint(metric, mode)
    except (RuntimeError, ValueError, KeyError):
        best = None
    if best is not None:
        lines.append(f"  best checkpoint by {metric} ({mode}): {best.path}")
    if tensorboard_dir:
        lines.append(f"  TensorBoard: tensorboard --logdir {tensorboard_dir}")
    lines.append("  re-run the same command to resume; pass --name to start a separate run")
    return "\n".join(lines)

