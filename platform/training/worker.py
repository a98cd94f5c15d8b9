"""The Ray Train V2 worker function: one process of a (possibly DDP) training run, from config to reports.

`train_loop_per_worker(loop_config)` rebuilds the typed config, builds the model through the component
system, wraps it for DDP with `ray.train.torch.prepare_model`, and runs the curriculum: generator updates
weighted by the current phase, discriminator updates in phases that train it, gradient accumulation and
clipping, bf16 autocast on GPU, scheduled sampling ramped over the run. Every `val_every` steps each rank
validates on exactly `val_batches` batches, metrics are averaged across ranks, rank 0 writes a checkpoint
and every rank calls `ray.train.report(metrics, checkpoint)`, which is a barrier.

Resume is exact on CPU: a checkpoint holds the step, optimizer and scheduler states and every rank's RNG
states, and the data position is a pure function of the step (the loader is set to the epoch and the
first batches already consumed are skipped), so a resumed run takes the same batches as one never stopped.

`loop_config`: {"config": to_dict(cfg), "tensorboard_dir": str | None, "overrides": str | None,
"test_hooks": {...}} where test hooks (used by tests only) are "stop_after_step" (return after that
report, as if interrupted), "crash_at_step" + "crash_marker" (rank 0 dies once) and "probe_dir" (each rank
writes its batch count and a parameter checksum at the end).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint

from audiostyle.platform.checkpoints.format import (
    TrainingCheckpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.config.schema import ExperimentConfig, to_dict
from audiostyle.platform.core.errors import CheckpointError
from audiostyle.platform.training.curriculum import Curriculum
from audiostyle.platform.training.lr_schedule import make_scheduler
from audiostyle.platform.training.progress_log import ProgressMeter, TrainingLogger, progress_line

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel


class TrainingStep(torch.nn.Module):
    """Routes the model's two training computations through forward(), the only call DDP synchronizes."""

    def __init__(self, model: TimbreTransferModel):
        super().__init__()
        self.model = model

    def forward(self, mode: str, audio: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> Any:
        if mode == "generator":
            return self.model.generator_terms(audio, labels, **kwargs)
        return self.model.discriminator_loss(audio, labels)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def isolated_rng():
    """Run data loading, validation and logging without touching the training RNG streams.

    A DataLoader draws its base seed from torch's global generator each time an iterator starts, so
    without this a resumed run (which starts its loader mid-epoch) would shift every later dropout mask
    and scheduled-sampling draw; the data pipeline has seeds of its own.
    """
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


def parameter_checksum(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class WorkerTrainer:
    """The state of one training worker: model, optimizers, schedulers, step, data position."""

    def __init__(self, cfg: ExperimentConfig, loop_config: dict[str, Any]):
        from audiostyle.components.timbre_transfer import build_timbre_model
        from audiostyle.stats.normalization_stats import load_stats

        self.cfg = cfg
        self.hooks = loop_config.get("test_hooks") or {}
        self.overrides = loop_config.get("overrides")
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.curriculum = Curriculum.from_config(cfg)
        self.accum = cfg.optim.grad_accum
        self.amp = cfg.optim.mixed_precision and self.device.type == "cuda"  # bf16 needs no loss scaler

        seed_everything(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        checkpoint = ray.train.get_checkpoint()
        # a resumed model gets its normalization statistics from the checkpoint's state_dict, so a run
        # never silently switches statistics because a stats file changed on disk in between
        self.model = build_timbre_model(cfg, stats=load_stats(cfg) if checkpoint is None else None)
        self.step = 0
        self.batches_seen = 0
        restored = self._restore_model(checkpoint)
        self.start_step = self.step

        ddp_kwargs = {"find_unused_parameters": True}  # phases leave loss terms (and their modules) unused
        self.step_module = ray.train.torch.prepare_model(TrainingStep(self.model),
                                                         parallel_strategy_kwargs=ddp_kwargs)
        betas = tuple(cfg.optim.betas)
        self.gen_opt = torch.optim.AdamW(list(self.model.generator_parameters()), lr=cfg.optim.lr, betas=betas,
                                         weight_decay=cfg.optim.weight_decay)
        self.disc_opt = torch.optim.AdamW(list(self.model.discriminator_parameters()), lr=cfg.optim.disc_lr,
                                          betas=betas, weight_decay=cfg.optim.weight_decay)
        # The discriminator only trains in some phases: its schedule counts its own updates, so its warmup
        # happens when it starts rather than being spent while it sits idle.
        d_steps = sum(min(e, cfg.train.max_steps) - s for s, e, p in
                      zip(self.curriculum.starts, self.curriculum.ends, self.curriculum.phases)
                      if p.discriminator and s < cfg.train.max_steps)
        self.gen_sched = make_scheduler(self.gen_opt, warmup_steps=cfg.optim.warmup_steps,
                                        max_steps=cfg.train.max_steps, schedule=cfg.optim.schedule)
        self.disc_sched = make_scheduler(self.disc_opt, warmup_steps=cfg.optim.warmup_steps,
                                         max_steps=max(1, d_steps // cfg.optim.disc_every),
                                         schedule=cfg.optim.schedule)
        self.disc_updates = 0
        seed_everything(cfg.seed + 7919 * self.rank)  # different dropout per rank, same on every rerun
        if restored is not None:
            self._restore_optim(restored)
        tb_dir = loop_config.get("tensorboard_dir")
        self.log = TrainingLogger(tb_dir, enabled=self.rank == 0, run_name=cfg.run_name,
                                  sample_rate=cfg.data.sample_rate, instruments=cfg.instrument_names)
        if self.rank == 0 and restored is None:
            self.log.text("curriculum", self.curriculum.describe().replace("\n", "  \n"))
            if self.overrides:
                self.log.text("overrides", self.overrides)

    # ------------------------------------------------------------------------------------------ resume
    def _restore_model(self, checkpoint: Checkpoint | None) -> TrainingCheckpoint | None:
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as d:
            ckpt = load_checkpoint(d)
        if ckpt.state.get("instruments") != self.cfg.instrument_names:
            raise CheckpointError(
                f"{ckpt.directory}: the checkpoint was trained on instruments {ckpt.state.get('instruments')}, "
                f"the config names {self.cfg.instrument_names}; use another run name (--name) to start afresh")
        self.model.load_state_dict(ckpt.model_state)
        self.step = ckpt.step
        return ckpt

    def _restore_optim(self, ckpt: TrainingCheckpoint) -> None:
        opt = ckpt.optim_state
        self.gen_opt.load_state_dict(opt["generator"])
        self.disc_opt.load_state_dict(opt["discriminator"])
        self.gen_sched.load_state_dict(opt["generator_scheduler"])
        self.disc_sched.load_state_dict(opt["discriminator_scheduler"])
        self.disc_updates = int(opt["disc_updates"])
        self.batches_seen = int(opt["batches_seen"])
        rng = opt["rng"]
        if len(rng) == self.world:
            restore_rng_state(rng[self.rank])
        else:  # another worker count: no state for this rank, so a fresh but still deterministic stream
            seed_everything(self.cfg.seed + 7919 * self.rank + self.step)

    def _gather_rng(self) -> list[dict[str, Any]]:
        mine = capture_rng_state()
        if self.world == 1:
            return [mine]
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, mine)
        return everyone

    # ------------------------------------------------------------------------------------------ data
    def _train_batches(self):
        """Batches from the current data position on: epoch e = loader pass e, already-seen batches skipped."""
        from audiostyle.datasets.streaming import make_loader

        loader = make_loader(self.cfg, "train", seed=self.cfg.seed, rank=self.rank, world_size=self.world)
        epoch, skip = divmod(self.batches_seen, self.cfg.data.steps_per_epoch)
        while True:
            loader.set_epoch(epoch)  # each pass is a pure function of (seed, epoch, rank)
            for i, batch in enumerate(loader):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0

    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["audio"].to(self.device, non_blocking=True), batch["label"].to(self.device, non_blocking=True)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------------ steps
    def train_step(self, batches) -> dict[str, float]:
        """One optimizer step of the generator (grad_accum micro-batches) and, if due, the discriminator."""
        cfg = self.cfg
        phase = self.curriculum.at(self.step)
        sampling_prob = cfg.train.scheduled_sampling * min(1.0, self.step / cfg.train.max_steps)
        ddp = isinstance(self.step_module, torch.nn.parallel.DistributedDataParallel)
        with isolated_rng():
            micro = [self._to_device(next(batches)) for _ in range(self.accum)]
        self.batches_seen += self.accum
        logged: dict[str, float] = defaultdict(float)

        self.gen_opt.zero_grad(set_to_none=True)
        for i, (audio, labels) in enumerate(micro):
            # gradients are all-reduced once per optimizer step, on the last micro-batch
            sync = contextlib.nullcontext() if (i == self.accum - 1 or not ddp) else self.step_module.no_sync()
            with sync:
                with self._autocast():
                    terms = self.step_module("generator", audio, labels, sampling_prob=sampling_prob,
                                             active=phase.active_terms)
                    loss = sum(phase.weights[t] * terms[t] for t in sorted(phase.active_terms))
                (loss / self.accum).backward()
            logged["train/loss"] += float(loss.detach()) / self.accum
            for key, value in terms.items():
                name = key if key.startswith("diag/") else f"train/{key}"
                logged[name] += float(value.detach()) / self.accum
        torch.nn.utils.clip_grad_norm_(self.gen_opt.param_groups[0]["params"], cfg.optim.grad_clip)
        self.gen_opt.step()
        self.gen_sched.step()

        if phase.train_discriminator and self.step % cfg.optim.disc_every == 0:
            # Discriminator steps start from clean gradients: its parameters are a separate optimizer's.
            self.disc_opt.zero_grad(set_to_none=True)
            for i, (audio, labels) in enumerate(micro):
                sync = contextlib.nullcontext() if (i == self.accum - 1 or not ddp) else self.step_module.no_sync()
                with sync:
                    with self._autocast():
                        d_loss = self.step_module("discriminator", audio, labels)
                    (d_loss / self.accum).backward()
                logged["train/discriminator"] += float(d_loss.detach()) / self.accum
            torch.nn.utils.clip_grad_norm_(self.disc_opt.param_groups[0]["params"], cfg.optim.grad_clip)
            self.disc_opt.step()
            self.disc_sched.step()
            self.disc_updates += 1
        self.step += 1
        return dict(logged)

    def _mean_across_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if self.world == 1 or not values:
            return values
        keys = sorted(values)
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, keys)
        if any(g != keys for g in gathered):
            raise RuntimeError(f"ranks logged different metric keys: {gathered}")
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.world for k, v in zip(keys, t.tolist())}

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
        """Mean validation metrics over exactly val_batches batches per rank, averaged across ranks."""
        from audiostyle.datasets.streaming import make_loader

        self.model.eval()
        sums: dict[str, float] = defaultdict(float)
        first = None
        count = 0
        loader = make_loader(self.cfg, "val", seed=self.cfg.seed, rank=self.rank, world_size=self.world)
        for batch in loader:
            audio, labels = self._to_device(batch)
            if first is None:
                first = (audio, labels)
            with self._autocast():
                metrics = self.model.validation_metrics(audio, labels)
            for k, v in metrics.items():
                sums[k] += float(v)
            count += 1
        self.model.train()
        means = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
        return self._mean_across_ranks(means), first

    def save(self, directory: str, metrics: dict[str, Any], rng: list[dict[str, Any]]) -> None:
        optim_state = {
            "generator": self.gen_opt.state_dict(), "discriminator": self.disc_opt.state_dict(),
            "generator_scheduler": self.gen_sched.state_dict(), "discriminator_scheduler": self.disc_sched.state_dict(),
            "step": self.step, "disc_updates": self.disc_updates, "batches_seen": self.batches_seen, "rng": rng,
        }
        state = {"step": self.step, "phase": metrics["phase"], "metrics": metrics,
                 "instruments": self.cfg.instrument_names, "run_name": self.cfg.run_name, "seed": self.cfg.seed,
                 "world_size": self.world, "overrides": self.overrides}
        mean, std = (s.numpy() for s in self.model.normalization_stats())
        save_checkpoint(directory, TrainingCheckpoint(self.model.state_dict(), optim_state, state,
                                                      to_dict(self.cfg), (mean, std)))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker entry point (see module docstring for `loop_config`)."""
    cfg = config_from_dict(loop_config["config"], file="train loop config")
    torch.set_num_threads(max(1, cfg.scaling.cpus_per_worker))
    w = WorkerTrainer(cfg, loop_config)
    tr = cfg.train
    hooks = w.hooks
    if w.step >= tr.max_steps:
        w.log.progress(f"[{cfg.run_name}] already at step {w.step} of {tr.max_steps}: nothing left to train")
        return
    batches = w._train_batches()
    meter = ProgressMeter()
    since_report: dict[str, float] = defaultdict(float)
    n_since = 0
    samples_per_step = cfg.data.batch_size * w.accum * w.world
    train_seconds = 0.0
    while w.step < tr.max_steps:
        started = time.perf_counter()
        logged = w.train_step(batches)
        train_seconds += time.perf_counter() - started
        meter.add(samples_per_step)
        for k, v in logged.items():
            since_report[k] += v
        n_since += 1
        phase = w.curriculum.at(w.step - 1)
        lr = w.gen_opt.param_groups[0]["lr"]
        if w.step % tr.log_every == 0:
            losses = {k: v for k, v in logged.items() if k.startswith("train/") and k != "train/loss"}
            w.log.progress(progress_line(cfg.run_name, w.step, tr.max_steps, phase.name, losses,
                                         logged["train/loss"], meter.rate(), lr))
            w.log.scalars(w.step, {**logged, "lr": lr, "phase_index": phase.index,
                                   **{f"weight/{k}": v for k, v in phase.weights.items()}})
        if hooks.get("crash_at_step") == w.step and w.rank == 0 and not Path(hooks["crash_marker"]).exists():
            Path(hooks["crash_marker"]).write_text(f"killed rank 0 at step {w.step}\n")
            # The controller collects reports when it polls the workers (every 2 s by default): die only
            # after it has registered the last checkpoint, as a crash minutes into a real run would.
            time.sleep(float(hooks.get("crash_delay_s", 5.0)))
            os._exit(1)  # a hard worker death, as from the OOM killer or a lost node
        if w.step % tr.val_every == 0 or w.step == tr.max_steps:
            train_means = w._mean_across_ranks({k: v / n_since for k, v in since_report.items()})
            n_steps = n_since
            since_report, n_since = defaultdict(float), 0
            with isolated_rng():
                val, example = w.validate()
            # throughput of the training steps alone (validation and checkpointing excluded), all ranks
            perf = {"perf/steps_per_s": n_steps / train_seconds,
                    "perf/samples_per_s": n_steps * samples_per_step / train_seconds}
            train_seconds = 0.0
            metrics = {"step": w.step, "epoch": w.batches_seen / cfg.data.steps_per_epoch, "phase": phase.name,
                       "phase_index": phase.index, "lr": lr, **train_means, **perf, **val}
            if w.rank == 0:
                w.log.scalars(w.step, val)
                if example is not None:
                    with isolated_rng():
                        w.log.examples(w.step, w.model, *example, count=cfg.train.audio_examples)
                w.log.progress(f"[{cfg.run_name}] validation at step {w.step} ({phase.name}): "
                               + " ".join(f"{k}={v:.4f}" for k, v in sorted(val.items())))
            rng = w._gather_rng()
            with tempfile.TemporaryDirectory(prefix="audiostyle-ckpt-") as d:
                if w.rank == 0:
                    w.save(d, metrics, rng)
                # every rank reports (it is a barrier); only rank 0's folder holds files
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d) if w.rank == 0 else None,
                                 checkpoint_dir_name=f"step_{w.step:08d}")
            if hooks.get("stop_after_step") == w.step:
                break
    if hooks.get("probe_dir"):
        probe = {"rank": w.rank, "step": w.step, "batches": w.batches_seen, "started_at": w.start_step,
                 "params": parameter_checksum(w.model)}
        Path(hooks["probe_dir"]).mkdir(parents=True, exist_ok=True)
        (Path(hooks["probe_dir"]) / f"rank{w.rank}.json").write_text(json.dumps(probe))
    w.log.close()
