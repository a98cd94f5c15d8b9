"""Learning-rate schedules driven by the step count alone: linear warmup, then cosine decay or constant.

A schedule that watches the loss (ReduceLROnPlateau) reads the jump in total loss at every curriculum
phase switch, where new terms switch on, as a regression and cuts the learning rate for no reason. A
function of the step is also exactly reproducible on resume: the scheduler's state is one integer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# Cosine decays to this fraction of the peak rather than 0: the adversarial phase comes last and still
# needs a learning rate that moves the encoders.
MIN_LR_RATIO = 0.1


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str = "cosine",
              min_ratio: float = MIN_LR_RATIO) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        # (step + 1) so the very first update already uses a small non-zero rate
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; use 'cosine' or 'constant'")
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_lr_lambda(*, warmup_steps: int, max_steps: int, schedule: str = "cosine") -> Callable[[int], float]:
    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule)

    return factor


def make_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, max_steps: int,
                   schedule: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step; its state_dict round-trips through checkpoints."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_lr_lambda(warmup_steps=warmup_steps, max_steps=max_steps, schedule=schedule))
