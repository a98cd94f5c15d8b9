"""`run_sweep`: an experiment's `sweep:` block run as Ray Tune trials, sampled by Optuna, pruned by ASHA.

Each Tune trial is a small driver function that builds the trial's config from the Optuna sample and calls
`run_training` (one Ray Train V2 run, never a TorchTrainer handed to Tuner); `TuneReportCallback` forwards
each checkpointed report (step, phase, val/...) to Tune, adding `checkpoint_path`.

- Sampling: OptunaSearch over the define-by-run `SearchSpace.suggest`, seeded multivariate grouped TPE with
  constant liar (parallel trials do not get near-identical proposals), capped by a ConcurrencyLimiter.
- Storage: the study lives in an Optuna journal file in the sweep folder (safe with several writers,
  unlike SQLite); trial i trains as run `trial_{i:04d}` under `<storage>/<sweep name>/`.
- Early stopping: one objective -> ASHA on `step`, first rung no earlier than the latest end of the first
  (reconstruction) phase, so the jump in the losses at a phase switch is never pruned as a regression;
  several objectives -> FIFO (OptunaSearch ignores intermediate results then) and a Pareto front.
- Resume (`resume=True`): OptunaSearch re-opens the same journal study (`load_if_exists`), so the sampler
  sees every finished trial; only `num_trials` minus the finished ones run. A trial cut off mid-run is
  marked failed and re-queued with its parameters and run name, so its Train run resumes from its last
  checkpoint. Each invocation is a fresh Tuner (`tune_NN/`); Tuner.restore would pin the old trial count
  and its pickled searcher (ray-project/ray#30861), while the journal is the sweep's one source of truth.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from audiostyle.platform.config.dotted_paths import set_path
from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.modes import check_mode, optuna_direction
from audiostyle.platform.sweeps.report import SweepReport, write_report
from audiostyle.platform.sweeps.space import SearchSpace

logger = logging.getLogger(__name__)

TRIAL_NUMBER_KEY = "_optuna_trial"
RUN_NAME_KEY = "_run_name"
JOURNAL_NAME = "optuna.journal"
LEDGER_NAME = "trials.jsonl"
# What the ledger keeps of a Tune result; the rest (timestamps, host names, the config) is noise.
_LEDGER_KEYS = ("step", "epoch", "phase", "checkpoint_path", "training_iteration")


@dataclass
class SweepResult:
    sweep_dir: Path
    study_name: str
    new_trials: int
    report: SweepReport
    tune_results: Any = None  # ray.tune.ResultGrid of this invocation (None when nothing was left to run)


def sweep_name(cfg: ExperimentConfig) -> str:
    """Deterministic, so `--resume` finds the same folder and study."""
    return f"{cfg.run_name}_sweep"


def objectives(cfg: ExperimentConfig) -> tuple[list[str], list[str]]:
    """The sweep's metrics and modes as equal-length lists, checked."""
    sweep = cfg.sweep
    assert sweep is not None
    metrics = sweep.metric if isinstance(sweep.metric, list) else [sweep.metric]
    modes = sweep.mode if isinstance(sweep.mode, list) else [sweep.mode] * len(metrics)
    if len(modes) != len(metrics):
        raise ConfigError(f"{len(metrics)} metrics but {len(modes)} modes: give one mode per metric",
                          path="sweep.mode")
    for i, (metric, mode) in enumerate(zip(metrics, modes)):
        check_mode(mode, path=f"sweep.mode.{i}")
        if not metric.startswith(("val/", "train/")):
            raise ConfigError(f"metric {metric!r} is not reported by training: use a validation metric "
                              "such as val/recon, val/style_acc or val/content_leak", path="sweep.metric")
    return metrics, modes


def asha_grace_period(cfg: ExperimentConfig, space: SearchSpace) -> int:
    """ASHA's first rung in steps: by default the latest end of the first phase over the whole space."""
    assert cfg.sweep is not None
    floor = space.latest_first_phase_end()
    grace = cfg.sweep.grace_period
    if grace is None:
        return max(1, floor)
    first = cfg.curriculum.phases[0].name
    if grace < floor:
        raise ConfigError(
            f"grace_period {grace} falls before the end of the first curriculum phase ({first!r}, which ends "
            f"as late as step {floor} in this search space): ASHA would compare trials still in that phase "
            "with trials already in the next, and prune the loss jump at the phase switch as a regression",
            path="sweep.grace_period", hint=f"set it to {floor} or more, or leave it out (default: {floor})")
    if grace > cfg.train.max_steps:
        raise ConfigError(f"grace_period {grace} is beyond train.max_steps={cfg.train.max_steps}: ASHA "
                          "would never stop a trial", path="sweep.grace_period")
    return grace


def open_study(journal: Path, study_name: str, modes: list[str], *, create: bool) -> Any:
    """The sweep's Optuna study in its journal file (None when absent and `create` is False)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal.parent.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    if not create and study_name not in optuna.get_all_study_names(storage):
        return None
    directions = [optuna_direction(m) for m in modes]
    study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        raise ConfigError(f"the journal {journal} holds a study with directions "
                          f"{[d.name.lower() for d in study.directions]}, not {directions}: the metrics or modes "
                          "changed since the sweep started", path="sweep.mode",
                          hint="resume with the original sweep block, or start a new sweep under another run.name")
    return study


def prepare_resume(study: Any) -> tuple[int, list[int]]:
    """Requeue trials cut off mid-run; returns (finished trials, numbers of the requeued ones)."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # Marked before the state change: a finished trial's attributes can no longer be set.
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"run_name": trial.user_attrs.get("run_name")})
        requeued.append(trial.number)
    finished = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                      TrialState.FAIL))
                   if not t.user_attrs.get("interrupted"))
    return finished, requeued


def optuna_params(space: SearchSpace, sample: dict[str, Any]) -> dict[str, Any]:
    """A {path: config value} point as the parameters Optuna records for it (to enqueue it)."""
    by_path = {d.path: d for d in space.domains}
    for path in sample:
        if path not in by_path:
            raise ConfigError(f"{path!r} cannot be given as a starting point: only plain entries of the space "
                              f"can ({', '.join(by_path)}); curriculum boundaries are sampled by position",
                              path="sweep.space")
    return {by_path[p].param_name: by_path[p].display_value(v) for p, v in sample.items()}


class TrialSampler:
    """The define-by-run function given to OptunaSearch (a class, so Tune can pickle the searcher)."""

    def __init__(self, space: SearchSpace):
        self.space = space

    def __call__(self, trial: Any) -> dict[str, Any]:
        sample = self.space.suggest(trial)
        # A requeued trial keeps its run name, so its Train run resumes from its own checkpoints.
        run_name = trial.user_attrs.get("run_name") or f"trial_{trial.number:04d}"
        trial.set_user_attr("sample", sample)
        trial.set_user_attr("run_name", run_name)
        return {**sample, TRIAL_NUMBER_KEY: trial.number, RUN_NAME_KEY: run_name}


class TrialLedger(tune.Callback):
    """Appends each finished trial's last metrics (step reached, checkpoint_path) to trials.jsonl."""

    def __init__(self, path: Path):
        self.path = path

    def _write(self, trial: Any, status: str) -> None:
        last = trial.last_result or {}
        keep = {k: v for k, v in last.items() if k in _LEDGER_KEYS or k.startswith(("val/", "train/"))}
        entry = {"optuna_trial": trial.config.get(TRIAL_NUMBER_KEY), "run_name": trial.config.get(RUN_NAME_KEY),
                 "tune_trial_id": trial.trial_id, "status": status, "metrics": keep}
        with open(self.path, "a") as fh:  # one short line per trial: an append is atomic enough here
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, "TERMINATED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write(trial, "ERROR")


class PlacementGroupReaper(tune.Callback):
    """Frees the Train placement group of a trial that Tune stopped (ray-project/ray#54305).

    ASHA stopping a trial kills its driver, and with it the Train controller, before the controller can
    remove its workers' placement group; Ray's own cleaner for that case asks the State API, which needs
    the dashboard (and one Ray instance per machine). Without this the CPUs stay reserved and the next
    trial's workers wait forever. Only groups of this job whose creating actor is dead are removed.
    """

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self._last = 0.0

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            release_orphaned_placement_groups()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        release_orphaned_placement_groups()


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; returns how many."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    live = (gcs_pb2.PlacementGroupTableData.PENDING, gcs_pb2.PlacementGroupTableData.CREATED,
            gcs_pb2.PlacementGroupTableData.RESCHEDULING)
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # Groups created by the driver itself (Tune's trial groups) have no creator actor: never touched.
        if (info.state in live and info.creator_actor_dead and not info.is_detached
                and not ray.ActorID(info.creator_actor_id).is_nil() and info.creator_job_id.hex() == job):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(info.placement_group_id)))
            removed += 1
    if removed:
        logger.info("freed %d placement group(s) left by stopped trials", removed)
    return removed


def trial_dirname(trial: Any) -> str:
    return f"{trial.config.get(RUN_NAME_KEY, 'trial')}_{trial.trial_id}"


def run_trial(config: dict[str, Any], *, space: SearchSpace, sweep_dir: str, workers: int | None) -> None:
    """One Tune trial: this sample's config trained as one Ray Train run named after the Optuna trial."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from audiostyle.platform.training.driver import run_training

    sample = {p: config[p] for p in space.paths if p in config}
    data = space.apply_dict(sample)
    set_path(data, "run.name", config[RUN_NAME_KEY], create=True)  # absent when the YAML leaves it out
    set_path(data, "run.storage_path", sweep_dir, create=True)
    cfg = config_from_dict(data)
    run_training(cfg, workers=workers, storage_path=sweep_dir, name=config[RUN_NAME_KEY],
                 callbacks=[TuneReportCallback()])


def run_sweep(cfg: ExperimentConfig, raw_config: dict[str, Any], *, address: str | None = None,
              resume: bool = False, num_trials: int | None = None, workers_per_trial: int | None = None,
              max_concurrent: int | None = None, storage_path: str | None = None,
              initial_points: list[dict[str, Any]] | None = None, plots: bool = True) -> SweepResult:
    """Run (or resume) the experiment's sweep; returns where it lives, what ran and the report.

    raw_config: the resolved mapping `cfg` was validated from (samples are applied to it by path).
    initial_points: samples ({path: value}) to try first, e.g. the defaults; used only by a new sweep.
    """
    from optuna.samplers import TPESampler
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from audiostyle.platform.core.locations import absolute_location, is_url
    from audiostyle.platform.training.ray_runtime import check_shared_storage, ensure_ray

    if cfg.sweep is None:
        raise ConfigError("the experiment has no `sweep:` block (see experiments/sweep_curriculum.yaml)",
                          path="sweep")
    metrics, modes = objectives(cfg)
    space = SearchSpace.from_config(raw_config)
    total = num_trials if num_trials is not None else cfg.sweep.num_trials
    concurrent = max_concurrent or cfg.sweep.max_concurrent
    if total < 1 or concurrent < 1:
        raise ConfigError("num_trials and max_concurrent must be >= 1", path="sweep")
    grace = asha_grace_period(cfg, space) if len(metrics) == 1 else None

    name = sweep_name(cfg)
    sweep_dir = Path(absolute_location(storage_path or cfg.run.storage_path)) / name
    if is_url(storage_path or cfg.run.storage_path) and cfg.sweep.storage is None:
        raise ConfigError("the Optuna journal needs a file path: set sweep.storage to a shared folder's file",
                          path="sweep.storage")
    journal = Path(cfg.sweep.storage) if cfg.sweep.storage else sweep_dir / JOURNAL_NAME
    existing = open_study(journal, name, modes, create=False)
    if existing is not None and existing.trials and not resume:
        raise ConfigError(f"{sweep_dir} already holds sweep {name!r} with {len(existing.trials)} trials",
                          path="run.name", hint="pass --resume to continue it, or set run.name=... for a new sweep")
    if existing is None and resume:
        logger.info("no sweep to resume at %s: starting it", sweep_dir)
    study = existing or open_study(journal, name, modes, create=True)
    finished, requeued = prepare_resume(study)
    if requeued:
        logger.info("trials %s were cut off mid-run: requeued with their parameters", requeued)
    if not study.trials and initial_points:
        for point in initial_points:
            study.enqueue_trial(optuna_params(space, point))
    remaining = max(0, total - finished)
    logger.info("sweep %s: %d trials finished, %d to run (of %d), up to %d at once; study journal %s",
                name, finished, remaining, total, concurrent, journal)

    results = None
    if remaining:
        workers = workers_per_trial or cfg.scaling.num_workers
        ensure_ray(address, num_cpus=concurrent * workers * max(1, cfg.scaling.cpus_per_worker))
        if address is not None:
            check_shared_storage(str(sweep_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # multivariate/group TPE are flagged experimental
            # The default 10 random start-up trials would make a sweep of 8 or fewer pure random search.
            sampler = TPESampler(multivariate=True, group=True, constant_liar=True, seed=cfg.sweep.seed,
                                 n_startup_trials=max(2, min(10, total // 3)))
        searcher = OptunaSearch(TrialSampler(space), metric=metrics if len(metrics) > 1 else metrics[0],
                                mode=modes if len(modes) > 1 else modes[0], sampler=sampler,
                                study_name=name, storage=study._storage)
        if grace is not None:
            scheduler: Any = ASHAScheduler(time_attr="step", metric=metrics[0], mode=modes[0],
                                           max_t=cfg.train.max_steps, grace_period=grace,
                                           reduction_factor=cfg.sweep.reduction_factor,
                                           # a trial past the last rung ends by itself, not killed at max_t
                                           stop_last_trials=False)
        else:
            scheduler = FIFOScheduler()
        segment = f"tune_{len(list(sweep_dir.glob('tune_*'))):02d}"
        trainable = tune.with_parameters(run_trial, space=space, sweep_dir=str(sweep_dir), workers=workers)
        # The driver only waits on its Train run: a whole CPU each would halve the trials a small machine
        # runs at once, since the Train workers reserve their own CPUs.
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"CPU": 0.01}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                                        scheduler=scheduler, num_samples=remaining,
                                        trial_dirname_creator=trial_dirname),
            run_config=tune.RunConfig(name=segment, storage_path=str(sweep_dir), callbacks=[
                TrialLedger(sweep_dir / LEDGER_NAME), PlacementGroupReaper()],
                failure_config=tune.FailureConfig(max_failures=1), verbose=1),
        )
        results = tuner.fit()
    study = open_study(journal, name, modes, create=True)
    report = write_report(study, space, sweep_name=name, sweep_dir=sweep_dir, metrics=metrics, modes=modes,
                          max_steps=cfg.train.max_steps, plots=plots)
    return SweepResult(sweep_dir, name, remaining, report, results)
