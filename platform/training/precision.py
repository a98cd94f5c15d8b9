"""Which bf16 autocast a training worker runs under (worker side): on a GPU with `optim.mixed_precision`, on a
CPU with `optim.cpu_mixed_precision` where the CPU computes bf16 itself.

A CPU with AVX512-BF16 or AMX (recent Xeons) runs the recipe's training step in bf16 about 1.6x faster than in
fp32 (tests/benchmarks/bench_precision.py); one without them emulates bf16 and is slower than fp32, so there
the worker stays in fp32 and says so once. Front ends compute their spectra in fp32 either way (they switch
autocast off), and bf16 needs no loss scaler: its exponent range is fp32's.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from audiostyle.platform.config.schema import OptimConfig
from audiostyle.platform.training.private_apis import cpu_has_native_bf16


def autocast_device(optim: OptimConfig, device: torch.device) -> str | None:
    """'cuda' or 'cpu' where this worker trains under bf16 autocast, None for fp32."""
    if device.type == "cuda":
        return "cuda" if optim.mixed_precision else None
    if device.type == "cpu" and optim.cpu_mixed_precision:
        if cpu_has_native_bf16():
            # said once per worker: a recipe asks for it, so a run's numbers depend on the CPU it landed on
            print("optim.cpu_mixed_precision: training under bf16 autocast (this CPU computes bf16 natively)", flush=True)
            return "cpu"
        print("optim.cpu_mixed_precision: this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 is slower "
              "than fp32; training in fp32", flush=True)
    return None


def autocast_context(where: str | None) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on `where` ('cuda' or 'cpu'), or nothing for None."""
    return torch.autocast(where, dtype=torch.bfloat16) if where else contextlib.nullcontext()
