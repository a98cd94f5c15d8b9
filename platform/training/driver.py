"""`run_training`: one experiment as a Ray Train V2 TorchTrainer run, on the embedded Ray or a cluster.

The run is named deterministically (`--name`, else `run.name`, else the experiment name) and stored at
`<storage_path>/<name>/`, so running the same command again finds Ray's checkpoint snapshot there and
resumes from the latest checkpoint. Checkpoints are ranked by `train.checkpoint_metric`; Ray keeps the
best `train.keep_top_k` and never deletes the latest, which is what resuming needs. Worker failures are
retried `run.max_failures` times from the latest checkpoint (FailureConfig).

Sweeps call `run_training` from a Tune driver function with `callbacks=[TuneReportCallback()]`; this
module knows nothing about the model beyond its config, and the workers run `train_loop_per_worker`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiostyle.platform.config.schema import ExperimentConfig, to_dict
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.locations import absolute_location, is_url, join_location
from audiostyle.platform.training.curriculum import Curriculum
from audiostyle.platform.training.ray_runtime import (
    check_shared_storage,
    ensure_ray,
    worker_env_vars,
)

logger = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"


def build_loop_config(cfg: ExperimentConfig, *, storage_path: str, name: str, overrides_note: str | None = None,
                      test_hooks: dict[str, Any] | None = None) -> dict[str, Any]:
    """What each worker receives: the resolved config as plain data, where to log, test-only hooks."""
    # TensorBoard writes ordinary files, so it lives beside the checkpoints only when storage is a folder
    tensorboard = None if is_url(storage_path) else join_location(join_location(storage_path, name), TENSORBOARD_DIR)
    config = to_dict(cfg)
    # the run's actual name and storage go into the config the checkpoints record
    config["run"].update(name=name, storage_path=storage_path)
    loop = {"config": config, "tensorboard_dir": tensorboard, "overrides": overrides_note}
    if test_hooks:
        loop["test_hooks"] = dict(test_hooks)
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


def run_training(cfg: ExperimentConfig, *, address: str | None = None, workers: int | None = None,
                 use_gpu: bool | None = None, storage_path: str | None = None, name: str | None = None,
                 callbacks: Sequence[Any] = (), overrides_note: str | None = None,
                 test_hooks: dict[str, Any] | None = None) -> Any:
    """Train `cfg` with Ray Train V2 and return the `ray.train.Result`.

    address: None starts an embedded local Ray (unless one is already initialized); "auto" or
    "ray://HOST:PORT" connects to a cluster. workers/use_gpu/storage_path/name override cfg.scaling and
    cfg.run. callbacks: Ray Train UserCallbacks (a sweep passes TuneReportCallback).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from audiostyle.platform.training.worker import train_loop_per_worker

    num_workers = workers if workers is not None else cfg.scaling.num_workers
    gpu = cfg.scaling.use_gpu if use_gpu is None else use_gpu
    if num_workers < 1:
        raise ConfigError(f"the number of workers must be >= 1, got {num_workers}", path="scaling.num_workers")
    Curriculum.from_config(cfg)  # a bad phase boundary fails here, not in every worker and every retry
    storage = absolute_location(storage_path or cfg.run.storage_path)
    run_name = name or cfg.run_name
    threads = max(1, cfg.scaling.cpus_per_worker)

    if address is None:
        preflight(cfg)
    ensure_ray(address, num_cpus=num_workers * threads, num_gpus=None, threads=threads)
    if address is not None:
        check_shared_storage(storage)
    if gpu:
        import ray

        available = ray.cluster_resources().get("GPU", 0)
        if available < num_workers:
            raise ConfigError(f"{num_workers} GPU worker(s) requested but the Ray cluster has {available:g} GPUs",
                              path="scaling.use_gpu", hint="drop --gpu, lower --workers, or add GPU nodes")

    loop_config = build_loop_config(cfg, storage_path=storage, name=run_name, overrides_note=overrides_note,
                                    test_hooks=test_hooks)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        # gloo on CPU (the only backend there), NCCL between GPUs
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=gpu,
                                     resources_per_worker={"CPU": threads, **({"GPU": 1} if gpu else {})}),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            checkpoint_config=CheckpointConfig(
                # Ray keeps the best `num_to_keep` by the score and never deletes the latest checkpoint
                # (checkpoint_manager._save_state_and_delete_old_checkpoints): top k plus the latest.
                num_to_keep=cfg.train.keep_top_k,
                checkpoint_score_attribute=cfg.train.checkpoint_metric,
                checkpoint_score_order=cfg.train.checkpoint_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            callbacks=list(callbacks) or None,
            worker_runtime_env={"env_vars": worker_env_vars(threads)},
        ),
    )
    where = join_location(storage, run_name)
    resumed = not is_url(storage) and any(Path(where).glob("checkpoint_manager_snapshot*.json"))
    logger.info("%s run %r: %d %s worker(s), checkpoints under %s", "resuming" if resumed else "starting",
                run_name, num_workers, "GPU" if gpu else "CPU", where)
    result = trainer.fit()
    print(summary(result, storage, run_name, loop_config["tensorboard_dir"], cfg.train.checkpoint_metric,
                  cfg.train.checkpoint_mode), flush=True)
    return result


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

