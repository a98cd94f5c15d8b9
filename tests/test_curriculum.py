"""Curriculum phases, boundaries, ramps and the step-driven learning-rate schedule (pure unit tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiostyle.platform.config.loader import load_resolved
from audiostyle.platform.config.schema import PhaseConfig, parse_experiment
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.training.curriculum import Curriculum
from audiostyle.platform.training.lr_schedule import MIN_LR_RATIO, lr_factor, make_scheduler

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def four_phases() -> list[PhaseConfig]:
    return [
        PhaseConfig("reconstruction", 0.2, {"reconstruction": 1.0}),
        PhaseConfig("disentanglement", 0.4, {"reconstruction": 1.0, "hsic": 0.5}, ramp=0.5),
        PhaseConfig("contrastive", 0.6, {"reconstruction": 1.0, "hsic": 0.5, "infonce": 0.5}),
        PhaseConfig("adversarial", 1.0, {"reconstruction": 1.0, "hsic": 0.5, "infonce": 0.5, "adversarial": 0.1},
                    discriminator=True),
    ]


def test_weighted_loss_sums_the_active_terms_by_their_weights():
    cur = Curriculum(four_phases(), max_steps=100)
    terms = {"reconstruction": torch.tensor(2.0), "hsic": torch.tensor(4.0), "infonce": torch.tensor(8.0),
             "adversarial": torch.tensor(16.0), "diag/time_variation": torch.tensor(100.0)}
    assert float(cur.at(0).weighted_loss(terms)) == 2.0  # hsic and the rest weigh 0 in the first phase
    assert float(cur.at(50).weighted_loss(terms)) == 2.0 + 0.5 * 4.0 + 0.5 * 8.0  # diagnostics never count
    assert float(cur.at(99).weighted_loss(terms)) == pytest.approx(2.0 + 2.0 + 4.0 + 0.1 * 16.0)


def test_fraction_boundaries_split_max_steps():
    cur = Curriculum(four_phases(), max_steps=100)
    assert cur.boundaries == [20, 40, 60, 100]
    assert cur.first_phase_end == 20
    names = [cur.at(s).name for s in (0, 19, 20, 39, 40, 59, 60, 99)]
    assert names == ["reconstruction"] * 2 + ["disentanglement"] * 2 + ["contrastive"] * 2 + ["adversarial"] * 2
    assert [cur.at(s).index for s in (0, 20, 40, 60)] == [0, 1, 2, 3]
    # the last phase keeps going if a run is extended past max_steps
    assert cur.at(150).name == "adversarial"


def test_step_count_boundaries_and_mixed_forms():
    phases = [PhaseConfig("a", 30, {"reconstruction": 1.0}), PhaseConfig("b", 1.0, {"reconstruction": 2.0})]
    cur = Curriculum(phases, max_steps=200)
    assert cur.boundaries == [30, 200]
    assert cur.at(29).name == "a" and cur.at(30).name == "b"


def test_discriminator_only_in_phases_that_train_it():
    cur = Curriculum(four_phases(), max_steps=100)
    assert not any(cur.at(s).train_discriminator for s in range(60))
    assert all(cur.at(s).train_discriminator for s in range(60, 100))


def test_weights_list_every_term_and_zero_absent_ones():
    cur = Curriculum(four_phases(), max_steps=100)
    first = cur.at(0)
    assert set(first.weights) == {"reconstruction", "hsic", "infonce", "adversarial"}
    assert first.weights["hsic"] == 0.0 and first.active_terms == {"reconstruction"}
    assert cur.at(99).active_terms == {"reconstruction", "hsic", "infonce", "adversarial"}


def test_ramp_moves_linearly_from_previous_weights():
    cur = Curriculum(four_phases(), max_steps=100)  # disentanglement: steps 20-39, ramp over 10 steps
    hsic = [cur.at(s).weights["hsic"] for s in range(20, 32)]
    assert hsic[0] == pytest.approx(0.05)  # 1/10 of the way on the phase's first step
    assert hsic[4] == pytest.approx(0.25)
    assert hsic[9:] == [pytest.approx(0.5)] * 3  # ramp done after 10 steps, then flat
    diffs = [b - a for a, b in zip(hsic[:10], hsic[1:10])]
    assert all(d == pytest.approx(0.05) for d in diffs)
    # a phase without ramp switches at once
    assert cur.at(40).weights["infonce"] == 0.5 and cur.at(39).weights["infonce"] == 0.0


def test_boundaries_that_leave_a_phase_empty_are_rejected():
    phases = [PhaseConfig("a", 0.5, {"reconstruction": 1.0}), PhaseConfig("b", 0.51, {"reconstruction": 1.0}),
              PhaseConfig("c", 1.0, {"reconstruction": 1.0})]
    with pytest.raises(ConfigError, match=r"curriculum\.phases\.1\.until.*never run"):
        Curriculum(phases, max_steps=10)
    mixed = [PhaseConfig("a", 0.5, {"reconstruction": 1.0}), PhaseConfig("b", 100, {"reconstruction": 1.0})]
    with pytest.raises(ConfigError, match="phases.1.until"):
        Curriculum(mixed, max_steps=1000)  # step 500 then step 100


def test_default_experiment_has_the_research_four_phases():
    # parsed without component validation: this checks the curriculum, not the model catalog
    cfg = parse_experiment(load_resolved(EXPERIMENTS / "piano_violin.yaml")[0])
    cur = Curriculum.from_config(cfg)
    assert [p.name for p in cur.phases] == ["reconstruction", "disentanglement", "contrastive", "adversarial"]
    assert [cur.at(b - 1).train_discriminator for b in cur.boundaries] == [False, False, False, True]
    assert cur.boundaries[-1] == cfg.train.max_steps
    assert "reconstruction: steps 0-" in cur.describe()


def test_lr_warmup_then_cosine_to_floor():
    kw = {"warmup_steps": 10, "max_steps": 110}
    assert lr_factor(0, **kw) == pytest.approx(0.1)
    assert lr_factor(9, **kw) == pytest.approx(1.0)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(60, **kw) == pytest.approx(MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5)
    assert lr_factor(110, **kw) == pytest.approx(MIN_LR_RATIO)
    decay = [lr_factor(s, **kw) for s in range(10, 111)]
    assert all(b <= a for a, b in zip(decay, decay[1:]))
    assert lr_factor(50, schedule="constant", **kw) == 1.0


def test_scheduler_depends_on_steps_only_and_round_trips():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched = make_scheduler(opt, warmup_steps=2, max_steps=20)
    for _ in range(7):
        opt.step()
        sched.step()
    lr_at_7 = opt.param_groups[0]["lr"]
    assert lr_at_7 == pytest.approx(lr_factor(7, warmup_steps=2, max_steps=20))
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    sched2 = make_scheduler(opt2, warmup_steps=2, max_steps=20)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
