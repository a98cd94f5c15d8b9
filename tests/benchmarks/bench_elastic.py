"""Elastic training on a 2-node loopback cluster: what a lost node costs, beside an uninterrupted run.

    python tests/benchmarks/bench_elastic.py [--steps 40] [--val-every 5] [--lose-at 13] [--return-after 8]

Two runs of the same quickstart-sized experiment with workers [1, 2], one CPU per node (ray.cluster_utils,
every node on 127.0.0.1): the baseline trains uninterrupted on 2 workers; the other loses the second
node right after step --lose-at (between two checkpoints, as a preemption would), continues on 1 worker,
and gets a node back --return-after steps later. Printed: the time from the node loss to the next
training step, the steps lost (trained again from the last checkpoint), the same for the node's return,
and each run's final validation metrics and wall time. Nothing is asserted; numbers depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIZES = ["data.segment_seconds=2.0", "data.batch_size=4", "data.steps_per_epoch=20", "data.val_batches=2",
         "+train.audio_examples=0", "train.log_every=5", "run.max_failures=4", "train.keep_top_k=1"]


def read_steps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def run(cfg, storage: Path, name: str, *, chaos: bool, args: argparse.Namespace) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from audiostyle.platform.training.driver import run_training
    from audiostyle.platform.training.test_hooks import WorkerTestHooks

    steps_file = storage / f"{name}.steps.jsonl"
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": 1,
                                                            "include_dashboard": False})
    second = cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
    cluster.wait_for_nodes()
    out: dict = {}

    def train() -> None:
        try:
            out["result"] = run_training(cfg, address=cluster.address, workers=(1, 2), resize_every_s=5,
                                         storage_path=str(storage), name=name,
                                         test_hooks=WorkerTestHooks(steps_file=str(steps_file)))
        except BaseException as exc:
            out["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    events: dict = {}
    if chaos:
        while not any(e["step"] == args.lose_at for e in read_steps(steps_file)) and thread.is_alive():
            time.sleep(0.05)
        events["lost_at"] = time.time()
        events["last_before_loss"] = max(e["step"] for e in read_steps(steps_file))
        cluster.remove_node(second)
        back_at = args.lose_at + args.return_after
        while thread.is_alive() and not any(e["workers"] == 1 and e["step"] >= back_at for e in read_steps(steps_file)):
            time.sleep(0.05)
        events["returned_at"] = time.time()
        events["last_before_return"] = max(e["step"] for e in read_steps(steps_file))
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
    thread.join()
    wall = time.monotonic() - started
    ray.shutdown()
    cluster.shutdown()
    if "error" in out:
        raise out["error"]
    return {"result": out["result"], "wall": wall, "steps": read_steps(steps_file), **events}


def recovery(steps: list[dict], at: float, last: int, workers: int) -> tuple[float, int]:
    """(seconds from `at` to the first step on `workers` workers after it, steps trained again)."""
    first = next(e for e in steps if e["t"] > at and e["workers"] == workers)
    return first["t"] - at, last - (first["step"] - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--lose-at", type=int, default=13)
    parser.add_argument("--return-after", type=int, default=8)
    parser.add_argument("--data", help="demo data root (default: rendered into a temporary folder)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["AUDIOSTYLE_SHARED_STORAGE"] = "1"  # every loopback node sees this machine's disk
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # not /tmp/ray: others' ray.init()
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.data.prepare import prepare_demo

    tmp = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    data = Path(args.data) if args.data else tmp / "data"
    if not args.data:
        prepare_demo(data, instruments=("piano", "violin"), seconds_per_instrument=60, seed=0)
    cfg = load_experiment(ROOT / "experiments" / "quickstart.yaml",
                          [f"data.root={data}", *SIZES, f"train.max_steps={args.steps}",
                           f"train.val_every={args.val_every}"])
    load_before = os.getloadavg()
    print(f"{os.cpu_count()} CPU cores, load average {load_before[0]:.1f}; quickstart model, {args.steps} steps, "
          f"checkpoint every {args.val_every}, workers [1, 2] on 2 loopback nodes of 1 CPU", flush=True)
    base = run(cfg, tmp / "runs", "uninterrupted", chaos=False, args=args)
    elastic = run(cfg, tmp / "runs", "node_lost", chaos=True, args=args)
    lost_s, lost_steps = recovery(elastic["steps"], elastic["lost_at"], elastic["last_before_loss"], 1)
    back_s, back_steps = recovery(elastic["steps"], elastic["returned_at"], elastic["last_before_return"], 2)
    per_step = [b["t"] - a["t"] for a, b in zip(base["steps"], base["steps"][1:]) if b["step"] == a["step"] + 1]
    print(f"\nnode lost after step {elastic['last_before_loss']}: next training step (on 1 worker) "
          f"{lost_s:.1f} s later, {lost_steps} step(s) trained again")
    print(f"node back after step {elastic['last_before_return']}: next step on 2 workers {back_s:.1f} s later, "
          f"{back_steps} step(s) trained again (resize check every 5 s)")
    print(f"baseline step time on 2 workers: median {sorted(per_step)[len(per_step) // 2]:.2f} s\n")
    keys = ("val/recon", "val/recon_teacher_forced", "val/style_acc", "val/content_leak")
    print(f"{'run':<34}{'wall s':>8}" + "".join(f"{k:>26}" for k in keys))
    for label, r in (("uninterrupted, 2 workers", base), ("node lost and back, 2->1->2", elastic)):
        m = r["result"].metrics
        print(f"{label:<34}{r['wall']:>8.0f}" + "".join(f"{m.get(k, float('nan')):>26.4f}" for k in keys))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
