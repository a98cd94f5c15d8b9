"""Every use of a private Ray or Optuna API, each beside the upstream issue it works around.

Private APIs change without notice, so they are kept here, out of the training and sweep code: when an
upstream fix lands, its workaround is deleted in one place, and a Ray or Optuna upgrade that breaks one
breaks here, with the reason next to it.

- `quiet_ray_logs`: a worker-process setup hook muting two Ray Train V2 log sources, by their private
  logger names.
- `PlacementGroupReaper` / `release_orphaned_placement_groups`: frees the placement groups of Train runs
  whose Tune trial ASHA stopped, through Ray's private GCS accessor (ray-project/ray#54305).
- `mark_trial_interrupted`: sets a user attribute of a RUNNING Optuna trial from outside it, through
  the study's private storage (optuna/optuna#1986).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)

QUIET_HOOK = "audiostyle.platform.training.ray_workarounds.quiet_ray_logs"  # runtime_env setup-hook path


def quiet_ray_logs() -> None:
    """Worker-process setup hook: mute two Ray Train log sources that drown the progress line.

    The placement-group cleaner (added by ray-project/ray#58515) polls the State API, which needs the
    dashboard; without it (we start Ray with no dashboard) it warns every few seconds and can do
    nothing anyway. The report logger prints every metrics dict, which the progress line already
    summarizes (no upstream switch for it; drop this when Ray logs reports below INFO).
    """
    import ray.train.v2._internal.execution.context as train_context

    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)  # Ray names this logger by file path


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


def mark_trial_interrupted(study: Any, trial: Any) -> None:
    """Set user attribute `interrupted` on a RUNNING trial of `study` (a FrozenTrial from get_trials).

    Optuna sets attributes only through the live `Trial` object of the process running it, and never
    once a trial is finished (optuna/optuna#1986); a sweep resumed after a crash has neither, so the
    attribute goes through the study's private storage before the trial is told FAIL.
    """
    study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
