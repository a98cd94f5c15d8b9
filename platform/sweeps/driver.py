"""`run_sweep`: an experiment's `sweep:` block run as Ray Tune trials, sampled by Optuna, pruned by ASHA.

This is the sweep's driver side: it runs in the calling process (the CLI's), which hosts the Tune
controller, OptunaSearch and ASHA. Each Tune trial is a small driver function (sweeps/trial.py) that
builds the trial's config from the Optuna sample and calls `run_training` (one Ray Train V2 run, never
a TorchTrainer handed to Tuner); `TuneReportCallback` forwards each checkpointed report (step, phase,
val/...) to Tune, adding `checkpoint_path`. `run_sweep` is four steps: plan_sweep (check everything),
open_sweep_study (resume, requeue, seed), run_trials (Ray + Tuner), write_report.

- Sampling: OptunaSearch over the define-by-run `SearchSpace.suggest`, seeded multivariate grouped TPE with
  constant liar (parallel trials do not get near-identical proposals), capped by a ConcurrencyLimiter.
- Storage: the study lives in an Optuna journal file in the sweep folder (safe with several writers,
  unlike SQLite); trial i trains as run `trial_{i:04d}` under `<storage>/<sweep name>/`. On an object
  store (s3://, gs://) the trials' runs and Tune's state go there, while the journal, which needs a
  file (sweep.storage), and the report (ledger, results.csv, best.yaml, plots) go to a folder named
  after the sweep beside that journal file.
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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray import tune

from audiostyle.platform.config.cross_checks import sweep_objectives
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.locations import absolute_location, is_url, join_location, open_storage
from audiostyle.platform.sweeps.report import SweepReport, write_report
from audiostyle.platform.sweeps.space import SearchSpace, asha_grace_period
from audiostyle.platform.sweeps.study import (
    DEFAULT_ATTR,
    JOURNAL_NAME,
    default_point,
    journal_storage,
    make_sampler,
    open_study,
    optuna_params,
    prepare_resume,
)
from audiostyle.platform.sweeps.trial import (
    RUN_NAME_KEY,
    TRIAL_NUMBER_KEY,
    TrialSampler,
    run_trial,
    trial_dirname,
)
from audiostyle.platform.training.private_apis import PlacementGroupReaper

logger = logging.getLogger(__name__)

LEDGER_NAME = "trials.jsonl"
# What the ledger keeps of a Tune result; the rest (timestamps, host names, the config) is noise.
_LEDGER_KEYS = ("step", "epoch", "phase", "checkpoint_path", "training_iteration")
# The driver only waits on its Train run: a whole CPU each would halve the trials a small machine runs
# at once, since the Train workers reserve their own CPUs.
TRIAL_DRIVER_CPUS = 0.01


@dataclass
class SweepResult:
    sweep_dir: Path
    study_name: str
    new_trials: int  # trials this call ran (Tune's results), one it cut off included; not the ones it planned
    report: SweepReport
    tune_results: Any = None  # ray.tune.ResultGrid of this invocation (None when nothing was left to run)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep invocation runs, checked before anything starts: objectives, space, budget, places."""

    cfg: ExperimentConfig
    space: SearchSpace
    metrics: list[str]
    modes: list[str]
    total_trials: int
    max_concurrent: int
    grace_period: int | None  # ASHA's first rung; None with several objectives (no ASHA then)
    name: str
    sweep_dir: Path  # local: the journal (by default), the ledger and the report
    journal: Path
    runs_location: str  # the trials' Train runs and Tune's state: the sweep folder, or an object-store URI


def sweep_name(cfg: ExperimentConfig) -> str:
    """Deterministic, so `--resume` finds the same folder and study."""
    return f"{cfg.run_name}_sweep"


def objectives(cfg: ExperimentConfig) -> tuple[list[str], list[str]]:
    """The sweep's metrics and modes as equal-length lists, checked."""
    sweep = cfg.sweep
    assert sweep is not None
    return sweep_objectives(sweep)  # lengths, modes and metric names were checked with the config


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


def plan_sweep(cfg: ExperimentConfig, resolved: dict[str, Any], *, num_trials: int | None,
               max_concurrent: int | None, storage_path: str | None) -> SweepPlan:
    """Check the sweep block and the space against the experiment, and settle where the sweep lives."""
    if cfg.sweep is None:
        raise ConfigError("the experiment has no `sweep:` block (see experiments/sweep_curriculum.yaml)",
                          path="sweep")
    metrics, modes = objectives(cfg)
    space = SearchSpace.from_config(resolved)
    total = num_trials if num_trials is not None else cfg.sweep.num_trials
    concurrent = max_concurrent or cfg.sweep.max_concurrent
    if total < 1 or concurrent < 1:
        raise ConfigError("num_trials and max_concurrent must be >= 1", path="sweep")
    grace = asha_grace_period(cfg, space) if len(metrics) == 1 else None
    name = sweep_name(cfg)
    storage = absolute_location(storage_path or cfg.run.storage_path)
    if is_url(storage):
        if cfg.sweep.storage is None:
            raise ConfigError(f"runs go to the object store {storage}, but the Optuna journal needs a file",
                              path="sweep.storage",
                              hint="set sweep.storage to a file on a folder every resume can reach, e.g. "
                                   "sweep.storage=/nfs/sweeps/curriculum.journal")
        journal = Path(absolute_location(cfg.sweep.storage))
        return SweepPlan(cfg, space, metrics, modes, total, concurrent, grace, name, journal.parent / name, journal,
                         join_location(storage, name))
    sweep_dir = Path(storage) / name
    journal = Path(absolute_location(cfg.sweep.storage)) if cfg.sweep.storage else sweep_dir / JOURNAL_NAME
    return SweepPlan(cfg, space, metrics, modes, total, concurrent, grace, name, sweep_dir, journal, str(sweep_dir))


def open_sweep_study(plan: SweepPlan, *, resume: bool, initial_points: list[dict[str, Any]] | None,
                     include_default: bool = False) -> int:
    """Open (or create) the study, requeue trials cut off mid-run, seed a new one with the experiment's own
    values (`include_default`, marked so reports can show it) and `initial_points`; returns how many trials
    are left to run."""
    existing = open_study(plan.journal, plan.name, plan.modes, create=False)
    if existing is not None and existing.trials and not resume:
        raise ConfigError(f"{plan.sweep_dir} already holds sweep {plan.name!r} with {len(existing.trials)} trials",
                          path="run.name", hint="pass --resume to continue it, or set run.name=... for a new sweep")
    if existing is None and resume:
        logger.info("no sweep to resume at %s: starting it", plan.sweep_dir)
    study = existing or open_study(plan.journal, plan.name, plan.modes, create=True)
    finished, requeued = prepare_resume(study)
    if requeued:
        logger.info("trials %s were cut off mid-run: requeued with their parameters", requeued)
    fresh = not study.trials  # starting points seed a new sweep only, never a resumed one
    if fresh and include_default:
        study.enqueue_trial(optuna_params(plan.space, default_point(plan.space)), user_attrs={DEFAULT_ATTR: True})
    for point in (initial_points or []) if fresh else []:
        study.enqueue_trial(optuna_params(plan.space, point))
    remaining = max(0, plan.total_trials - finished)
    logger.info("sweep %s: %d trials finished, %d to run (of %d), up to %d at once; study journal %s",
                plan.name, finished, remaining, plan.total_trials, plan.max_concurrent, plan.journal)
    return remaining


def make_scheduler(plan: SweepPlan) -> Any:
    """ASHA on `step` for one objective (OptunaSearch never prunes by itself), FIFO for several."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if plan.grace_period is None:
        return FIFOScheduler()
    return ASHAScheduler(time_attr="step", metric=plan.metrics[0], mode=plan.modes[0],
                         max_t=plan.cfg.train.max_steps, grace_period=plan.grace_period,
                         reduction_factor=plan.cfg.sweep.reduction_factor,
                         # a trial past the last rung ends by itself, not killed at max_t
                         stop_last_trials=False)


def count_folders(location: str, prefix: str) -> int:
    """Folders directly under `location` (a local folder or an object-store URI) whose name starts with prefix."""
    import pyarrow.fs

    fs, root = open_storage(location)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return sum(1 for e in entries if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith(prefix))


def make_tuner(plan: SweepPlan, trials: int, workers: int) -> Any:
    """A fresh Tuner for `trials` more trials; each invocation gets its own `tune_NN/` folder."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    single = len(plan.metrics) == 1
    searcher = OptunaSearch(TrialSampler(plan.space), metric=plan.metrics[0] if single else plan.metrics,
                            mode=plan.modes[0] if single else plan.modes,
                            sampler=make_sampler(plan.cfg.sweep.seed, plan.total_trials),
                            study_name=plan.name, storage=journal_storage(plan.journal))
    tune_run = f"tune_{count_folders(plan.runs_location, 'tune_'):02d}"
    trainable = tune.with_parameters(run_trial, space=plan.space, sweep_dir=plan.runs_location, workers=workers)
    return tune.Tuner(
        tune.with_resources(trainable, {"CPU": TRIAL_DRIVER_CPUS}),
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=plan.max_concurrent),
                                    scheduler=make_scheduler(plan), num_samples=trials,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=tune_run, storage_path=plan.runs_location, callbacks=[
            TrialLedger(plan.sweep_dir / LEDGER_NAME), PlacementGroupReaper()],
            failure_config=tune.FailureConfig(max_failures=1), verbose=1),
    )


def local_cpus(cfg: ExperimentConfig, max_concurrent: int, workers: int) -> int:
    """Logical CPUs of the embedded Ray for `max_concurrent` trials of `workers` workers each. Each running
    trial holds its driver's sliver of a CPU beside its workers' whole ones: counting only the workers, a
    trial whose workers take every core could never start them (the worker group times out)."""
    per_trial = workers * max(1, cfg.scaling.cpus_per_worker) + TRIAL_DRIVER_CPUS
    return math.ceil(max_concurrent * per_trial)


def run_trials(plan: SweepPlan, trials: int, *, address: str | None, workers_per_trial: int | None) -> Any:
    """Start or join Ray and run `trials` trials, up to max_concurrent at once; Tune's ResultGrid."""
    from audiostyle.platform.training.ray_runtime import check_shared_storage, ensure_ray

    cfg = plan.cfg
    workers = workers_per_trial or cfg.scaling.num_workers
    ensure_ray(address, num_cpus=local_cpus(cfg, plan.max_concurrent, workers))
    if address is not None:
        check_shared_storage(plan.runs_location)
    return make_tuner(plan, trials, workers).fit()


def run_sweep(cfg: ExperimentConfig, resolved: dict[str, Any], *, address: str | None = None,
              resume: bool = False, num_trials: int | None = None, workers_per_trial: int | None = None,
              max_concurrent: int | None = None, storage_path: str | None = None,
              initial_points: list[dict[str, Any]] | None = None, include_default: bool = False,
              plots: bool = True) -> SweepResult:
    """Run (or resume) the experiment's sweep; returns where it lives, what ran and the report.

    resolved: the resolved mapping `cfg` was validated from (`LoadedExperiment.resolved`); samples are
    applied to it by path. initial_points: samples ({path: value}) to try first, e.g. the defaults;
    used only by a new sweep. include_default: a new sweep's first trial runs the experiment's own values
    of the space's plain entries (study.default_point), so the report shows the default beside the rest.
    """
    plan = plan_sweep(cfg, resolved, num_trials=num_trials, max_concurrent=max_concurrent,
                      storage_path=storage_path)
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    remaining = open_sweep_study(plan, resume=resume, initial_points=initial_points, include_default=include_default)
    results = run_trials(plan, remaining, address=address, workers_per_trial=workers_per_trial) if remaining else None
    study = open_study(plan.journal, plan.name, plan.modes, create=True)
    report = write_report(study, plan.space, sweep_name=plan.name, sweep_dir=plan.sweep_dir, metrics=plan.metrics,
                          modes=plan.modes, max_steps=cfg.train.max_steps, plots=plots)
    return SweepResult(plan.sweep_dir, plan.name, len(results) if results is not None else 0, report, results)
