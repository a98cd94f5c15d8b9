"""Benchmark: a training step of a recipe in fp32 and under CPU bf16 autocast (`optim.cpu_mixed_precision`),
beside the data loader's time for the same batches, measured in the same run.

Run: `python tests/benchmarks/bench_precision.py [--experiment experiments/any_player_chords.yaml]
[--steps 8] [--threads 2]` (the experiment's data root must exist: `audiostyle data demo ...` as its header says).
Times the generator's forward + backward + Adam step on the recipe's real batches (the first phase's loss
weights), fp32 and bf16 alternating twice so a drift in the machine's load shows; prints the median per
step, the speed-up, the loader's steady ms per batch (in the training process: data.loader_workers 0; after
WARM_BATCHES untimed batches, as most of a pass's 200 batches are), whether
the CPU computes bf16 natively, and the load average. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARM_BATCHES = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "any_player_chords.yaml")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per precision and round")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (a worker uses cpus_per_worker)")
    args = parser.parse_args()

    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.training.curriculum import Curriculum
    from audiostyle.platform.training.precision import autocast_context, cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    cfg = load_experiment(args.experiment, [])
    phase = Curriculum.from_config(cfg).at(0)
    model = build_timbre_model(cfg, stats=None).train()
    batches_iter = iter(make_loader(cfg, "train", seed=0))
    start = time.perf_counter()
    for _ in range(WARM_BATCHES):  # apart: the shuffle buffers fill and the room bank is computed once a pass
        next(batches_iter)
    pass_start_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    batches = [dict(next(batches_iter)) for _ in range(args.steps)]
    loader_ms = (time.perf_counter() - start) / args.steps * 1000
    opt = torch.optim.AdamW(model.generator_parameters(), lr=cfg.optim.lr)

    def step_ms(where: str | None) -> float:
        times = []
        for batch in batches:
            batch = dict(batch)
            audio, labels = batch.pop("audio"), batch.pop("label")
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast_context(where):
                terms = model.generator_terms(audio, labels, active=phase.active_terms, **batch)
                loss = phase.weighted_loss(terms)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1000

    step_ms(None)  # warm-up: first calls allocate and pick kernels
    rounds = {"fp32": [], "bf16": []}
    for _ in range(2):
        rounds["fp32"].append(step_ms(None))
        rounds["bf16"].append(step_ms("cpu"))
    fp32, bf16 = min(rounds["fp32"]), min(rounds["bf16"])
    print(f"{args.experiment.name} on {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"native bf16: {cpu_has_native_bf16()}, load average {os.getloadavg()[0]:.2f}")
    print(f"loader            {loader_ms:7.0f} ms/batch (its first {WARM_BATCHES} batches of a pass: {pass_start_ms:.0f} ms, "
          f"once in {cfg.data.steps_per_epoch} steps)")
    for name, values in rounds.items():
        print(f"{name} step        {min(values):7.0f} ms (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"bf16 speed-up     {fp32 / bf16:7.2f}x on the step; {(fp32 + loader_ms) / (bf16 + loader_ms):.2f}x with the "
          "loader in the same process")


if __name__ == "__main__":
    main()
