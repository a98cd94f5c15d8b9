"""Training on a real multi-node Ray cluster built on this machine's loopback (ray.cluster_utils.Cluster):
ranks spread over nodes, a killed worker, a lost and a returning node under an elastic worker range,
the storage check and the CLI's connection to a loopback head.

Every node runs at 127.0.0.1, the one address for which Ray binds its servers to loopback only (another
127.0.0.x makes them bind every interface); each node is still its own raylet with its own CPU, so Ray
schedules, loses and regains them as separate machines. The clusters are recorded in this module's own
RAY_TMPDIR, never in /tmp/ray where another process's `ray.init()` would find them. One CPU per node,
the tiny model, a few steps: the module stays within a few minutes on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from audiostyle.platform.training.test_hooks import WorkerTestHooks

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

REPO = Path(__file__).resolve().parents[1]
SHARED = "AUDIOSTYLE_SHARED_STORAGE"


@pytest.fixture(scope="module")
def ray_tmpdir():
    """This module's Ray temp folder (short: Ray's socket paths must stay under 107 characters)."""
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", folder)
        # worker start-up (torch import, wheel install) on two loaded cores can pass Ray's 60 s default
        mp.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
        mp.setenv("RAY_DEDUP_LOGS", "0")
        yield folder
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def loopback_cluster(nodes: int):
    """A head and nodes-1 more nodes, one CPU each, all on 127.0.0.1; torn down with the driver.

    A driver still connected to an earlier cluster would run the test there: run_training uses the Ray
    this process is connected to. The module's own two-node cluster therefore comes last (its tests are
    last in the file), and a new cluster first drops any earlier connection."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def two_nodes(ray_tmpdir):
    with loopback_cluster(2) as cluster:
        yield cluster


def probes(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def steps_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(what: str, condition, timeout_s: float, every_s: float = 0.5):
    """Poll `condition` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def listening_sockets() -> dict[int, list[str]]:
    """pid -> local addresses of its listening TCP sockets, read from /proc (no ss or psutil needed)."""
    inodes: dict[str, str] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            if v6 and words[:12] == b"\0" * 10 + b"\xff\xff":
                ip = ".".join(str(b) for b in words[12:])  # IPv4-mapped IPv6
            elif v6:
                ip = ":".join(words[i:i + 2].hex() for i in range(0, 16, 2))
            else:
                ip = ".".join(str(b) for b in words)
            inodes[fields[9]] = f"{ip}:{int(hex_port, 16)}"
    found: dict[int, list[str]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        for link in links:
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.setdefault(int(proc.name), []).append(inodes[link[8:-1]])
    return found


def process_tree(root: int) -> set[int]:
    """`root` and all its descendants (Ray's nodes are children of this process, workers of the raylets)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def elastic_run_in_background(cluster, cfg, storage: Path, name: str, hooks) -> tuple[threading.Thread, dict]:
    """run_training with workers [1, 2] on `cluster` in a daemon thread: (the thread, its outcome dict,
    which gets "result" or "error" when the run ends; the main thread asserts on it)."""
    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.training.driver import run_training

    outcome: dict = {}

    def train() -> None:
        try:
            settled = with_settings(cfg, {"scaling.num_workers": [1, 2], "run.storage_path": str(storage),
                                          "run.name": name})
            outcome["result"] = run_training(settled, address=cluster.address, resize_every_s=3, test_hooks=hooks)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    return thread, outcome


def test_lost_node_shrinks_the_group_and_a_new_node_grows_it_back(ray_tmpdir, tiny_config, tmp_path, monkeypatch):
    import ray
    import torch


    monkeypatch.setenv(SHARED, "1")
    cfg = tiny_config("train.max_steps=12", "train.val_every=2", "train.keep_top_k=1", "run.max_failures=3")
    steps_file = tmp_path / "steps.jsonl"
    # hold after the step-4 report (2 workers) and the step-8 report (1 worker), as a longer run would
    # still be training: the node is lost during the first hold, comes back during the second
    hooks = WorkerTestHooks(steps_file=str(steps_file), hold_after_steps=(4, 8), hold_s=240,
                            probe_dir=str(tmp_path / "p"))

    with loopback_cluster(2) as cluster:
        second = next(iter(cluster.worker_nodes))
        driver, outcome = elastic_run_in_background(cluster, cfg, tmp_path / "runs", "elastic", hooks)
        # the controller registers a checkpoint when it next polls the workers (every 2 s)
        wait_for("step 4 on 2 workers", lambda: any(e["step"] == 4 and e["workers"] == 2
                                                    for e in steps_log(steps_file)), 300)
        wait_for("the step-4 checkpoint", lambda: (tmp_path / "runs/elastic/step_00000004/state.json").exists(), 60)
        time.sleep(4)
        lost_at = time.time()
        cluster.remove_node(second)
        wait_for("step 8 on the 1 worker left", lambda: any(
            e["workers"] == 1 and e["step"] == 8 for e in steps_log(steps_file)), 240)
        wait_for("the step-8 checkpoint", lambda: (tmp_path / "runs/elastic/step_00000008/state.json").exists(), 60)
        time.sleep(4)
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        wait_for("a step on 2 workers after the node came back", lambda: [
            e for e in steps_log(steps_file) if e["workers"] == 2 and e["t"] > lost_at], 240)
        driver.join(240)
        assert not driver.is_alive(), "training did not finish"
        assert ray.get_runtime_context().gcs_address == cluster.address  # trained on this cluster
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]

    log = steps_log(steps_file)
    first_small = next(e for e in log if e["workers"] == 1)
    regrown = next(e for e in log if e["workers"] == 2 and e["t"] > lost_at)
    assert [e["step"] for e in log if e["t"] < lost_at] == [1, 2, 3, 4]
    assert first_small["step"] == 5 and first_small["grad_accum"] == 2  # from the step-4 checkpoint, same global batch
    assert regrown["step"] == 9 and regrown["grad_accum"] == 1  # from the step-8 checkpoint, after the hold
    assert result.error is None and result.metrics["step"] == 12
    # reports carry the group size; the global batch is that of 2 workers throughout (batch 4 each)
    assert result.metrics["scale/workers"] == 2 and set(result.metrics_dataframe["scale/global_batch"]) == {2 * 4}
    r0, r1 = probes(tmp_path / "p")
    assert r0["world"] == r1["world"] == 2 and r0["params"] == r1["params"] and r0["node_id"] != r1["node_id"]
    # the checkpoint records which steps ran on how many workers
    optim = torch.load(Path(result.checkpoint.path) / "optim.pt", weights_only=True)
    assert optim["scale_history"] == [{"from_step": 0, "workers": 2, "grad_accum": 1},
                                      {"from_step": 4, "workers": 1, "grad_accum": 2},
                                      {"from_step": 8, "workers": 2, "grad_accum": 1}]
    assert optim["data_position"]["world"] == 2


def placement_groups() -> dict[str, int]:
    """Every placement group the cluster has had (removed ones too) -> its number of bundles (= workers)."""
    from ray.util import placement_group_table

    return {pg_id: len(pg["bundles"]) for pg_id, pg in placement_group_table().items()}


def test_killed_node_restarts_on_the_workers_left_without_trying_the_old_size(
        ray_tmpdir, tiny_config, tmp_path, monkeypatch):
    """SIGKILL of a node's processes (no drain): the GCS still counts the node alive for ~15 s (its health
    checks), so a restart sized from that view asks for 2 workers and waits out the worker-group start
    timeout (180 s in this module). The restart must ask for the 1 worker that can be placed."""

    monkeypatch.setenv(SHARED, "1")
    cfg = tiny_config("train.max_steps=6", "train.val_every=2", "train.keep_top_k=1", "run.max_failures=3")
    steps_file = tmp_path / "steps.jsonl"
    hooks = WorkerTestHooks(steps_file=str(steps_file), hold_after_steps=(4,), hold_s=240)

    with loopback_cluster(2) as cluster:
        second = next(iter(cluster.worker_nodes))
        driver, outcome = elastic_run_in_background(cluster, cfg, tmp_path / "runs", "killed", hooks)
        wait_for("step 4 on 2 workers", lambda: any(e["step"] == 4 and e["workers"] == 2
                                                    for e in steps_log(steps_file)), 300)
        wait_for("the step-4 checkpoint", lambda: (tmp_path / "runs/killed/step_00000004/state.json").exists(), 60)
        time.sleep(4)  # the controller has registered the checkpoint (it polls every 2 s)
        before = set(placement_groups())
        lost_at = time.time()
        cluster.remove_node(second, allow_graceful=False)

        def restarted_on_one_worker() -> bool:
            tried = {pg_id: n for pg_id, n in placement_groups().items() if pg_id not in before}
            assert all(n == 1 for n in tried.values()), f"the restart asked for more workers than fit: {tried}"
            return any(e["workers"] == 1 for e in steps_log(steps_file))

        wait_for("a step on the 1 worker left", restarted_on_one_worker, 170)
        recovered_s = next(e["t"] for e in steps_log(steps_file) if e["workers"] == 1) - lost_at
        driver.join(240)
        assert not driver.is_alive(), "training did not finish"
        assert "error" not in outcome, outcome.get("error")
        result = outcome["result"]

    log = steps_log(steps_file)
    first_small = next(e for e in log if e["workers"] == 1)
    assert first_small["step"] == 5 and first_small["grad_accum"] == 2  # from the step-4 checkpoint
    assert recovered_s < 90, f"next step {recovered_s:.0f} s after the loss"  # far below the 180 s start timeout
    assert result.error is None and result.metrics["step"] == 6 and result.metrics["scale/workers"] == 1


def test_ranks_on_two_nodes_step_together_from_the_wheel_and_survive_a_killed_worker(
        two_nodes, tiny_config, tmp_path, monkeypatch):
    import ray

    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.training.driver import run_training

    monkeypatch.setenv(SHARED, "1")  # all nodes of this machine see the same disk
    cfg = tiny_config("train.max_steps=6", "train.val_every=2", "run.max_failures=2")
    marker = tmp_path / "killed.txt"
    hooks = WorkerTestHooks(crash_at_step=3, crash_rank=1, crash_marker=str(marker), probe_dir=str(tmp_path / "p"))
    cfg = with_settings(cfg, {"scaling.num_workers": 2, "run.storage_path": str(tmp_path / "runs"), "run.name": "spread"})
    result = run_training(cfg, address=two_nodes.address, test_hooks=hooks)

    assert marker.read_text().startswith("killed rank 1 at step 3")
    assert result.error is None and result.metrics["step"] == 6
    r0, r1 = probes(tmp_path / "p")
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert r0["node_id"] != r1["node_id"] and {r0["node_id"], r1["node_id"]} == alive  # one rank per node
    assert r0["started_at"] == r1["started_at"] == 2  # both restarted from the step-2 checkpoint
    assert r0["batches"] == r1["batches"] and r0["params"] == r1["params"]  # same steps, identical weights
    for probe in (r0, r1):  # the workers ran the shipped wheel, not this source tree's editable install
        module = Path(probe["worker_module"])
        assert module.parts[-4:] == ("audiostyle", "platform", "training", "worker.py")
        assert REPO not in module.parents and "runtime_resources" in module.parts, module

    # every socket the cluster, the driver and the workers listen on is on loopback
    ours = process_tree(os.getpid())
    listeners = {pid: addrs for pid, addrs in listening_sockets().items() if pid in ours}
    assert listeners, "found no listening socket of the cluster's processes"
    exposed = {pid: a for pid, addrs in listeners.items() for a in addrs if not a.startswith("127.")}
    assert not exposed, f"listening beyond loopback: {exposed}"


def audiostyle_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "audiostyle.platform", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def test_cli_reaches_a_loopback_head_and_refuses_node_local_storage(two_nodes, demo_root, tmp_path, monkeypatch):
    monkeypatch.delenv(SHARED, raising=False)
    local = tmp_path / "runs"
    proc = audiostyle_cli("train", "experiments/quickstart.yaml", f"data.root={demo_root}",
                          "--address", two_nodes.address, "--storage", str(local))
    # connected (127.0.0.1 was not rewritten to this machine's outward address), then refused the storage
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "run.storage_path" in proc.stderr and "2 nodes" in proc.stderr and "s3://" in proc.stderr
    assert str(local) in proc.stderr and "Traceback" not in proc.stderr
    assert not local.exists()  # refused before any worker wrote there
