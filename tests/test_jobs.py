"""`audiostyle submit` and `audiostyle jobs` against a real Ray head with its dashboard (the Jobs API) on
loopback, started here with ray.cluster_utils: a submitted training runs to the end as a Ray Job, is
listed, its logs are read, and a second, long one is stopped.

The head's processes find `python` on PATH, as on a cluster image: PATH starts with this interpreter's
folder, so the job's entrypoint runs with the same environment as the tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

EXPERIMENT = str(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml")
TINY = ["data.segment_seconds=1.0", "data.batch_size=2", "data.steps_per_epoch=3", "data.val_batches=1",
        "model.style_encoder.dim=32", "model.content_encoder.dim=32", "model.decoder.dim=32",
        "model.discriminator.hidden=32", "+train.audio_examples=0", "optim.warmup_steps=1", "train.log_every=1",
        "curriculum.phases=[{name: reconstruction, until: 1.0, weights: {reconstruction: 1.0}}]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jobs_head():
    """A one-node cluster (2 CPUs: the job's training worker and headroom) whose dashboard listens on loopback."""
    import ray
    from ray.cluster_utils import Cluster

    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", folder)
        # Ray's dashboard agent connects with ray.init("127.0.0.1:PORT") and so gets the loopback rewrite
        # (audiostyle's keep_loopback only helps processes it runs in): the agent never reaches a GCS
        # bound to loopback and every submission times out (504). With this, Ray's node-address lookup
        # answers 127.0.0.1 in the head's own processes; it changes nothing else on Linux.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        ray.shutdown()
        cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": "127.0.0.1", "num_cpus": 2, "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": port})
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            cluster.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def wait_status(address: str, job_id: str, wanted: tuple[str, ...], timeout_s: float) -> str:
    from audiostyle.platform.training.jobs import job_status

    deadline = time.monotonic() + timeout_s
    status = job_status(address, job_id)
    while status not in wanted and time.monotonic() < deadline:
        time.sleep(1.0)
        status = job_status(address, job_id)
    return status


def submit(capsys, *args: str) -> str:
    from audiostyle.platform.cli.main import main

    assert main(["submit", EXPERIMENT, *args]) == 0
    out = capsys.readouterr().out
    assert "submitted job" in out and "jobs logs" in out
    return out.strip().splitlines()[-1]


def test_submitted_training_runs_as_a_job_that_can_be_listed_followed_and_stopped(jobs_head, demo_root, tmp_path,
                                                                                   capsys):
    from audiostyle.platform.cli.main import main

    runs = tmp_path / "runs"
    job = submit(capsys, f"data.root={demo_root}", *TINY, "train.max_steps=2", "train.val_every=2",
                 "--address", jobs_head, "--storage", str(runs), "--name", "job1")
    assert job.startswith("raysubmit_")
    assert wait_status(jobs_head, job, ("SUCCEEDED", "FAILED", "STOPPED"), 300) == "SUCCEEDED"
    assert (runs / "job1" / "step_00000002" / "state.json").is_file()  # trained where --storage said

    assert main(["jobs", "list", "--address", jobs_head]) == 0
    listing = capsys.readouterr().out
    assert job in listing and "job1" in listing and "SUCCEEDED" in listing
    assert main(["jobs", "logs", job, "--address", jobs_head]) == 0
    logs = capsys.readouterr().out
    assert "run 'job1' finished" in logs and "step 2/2" in logs

    # train --submit is the same submission; this one would run for a long time, so it is stopped
    assert main(["train", EXPERIMENT, f"data.root={demo_root}", *TINY, "train.max_steps=100000",
                 "train.val_every=100000", "--submit", "--address", jobs_head, "--storage", str(runs),
                 "--name", "job2"]) == 0
    long_job = capsys.readouterr().out.strip().splitlines()[-1]
    assert wait_status(jobs_head, long_job, ("RUNNING",), 120) == "RUNNING"
    assert main(["jobs", "stop", long_job, "--address", jobs_head]) == 0
    assert capsys.readouterr().out.strip() == f"job {long_job}: STOPPED"

    assert main(["jobs", "status", "raysubmit_nope", "--address", jobs_head]) == 2  # one clear error
    assert "no job 'raysubmit_nope'" in capsys.readouterr().err
