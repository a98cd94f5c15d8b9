"""Benchmark of the model system: training-step time and peak memory, and transfer real-time factor.

    python tests/benchmarks/bench_model.py                      # default config, CPU (and CUDA if present)
    python tests/benchmarks/bench_model.py --device cuda --steps 10
    python tests/benchmarks/bench_model.py --config experiments/quickstart.yaml --skip-uncached

Every number is printed beside a baseline measured in the same run:
- training step (generator terms of the last curriculum phase, forward+backward, plus a discriminator
  step): baseline = pure teacher forcing (one decoder pass), against two-pass scheduled sampling (what
  training uses) and the parallel decoder. Each variant runs in its own process on CPU, so its peak RSS
  (ru_maxrss) is its own; on CUDA the peak is torch.cuda.max_memory_allocated.
- transfer of a 10 s clip (front end, encoders, autoregressive generation, inverse STFT): baseline =
  generation without the key/value cache (every step re-runs the whole prefix), against the cache.
Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from audiostyle.components.timbre_transfer import ROLES, build_timbre_model
from audiostyle.platform.config.loader import load_experiment

REPO = Path(__file__).resolve().parents[2]
VARIANTS = {  # name -> (extra config overrides, scheduled-sampling probability)
    "teacher forcing (baseline)": ((), 0.0),
    "scheduled sampling p=0.25": ((), 0.25),
    "parallel decoder": (("model.decoder.component=parallel_decoder",), 0.0),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def test_audio(batch: int, seconds: float, sample_rate: int, seed: int = 0) -> torch.Tensor:
    """Noise bursts under a decaying envelope: cheap, non-stationary, and the same in every process."""
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sample_rate)
    env = torch.exp(-3 * (torch.arange(n) % (sample_rate // 2)) / sample_rate)
    return 0.1 * torch.randn(batch, n, generator=g) * env


def build(config: str, overrides: tuple[str, ...], device: torch.device):
    cfg = load_experiment(config, list(overrides))
    return cfg, build_timbre_model(cfg).to(device)


def measure_step(config: str, variant: str, device_name: str, steps: int) -> dict:
    """One variant's training step time (median) and peak memory, in this process."""
    device = torch.device(device_name)
    overrides, sampling_prob = VARIANTS[variant]
    cfg, model = build(config, overrides, device)
    model.train()
    labels = torch.arange(cfg.data.batch_size, device=device) % len(cfg.instruments)
    audio = test_audio(cfg.data.batch_size, cfg.data.segment_seconds, cfg.data.sample_rate).to(device)
    params = sum(p.numel() for p in model.parameters())
    times, before = [], rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    for i in range(steps + 1):  # the first step warms up allocators and kernels and is not timed
        sync(device)
        t0 = time.perf_counter()
        terms = model.generator_terms(audio, labels, sampling_prob=sampling_prob, active=set(ROLES))
        sum(terms[r] for r in ROLES).backward()
        model.discriminator_loss(audio, labels).backward()
        model.zero_grad(set_to_none=True)
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb()
    return {"variant": variant, "step_s": statistics.median(times), "peak_mb": peak, "before_mb": before,
            "params_m": params / 1e6, "batch": cfg.data.batch_size, "seconds": cfg.data.segment_seconds}


def measure_transfer(config: str, device_name: str, seconds: float, uncached: bool) -> list[tuple[str, float]]:
    device = torch.device(device_name)
    cfg, model = build(config, (), device)
    model.eval()
    audio = test_audio(1, seconds, cfg.data.sample_rate).to(device)
    style = model.style_of(audio)
    model.transfer(test_audio(1, 0.5, cfg.data.sample_rate).to(device), style)  # warm-up
    rows = []
    for name, use_cache in (("no KV cache (baseline)", False), ("KV cache", True)):
        if not use_cache and not uncached:
            continue
        sync(device)
        t0 = time.perf_counter()
        model.transfer(audio, style, use_cache=use_cache)
        sync(device)
        rows.append((name, (time.perf_counter() - t0) / seconds))
    return rows


def run_isolated(args: argparse.Namespace, variant: str, device: str) -> dict:
    """Run one variant in a fresh process, so each peak RSS belongs to that variant alone."""
    cmd = [sys.executable, __file__, "--config", args.config, "--steps", str(args.steps), "--worker", variant,
           "--device", device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "experiments" / "piano_violin.yaml"))
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (CPU, plus CUDA when present)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per variant (after 1 warm-up)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length for the transfer benchmark")
    parser.add_argument("--skip-uncached", action="store_true", help="skip the slow no-cache baseline")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_step(args.config, args.worker, args.device, args.steps)))
        return

    devices = ["cpu", "cuda"] if args.device == "auto" and torch.cuda.is_available() else (
        ["cpu"] if args.device == "auto" else [args.device])
    print(f"config {args.config}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (CPU timings need an idle machine)")
    for device in devices:
        print(f"\n== training step on {device} (forward+backward, all loss terms + discriminator) ==")
        base = None
        for variant in VARIANTS:
            r = run_isolated(args, variant, device)
            base = base or r
            mem = "peak RSS" if device == "cpu" else "peak allocated"
            print(f"{variant:30s} {r['step_s']:7.3f} s/step ({r['step_s'] / base['step_s']:4.2f}x)   "
                  f"{mem} {r['peak_mb']:8.0f} MB (+{r['peak_mb'] - r['before_mb']:.0f} over the built model)   "
                  f"{r['params_m']:.1f}M params, batch {r['batch']} x {r['seconds']} s")
        print(f"\n== transfer of a {args.seconds:g} s clip on {device} (real-time factor: lower is faster) ==")
        rows = measure_transfer(args.config, device, args.seconds, not args.skip_uncached)
        base_rtf = rows[0][1]
        for name, rtf in rows:
            print(f"{name:30s} RTF {rtf:7.3f}  ({rtf * args.seconds:6.1f} s wall, {base_rtf / rtf:5.1f}x vs first row)")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
