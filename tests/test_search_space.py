"""The sweep search space and report, without Ray: parsing, validation against the experiment, ordered
curriculum boundaries, conditional entries, the ASHA grace-period rule, resume bookkeeping in a real
Optuna journal, and the report files (CSV, best YAML, plots) from a real study."""

from __future__ import annotations

import copy
import csv
import html
from pathlib import Path

import optuna
import pytest
import yaml

from audiostyle.platform.config.loader import config_from_dict, load_experiment, load_resolved
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.sweeps.driver import asha_grace_period
from audiostyle.platform.sweeps.report import write_report
from audiostyle.platform.sweeps.space import SearchSpace
from audiostyle.platform.sweeps.study import open_study, optuna_params, prepare_resume
from audiostyle.platform.training.curriculum import Curriculum

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def sweep_raw() -> dict:
    raw, _ = load_resolved(EXPERIMENTS / "sweep_curriculum.yaml", ["train.max_steps=40"])
    return raw


def with_space(raw: dict, space: dict, **sweep) -> dict:
    out = copy.deepcopy(raw)
    out["sweep"] = {**out["sweep"], **sweep, "space": space}
    return out


def draw(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


def test_every_sample_is_a_valid_ordered_curriculum(sweep_raw):
    space = SearchSpace.from_config(sweep_raw)
    boundaries_seen = set()
    for sample in draw(space, 60):
        _, cfg = space.apply(sample)  # validated by config_from_dict
        ends = Curriculum.from_config(cfg).boundaries  # raises if a phase would be empty
        assert ends == sorted(set(ends)), ends
        for k, (lo, hi) in enumerate([(0.1, 0.3), (0.25, 0.5), (0.45, 0.75)]):
            until = sample[f"curriculum.phases.{k}.until"]
            assert lo - 1e-9 <= until <= hi + 1e-9
            assert cfg.curriculum.phases[k].until == until
        boundaries_seen.add(tuple(ends))
        assert 1.0e-4 <= cfg.optim.lr <= 1.0e-3
    assert len(boundaries_seen) > 10  # the boundaries really are searched, not pinned


def test_wildcard_sets_the_weight_in_every_phase_using_the_term(sweep_raw):
    space = SearchSpace.from_config(sweep_raw)
    sample = draw(space, 1, seed=3)[0]
    _, cfg = space.apply(sample)
    hsic = sample["curriculum.phases.*.weights.hsic"]
    phases_with_hsic = [p for p in cfg.curriculum.phases if "hsic" in p.weights]
    assert len(phases_with_hsic) == 3 and all(p.weights["hsic"] == hsic for p in phases_with_hsic)
    assert "hsic" not in cfg.curriculum.phases[0].weights  # no term added where the phase had none


def test_conditional_entry_is_skipped_when_its_term_is_off(sweep_raw):
    space = SearchSpace.from_config(sweep_raw)
    assert all("curriculum.phases.*.weights.adversarial" in s for s in draw(space, 5))
    ablation, _ = load_resolved(EXPERIMENTS / "ablations" / "no_adversarial.yaml")
    ablation["sweep"] = copy.deepcopy(sweep_raw["sweep"])
    space = SearchSpace.from_config(ablation)
    samples = draw(space, 5)
    assert all("curriculum.phases.*.weights.adversarial" not in s for s in samples)
    assert all("curriculum.phases.*.weights.hsic" in s for s in samples)


def test_condition_on_a_sampled_choice(sweep_raw):
    raw = with_space(sweep_raw, {
        "model.decoder.component": {"choice": ["autoregressive_decoder", "parallel_decoder"]},
        "optim.disc_lr": {"float": [1.0e-5, 1.0e-3], "log": True,
                          "when": {"model.decoder.component": "parallel_decoder"}},
        "optim.betas": {"choice": [[0.8, 0.99], [0.9, 0.999]]},
    })
    space = SearchSpace.from_config(raw)
    samples = draw(space, 30)
    for sample in samples:
        assert ("optim.disc_lr" in sample) == (sample["model.decoder.component"] == "parallel_decoder")
        assert space.apply(sample)[1].optim.betas == sample["optim.betas"]  # non-scalar choices round-trip
    assert {s["model.decoder.component"] for s in samples} == {"autoregressive_decoder", "parallel_decoder"}


@pytest.mark.parametrize("entry, message", [
    ({"optim.lrr": {"float": [1.0e-4, 1.0e-3]}}, "Did you mean 'lr'"),
    ({"optim.lr": {"float": [1.0e-3, 1.0e-4]}}, "empty"),
    ({"optim.lr": {"float": ["1e-4", 1.0e-3]}}, "write 1.0e-4"),
    ({"optim.lr": {"float": [0.0, 1.0e-3], "log": True}}, "lo > 0"),
    ({"optim.lr": {"float": [1.0e-4, 1.0e-3], "lgo": True}}, "Did you mean 'log'"),
    ({"optim.lr": {"float": [1.0e-4, 1.0e-3], "choice": [1]}}, "exactly one"),
    ({"optim.schedule": {"choice": ["cosine", "linear"]}}, "'linear'"),
    ({"model.decoder.component": {"choice": ["autoregressive_decoder", "nope"]}}, "nope"),
    ({"train.max_steps": {"int": [10, 20]}}, "cannot be searched"),
    ({"optim.lr": {"float": [1.0e-4, 1.0e-3], "when": "losses.advresarial"}}, "adversarial"),
    ({"curriculum.phases.9.until": {"float": [0.1, 0.2]}}, "the list has 4 items"),
    ({"curriculum.phases.0.until": {"float": [0.5, 2.0]}}, "mixes units"),
    ({"curriculum.phases.*.weights.nothing": {"float": [0.1, 0.2]}}, "matches no field"),
])
def test_bad_space_entries_name_the_entry(sweep_raw, entry, message):
    with pytest.raises(ConfigError) as info:
        SearchSpace.from_config(with_space(sweep_raw, entry))
    text = str(info.value)
    assert f"sweep.space.{next(iter(entry))}" in text and message in text, text


def test_boundary_ranges_that_cannot_be_ordered_are_refused(sweep_raw):
    # phase 1 must end by 0.3 but phase 0 cannot end before 0.35: no ordered sample exists
    bad = {"curriculum.phases.0.until": {"float": [0.35, 0.5]}, "curriculum.phases.1.until": {"float": [0.1, 0.3]}}
    with pytest.raises(ConfigError, match="leaves no valid boundary"):
        SearchSpace.from_config(with_space(sweep_raw, bad))
    # a searched phase 1 above the fixed phase-2 boundary (0.6 of the steps) cannot fit either
    with pytest.raises(ConfigError, match="curriculum.phases.1.until"):
        SearchSpace.from_config(with_space(sweep_raw, {"curriculum.phases.1.until": {"float": [0.7, 0.9]}}))


def test_step_count_boundaries_stay_ordered_and_integer(sweep_raw):
    raw = with_space(sweep_raw, {"curriculum.phases.0.until": {"int": [2, 20]},
                                 "curriculum.phases.1.until": {"int": [3, 21]},
                                 "curriculum.phases.2.until": {"int": [4, 22]}})
    for sample in draw(SearchSpace.from_config(raw), 40, seed=1):
        values = [sample[f"curriculum.phases.{k}.until"] for k in range(3)]
        assert all(isinstance(v, int) for v in values) and values[0] < values[1] < values[2] < 40


def test_grace_period_defaults_to_and_never_precedes_the_first_phase_end(sweep_raw):
    space = SearchSpace.from_config(sweep_raw)
    cfg = config_from_dict(sweep_raw)
    # phase 0 may end as late as 0.3 * 40 = step 12 (and then leave room for the later phases)
    assert space.latest_first_phase_end() == 12
    assert asha_grace_period(cfg, space) == 12
    early = config_from_dict(with_space(sweep_raw, sweep_raw["sweep"]["space"], grace_period=5))
    with pytest.raises(ConfigError, match="grace_period 5 falls before the end of the first curriculum phase"):
        asha_grace_period(early, space)
    fixed = with_space(sweep_raw, {"optim.lr": {"float": [1.0e-4, 1.0e-3]}}, grace_period=8)
    assert asha_grace_period(config_from_dict(fixed), SearchSpace.from_config(fixed)) == 8  # phase 0 ends at 8


def test_starting_points_are_tried_first_with_their_values(sweep_raw):
    raw = with_space(sweep_raw, {"optim.betas": {"choice": [[0.8, 0.99], [0.9, 0.999]]},
                                 "optim.lr": {"float": [1.0e-4, 1.0e-3], "log": True},
                                 "curriculum.phases.0.until": {"float": [0.1, 0.3]}})
    space = SearchSpace.from_config(raw)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(optuna_params(space, {"optim.betas": [0.9, 0.999], "optim.lr": 5.0e-4}))
    sample = space.suggest(study.ask())
    assert sample["optim.betas"] == [0.9, 0.999] and sample["optim.lr"] == 5.0e-4
    with pytest.raises(ConfigError, match="by position"):
        optuna_params(space, {"curriculum.phases.0.until": 0.2})


def test_resume_requeues_a_trial_cut_off_mid_run(tmp_path):
    journal = tmp_path / "optuna.journal"
    study = open_study(journal, "s", ["min"], create=True)
    for value in (0.5, 0.4):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, value)
    cut = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    cut.set_user_attr("run_name", "trial_0002")
    # a second process (the resumed sweep) opens the same journal
    again = open_study(journal, "s", ["min"], create=False)
    finished, requeued = prepare_resume(again)
    assert (finished, requeued) == (2, [2])
    waiting = again.ask()
    assert waiting.params == {} and waiting.user_attrs["run_name"] == "trial_0002"
    assert waiting.suggest_float("x", 0, 1) == cut.params["x"]  # same parameters, same run name
    with pytest.raises(ConfigError, match="directions"):
        open_study(journal, "s", ["max"], create=False)


def test_report_writes_table_best_yaml_and_plots(sweep_raw, tmp_path):
    space = SearchSpace.from_config(sweep_raw)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    scores = {}
    for i in range(4):
        trial = study.ask()
        sample = space.suggest(trial)
        trial.set_user_attr("sample", sample)
        trial.set_user_attr("run_name", f"trial_{i:04d}")
        scores[i] = sample["optim.lr"] * 1000  # a made-up objective: lower learning rate is better here
        study.tell(trial, scores[i])
    sweep_dir = tmp_path / "demo_sweep"
    report = write_report(study, space, sweep_name="demo_sweep", sweep_dir=sweep_dir, metrics=["val/recon"],
                          modes=["min"], max_steps=40)
    best = min(scores, key=scores.get)
    assert report.best is not None and report.best.number == best
    rows = list(csv.DictReader(report.csv_path.open()))
    assert [int(r["trial"]) for r in rows] == sorted(scores, key=scores.get)
    assert float(rows[0]["optim.lr"]) == pytest.approx(study.trials[best].user_attrs["sample"]["optim.lr"])
    text = report.best_yaml.read_text()
    assert text.startswith("# Best configuration of sweep demo_sweep") and f"trial {best}" in text
    cfg = load_experiment(report.best_yaml)
    assert cfg.sweep is None and cfg.optim.lr == float(rows[0]["optim.lr"])
    assert yaml.safe_load(text)["run"]["name"] is None
    assert set(report.plots) == {"optimization_history", "param_importances", "parallel_coordinate"}
    assert all(p.stat().st_size > 5000 for p in report.plots.values())
    page = report.page.read_text()  # one page: every trial best first, every plot, the best config
    assert report.page == sweep_dir / "index.html" and "Trials (4), best first" in page
    cells = [row.split("</td>")[0] for row in page.split("<tr><td class='name'>")[1:]]
    assert [int(c) for c in cells] == sorted(scores, key=scores.get)
    assert f"<td>{float(rows[0]['optim.lr']):.4g}</td>" in page and f"<td>{rows[0]['optim.lr']}</td>" not in page
    assert "<th>optim.<wbr>lr</th>" in page  # a dotted parameter may wrap, so the table fits the page
    assert all(f"src='plots/{p.name}'" in page for p in report.plots.values())
    assert html.escape(text) in page and "No evaluation yet" in page


def test_report_with_one_trial_skips_importance(sweep_raw, tmp_path):
    space = SearchSpace.from_config(sweep_raw)
    study = optuna.create_study(directions=["minimize", "maximize"])
    trial = study.ask()
    trial.set_user_attr("sample", space.suggest(trial))
    study.tell(trial, [0.3, 0.7])
    report = write_report(study, space, sweep_name="s", sweep_dir=tmp_path, metrics=["val/recon", "val/style_acc"],
                          modes=["min", "max"], max_steps=40)
    assert "param_importances_val_recon" in report.skipped_plots
    assert "2 completed" in report.skipped_plots["param_importances_val_recon"]
    assert "pareto_front" in report.plots and report.best is not None


def test_the_default_point_runs_the_recipe_itself_and_is_marked_in_the_report(tmp_path):
    from audiostyle.platform.sweeps.driver import open_sweep_study, plan_sweep
    from audiostyle.platform.sweeps.study import default_point

    raw, _ = load_resolved(EXPERIMENTS / "sweep_any_player.yaml", ["train.max_steps=40"])
    space = SearchSpace.from_config(raw)
    recipe = load_experiment(EXPERIMENTS / "any_player_chords.yaml", ["train.max_steps=40"])
    point = default_point(space)
    assert point == {"optim.lr": recipe.optim.lr, "data.pair_augment": recipe.data.pair_augment,
                     "curriculum.phases.0.weights.reconstruction": 0.25,
                     "curriculum.phases.1.weights.reconstruction": 0.25, "curriculum.phases.1.ramp": 0.0,
                     "model.decoder.fine_depth": recipe.model.decoder["fine_depth"],
                     "losses.cross_reconstruction.onset_weight": recipe.losses["cross_reconstruction"]["onset_weight"]}
    plan = plan_sweep(config_from_dict(raw), raw, num_trials=3, max_concurrent=None, storage_path=str(tmp_path))
    assert open_sweep_study(plan, resume=False, initial_points=[{"optim.lr": 2.0e-3}], include_default=True) == 3
    study = open_study(plan.journal, plan.name, ["min"], create=False)
    trial = study.ask()
    sample = space.suggest(trial)
    assert space.suggest(study.ask())["optim.lr"] == 2.0e-3  # the other starting points still come next
    _, cfg = space.apply(sample)
    # both phases weigh the losses as the recipe's one phase does, so where the warm-up ends changes nothing
    assert [p.weights for p in cfg.curriculum.phases] == [recipe.curriculum.phases[0].weights] * 2
    assert (cfg.optim.lr, cfg.data.pair_augment) == (recipe.optim.lr, recipe.data.pair_augment)
    trial.set_user_attr("sample", sample)
    trial.set_user_attr("run_name", "trial_0000")
    study.tell(trial, 0.5)
    report = write_report(study, space, sweep_name=plan.name, sweep_dir=plan.sweep_dir, metrics=["val/x"],
                          modes=["min"], max_steps=40, plots=False)
    assert report.rows[0].is_default and "trial_0000 (default)" in report.table
    # a default outside its searched range, or differing between the fields a `*` matches, is sampled instead
    curriculum, _ = load_resolved(EXPERIMENTS / "sweep_curriculum.yaml", ["train.max_steps=40",
                                                                          "curriculum.phases.1.weights.hsic=0.7",
                                                                          "curriculum.phases.2.weights.hsic=0.5"])
    narrow = SearchSpace.from_config(with_space(curriculum, {
        "optim.lr": {"float": [1.0e-5, 1.0e-4]}, "optim.weight_decay": {"float": [0.0, 1.0e-3]},
        "curriculum.phases.*.weights.hsic": {"float": [0.05, 2.0]},
        "curriculum.phases.*.ramp": {"float": [0.0, 0.5]}}))
    assert default_point(narrow) == {"optim.weight_decay": curriculum["optim"]["weight_decay"],
                                     "curriculum.phases.*.ramp": 0.25}  # every phase with a ramp has 0.25


def test_the_embedded_ray_holds_every_trials_workers_and_their_drivers():
    from audiostyle.platform.sweeps.driver import TRIAL_DRIVER_CPUS, local_cpus

    cfg = load_experiment(EXPERIMENTS / "sweep_any_player.yaml")
    assert cfg.scaling.cpus_per_worker == 2
    # one trial of one 2-CPU worker: 2 would leave its worker waiting for the driver's sliver forever
    assert local_cpus(cfg, 1, 1) >= 2 + TRIAL_DRIVER_CPUS
    assert local_cpus(cfg, 3, 2) >= 3 * (2 * 2 + TRIAL_DRIVER_CPUS)
    assert local_cpus(cfg, 3, 2) == 13  # and no more than that
