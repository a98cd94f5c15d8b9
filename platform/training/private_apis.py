"""Every use of another library's private API (Ray's, Optuna's and PyTorch's), each beside the reason or the
upstream issue it works around; tests/test_private_apis.py fails on one anywhere else.

Private APIs change without notice, so they are kept here, out of the training and sweep code: when an
upstream fix lands, its workaround is deleted in one place, and a Ray or Optuna upgrade that breaks one
breaks here, with the reason next to it.

- `setup_worker_process` (the job's worker-process setup hook): `quiet_ray_logs` mutes two Ray Train V2
  log sources by their private logger names; `live_view_for_elastic_restarts` makes an elastic run that
  lost a node restart with the workers the live nodes hold, not the ones it had (ElasticScalingPolicy);
  `quick_give_up_for_elastic_starts` ends an elastic group's start as soon as the live nodes cannot
  hold it, instead of after the worker-group start timeout (WorkerGroup._create_placement_group).
- `keep_loopback`: stops ray.init from rewriting 127.0.0.1 / localhost into this machine's outward
  address (ray._private.services.resolve_ip_for_localhost); `find_auto_address` resolves `--address auto`
  as ray.init would (services.canonicalize_bootstrap_address, which has no public twin);
  `without_ray_init_records` drops one message of ray.init's logger by its private name.
- `PlacementGroupReaper` / `release_orphaned_placement_groups`: frees the placement groups of Train runs
  whose Tune trial ASHA stopped, through Ray's private GCS accessor (ray-project/ray#54305).
- `mark_trial_interrupted`: sets a user attribute of a RUNNING Optuna trial from outside it, through
  the study's private storage (optuna/optuna#1986).
- `cpu_has_native_bf16`: whether the CPU computes bf16 in hardware, through oneDNN's own check
  (torch.ops.mkldnn._is_mkldnn_bf16_supported; PyTorch has no public twin).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)

SETUP_HOOK = "audiostyle.platform.training.private_apis.setup_worker_process"  # runtime_env setup-hook path


def setup_worker_process() -> None:
    """Runs first in every worker process of our Ray jobs, the Train controller's included."""
    quiet_ray_logs()
    live_view_for_elastic_restarts()
    quick_give_up_for_elastic_starts()


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


def live_view_for_elastic_restarts() -> None:
    """Make Ray Train's elastic policy count only the workers that live nodes can hold.

    ElasticScalingPolicy sizes a group from the resources the AutoscalingCoordinator reserved to the run;
    the coordinator refreshes its view of the nodes every 20 s (TICK_INTERVAL_S), and even a fresh view
    (`recompute=True`, a ray.nodes() read) still holds a node whose processes were killed until the GCS's
    health checks give up on it (~15 s). Right after such a loss the controller therefore asks for the old
    worker count. Here the policy asks for a fresh view and drops the reservations on nodes that
    live_nodes.py finds dead (node table, then a TCP probe of each raylet), so the restart asks for what
    the cluster has (Ray 2.60; ray-project/ray#66002 reworks this path). The policy throttles its queries
    to one a second, so this adds one GCS read and one probe per node per second while recovering, and
    one of each per resize check while training.
    """
    import ray
    from ray.train.v2._internal.execution.scaling_policy import elastic
    from ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client import (
        AUTOSCALING_REQUESTS_GET_TIMEOUT_S,
    )
    from ray.train.v2._internal.util import time_monotonic

    from audiostyle.platform.training.live_nodes import live_node_ids, only_live

    policy = elastic.ElasticScalingPolicy
    if getattr(policy, "_audiostyle_live_view", False):
        return

    def _get_reserved_resources(self: Any) -> Any:
        if time_monotonic() - self._latest_reserved_resources_query_time < self.GET_RESERVED_RESOURCES_INTERVAL_S:
            return self._latest_reserved_resources
        reserved = None
        try:
            reserved = ray.get(self._autoscaling_coordinator.get_reserved_resources.remote(
                self._requester_id, recompute=True), timeout=AUTOSCALING_REQUESTS_GET_TIMEOUT_S)
            reserved = only_live(reserved, live_node_ids())
        except Exception:  # as upstream: a failed query means "no decision now", never a failed run
            reserved = None
            logger.warning("could not get the resources reserved to %s; not resizing now", self._requester_id,
                           exc_info=True)
        finally:
            self._latest_reserved_resources_query_time = time_monotonic()
            self._latest_reserved_resources = reserved
        return reserved

    policy._get_reserved_resources = _get_reserved_resources
    policy._audiostyle_live_view = True


def quick_give_up_for_elastic_starts() -> None:
    """End the start of an elastic worker group as soon as the live nodes cannot hold it.

    WorkerGroup._start_impl waits for the group's placement group up to the worker-group start timeout
    (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s) and only then raises WorkerGroupStartupTimeoutError, on
    which the controller decides the size again. A size decided from a view that still held a lost node
    (or a node lost while the group starts) can never be placed, so an elastic group's placement group
    is waited for in one-second slices, and the start gives up once live_nodes.py says the live nodes
    cannot hold it; the controller then retries at the size they do hold (the retry does not count
    against `run.max_failures`: Ray charges start failures to its unlimited controller-failure budget). A
    start that could be placed (resources busy elsewhere) waits the whole timeout as before, and so does
    every start of a fixed-size group, which waits for its workers by design.
    """
    from ray.train.v2._internal.execution.worker_group import worker_group
    from ray.train.v2._internal.execution.worker_group.placement_group_handle import (
        DefaultPlacementGroupHandle,
        PlacementGroupHandle,
    )

    from audiostyle.platform.training.live_nodes import live_capacity, wait_unless_unplaceable

    group = worker_group.WorkerGroup
    if getattr(group, "_audiostyle_quick_give_up", False):
        return

    class GiveUpWhenUnplaceable(PlacementGroupHandle):
        """An elastic group's placement group, whose wait ends early once it cannot be placed."""

        def __init__(self, inner: Any, workers: int, per_worker: dict[str, float]):
            self._inner, self._workers, self._per_worker = inner, workers, per_worker

        @property
        def placement_group(self) -> Any:
            return self._inner.placement_group

        def ready(self) -> Any:
            return self._inner.ready()

        def wait(self, timeout_seconds: float = 30) -> bool:
            return wait_unless_unplaceable(self._inner.wait, self._workers,
                                           lambda: live_capacity(self._per_worker), timeout_seconds)

        def shutdown(self) -> None:
            self._inner.shutdown()

    original = group._create_placement_group

    def _create_placement_group(self: Any, scaling_config: Any, worker_group_context: Any) -> Any:
        handle = original(self, scaling_config, worker_group_context)
        if scaling_config.elasticity_enabled and isinstance(handle, DefaultPlacementGroupHandle):
            return GiveUpWhenUnplaceable(handle, worker_group_context.num_workers,
                                         dict(worker_group_context.resources_per_worker))
        return handle

    group._create_placement_group = _create_placement_group
    group._audiostyle_quick_give_up = True


@contextlib.contextmanager
def keep_loopback() -> Iterator[None]:
    """Inside this block ray.init keeps 127.0.0.1 / localhost / ::1 as given.

    ray.init passes both the address it connects to and `_node_ip_address` through
    `services.resolve_ip_for_localhost`, which replaces loopback by this machine's outward address. A head
    started with `--node-ip-address 127.0.0.1` (Ray then binds its servers to loopback only) becomes
    unreachable, and `ray.init(address="127.0.0.1:PORT")` retries forever; an embedded instance started
    with _node_ip_address="127.0.0.1" binds every interface. No upstream switch exists for either.
    """
    import ray._private.services as services

    original = services.resolve_ip_for_localhost
    services.resolve_ip_for_localhost = lambda host: host
    try:
        yield
    finally:
        services.resolve_ip_for_localhost = original


def find_auto_address() -> str | None:
    """HOST:PORT of the cluster `--address auto` names (RAY_ADDRESS, then the one recorded on this
    machine), or None; ConnectionError / ValueError when what is recorded does not answer."""
    import ray._private.services as services

    with keep_loopback():
        return services.canonicalize_bootstrap_address("auto")


@contextlib.contextmanager
def without_ray_init_records(text: str) -> Iterator[None]:
    """Inside this block, records of ray.init's logger (`ray._private.worker`) that contain `text` are dropped."""
    def drop(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    worker_log = logging.getLogger("ray._private.worker")
    worker_log.addFilter(drop)
    try:
        yield
    finally:
        worker_log.removeFilter(drop)


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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX on x86): oneDNN's own check, the one its
    bf16 kernels dispatch on. PyTorch exposes it only privately (torch's own tests call it); reading
    /proc/cpuinfo instead would be Linux-only and would have to track oneDNN's list of ISAs by hand."""
    import torch  # here, not at the top: the sweep driver imports this file and otherwise never loads torch

    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
