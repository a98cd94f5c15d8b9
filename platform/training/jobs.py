"""Training as a Ray Job: submit an experiment to a cluster's Jobs API, then list, follow and stop the jobs.

Driver side, in the CLI's process; the job itself runs on the head, as a process of its own. Ray
recommends jobs for long runs on a remote cluster: unlike a client connection (`train --address`), a job
outlives the laptop that submitted it. The experiment is resolved here (defaults, overrides and
references applied, everything validated before anything is sent), written as one self-contained YAML
into the job's working_dir, and trained there by the same command a user would type on the head:
`python -m audiostyle.platform train experiment.yaml --address auto --name RUN ...`. From a source
checkout the package travels with the job (py_modules, as for `train --address`); an installed package
is assumed to be in the cluster's image. The head needs Ray's dashboard (`ray[default]`, our
`cluster` extra), listening at the address given (http://HEAD:8265).
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.config.typed_convert import to_dict
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.training.cluster_address import (
    CONNECT_TIMEOUT_S,
    ClusterUnreachable,
    parse_address,
    probe_tcp,
)

EXPERIMENT_FILE = "experiment.yaml"  # the resolved experiment, in the job's working_dir
METADATA_KEY = "audiostyle_run"  # job metadata: the run the job trains
FINISHED = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class JobRow:
    job_id: str
    status: str
    run: str
    entrypoint: str
    started: str


def jobs_client(address: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> Any:
    """A JobSubmissionClient for the dashboard at `address` (http://HEAD:8265), or ClusterUnreachable
    within about timeout_s."""
    from ray.job_submission import JobSubmissionClient

    target = parse_address(address if "://" in address else f"http://{address}")
    if target.kind != "jobs":
        raise ClusterUnreachable(
            f"--address {address} is not a Jobs API address: jobs go to the dashboard, http://HEAD:8265 "
            "(a GCS address HOST:6379 or ray://HOST:10001 is for `audiostyle train --address`)")
    probe_tcp(target, timeout_s)
    try:
        return JobSubmissionClient(target.for_ray)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterUnreachable(f"the dashboard at {target.for_ray} does not answer as a Ray Jobs API "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0]}); check that the head "
                                 "runs Ray's dashboard (ray[default]) on that port") from None


def entrypoint(resize_every_s: float | None) -> str:
    """The command the job runs on the head (the resolved YAML beside it carries name, storage and scaling)."""
    words = ["python", "-m", "audiostyle.platform", "train", EXPERIMENT_FILE, "--address", "auto"]
    if resize_every_s is not None:
        words += ["--resize-every", str(resize_every_s)]
    return shlex.join(words)


def submit_training(cfg: ExperimentConfig, address: str, *, resize_every_s: float | None = None,
                    note: str | None = None) -> tuple[str, str]:
    """Submit `cfg` (already loaded and validated) as a Ray Job; returns (job id, run name).

    A local storage path is made absolute here: on the cluster it must name the same shared folder.
    """
    from audiostyle.platform.training.driver import plan_run, settle_run
    from audiostyle.platform.training.ray_runtime import package_for_cluster

    cfg = settle_run(cfg)
    plan = plan_run(cfg, resize_every_s=resize_every_s)  # the same checks as a run started here
    client = jobs_client(address)
    folder = Path(tempfile.mkdtemp(prefix="audiostyle-job-"))
    resolved = to_dict(cfg)
    (folder / EXPERIMENT_FILE).write_text(
        f"# {cfg.name}, resolved for a Ray Job{f' (overrides: {note})' if note else ''}\n"
        + yaml.safe_dump(resolved, sort_keys=False))
    runtime_env: dict[str, Any] = {"working_dir": str(folder)}
    package = package_for_cluster()
    if package is not None:
        runtime_env["py_modules"] = [str(package)]
    job_id = client.submit_job(
        entrypoint=entrypoint(resize_every_s),
        runtime_env=runtime_env, metadata={METADATA_KEY: plan.name, "experiment": cfg.name})
    return job_id, plan.name


def list_jobs(address: str) -> list[JobRow]:
    """Every job the cluster knows, newest first; `run` is set for jobs submitted by audiostyle."""
    rows = []
    for job in jobs_client(address).list_jobs():
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        rows.append(JobRow(job.submission_id or job.job_id or "-", str(job.status.value if hasattr(job.status, "value")
                                                                       else job.status),
                           (job.metadata or {}).get(METADATA_KEY, "-"), job.entrypoint, started))
    return sorted(rows, key=lambda r: r.started, reverse=True)


def job_status(address: str, job_id: str) -> str:
    return str(_checked(jobs_client(address), job_id).get_job_status(job_id).value)


def _checked(client: Any, job_id: str) -> Any:
    """The client, once `job_id` is known to the cluster; ConfigError listing the known ids otherwise."""
    known = [j.submission_id for j in client.list_jobs()]
    if job_id not in known:
        raise ConfigError(f"no job {job_id!r} on this cluster; jobs there: {', '.join(filter(None, known)) or 'none'}",
                          path="JOB_ID", hint="`audiostyle jobs list --address ...` shows them")
    return client


def job_logs(address: str, job_id: str, *, follow: bool = False, write: Callable[[str], Any] = print) -> None:
    """Write the job's output so far, or (follow) as it comes until the job ends."""
    client = _checked(jobs_client(address), job_id)
    if not follow:
        write(client.get_job_logs(job_id))
        return
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def stop_job(address: str, job_id: str, *, wait_s: float = 60.0) -> str:
    """Ask the job to stop and wait (up to wait_s) until it has; returns its final status."""
    client = _checked(jobs_client(address), job_id)
    client.stop_job(job_id)
    deadline = time.monotonic() + wait_s
    status = str(client.get_job_status(job_id).value)
    while status not in FINISHED and time.monotonic() < deadline:
        time.sleep(1.0)
        status = str(client.get_job_status(job_id).value)
    return status


def format_jobs(rows: Sequence[JobRow]) -> str:
    head = ["job", "status", "run", "started", "entrypoint"]
    body = [[r.job_id, r.status, r.run, r.started, r.entrypoint[:80]] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *body])
