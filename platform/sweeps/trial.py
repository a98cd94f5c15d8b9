"""One sweep trial on each side of the Tune boundary: what the sampler hands Tune, and what the trial runs.

- `TrialSampler` runs in the sweep's driver process, inside OptunaSearch: it draws a sample and tags it
  with the Optuna trial number and the trial's run name (the two keys below).
- `run_trial` is the Tune trainable: it runs in each trial's own actor (a Tune trial driver), builds the
  trial's config from the sample and trains it as one Ray Train run, whose controller and workers are
  further processes (training/driver.py, training/worker.py).
"""

from __future__ import annotations

from typing import Any

from audiostyle.platform.config.dotted_paths import set_path
from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.sweeps.space import SearchSpace

TRIAL_NUMBER_KEY = "_optuna_trial"
RUN_NAME_KEY = "_run_name"


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


def trial_dirname(trial: Any) -> str:
    """Tune's folder for a trial: its run name, then Tune's id (readable beside the Train run folders)."""
    return f"{trial.config.get(RUN_NAME_KEY, 'trial')}_{trial.trial_id}"


def run_trial(config: dict[str, Any], *, space: SearchSpace, sweep_dir: str, workers: int | None) -> None:
    """One Tune trial: this sample's config trained as one Ray Train run named after the Optuna trial."""
    from ray.tune.integration.ray_train import TuneReportCallback

    from audiostyle.platform.training.driver import run_training

    sample = {p: config[p] for p in space.paths if p in config}
    resolved = space.apply_dict(sample)
    set_path(resolved, "run.name", config[RUN_NAME_KEY], create=True)  # absent when the YAML leaves it out
    set_path(resolved, "run.storage_path", sweep_dir, create=True)
    if workers is not None:
        set_path(resolved, "scaling.num_workers", workers, create=True)
    run_training(config_from_dict(resolved), callbacks=[TuneReportCallback()])
