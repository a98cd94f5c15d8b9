"""The Ray Train V2 worker side: one rank of a (possibly DDP) training run, from config to reports.

Everything here runs inside a Ray Train worker process, one per rank. `train_loop_per_worker(loop_config)`
(the function the driver hands to TorchTrainer) rebuilds the typed config and runs a `WorkerLoop`: the
model built through the component system and wrapped for DDP with `ray.train.torch.prepare_model`,
generator updates weighted by the current curriculum phase, discriminator updates in phases that train
it, gradient accumulation and clipping, bf16 autocast on GPU (and on a CPU with native bf16 when asked:
precision.py), scheduled sampling ramped over the run.
Every `val_every` steps each rank validates on exactly `val_batches` batches, metrics are averaged
across ranks, rank 0 writes a checkpoint and every rank calls `ray.train.report(metrics, checkpoint)`,
which is a barrier.

Resume is exact on CPU: a checkpoint holds the step, optimizer and scheduler states and every rank's RNG
states, and the data position is a pure function of the step (the loader is set to the epoch and the
first batches already consumed are skipped), so a resumed run takes the same batches as one never stopped.

An elastic run restarts its ranks with another world size after a node is lost or returns; what depends
on the size follows worker_scaling.py (global batch, data streams, validation split, size history).

`loop_config`: {"config": to_dict(cfg), "tensorboard_dir": str | None, "overrides": str | None,
"test_hooks": WorkerTestHooks (tests only, see test_hooks.py)}.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from ray.train import Checkpoint

from audiostyle.platform.checkpoints.format import (
    TrainingCheckpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.config.typed_convert import to_dict
from audiostyle.platform.core.errors import CheckpointError
from audiostyle.platform.training.curriculum import Curriculum, PhaseState
from audiostyle.platform.training.lr_schedule import make_scheduler
from audiostyle.platform.training.precision import autocast_context, autocast_device
from audiostyle.platform.training.progress_log import ProgressMeter, TrainingLogger, progress_line
from audiostyle.platform.training.rank_collectives import gather_objects, mean_across_ranks, mean_of_sums
from audiostyle.platform.training.test_hooks import NO_HOOKS
from audiostyle.platform.training.unseen_validation import UnseenPairValidation
from audiostyle.platform.training.worker_scaling import DataPosition, WorldScale, validation_share

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel

# Rank r seeds its dropout and sampling streams with seed + RANK_SEED_STRIDE * r. A large prime keeps
# the streams of nearby seeds apart: with a stride of 1, seed 1 on rank 0 would replay seed 0 on
# rank 1, and sweeps and reruns do use consecutive seeds.
RANK_SEED_STRIDE = 7919


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
def isolated_rng() -> Iterator[None]:
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


@dataclass
class ReportWindow:
    """Training losses and time since the last report, for the next report's means and throughput."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    steps: int = 0
    seconds: float = 0.0

    def add(self, logged: dict[str, float], seconds: float) -> None:
        for key, value in logged.items():
            self.sums[key] += value
        self.steps += 1
        self.seconds += seconds

    def means(self) -> dict[str, float]:
        return {k: v / self.steps for k, v in self.sums.items()}


class WorkerLoop:
    """One training rank, inside a Ray Train worker: model, optimizers, schedulers, step, data position,
    and the loop that trains them (`run`)."""

    def __init__(self, cfg: ExperimentConfig, loop_config: dict[str, Any]):
        from audiostyle.components.timbre_transfer import build_timbre_model
        from audiostyle.stats.normalization_stats import load_stats

        self.cfg = cfg
        self.hooks = loop_config.get("test_hooks") or NO_HOOKS
        self.overrides = loop_config.get("overrides")
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.curriculum = Curriculum.from_config(cfg)
        self.unseen = UnseenPairValidation.from_config(cfg)  # data.val_unseen_players; read before training
        self.scale = WorldScale.derive(world=self.world, num_workers=cfg.scaling.num_workers,
                                       grad_accum=cfg.optim.grad_accum, batch_size=cfg.data.batch_size)
        self.accum = self.scale.grad_accum  # more micro-batches per step on a smaller elastic group
        self.position = DataPosition(0, 0, self.world)
        self.scale_history: list[dict[str, int]] = []
        self.amp = autocast_device(cfg.optim, self.device)  # 'cuda', 'cpu' or None (fp32)

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
        self.ddp = isinstance(self.step_module, torch.nn.parallel.DistributedDataParallel)
        self._make_optimizers()
        seed_everything(cfg.seed + RANK_SEED_STRIDE * self.rank)  # different dropout per rank, same on every rerun
        if restored is not None:
            self._restore_optim(restored)
        self.scale_history = self.scale.extend_history(self.scale_history, self.step)
        self.log = TrainingLogger(loop_config.get("tensorboard_dir"), enabled=self.rank == 0,
                                  run_name=cfg.run_name, sample_rate=cfg.data.sample_rate,
                                  instruments=cfg.instrument_names)
        if self.rank == 0 and restored is None:
            self.log.text("curriculum", self.curriculum.describe().replace("\n", "  \n"))
            if self.overrides:
                self.log.text("overrides", self.overrides)

    def _make_optimizers(self) -> None:
        cfg = self.cfg
        betas = tuple(cfg.optim.betas)
        self.gen_opt = torch.optim.AdamW(list(self.model.generator_parameters()), lr=cfg.optim.lr, betas=betas,
                                         weight_decay=cfg.optim.weight_decay)
        self.disc_opt = torch.optim.AdamW(list(self.model.discriminator_parameters()), lr=cfg.optim.disc_lr,
                                          betas=betas, weight_decay=cfg.optim.weight_decay)
        self.gen_sched = make_scheduler(self.gen_opt, warmup_steps=cfg.optim.warmup_steps,
                                        max_steps=cfg.train.max_steps, schedule=cfg.optim.schedule)
        # The discriminator only trains in some phases: its schedule counts its own updates, so its warmup
        # happens when it starts rather than being spent while it sits idle.
        self.disc_sched = make_scheduler(
            self.disc_opt, warmup_steps=cfg.optim.warmup_steps, schedule=cfg.optim.schedule,
            max_steps=max(1, self.curriculum.discriminator_steps() // cfg.optim.disc_every))
        self.disc_updates = 0

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
        self.position = DataPosition.from_state(opt, ckpt.state, self.cfg.data.steps_per_epoch).for_world(self.world)
        self.scale_history = list(opt.get("scale_history", []))
        rng = opt["rng"]
        if len(rng) == self.world:
            restore_rng_state(rng[self.rank])
        else:  # another worker count: no state for this rank, so a fresh but still deterministic stream
            seed_everything(self.cfg.seed + RANK_SEED_STRIDE * self.rank + self.step)

    # ------------------------------------------------------------------------------------------ data
    def train_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches from the current data position on: epoch e = loader pass e, already-seen batches skipped."""
        from audiostyle.datasets.streaming import make_loader

        loader = make_loader(self.cfg, "train", seed=self.cfg.seed, rank=self.rank, world_size=self.world)
        epoch, skip = self.position.epoch, self.position.offset
        while True:
            loader.set_epoch(epoch)  # each pass is a pure function of (seed, epoch, rank)
            for i, batch in enumerate(loader):
                if i >= skip:
                    yield batch
            epoch, skip = epoch + 1, 0

    def _to_device(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(audio, labels, pairs): `pairs` holds the batch's `pair_*` tensors (empty without data.pairs),
        passed to the model as they are named."""
        moved = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return moved.pop("audio"), moved.pop("label"), moved

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_context(self.amp)

    def _gradient_sync(self, micro_batch: int) -> contextlib.AbstractContextManager[Any]:
        """DDP all-reduces gradients once per optimizer step, on the last micro-batch: the others run
        under no_sync and only accumulate locally."""
        if not self.ddp or micro_batch == self.accum - 1:
            return contextlib.nullcontext()
        return self.step_module.no_sync()

    # ------------------------------------------------------------------------------------------ steps
    def train_step(self, batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step of the generator (grad_accum micro-batches) and, if due, the discriminator."""
        cfg = self.cfg
        phase = self.curriculum.at(self.step)
        sampling_prob = cfg.train.scheduled_sampling * min(1.0, self.step / cfg.train.max_steps)
        with isolated_rng():
            micro = [self._to_device(next(batches)) for _ in range(self.accum)]
        self.batches_seen += self.accum
        self.position = self.position.advance(self.accum, cfg.data.steps_per_epoch)
        logged: dict[str, float] = defaultdict(float)

        self.gen_opt.zero_grad(set_to_none=True)
        for i, (audio, labels, pairs) in enumerate(micro):
            with self._gradient_sync(i):
                with self._autocast():
                    terms = self.step_module("generator", audio, labels, sampling_prob=sampling_prob,
                                             active=phase.active_terms, **pairs)
                    loss = phase.weighted_loss(terms)
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
            for i, (audio, labels, _) in enumerate(micro):
                with self._gradient_sync(i):
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

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], tuple[torch.Tensor, torch.Tensor] | None]:
        """Mean validation metrics over the same val_batches batches whatever the world size: one stream
        (rank 0 of 1), batch i validated by rank i mod world, means over all of them."""
        from audiostyle.datasets.streaming import make_loader

        self.model.eval()
        sums: dict[str, float] = defaultdict(float)
        first = None
        count = 0
        loader = make_loader(self.cfg, "val", seed=self.cfg.seed)
        for index, batch in enumerate(loader):
            if not validation_share(index, self.rank, self.world):
                continue
            audio, labels, pairs = self._to_device(batch)
            if first is None:
                first = (audio, labels)
            with self._autocast():
                metrics = self.model.validation_metrics(audio, labels, **pairs)
            for k, v in metrics.items():
                sums[k] += float(v)
            count += 1
        val = {f"val/{k}": v for k, v in mean_of_sums(sums, count, self.world, self.device).items()}
        if self.unseen is not None:
            val.update(self.unseen.metrics(self.model, rank=self.rank, world=self.world, device=self.device,
                                           autocast=self._autocast))
        self.model.train()
        return val, first

    def save(self, directory: str, metrics: dict[str, Any], rng: list[dict[str, Any]]) -> None:
        optim_state = {
            "generator": self.gen_opt.state_dict(), "discriminator": self.disc_opt.state_dict(),
            "generator_scheduler": self.gen_sched.state_dict(), "discriminator_scheduler": self.disc_sched.state_dict(),
            "step": self.step, "disc_updates": self.disc_updates, "batches_seen": self.batches_seen, "rng": rng,
            "data_position": self.position.to_state(), "scale_history": self.scale_history,
        }
        state = {"step": self.step, "phase": metrics["phase"], "metrics": metrics,
                 "instruments": self.cfg.instrument_names, "run_name": self.cfg.run_name, "seed": self.cfg.seed,
                 "world_size": self.world, "overrides": self.overrides}
        mean, std = (s.numpy() for s in self.model.normalization_stats())
        save_checkpoint(directory, TrainingCheckpoint(self.model.state_dict(), optim_state, state,
                                                      to_dict(self.cfg), (mean, std)))

    # ------------------------------------------------------------------------------------------ the loop
    def run(self) -> None:
        """Train from the current step to train.max_steps, reporting every val_every steps."""
        tr = self.cfg.train
        if self.step >= tr.max_steps:
            self.log.progress(f"[{self.cfg.run_name}] already at step {self.step} of {tr.max_steps}: nothing left to train")
            return
        batches = self.train_batches()
        meter = ProgressMeter()
        window = ReportWindow()
        while self.step < tr.max_steps:
            started = time.perf_counter()
            logged = self.train_step(batches)
            window.add(logged, time.perf_counter() - started)
            meter.add(self.samples_per_step)
            phase = self.curriculum.at(self.step - 1)
            lr = self.gen_opt.param_groups[0]["lr"]
            if self.step % tr.log_every == 0:
                self._log_progress(logged, phase, lr, meter)
            self.hooks.after_step(self)
            if self.step % tr.val_every == 0 or self.step == tr.max_steps:
                self._validate_and_report(window, phase, lr)
                window = ReportWindow()
                if self.hooks.stops_after_report(self.step):
                    break
        self.hooks.at_end(self)
        self.log.close()

    @property
    def samples_per_step(self) -> int:
        """Samples one optimizer step consumes over all ranks."""
        return self.cfg.data.batch_size * self.accum * self.world

    def _log_progress(self, logged: dict[str, float], phase: PhaseState, lr: float, meter: ProgressMeter) -> None:
        losses = {k: v for k, v in logged.items() if k.startswith("train/") and k != "train/loss"}
        elastic = isinstance(self.cfg.scaling.num_workers, list)  # a range: say how many workers this step had
        self.log.progress(progress_line(self.cfg.run_name, self.step, self.cfg.train.max_steps, phase.name, losses,
                                        logged["train/loss"], meter.rate(), lr, workers=self.world if elastic else None))
        self.log.scalars(self.step, {**logged, "lr": lr, "phase_index": phase.index, **self.scale.metrics(),
                                     **{f"weight/{k}": v for k, v in phase.weights.items()}})

    def _validate_and_report(self, window: ReportWindow, phase: PhaseState, lr: float) -> None:
        """Validate, log (rank 0), checkpoint (rank 0) and report the metrics since the last report."""
        train_means = mean_across_ranks(window.means(), self.world, self.device)
        with isolated_rng():
            val, example = self.validate()
        # throughput of the training steps alone (validation and checkpointing excluded), all ranks
        perf = {"perf/steps_per_s": window.steps / window.seconds,
                "perf/samples_per_s": window.steps * self.samples_per_step / window.seconds}
        metrics = {"step": self.step, "epoch": self.batches_seen / self.cfg.data.steps_per_epoch,
                   "phase": phase.name, "phase_index": phase.index, "lr": lr, **train_means, **perf, **val,
                   **self.scale.metrics()}
        if self.rank == 0:
            self.log.scalars(self.step, val)
            if example is not None:
                with isolated_rng():
                    self.log.examples(self.step, self.model, *example, count=self.cfg.train.audio_examples)
            self.log.progress(f"[{self.cfg.run_name}] validation at step {self.step} ({phase.name}): "
                              + " ".join(f"{k}={v:.4f}" for k, v in sorted(val.items())))
        rng = gather_objects(capture_rng_state(), self.world)
        with tempfile.TemporaryDirectory(prefix="audiostyle-ckpt-") as d:
            if self.rank == 0:
                self.save(d, metrics, rng)
            # every rank reports (it is a barrier); only rank 0's folder holds files
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(d) if self.rank == 0 else None,
                             checkpoint_dir_name=f"step_{self.step:08d}")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker entry point (see the module docstring for `loop_config`)."""
    cfg = config_from_dict(loop_config["config"], file="train loop config")
    torch.set_num_threads(max(1, cfg.scaling.cpus_per_worker))
    WorkerLoop(cfg, loop_config).run()
