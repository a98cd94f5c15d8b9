"""Worker side of elastic training: what each rank derives from the world size it was started with, and
what the checkpoint records of it, so a group that shrank or grew continues the same run.

Runs inside every Ray Train worker (worker.py calls it). An elastic run (`scaling.num_workers: [min, max]`)
restarts its ranks from the latest checkpoint whenever the group changes size; the restarted ranks find
a different world size than the one that wrote the checkpoint. The rules:

- **The global batch is kept** (samples per optimizer step = batch_size x grad_accum x max workers): a
  smaller group accumulates more micro-batches per step (`micro_batches_per_step`), each rank keeping its
  per-worker batch and so its memory. One step then means the same amount of data whatever the group
  size, so everything counted in steps stays valid: max_steps, val_every, the curriculum's phase
  boundaries, and the LR schedule's position (a step count restored from the checkpoint, never
  rescaled). When max is not a multiple of the group size the accumulation is rounded up and the
  global batch is at most one micro-batch per rank larger; `scale/global_batch` reports the real one.
- **Each rank's data stream**: a stream is a pure function of (seed, epoch, rank, world size). At the
  same size a resumed rank continues its stream exactly (epoch and batches into it); at another size the
  ranks start the next epoch from its beginning, so no rank replays data that another consumed under
  the old partition (`DataPosition.for_world`).
- **Validation** is the same set of batches whatever the size: one stream (rank 0 of 1), batch i
  validated by rank i mod world, sums and counts reduced over ranks (`validation_share`).
- **Metrics**: every report carries `scale/workers`, `scale/grad_accum` and `scale/global_batch`; the
  checkpoint keeps the history of sizes (`scale_history`: the step each size started at).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from audiostyle.platform.config.field_domains import worker_range


def micro_batches_per_step(grad_accum: int, max_workers: int, world: int) -> int:
    """Micro-batches each rank accumulates per optimizer step, so that the global batch of `max_workers`
    ranks accumulating `grad_accum` each is kept on `world` ranks."""
    return max(1, math.ceil(grad_accum * max_workers / world))


def validation_share(batch_index: int, rank: int, world: int) -> bool:
    """Whether this rank validates batch `batch_index` of the shared validation stream."""
    return batch_index % world == rank


@dataclass(frozen=True)
class DataPosition:
    """Where a rank's training stream stands: pass `epoch` of the loader, `offset` batches into it, for
    the partition of `world` ranks. All ranks of a group are at the same position (they step together)."""

    epoch: int
    offset: int
    world: int

    def advance(self, batches: int, batches_per_epoch: int) -> DataPosition:
        epoch, offset = divmod(self.offset + batches, batches_per_epoch)
        return DataPosition(self.epoch + epoch, offset, self.world)

    def for_world(self, world: int) -> DataPosition:
        """The position a rank of a `world`-rank group continues from: unchanged at the same size, else
        the start of the next epoch (a fresh draw of shards and crops under the new partition)."""
        if world == self.world:
            return self
        return DataPosition(self.epoch + (1 if self.offset else 0), 0, world)

    def to_state(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_state(cls, optim_state: dict[str, Any], state: dict[str, Any], batches_per_epoch: int) -> DataPosition:
        """The position a checkpoint recorded; checkpoints written before elastic runs kept only the
        batch count of a fixed-size group."""
        if "data_position" in optim_state:
            p = optim_state["data_position"]
            return cls(int(p["epoch"]), int(p["offset"]), int(p["world"]))
        epoch, offset = divmod(int(optim_state.get("batches_seen", 0)), batches_per_epoch)
        return cls(epoch, offset, int(state.get("world_size", 1)))


@dataclass(frozen=True)
class WorldScale:
    """What one rank derived from the group size: micro-batches per step and the global batch."""

    world: int
    max_workers: int
    grad_accum: int  # micro-batches per rank per optimizer step, at this size
    batch_size: int  # per micro-batch, per rank

    @classmethod
    def derive(cls, *, world: int, num_workers: int | list[int], grad_accum: int, batch_size: int) -> WorldScale:
        """The scale of a `world`-rank group of a run configured with `num_workers` (N or [min, max])."""
        high = max(worker_range(num_workers)[1], world)
        return cls(world, high, micro_batches_per_step(grad_accum, high, world), batch_size)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.grad_accum * self.world

    def metrics(self) -> dict[str, int]:
        """Reported with every checkpoint and logged with every progress line."""
        return {"scale/workers": self.world, "scale/grad_accum": self.grad_accum,
                "scale/global_batch": self.global_batch}

    def extend_history(self, history: list[dict[str, int]], step: int) -> list[dict[str, int]]:
        """The checkpoint's record of group sizes with this group's entry added if the size changed."""
        entry = {"from_step": step, "workers": self.world, "grad_accum": self.grad_accum}
        if history and history[-1]["workers"] == self.world and history[-1]["grad_accum"] == self.grad_accum:
            return history
        return [*history, entry]
