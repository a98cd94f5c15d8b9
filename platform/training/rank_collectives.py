"""Reductions across the ranks of one training group (worker side): every rank calls them together.

Each function is a collective when world > 1, so all ranks must reach it the same number of times, in the
same order, as with ray.train.report; with one rank they return their input unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def gather_objects(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if world == 1:
        return [obj]
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, obj)
    return everyone


def mean_across_ranks(values: dict[str, float], world: int, device: torch.device) -> dict[str, float]:
    """The mean over ranks of per-rank values; every rank must have logged the same keys."""
    if world == 1 or not values:
        return values
    keys = sorted(values)
    gathered = gather_objects(keys, world)
    if any(g != keys for g in gathered):
        raise RuntimeError(f"ranks logged different metric keys: {gathered}")
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist())}


def mean_of_sums(sums: dict[str, float], count: int, world: int, device: torch.device) -> dict[str, float]:
    """Means over every rank's items: sums and item counts all-reduced, the keys of all ranks united
    (a rank of a large group may have had no item to sum, e.g. no validation batch)."""
    keys = sorted(sums)
    values = [sums[k] for k in keys] + [float(count)]
    if world > 1:
        keys = sorted(set().union(*gather_objects(keys, world)))
        t = torch.tensor([sums.get(k, 0.0) for k in keys] + [float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        values = t.tolist()
    return {k: v / max(values[-1], 1.0) for k, v in zip(keys, values[:-1])}
