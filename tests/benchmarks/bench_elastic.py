"""Elastic training on a 2-node loopback cluster: what a killed node costs, beside an uninterrupted run.

    python tests/benchmarks/bench_elastic.py [--repeats 3] [--steps 40] [--val-every 5] [--lose-at 13]
                                             [--return-after 8] [--resize-every 5] [--no-baseline]

Runs of the same quickstart-sized experiment with workers [1, 2], one CPU per node (ray.cluster_utils,
every node on 127.0.0.1). The baseline trains uninterrupted on 2 workers. Each of the --repeats others, on
a fresh cluster, loses the second node right after step --lose-at (between two checkpoints, as a
preemption would) by SIGKILL of all its processes (raylet included: no drain, so the GCS still counts
the node alive until its health checks give up), continues on 1 worker, and gets a node back
--return-after steps later. Printed per repetition and as medians: seconds from the kill to the start of
the restarted group (its placement group, created once the controller has decided the size and shut the
old group down) and to the next training step, the group sizes started while the node was gone, the
checkpoint the restart resumed from beside the latest one written before the loss (no step may be lost
past it), and seconds from the returned node's registration to the start of the resized group and to
its first step on 2 workers (the resize check runs every --resize-every s). Nothing is asserted; numbers
depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def latest_checkpoint(run_dir: Path) -> int:
    """The step of the newest complete checkpoint folder of a run (0 if none)."""
    steps = [int(p.parent.name.split("_")[-1]) for p in run_dir.glob("step_*/state.json")]
    return max(steps, default=0)


class PlacementGroupWatch(threading.Thread):
    """Records when each placement group first appears and its bundle count (= the workers a start asked
    for): the controller creates one right after each decision to (re)start the group at a size."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: dict[str, tuple[float, int]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import ray
        from ray.util import placement_group_table

        while not self.done.is_set():
            if ray.is_initialized():
                try:
                    for pg_id, pg in placement_group_table().items():
                        self.seen.setdefault(pg_id, (time.time(), len(pg["bundles"])))
                except Exception:  # Ray shutting down between two runs
                    pass
            self.done.wait(0.25)

    def started(self, after: float, before: float = float("inf")) -> list[tuple[float, int]]:
        """(time, workers) of the group starts between the two times, oldest first."""
        return sorted(v for v in self.seen.values() if after < v[0] < before)


def run(cfg, storage: Path, name: str, *, chaos: bool, args: argparse.Namespace) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from audiostyle.platform.config.loader import with_settings
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
            settled = with_settings(cfg, {"scaling.num_workers": [1, 2], "run.storage_path": str(storage),
                                          "run.name": name})
            out["result"] = run_training(settled, address=cluster.address, resize_every_s=args.resize_every,
                                         test_hooks=WorkerTestHooks(steps_file=str(steps_file)))
        except BaseException as exc:
            out["error"] = exc

    started = time.monotonic()
    watch = PlacementGroupWatch()
    watch.start()
    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    events: dict = {"watch": watch}
    try:
        if chaos:
            while not any(e["step"] == args.lose_at for e in read_steps(steps_file)) and thread.is_alive():
                time.sleep(0.05)
            events["last_before_loss"] = max(e["step"] for e in read_steps(steps_file))
            events["checkpoint_before_loss"] = latest_checkpoint(storage / name)
            events["lost_at"] = time.time()
            cluster.remove_node(second, allow_graceful=False)  # SIGKILL of the raylet and every process of it
            back_at = args.lose_at + args.return_after
            while thread.is_alive() and not any(e["workers"] == 1 and e["step"] >= back_at
                                                for e in read_steps(steps_file)):
                time.sleep(0.05)
            events["last_before_return"] = max(e["step"] for e in read_steps(steps_file))
            events["adding_at"] = time.time()
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)  # returns once the node is registered
            events["returned_at"] = time.time()
        thread.join()
    finally:
        watch.done.set()
        watch.join()
        ray.shutdown()
        cluster.shutdown()
    if "error" in out:
        raise out["error"]
    return {"result": out["result"], "wall": time.monotonic() - started, "steps": read_steps(steps_file), **events}


def first_step_after(steps: list[dict], at: float, workers: int) -> dict:
    return next(e for e in steps if e["t"] > at and e["workers"] == workers)


def chaos_numbers(r: dict) -> dict:
    """Seconds from the kill to the next step, the checkpoint resumed from, seconds from the return to
    the first 2-worker step, and the steps trained again in each case."""
    after_loss = first_step_after(r["steps"], r["lost_at"], 1)
    after_return = first_step_after(r["steps"], r["returned_at"], 2)
    restarts = r["watch"].started(r["lost_at"], r["adding_at"])  # group starts while the node was gone
    resize = next(t for t, n in r["watch"].started(r["returned_at"]) if n == 2)
    return {"loss_s": after_loss["t"] - r["lost_at"], "resumed_from": after_loss["step"] - 1,
            "decided_s": restarts[0][0] - r["lost_at"], "sizes_tried": [n for _, n in restarts],
            "resize_s": resize - r["returned_at"], "add_s": r["returned_at"] - r["adding_at"],
            "checkpoint": r["checkpoint_before_loss"], "again_loss": r["last_before_loss"] - (after_loss["step"] - 1),
            "return_s": after_return["t"] - r["returned_at"],
            "again_return": r["last_before_return"] - (after_return["step"] - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--lose-at", type=int, default=13)
    parser.add_argument("--return-after", type=int, default=8)
    parser.add_argument("--resize-every", type=float, default=5.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the uninterrupted run")
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
    print(f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; quickstart model, {args.steps} "
          f"steps, checkpoint every {args.val_every}, workers [1, 2] on 2 loopback nodes of 1 CPU; node killed "
          f"(SIGKILL) after step {args.lose_at}, back {args.return_after} steps later, resize check every "
          f"{args.resize_every:g} s", flush=True)
    runs: list[tuple[str, dict]] = []
    if not args.no_baseline:
        runs.append(("uninterrupted, 2 workers", run(cfg, tmp / "runs", "uninterrupted", chaos=False, args=args)))
    rows = []
    for i in range(1, args.repeats + 1):
        r = run(cfg, tmp / "runs", f"node_lost_{i}", chaos=True, args=args)
        runs.append((f"node killed and back #{i}", r))
        n = chaos_numbers(r)
        rows.append(n)
        print(f"#{i}: node killed after step {r['last_before_loss']}: restart began {n['decided_s']:.1f} s later "
              f"(group sizes started while it was gone: {n['sizes_tried']}), next step {n['loss_s']:.1f} s later, "
              f"resumed from step {n['resumed_from']} (latest checkpoint before the kill: step {n['checkpoint']}), "
              f"{n['again_loss']} step(s) trained again; node back after step {r['last_before_return']} (add_node "
              f"{n['add_s']:.1f} s): resize to 2 began {n['resize_s']:.1f} s after it registered, first 2-worker "
              f"step {n['return_s']:.1f} s after, {n['again_return']} step(s) again; load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    if rows:
        print()
        for label, key in (("kill -> restart began", "decided_s"), ("kill -> next step", "loss_s"),
                           ("node registered -> resize began", "resize_s"),
                           ("node registered -> 2-worker step", "return_s")):
            xs = [n[key] for n in rows]
            print(f"{label:<34}{', '.join(f'{x:5.1f}' for x in xs)} s, median {statistics.median(xs):.1f} s")
        print(f"restarts that asked for more workers than were left: "
              f"{sum(n > 1 for row in rows for n in row['sizes_tried'])}")
        print(f"resumed from the latest checkpoint every time: {all(n['resumed_from'] == n['checkpoint'] for n in rows)}")
    if not args.no_baseline:
        base = runs[0][1]["steps"]
        per_step = [b["t"] - a["t"] for a, b in zip(base, base[1:]) if b["step"] == a["step"] + 1]
        print(f"baseline step time on 2 workers: median {statistics.median(per_step):.2f} s")
    keys = ("val/recon", "val/recon_teacher_forced", "val/style_acc", "val/content_leak")
    print(f"\n{'run':<30}{'wall s':>8}" + "".join(f"{k:>26}" for k in keys))
    for label, r in runs:
        m = r["result"].metrics
        print(f"{label:<30}{r['wall']:>8.0f}" + "".join(f"{m.get(k, float('nan')):>26.4f}" for k in keys))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
