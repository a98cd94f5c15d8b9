"""The typed experiment config: its sections as dataclasses with defaults, and the rules between fields.

`parse_experiment(resolved)` turns the composed, interpolated YAML mapping into an `ExperimentConfig`
through the strict converter of config/typed_convert.py: unknown keys are rejected with the closest valid
key, values are type-checked, and every error carries the dotted field path. Cross-field rules (unique
instruments, ordered curriculum phases, loss terms that exist) live in each section's `check` method, next
to the fields they relate; the values each numeric field may take are in the section's `DOMAINS` table
(config/field_domains.py), checked first.
Every rule here needs only the config, so `audiostyle validate` applies all of them without data or Ray.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from audiostyle.platform.config.cross_checks import check_across_sections, check_objectives
from audiostyle.platform.config.field_domains import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    UNIT_INTERVAL,
    Domain,
    Items,
    Range,
)
from audiostyle.platform.config.typed_convert import convert
from audiostyle.platform.core.errors import ConfigError, did_you_mean
from audiostyle.platform.core.modes import Mode

ComponentSpec = dict[str, Any]  # {component: name, **kwargs}; checked against the registry, not here

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def check_instrument_name(name: str, path: str) -> None:
    """The one rule for an instrument's name (the experiment's list and `data add` both apply it): it
    becomes a folder name and a YAML key, so lower-case letters, digits and '_', starting with a letter."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"instrument name {name!r} must be lower-case letters, digits and '_'", path=path)


def parse_direction(text: str) -> tuple[str, str] | None:
    """'source->target' as its two names; None when the text is not one direction between two names."""
    source, arrow, target = (part.strip() for part in text.partition("->"))
    if not (arrow and source and target) or "->" in target or source == target:
        return None
    return source, target


@dataclass
class InstrumentConfig:
    """One instrument class: its name, where its shards live, and its share of every batch."""

    name: str
    data: str  # folder (or URL prefix) holding manifest.json and {train,val,test}-NNNNNN.tar
    weight: float = 1.0

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {"weight": POSITIVE}

    def check(self, path: str) -> None:
        check_instrument_name(self.name, f"{path}.name")


@dataclass
class DataConfig:
    root: str = "data/demo"  # referenced as ${data.root} by instrument paths, so one override moves them all
    sample_rate: int = 22050  # the research rate; every shard is resampled to it at `data add`
    segment_seconds: float = 4.0  # random crop fed to the model; 4 s holds a few notes of a slow melody
    batch_size: int = 8  # per worker, split across instruments by weight (at least one of each)
    steps_per_epoch: int = 50  # every rank sees exactly this many batches per epoch (resampled shards)
    val_batches: int = 4  # fixed count on every rank, or DDP hangs on uneven validation
    loader_workers: int = 0  # DataLoader processes per training worker
    shuffle_buffer: int = 128
    stats: str = "pooled"  # normalization statistics: 'pooled' (from the instruments' stats) or an .npz path
    # A paired dataset (the same passages on several instruments; `data demo` writes <root>/pairs): each
    # batch then also holds `pair_batch_size` aligned (source, target) passages for cross_reconstruction.
    # A list draws from several (the demo's, and `data transcribe-pairs` for an instrument from recordings).
    pairs: str | list[str] | None = None
    # How much of the training pairs each paired dataset of that list gives, in its order (normalised), e.g.
    # [3, 1]: a quarter from the second. Omitted: in proportion to their passages, so an instrument added from
    # recordings takes its share from the pairs of the instruments trained before it. Validation keeps the
    # proportion, so its metrics compare across runs with and without shares.
    pair_shares: list[float] | None = None
    # Directions "source->target" cross_reconstruction never draws, in training or validation (e.g.
    # ["clarinet->piano"]). A transcribed instrument's pairs hold the piano and the violin played from the
    # transcription: as targets of the recording they cost unseen inputs of piano <-> violin 6-11 % MR-STFT, and
    # the transfer from the instrument measures better without them (README, "Add your own instrument").
    pair_skip: list[str] = field(default_factory=list)
    pair_batch_size: int = 8
    pair_augment: float = 0.0  # chance of each recording condition (room, EQ, hiss, gain) on a pair's source
    # chance of a soft attack on a pair's source: every rise spread over 50-400 ms per frequency (a bow that
    # starts a note without the click the training sets' violins start it with)
    pair_soft_attack: float = 0.0
    # chance of bow noise on a pair's source: noise shaped like the spectrum, 8-24 dB under it, filling the
    # valleys between partials as a bow's noise does
    pair_bow_noise: float = 0.0
    # Held-out sound sets whose renderings of the val pieces also feed validation (val/unseen_cross_recon,
    # training/unseen_validation.py): transfer from players no trial trained on, never on test pieces.
    val_unseen_players: list[str] = field(default_factory=list)

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {
        "sample_rate": AT_LEAST_ONE, "segment_seconds": POSITIVE, "batch_size": AT_LEAST_ONE,
        "steps_per_epoch": AT_LEAST_ONE, "val_batches": AT_LEAST_ONE, "loader_workers": NON_NEGATIVE,
        "shuffle_buffer": AT_LEAST_ONE, "pair_batch_size": AT_LEAST_ONE, "pair_augment": UNIT_INTERVAL,
        "pair_soft_attack": UNIT_INTERVAL, "pair_bow_noise": UNIT_INTERVAL,
        "pair_shares": Range(low=0, low_open=True, why="a dataset that should give nothing is left out of data.pairs"),
    }

    def check(self, path: str) -> None:
        for i, direction in enumerate(self.pair_skip):
            if parse_direction(direction) is None:
                raise ConfigError(f"{direction!r} is not a direction: write 'source->target' with two instruments",
                                  path=f"{path}.pair_skip.{i}", hint="e.g. pair_skip: [clarinet->piano]")
        if self.pair_shares is None:
            return
        count = len(self.pairs) if isinstance(self.pairs, list) else 0
        if len(self.pair_shares) != count:
            raise ConfigError(f"{len(self.pair_shares)} shares for {count} paired datasets: pair_shares gives one "
                              "share per entry of the data.pairs list, in its order", path=f"{path}.pair_shares",
                              hint="list the paired datasets under data.pairs, or drop pair_shares")

    @property
    def skipped_directions(self) -> list[tuple[str, str]]:
        """data.pair_skip as (source, target) names, in its order (check() has refused any other text)."""
        return [parse_direction(direction) for direction in self.pair_skip]


@dataclass
class ModelConfig:
    """The pluggable parts, each `{component: NAME, **arguments}` (see `audiostyle components`)."""

    frontend: ComponentSpec
    style_encoder: ComponentSpec
    content_encoder: ComponentSpec
    decoder: ComponentSpec
    discriminator: ComponentSpec
    # Take a player's vibrato out of the input before transferring it (datasets/steady_pitch.py): a decoder
    # that filters the input's partials otherwise hands the swing to an instrument that has none.
    steady_pitch: bool = False

    # (attribute, registry kind) pairs: the single place that says which slot takes which kind
    SLOTS: typing.ClassVar[tuple[tuple[str, str], ...]] = (
        ("frontend", "frontend"),
        ("style_encoder", "encoder"),
        ("content_encoder", "encoder"),
        ("decoder", "decoder"),
        ("discriminator", "discriminator"),
    )


@dataclass
class PhaseConfig:
    """A curriculum phase: runs until `until` (a fraction of max_steps if <= 1, else a step count)."""

    name: str
    until: float
    weights: dict[str, float] = field(default_factory=dict)  # loss term -> weight; absent terms are 0
    discriminator: bool = False  # whether the discriminator is trained in this phase
    ramp: float = 0.0  # fraction of the phase over which weights move linearly from the previous phase's

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {
        "until": Range(low=0, low_open=True, why="<= 1: a fraction of train.max_steps; > 1: a step count"),
        "weights": Range(low=0, why="a loss weight; 0 switches the term off in this phase"),
        "ramp": UNIT_INTERVAL,
    }


def require_phases(phases: list[PhaseConfig], path: str = "curriculum") -> None:
    """A curriculum needs a phase: with none, no step would know its loss weights."""
    if not phases:
        raise ConfigError("at least one phase is required", path=f"{path}.phases")


@dataclass
class CurriculumConfig:
    phases: list[PhaseConfig]

    def check(self, path: str) -> None:
        require_phases(self.phases, path)
        names = [p.name for p in self.phases]
        for i, phase in enumerate(self.phases):
            if names.index(phase.name) != i:
                raise ConfigError(f"duplicate phase name {phase.name!r}", path=f"{path}.phases.{i}.name")
            if i and phase.until <= self.phases[i - 1].until and (phase.until > 1) == (self.phases[i - 1].until > 1):
                raise ConfigError(
                    f"phase boundaries must increase: {self.phases[i - 1].until} then {phase.until}",
                    path=f"{path}.phases.{i}.until",
                )


@dataclass
class OptimConfig:
    lr: float = 3.0e-4
    disc_lr: float = 1.0e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 1.0e-4
    grad_clip: float = 1.0
    warmup_steps: int = 50
    # Cosine decay over the whole run, stepped by step count: unlike ReduceLROnPlateau, it is not
    # fooled by the loss jumping when a new curriculum phase switches on more terms.
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_accum: int = 1
    disc_every: int = 1  # one discriminator update every N generator updates, in phases that train it
    mixed_precision: bool = True  # bf16 autocast on GPU; ignored on CPU
    # bf16 autocast on a CPU that computes bf16 natively (AVX512-BF16, AMX); fp32 on other CPUs. Off by default:
    # a run's numbers would otherwise depend on which CPU it landed on.
    cpu_mixed_precision: bool = False

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {
        "lr": POSITIVE, "disc_lr": POSITIVE,
        "betas": Items(2, Range(low=0, high=1, high_open=True), why="Adam's (beta1, beta2), each in [0, 1)"),
        "weight_decay": NON_NEGATIVE,
        "grad_clip": Range(low=0, low_open=True, finite=False, why="the largest gradient norm; .inf: no clipping"),
        "warmup_steps": NON_NEGATIVE, "grad_accum": AT_LEAST_ONE, "disc_every": AT_LEAST_ONE,
    }


@dataclass
class TrainConfig:
    max_steps: int = 1000
    val_every: int = 100
    log_every: int = 10
    keep_top_k: int = 2
    checkpoint_metric: str = "val/recon"
    checkpoint_mode: Mode = "min"
    scheduled_sampling: float = 0.25  # final probability of feeding the decoder its own previous frame
    audio_examples: int = 2  # clips logged to TensorBoard at each validation

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {
        "max_steps": AT_LEAST_ONE, "val_every": AT_LEAST_ONE, "log_every": AT_LEAST_ONE,
        "keep_top_k": AT_LEAST_ONE, "scheduled_sampling": UNIT_INTERVAL, "audio_examples": NON_NEGATIVE,
    }


# ScalingSettings and RunSettings are named apart from Ray's ScalingConfig and RunConfig, which
# training/driver.py builds from them.
@dataclass
class ScalingSettings:
    num_workers: int | list[int] = 1  # N, or [min, max]: elastic (field_domains.worker_range, worker_scaling)
    use_gpu: bool = False
    cpus_per_worker: int = 1

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {"num_workers": AT_LEAST_ONE, "cpus_per_worker": AT_LEAST_ONE}


@dataclass
class RunSettings:
    storage_path: str = "runs"  # local folder, NFS path or object-store URI; shared storage on a cluster
    name: str | None = None  # default: the experiment name; a fixed name is what makes a rerun resume
    max_failures: int = 2  # worker restarts from the last checkpoint before the run is failed

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {"max_failures": Range(low=-1, why="-1: retry forever")}


@dataclass
class SweepConfig:
    """Ray Tune + Optuna search; `space` maps dotted config paths to search domains (see sweep docs)."""

    metric: str | list[str] = "val/recon"
    mode: str | list[str] = "min"
    num_trials: int = 8
    max_concurrent: int = 2
    seed: int = 0
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    grace_period: int | None = None  # ASHA's first rung in steps; default: end of the first phase
    reduction_factor: int = 2
    storage: str | None = None  # Optuna journal file; default: <storage_path>/<sweep name>/optuna.journal
    # `audiostyle sweep --evaluate N`: inputs from the heldout split of this sound set (None: the test split)
    evaluate_input_soundfont: str | None = None

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {
        "num_trials": AT_LEAST_ONE, "max_concurrent": AT_LEAST_ONE, "seed": SEED, "grace_period": AT_LEAST_ONE,
        "reduction_factor": Range(low=2, why="ASHA keeps 1/reduction_factor of the trials at each rung"),
    }

    def check(self, path: str) -> None:
        check_objectives(self, path)


@dataclass
class ExperimentConfig:
    name: str
    instruments: list[InstrumentConfig]
    model: ModelConfig
    losses: dict[str, ComponentSpec]  # loss term name -> {component: NAME, **arguments}
    curriculum: CurriculumConfig
    seed: int = 0
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    run: RunSettings = field(default_factory=RunSettings)
    sweep: SweepConfig | None = None

    DOMAINS: typing.ClassVar[dict[str, Domain]] = {"seed": SEED}

    def check(self, path: str) -> None:
        if not _NAME_RE.match(self.name.replace("-", "_")):
            raise ConfigError(f"name {self.name!r} must be lower-case letters, digits, '-' and '_'", path="name")
        if not self.instruments:
            raise ConfigError("the instrument list is empty: name at least two instruments to transfer between",
                              path="instruments")
        seen: dict[str, int] = {}
        for i, inst in enumerate(self.instruments):
            if inst.name in seen:
                raise ConfigError(f"duplicate instrument {inst.name!r} (also at instruments.{seen[inst.name]})",
                                  path=f"instruments.{i}.name")
            seen[inst.name] = i
        if len(self.instruments) < 2:
            raise ConfigError("style transfer needs at least two instruments", path="instruments")
        if "cross_reconstruction" in self.losses and self.data.pairs is None:
            raise ConfigError(
                "the cross_reconstruction loss trains on pairs (the same passage on two instruments), but "
                "data.pairs names no paired dataset", path="data.pairs",
                hint="`audiostyle data demo` writes one to <out>/pairs: set data.pairs: ${data.root}/pairs")
        if self.data.val_unseen_players and "cross_reconstruction" not in self.losses:
            raise ConfigError("validation on unseen players scores the cross_reconstruction loss, which `losses` "
                              "does not define", path="data.val_unseen_players",
                              hint="use a paired recipe (experiments/paired_spectral.yaml) or set it to []")
        for i, phase in enumerate(self.curriculum.phases):
            for term in phase.weights:
                if term not in self.losses:
                    raise ConfigError(
                        f"loss term {term!r} is not defined under `losses`.{did_you_mean(term, self.losses)} "
                        f"Defined: {', '.join(self.losses)}",
                        path=f"curriculum.phases.{i}.weights.{term}",
                    )
        check_across_sections(self)

    @property
    def instrument_names(self) -> list[str]:
        return [i.name for i in self.instruments]

    @property
    def run_name(self) -> str:
        return self.run.name or self.name


def parse_experiment(resolved: Any) -> ExperimentConfig:
    """Validate a resolved YAML mapping into the typed config; raises ConfigError with a field path."""
    return convert(resolved, ExperimentConfig, "")
