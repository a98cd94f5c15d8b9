"""Training throughput: Ray Train V2 with 1 and 2 workers (and a GPU when present) beside a plain
single-process PyTorch loop over the same model, data and curriculum, measured in the same run.

    python tests/benchmarks/bench_training.py [--steps 30] [--workers 1 2] [--data DIR]

"in-loop" rates time the training steps only (validation and checkpointing excluded, as the worker's
perf/* metrics do); "end-to-end" divides the steps by the whole fit() wall time, so the difference is
Ray's orchestration cost (worker start-up, process group, report/checkpoint round trips). Prints
numbers, asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def bench_config(data_root: Path, storage: Path, steps: int, extra: list[str]):
    from audiostyle.platform.config.loader import load_experiment

    # quickstart sizes (64-wide, 2 s crops, batch 4), one validation at the end, no audio examples
    return load_experiment(EXPERIMENTS / "quickstart.yaml", [
        f"data.root={data_root}", f"run.storage_path={storage}", f"train.max_steps={steps}",
        f"train.val_every={steps}", f"train.log_every={max(1, steps // 3)}", "+train.audio_examples=0",
        "data.val_batches=1", *extra])


def plain_loop(cfg, device: str, threads: int) -> dict[str, float]:
    """The same model, data, curriculum and two optimizers in one process, no Ray, no DDP."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.training.curriculum import Curriculum
    from audiostyle.platform.training.precision import autocast_context, autocast_device
    from audiostyle.stats.normalization_stats import load_stats

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = build_timbre_model(cfg, stats=load_stats(cfg)).to(device)
    cur = Curriculum.from_config(cfg)
    where = autocast_device(cfg.optim, torch.device(device))  # the precision a worker of this config trains in
    gen = torch.optim.AdamW(model.generator_parameters(), lr=cfg.optim.lr)
    disc = torch.optim.AdamW(model.discriminator_parameters(), lr=cfg.optim.disc_lr)
    loader = make_loader(cfg, "train", seed=cfg.seed)

    def batches():
        while True:
            yield from loader

    it = batches()
    timed_from, started = 0, 0.0  # every step timed, as the workers time theirs
    for step in range(cfg.train.max_steps):
        if step == timed_from:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        batch = next(it)
        audio, labels = batch["audio"].to(device), batch["label"].to(device)
        phase = cur.at(step)
        gen.zero_grad(set_to_none=True)
        with autocast_context(where):
            terms = model.generator_terms(audio, labels, sampling_prob=0.0, active=phase.active_terms)
            loss = phase.weighted_loss(terms)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.generator_parameters(), cfg.optim.grad_clip)
        gen.step()
        if phase.train_discriminator:
            disc.zero_grad(set_to_none=True)
            model.discriminator_loss(audio, labels).backward()
            disc.step()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    steps = cfg.train.max_steps - timed_from
    return {"steps_per_s": steps / elapsed, "samples_per_s": steps * cfg.data.batch_size / elapsed}


def ray_run(cfg, storage: Path, name: str, workers: int, gpu: bool) -> dict[str, float]:
    from audiostyle.platform.config.loader import with_settings
    from audiostyle.platform.training.driver import run_training

    started = time.perf_counter()
    result = run_training(with_settings(cfg, {"scaling.num_workers": workers, "scaling.use_gpu": gpu,
                                              "run.storage_path": str(storage), "run.name": name}))
    wall = time.perf_counter() - started
    m = result.metrics
    return {"steps_per_s": m["perf/steps_per_s"], "samples_per_s": m["perf/samples_per_s"],
            "e2e_steps_per_s": cfg.train.max_steps / wall, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--data", type=Path, help="rendered demo root (default: render one into a temp dir)")
    parser.add_argument("--override", action="append", default=[], metavar="a.b=c")
    args = parser.parse_args()

    import ray
    import torch

    from audiostyle.platform.training.ray_runtime import start_local_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-training-"))
    data = args.data
    if data is None:
        from audiostyle.platform.data.prepare import prepare_demo

        data = tmp / "demo"
        prepare_demo(data, instruments=("piano", "violin"), seconds_per_instrument=60, seed=0)
    cfg = bench_config(data, tmp / "runs", args.steps, args.override)
    gpu = torch.cuda.is_available()
    rows: list[tuple[str, dict[str, float]]] = []
    print(f"model: quickstart sizes, batch {cfg.data.batch_size} per worker, {cfg.data.segment_seconds:g} s crops, "
          f"{args.steps} steps through all four phases; {os.cpu_count()} CPU cores", flush=True)

    rows.append(("plain PyTorch, CPU, 1 thread", plain_loop(cfg, "cpu", 1)))
    if gpu:
        rows.append(("plain PyTorch, GPU", plain_loop(cfg, "cuda", 1)))

    started = time.perf_counter()
    start_local_ray(max(os.cpu_count() or 1, max(args.workers)))
    print(f"ray.init: {time.perf_counter() - started:.1f} s", flush=True)
    for n in args.workers:
        rows.append((f"Ray Train, {n} CPU worker(s)", ray_run(cfg, tmp / "runs", f"cpu{n}", n, False)))
    if gpu:
        rows.append(("Ray Train, 1 GPU worker", ray_run(cfg, tmp / "runs", "gpu1", 1, True)))
    ray.shutdown()

    base = rows[0][1]["samples_per_s"]
    print(f"\n{'setup':34s} {'steps/s':>8s} {'samples/s':>10s} {'vs plain':>9s} {'e2e steps/s':>12s} {'fit wall s':>11s}")
    for label, r in rows:
        e2e = f"{r['e2e_steps_per_s']:12.2f} {r['wall_s']:11.1f}" if "wall_s" in r else f"{'-':>12s} {'-':>11s}"
        print(f"{label:34s} {r['steps_per_s']:8.2f} {r['samples_per_s']:10.1f} {r['samples_per_s'] / base:8.2f}x {e2e}")
    print("\nin-loop rates exclude validation/checkpointing; e2e includes worker start-up and reports. "
          "2 workers on 2 shared cores split the same cores, so more workers cannot scale here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
