"""Whether a lower or a higher metric value is better: the one "mode" rule of checkpoints and sweeps.

Checkpoint ranking (`train.checkpoint_mode`, `checkpoints --mode`), Ray's checkpoint scores, Optuna's
study directions and the sweep report all order values by a mode, 'min' or 'max'; this module is the
only place that spells the two out and turns them into orderings.
"""

from __future__ import annotations

from typing import Literal

from audiostyle.platform.core.errors import ConfigError

Mode = Literal["min", "max"]
MODES: tuple[Mode, ...] = ("min", "max")


def check_mode(mode: object, *, path: str = "") -> Mode:
    """`mode` itself when it is 'min' or 'max'; else a ConfigError at `path`."""
    if mode not in MODES:
        raise ConfigError(f"mode must be 'min' or 'max', got {mode!r}", path=path)
    return mode  # type: ignore[return-value]


def default_mode(metric: str) -> Mode:
    """Accuracies ('val/style_acc') rise as a model improves; every other metric reported is a loss."""
    return "max" if "acc" in metric else "min"


def smaller_is_better(value: float, mode: str) -> float:
    """A sort key under which the best value comes first: the value, negated for 'max'."""
    return value if mode == "min" else -value


def optuna_direction(mode: str) -> str:
    """The Optuna study direction of a mode."""
    return "minimize" if mode == "min" else "maximize"
