"""GPU smoke check (needs a machine with 2 CUDA GPUs; not part of the test suite):

    python tests/benchmarks/gpu_smoke.py [--steps 20] [--data DIR]

Two GPU workers on the embedded Ray (NCCL between them, bf16 autocast, the STFT + CQT front end on the
GPU), a checkpoint and a resume from it, and the loader feeding the GPU: samples/s of the training step
beside samples/s of the loader alone (batches decoded, moved to the GPU, nothing computed). Prints the
numbers; asserts only that the run trained, resumed and wrote its checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loader_samples_per_s(cfg, batches: int) -> float:
    import torch

    from audiostyle.datasets.streaming import make_loader

    loader = make_loader(cfg, "train", seed=0)
    it = iter(loader)
    next(it)  # start-up (shard open, shuffle buffer) is not the steady rate
    started = time.perf_counter()
    seen = 0
    for _ in range(batches):
        batch = next(it)
        batch["audio"].to("cuda", non_blocking=True)
        seen += batch["audio"].shape[0]
    torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", help="demo data root (default: rendered into a temporary folder)")
    args = parser.parse_args()
    if torch.cuda.device_count() < 2:
        print(f"needs 2 CUDA GPUs, found {torch.cuda.device_count()}")
        return 1
    from audiostyle.platform.config.loader import load_experiment, with_settings
    from audiostyle.platform.data.prepare import prepare_demo
    from audiostyle.platform.training.driver import run_training
    from audiostyle.platform.training.ray_runtime import start_local_ray
    from audiostyle.platform.training.test_hooks import WorkerTestHooks

    tmp = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    data = Path(args.data) if args.data else tmp / "data"
    if not args.data:
        prepare_demo(data, instruments=("piano", "violin"), seconds_per_instrument=120, seed=0)
    half = args.steps // 2
    cfg = load_experiment(ROOT / "experiments" / "piano_violin.yaml",
                          [f"data.root={data}", f"train.max_steps={args.steps}", f"train.val_every={half}",
                           "optim.mixed_precision=true", "scaling.use_gpu=true", "+train.audio_examples=0"])
    print(f"GPUs: {[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}", flush=True)
    start_local_ray(os.cpu_count() or 2, num_gpus=torch.cuda.device_count())
    cfg = with_settings(cfg, {"scaling.num_workers": 2, "run.storage_path": str(tmp / "runs"), "run.name": "gpu"})
    first = run_training(cfg, test_hooks=WorkerTestHooks(stop_after_step=half))
    resumed = run_training(cfg, test_hooks=WorkerTestHooks(probe_dir=str(tmp / "probe")))
    probes = [json.loads(p.read_text()) for p in sorted((tmp / "probe").glob("rank*.json"))]
    assert first.metrics["step"] == half and resumed.metrics["step"] == args.steps
    assert [p["started_at"] for p in probes] == [half, half] and probes[0]["params"] == probes[1]["params"]
    step_rate = resumed.metrics["perf/samples_per_s"]
    loader_rate = loader_samples_per_s(cfg, 20)
    print(f"2 GPU workers (NCCL, bf16): {step_rate:.1f} samples/s in training steps, both ranks; "
          f"the loader alone: {loader_rate:.1f} samples/s per rank "
          f"({'the loader keeps up' if loader_rate >= step_rate / 2 else 'the loader is the bottleneck'})")
    print(f"checkpoint and resume: stopped at step {half}, resumed there, finished at {args.steps}; "
          f"val/recon {resumed.metrics.get('val/recon', float('nan')):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
