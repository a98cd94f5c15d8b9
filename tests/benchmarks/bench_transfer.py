"""Transfer speed: real-time factor of `Transferer.transfer_array` on a 60 s file, cached vs uncached decoding.

The model has the default experiment's size (experiments/piano_violin.yaml) with random weights: speed
does not depend on what the weights learned. The baseline, measured in the same run, is the research
design's decoding without a key/value cache (use_cache=False), which recomputes the whole prefix at
every frame. Run: `python tests/benchmarks/bench_transfer.py [--seconds 60] [--device cpu] [--experiment PATH]`.
Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--experiment", default=str(REPO / "experiments" / "piano_violin.yaml"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.inference.transfer import Transferer

    cfg = load_experiment(args.experiment)
    torch.manual_seed(0)
    model = build_timbre_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    sr = cfg.data.sample_rate
    t = np.arange(int(args.seconds * sr)) / sr
    # a slow arpeggio: content changes throughout, as in music
    f0 = 220.0 * 2 ** (np.floor(t * 2) % 12 / 12)
    audio = (0.3 * np.sin(2 * np.pi * np.cumsum(f0) / sr)).astype(np.float32)
    print(f"{Path(args.experiment).name}: {params / 1e6:.1f} M parameters, {args.seconds:.0f} s of audio at {sr} Hz, "
          f"device {args.device}, {torch.get_num_threads()} CPU threads, chunks of {cfg.data.segment_seconds} s")
    for use_cache, label in ((True, "cached decoder (ours)"), (False, "uncached decoder (research baseline)")):
        tr = Transferer.from_model(model, cfg, device=args.device, use_cache=use_cache)
        tr.transfer_array(audio[: tr.chunk], sr, to=cfg.instrument_names[1])  # warm-up: allocations, kernels
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        tr.transfer_array(audio, sr, to=cfg.instrument_names[1])
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        print(f"  {label:<38} {elapsed:8.1f} s   real-time factor {elapsed / args.seconds:.3f}")


if __name__ == "__main__":
    main()
