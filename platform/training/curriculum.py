"""The training curriculum: which loss weights and which optimizers apply at a given step.

`cfg.curriculum.phases` is an ordered list of phases, each running until a boundary given either as a
fraction of `train.max_steps` (a value <= 1) or as an absolute step count (> 1). A phase names the loss
weights it uses (absent terms weigh 0), whether the discriminator trains in it, and an optional `ramp`:
the fraction of the phase over which its weights move linearly from the previous phase's weights, so a
new term eases in instead of jolting the model at the switch. The last phase runs on to `max_steps`.

`Curriculum.at(step)` is pure arithmetic on the step number: a resumed run lands in exactly the same
phase and ramp position as an uninterrupted one, and sweeps read `boundaries` to put ASHA's first rung
after the reconstruction phase.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from audiostyle.platform.config.cross_checks import boundary_step, check_phase_steps
from audiostyle.platform.config.schema import ExperimentConfig, PhaseConfig, require_phases
from audiostyle.platform.core.errors import ConfigError

if TYPE_CHECKING:  # the driver plans phases without torch; only workers sum losses
    from torch import Tensor


@dataclass(frozen=True)
class PhaseState:
    """Where the curriculum stands at one step."""

    name: str
    index: int
    weights: dict[str, float]
    train_discriminator: bool

    @property
    def active_terms(self) -> set[str]:
        """Loss terms worth computing at this step (weight > 0); the model skips the others."""
        return {term for term, w in self.weights.items() if w > 0}

    def weighted_loss(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The generator's loss at this step: the active terms of `terms` (the model's generator_terms) times
        their weights, summed in name order (the same order on every rank and every rerun)."""
        return sum(self.weights[t] * terms[t] for t in sorted(self.active_terms))


class Curriculum:
    """The phases of a run resolved to step ranges [start, end); the last phase extends to max_steps."""

    def __init__(self, phases: list[PhaseConfig], max_steps: int, *, terms: list[str] | None = None):
        require_phases(phases)
        if max_steps <= 0:
            raise ConfigError(f"must be > 0, got {max_steps}", path="train.max_steps")
        self.phases = list(phases)
        self.max_steps = max_steps
        # Every term any phase names, so each PhaseState lists all of them (0 where a phase is silent):
        # metrics and TensorBoard curves keep the same keys across phase switches.
        names = list(terms or [])
        for phase in self.phases:
            names += [t for t in phase.weights if t not in names]
        self.terms = names

        check_phase_steps(self.phases, max_steps)  # the config's own rule; a sweep sample comes here too
        ends = [boundary_step(p.until, max_steps) for p in self.phases]
        starts = [0, *ends[:-1]]
        ends[-1] = max(ends[-1], max_steps)  # the last phase runs to the end, whatever its boundary says
        self.starts = starts
        self.ends = ends

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> Curriculum:
        return cls(cfg.curriculum.phases, cfg.train.max_steps, terms=list(cfg.losses))

    @property
    def boundaries(self) -> list[int]:
        """The step at which each phase ends (exclusive); the last one is >= max_steps."""
        return list(self.ends)

    @property
    def first_phase_end(self) -> int:
        """End of the first phase: the earliest step at which comparing runs is fair (ASHA's first rung)."""
        return self.ends[0]

    def discriminator_steps(self) -> int:
        """Steps (up to max_steps) in phases that train the discriminator: the length of its schedule."""
        return sum(min(end, self.max_steps) - start
                   for start, end, phase in zip(self.starts, self.ends, self.phases)
                   if phase.discriminator and start < self.max_steps)

    def phase_index(self, step: int) -> int:
        for i, end in enumerate(self.ends):
            if step < end:
                return i
        return len(self.phases) - 1

    def _full_weights(self, index: int) -> dict[str, float]:
        weights = self.phases[index].weights
        return {t: float(weights.get(t, 0.0)) for t in self.terms}

    def at(self, step: int) -> PhaseState:
        """The phase, its (possibly ramping) loss weights and whether the discriminator trains at `step`."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        index = self.phase_index(step)
        phase = self.phases[index]
        weights = self._full_weights(index)
        ramp_steps = int(round(phase.ramp * (self.ends[index] - self.starts[index])))
        if index > 0 and ramp_steps > 0:
            # Step `start` already moves 1/ramp_steps of the way, so the ramp is done after ramp_steps
            # steps and a phase's first step differs from the previous phase's last one.
            alpha = min(1.0, (step - self.starts[index] + 1) / ramp_steps)
            previous = self._full_weights(index - 1)
            weights = {t: previous[t] + alpha * (weights[t] - previous[t]) for t in self.terms}
        return PhaseState(name=phase.name, index=index, weights=weights,
                          train_discriminator=bool(phase.discriminator))

    def describe(self) -> str:
        """One line per phase, for logs: 'reconstruction: steps 0-199 (reconstruction=1)'."""
        lines = []
        for i, phase in enumerate(self.phases):
            weights = ", ".join(f"{t}={w:g}" for t, w in phase.weights.items() if w)
            extra = (" + discriminator" if phase.discriminator else "") + (
                f", ramp {phase.ramp:g}" if phase.ramp and i else "")
            lines.append(f"{phase.name}: steps {self.starts[i]}-{self.ends[i] - 1} ({weights}){extra}")
        return "\n".join(lines)
