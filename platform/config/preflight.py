"""What loading an experiment checks beyond the schema and the signatures, still without data or Ray.

Two things can only be known by trying: whether the components accept their arguments together (a
width that `num_heads` does not divide, a time stride the conv stack cannot take, bins the sample
rate cannot hold), and whether the `sweep:` block fits the experiment (its paths exist, its ranges
are well-formed, every value it can draw gives a valid config). The model is built on PyTorch's meta
device, which allocates no memory for weights, so a large config is checked as cheaply as a small
one; each value a sweep can give a model or loss field is checked the same way. A constructor that cannot run on the meta device at all (a third-party
component that reads tensor values) is skipped, not reported.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from audiostyle.platform.core.errors import ConfigError

if TYPE_CHECKING:
    from audiostyle.platform.config.schema import ExperimentConfig

logger = logging.getLogger(__name__)

# Sweep entries under these prefixes change what is built, so each of their values is built too.
MODEL_PATHS = ("model.", "losses.", "data.sample_rate")


def _meta_limitation(exc: BaseException) -> bool:
    """Whether an error says the meta device cannot run this code, rather than the arguments are wrong."""
    while exc is not None:
        if isinstance(exc, NotImplementedError) or "meta" in str(exc).lower():
            return True
        exc = exc.__cause__
    return False


def check_model_builds(cfg: ExperimentConfig) -> None:
    """Build the whole model on the meta device; ConfigError naming the component that refuses its
    arguments (registry.build attaches the component's path)."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model

    try:
        with torch.device("meta"):
            build_timbre_model(cfg)
    except ConfigError as exc:
        if _meta_limitation(exc):
            logger.debug("model not checked on the meta device: %s", exc)
            return
        raise
    except Exception as exc:  # not an argument error of one component: the parts do not fit together
        if _meta_limitation(exc):
            logger.debug("model not checked on the meta device: %s", exc)
            return
        raise ConfigError(f"the components do not fit together: {type(exc).__name__}: {exc}", path="model",
                          hint="check the sizes the components share (dims, heads, bins)") from exc


def check_sweep(cfg: ExperimentConfig, raw: dict[str, Any]) -> None:
    """The `sweep:` block against the experiment: the space parses, names fields that exist, keeps the
    curriculum valid, fits ASHA's first rung, and every model value it can draw builds."""
    if cfg.sweep is None:
        return
    from audiostyle.platform.config.cross_checks import sweep_objectives
    from audiostyle.platform.sweeps.space import SearchSpace, asha_grace_period

    space = SearchSpace.from_config(raw)
    if len(sweep_objectives(cfg.sweep)[0]) == 1:  # several objectives run without ASHA
        asha_grace_period(cfg, space)
    for dom in space.domains:
        if not dom.path.startswith(MODEL_PATHS):
            continue
        for value in dom.choices if dom.kind == "choice" else (dom.low, dom.high):
            _, sampled = space.apply({dom.path: value})
            try:
                check_model_builds(sampled)
            except ConfigError as exc:
                raise ConfigError(f"the value {value!r} gives a model that cannot be built: {exc}",
                                  path=f"sweep.space.{dom.path}") from None


def preflight(cfg: ExperimentConfig, raw: dict[str, Any]) -> None:
    """Everything above, in the order a user fixes things: the experiment itself, then its sweep."""
    check_model_builds(cfg)
    check_sweep(cfg, raw)
