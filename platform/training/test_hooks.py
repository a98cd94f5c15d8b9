"""Test-only behaviour of the worker loop: stop early, crash once, hold, log steps, write a probe.
Production runs carry none.

Tests install a `WorkerTestHooks` through `run_training(test_hooks=...)`; it travels to every rank in the
loop config, and the worker loop calls it at three points (after each training step, after each
report, at the end). Without one the loop gets `NO_HOOKS`, whose calls do nothing, so the loop itself
holds no test code.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from audiostyle.platform.training.worker import WorkerLoop


def parameter_checksum(model: torch.nn.Module) -> str:
    """sha256 over every parameter's name and exact bytes: equal on two ranks means identical weights."""
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class WorkerTestHooks:
    """What a test asks of each worker rank."""

    stop_after_step: int | None = None  # return after that step's report, as an interrupted run would
    crash_at_step: int | None = None  # rank `crash_rank` dies once at that step (a hard exit, like the OOM killer)
    crash_rank: int = 0
    crash_marker: str | None = None  # file that records the crash, so the restarted rank does not crash again
    # The controller collects reports when it polls the workers (every 2 s by default): die only after it
    # has registered the last checkpoint, as a crash minutes into a real run would.
    crash_delay_s: float = 5.0
    probe_dir: str | None = None  # each rank writes rank<r>.json: step, batches, start step, parameter checksum
    # rank 0 appends one JSON line per step: step, workers, micro-batches, time, pid (elastic tests watch it)
    steps_file: str | None = None
    # every rank waits hold_s after the reports of these steps, as a longer run would still be training;
    # a group restarted from that checkpoint (a lost node, a resize) continues past it without waiting
    hold_after_steps: tuple[int, ...] = ()
    hold_s: float = 0.0

    def __post_init__(self) -> None:
        if self.crash_at_step is not None and not self.crash_marker:
            raise ValueError("crash_at_step needs a crash_marker file, or every restart would crash again")

    def after_step(self, loop: WorkerLoop) -> None:
        """Log the step (rank 0); crash rank `crash_rank` at `crash_at_step`, once."""
        if self.steps_file and loop.rank == 0:
            entry = {"step": loop.step, "workers": loop.world, "grad_accum": loop.accum, "t": time.time(),
                     "pid": os.getpid()}
            with open(self.steps_file, "a") as fh:
                fh.write(json.dumps(entry) + "\n")
        if (self.crash_at_step != loop.step or loop.rank != self.crash_rank
                or Path(str(self.crash_marker)).exists()):
            return
        Path(str(self.crash_marker)).write_text(f"killed rank {loop.rank} at step {loop.step}\n")
        time.sleep(self.crash_delay_s)
        os._exit(1)  # a hard worker death, as from the OOM killer or a lost node

    def stops_after_report(self, step: int) -> bool:
        if step in self.hold_after_steps:
            time.sleep(self.hold_s)
        return self.stop_after_step == step

    def at_end(self, loop: WorkerLoop) -> None:
        """Write this rank's probe: what it trained and a checksum of the weights it ended with."""
        if not self.probe_dir:
            return
        import inspect

        import ray

        probe = {"rank": loop.rank, "step": loop.step, "batches": loop.batches_seen, "started_at": loop.start_step,
                 "params": parameter_checksum(loop.model), "world": loop.world,
                 "node_id": ray.get_runtime_context().get_node_id(), "worker_module": inspect.getfile(type(loop))}
        Path(self.probe_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.probe_dir) / f"rank{loop.rank}.json").write_text(json.dumps(probe))


NO_HOOKS = WorkerTestHooks()
