"""The sweep's Optuna study: its journal file, its sampler, resuming it, and seeding it with starting points.

Runs in the sweep's driver process (the CLI's), where OptunaSearch samples for Tune. The study lives in
an Optuna journal file (safe with several writers, unlike SQLite), which is the sweep's one source of
truth: a resumed sweep re-opens it, so the sampler sees every finished trial.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.modes import optuna_direction
from audiostyle.platform.sweeps.space import SearchSpace
from audiostyle.platform.training.private_apis import mark_trial_interrupted

logger = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
DEFAULT_ATTR = "default"  # user attribute of the trial that runs the experiment's own values


def journal_storage(journal: Path) -> Any:
    """Optuna storage on the journal file (each caller its own object; the file is what is shared)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


def open_study(journal: Path, study_name: str, modes: list[str], *, create: bool) -> Any:
    """The sweep's Optuna study in its journal file (None when absent and `create` is False)."""
    import optuna

    storage = journal_storage(journal)
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
        mark_trial_interrupted(study, trial)
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"run_name": trial.user_attrs.get("run_name")})
        requeued.append(trial.number)
    finished = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                      TrialState.FAIL))
                   if not t.user_attrs.get("interrupted"))
    return finished, requeued


def optuna_params(space: SearchSpace, sample: dict[str, Any]) -> dict[str, Any]:
    """A {path: config value} point as the parameters Optuna records for it (to enqueue it)."""
    by_path = {d.path: d for d in space.independent}
    for path in sample:
        if path not in by_path:
            raise ConfigError(f"{path!r} cannot be given as a starting point: only plain entries of the space "
                              f"can ({', '.join(by_path)}); curriculum boundaries are sampled by position",
                              path="sweep.space")
    return {by_path[p].param_name: by_path[p].display_value(v) for p, v in sample.items()}


def default_point(space: SearchSpace) -> dict[str, Any]:
    """The experiment's own values of the plain entries of the space, as a starting point (`--include-default`).

    A `*` entry counts when every field it matches holds one value; entries whose `when:` does not hold,
    whose value lies outside the searched range or choices, or that differ between fields are left to the
    sampler (logged), as are curriculum boundaries (they are sampled by position)."""
    from audiostyle.platform.config.dotted_paths import expand_path, get_path
    from audiostyle.platform.sweeps.space import condition_holds

    point: dict[str, Any] = {}
    for entry in space.independent:
        if not condition_holds(space.resolved, entry.when):
            continue
        paths = expand_path(space.resolved, entry.path) if "*" in entry.path.split(".") else [entry.path]
        values = [get_path(space.resolved, p) for p in paths]
        value = values[0] if values and all(v == values[0] for v in values) else None
        inside = value in entry.choices if entry.kind == "choice" else (
            isinstance(value, (int, float)) and entry.low <= value <= entry.high)
        if value is None or not inside:
            logger.info("the default of %s (%s) is not a point of its range: the sampler draws it", entry.path, values)
            continue
        point[entry.path] = value
    return point


def make_sampler(seed: int, total_trials: int) -> Any:
    """Seeded multivariate grouped TPE with constant liar, so parallel trials get distinct proposals."""
    from optuna.samplers import TPESampler

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multivariate/group TPE are flagged experimental
        # The default 10 random start-up trials would make a sweep of 8 or fewer pure random search.
        return TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed,
                          n_startup_trials=max(2, min(10, total_trials // 3)))
