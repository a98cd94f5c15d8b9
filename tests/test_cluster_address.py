"""Connecting to Ray as a user would: the address forms, an unreachable or wrong address failing within a
bounded time with one message (exit code 2), and no address always meaning a fresh local instance,
whatever cluster Ray recorded last on this machine.

The CLI runs in subprocesses with the connection deadline shortened (AUDIOSTYLE_CONNECT_TIMEOUT_S); the
servers it talks to are on 127.0.0.1 and started here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from audiostyle.platform.training.cluster_address import (
    CONNECT_TIMEOUT_S,
    ClusterUnreachable,
    parse_address,
)

REPO = Path(__file__).resolve().parents[1]


def test_address_forms():
    gcs = parse_address("10.0.0.5:6379")
    assert (gcs.kind, gcs.host, gcs.port, gcs.for_ray) == ("gcs", "10.0.0.5", 6379, "10.0.0.5:6379")
    assert parse_address("ray://head").for_ray == "ray://head:10001"
    assert parse_address("http://head:8265").kind == "jobs"
    local = parse_address("localhost:7000")
    assert local.loopback and local.for_ray == "127.0.0.1:7000"  # never rewritten to the outward address
    assert parse_address("head").for_ray == "head:6379"  # the GCS port by default
    for bad in ("ftp://head:21", "head:notaport", "ray://:10001"):
        with pytest.raises(ClusterUnreachable, match="not a Ray address"):
            parse_address(bad)
    assert CONNECT_TIMEOUT_S == 30  # the documented bound, unless AUDIOSTYLE_CONNECT_TIMEOUT_S says otherwise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cli(address: str, demo_root: Path, tmp_path: Path, timeout_s: int) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "AUDIOSTYLE_CONNECT_TIMEOUT_S": str(timeout_s)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "audiostyle.platform", "train", "experiments/quickstart.yaml",
                           f"data.root={demo_root}", "--address", address, "--storage", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    return proc, time.monotonic() - started


@pytest.mark.ray
def test_nothing_listening_fails_within_the_deadline_with_one_message(demo_root, tmp_path):
    proc, took = train_cli(f"localhost:{free_port()}", demo_root, tmp_path, timeout_s=5)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr
    assert err.count("error: ") == 1 and "Traceback" not in err
    assert "cannot reach a Ray cluster at --address localhost:" in err and "Connection refused" in err
    assert "127.0.0.1:" in err and "rewrites a loopback address" in err and "GCS port" in err
    assert took < 5 + 25  # the deadline plus interpreter and import start-up
    assert not (tmp_path / "runs").exists()


@pytest.mark.ray
def test_a_port_that_is_not_ray_fails_within_the_deadline(demo_root, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept() -> None:  # accepts and never answers, like a service that is not a GCS
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        proc, took = train_cli(f"127.0.0.1:{server.getsockname()[1]}", demo_root, tmp_path, timeout_s=6)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "accepts connections but ray.init got no answer" in proc.stderr and "Traceback" not in proc.stderr
    assert accepted and took < 6 + 40  # deadline, start-up, and the package build that precedes ray.init


@pytest.mark.ray
def test_no_address_starts_a_fresh_local_ray_despite_a_recorded_cluster(tmp_path):
    """Ray records the last cluster started on the machine; a plain ray.init() joins it (or dies trying)."""
    tempfile_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths stay < 107 characters
    ray_tmp = Path(tempfile_dir)
    (ray_tmp / "ray").mkdir(parents=True)
    dead = f"127.0.0.1:{free_port()}"  # a cluster that was killed, not `ray stop`ped
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    script = (
        "import ray\n"
        "try:\n"
        "    ray.init(num_cpus=1)\n"
        "    print('plain ray.init joined', flush=True)\n"
        "except Exception as exc:\n"
        "    print('plain ray.init failed:', type(exc).__name__, flush=True)\n"
        "from audiostyle.platform.training.ray_runtime import ensure_ray\n"
        "ensure_ray(None, num_cpus=1)\n"
        "ctx = ray.get_runtime_context()\n"
        "print('started', ctx.gcs_address, len(ray.nodes()), flush=True)\n"
        "ray.shutdown()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "RAY_TMPDIR": tempfile_dir}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "plain ray.init failed: ValueError" in proc.stdout  # the bug the embedded default used to hit
    started = next(line for line in proc.stdout.splitlines() if line.startswith("started"))
    address, nodes = started.split()[1:]
    assert address != dead and address.startswith("127.0.0.1:") and nodes == "1"
    shutil.rmtree(tempfile_dir, ignore_errors=True)
