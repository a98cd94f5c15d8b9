"""`audiostyle sweep --evaluate N` without Ray (sweeps/evaluate_trials.py): the best N trials' reported checkpoints
are exported as real bundles and evaluated, failed and unfinished trials are skipped, the default trial and a
baseline bundle are added beside them but not correlated, evaluation.csv and evaluation_ranks.csv hold the
values and Spearman's rho, and a second call re-exports and re-evaluates nothing. One test runs the real
`evaluate` on a held-out sound set, so the call matches its signature and results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from scipy.stats import spearmanr

from audiostyle.platform.sweeps.evaluate_trials import evaluate_sweep, trials_to_evaluate
from audiostyle.platform.sweeps.report import collect_rows

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVE = {0: 0.4, 1: 0.1, 2: 0.3, 3: 0.2, 4: 0.25}  # trial -> val/unseen_cross_recon (trial 4 is the default)
PITCH = {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.7, 4: 0.6}  # not monotone in the objective


@pytest.fixture(scope="module")
def sweep(tiny_export, tmp_path_factory):
    """A finished sweep of 5 trials (trial 4 enqueued as the default) + one failed and one running trial,
    each finished trial with its own copy of the tiny checkpoint, as the ledger records them."""
    import shutil

    sweep_dir = tmp_path_factory.mktemp("sweep") / "demo_sweep"
    study = optuna.create_study()
    ledger = []
    for number in range(7):
        trial = study.ask()
        trial.set_user_attr("run_name", f"trial_{number:04d}")
        trial.set_user_attr("sample", {"optim.lr": 1e-3 * (number + 1)})
        if number == 4:
            trial.set_user_attr("default", True)
        checkpoint = sweep_dir / f"trial_{number:04d}" / "step_00000006"
        shutil.copytree(tiny_export["checkpoint"], checkpoint)
        if number in OBJECTIVE:
            study.tell(trial, OBJECTIVE[number])
        elif number == 5:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        status = "ERROR" if number == 5 else "TERMINATED"
        ledger.append({"optuna_trial": number, "status": status,
                       "metrics": {"step": 6, "checkpoint_path": str(checkpoint), "val/unseen_cross_recon": 0.0}})
    (sweep_dir / "trials.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ledger))
    from audiostyle.platform.sweeps.report import read_ledger

    return sweep_dir, collect_rows(study, read_ledger(sweep_dir / "trials.jsonl"), ["val/unseen_cross_recon"])


class StandIn:
    """evaluate() as far as evaluate_sweep reads it; scores are a function of the trial the bundle came from."""

    def __init__(self):
        self.calls = []

    def __call__(self, bundle, data_root, *, out_dir, input_soundfont, max_pieces, **kwargs):
        meta = json.loads((Path(bundle) / "bundle.json").read_text())
        checkpoint = meta["provenance"]["checkpoint"]
        self.calls.append((checkpoint, input_soundfont, max_pieces, kwargs["baselines"]))
        n = int(Path(checkpoint).parent.name.split("_")[1]) if "trial_" in checkpoint else 9
        o = OBJECTIVE.get(n, 0.5)
        model = {"mr_stft": 10 * o, "p_target": 1 - o, "pitch_acc": PITCH.get(n, 0.0), "chroma_cos": 0.8}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return {"provenance": meta["provenance"], "data_root": data_root, "input_soundfont": input_soundfont,
                "pairs": {"piano->violin": {"model": model, "identity": {}},
                          "violin->piano": {"model": {**model, "mr_stft": 2 * model["mr_stft"]}}},
                "summary": {"model": model}}


def test_best_trials_are_exported_evaluated_and_rank_correlated(sweep, demo_root, tiny_export):
    sweep_dir, rows = sweep
    chosen = trials_to_evaluate(rows, ["min"], 4)
    # failed and running trials never; best first; the default (4th best here) counted as ranked
    assert [(r.number, ranked) for r, ranked in chosen] == [(1, True), (3, True), (4, True), (2, True)]
    assert [(r.number, ranked) for r, ranked in trials_to_evaluate(rows, ["min"], 2)] == [
        (1, True), (3, True), (4, False)]

    stand_in = StandIn()
    result = evaluate_sweep(rows, sweep_dir=sweep_dir, metric="val/unseen_cross_recon", mode="min", count=3,
                            data_root=str(demo_root), input_soundfont="fluidr3", max_pieces=2,
                            baseline_bundle=str(tiny_export["bundle"]), run=stand_in)
    assert [s.label for s in result.systems] == ["trial_0001", "trial_0003", "trial_0004 (default)", "baseline"]
    for system in result.systems[:3]:  # a real bundle of the trial's own reported checkpoint
        meta = json.loads((system.bundle / "bundle.json").read_text())
        assert meta["provenance"]["checkpoint"] == system.row.checkpoint_path
        assert system.bundle == sweep_dir / "bundles" / f"trial_{system.row.number:04d}"
    assert all(call[1:] == ("fluidr3", 2, False) for call in stand_in.calls) and len(stand_in.calls) == 4

    table = list(csv.DictReader(result.csv_path.open()))
    assert [r["system"] for r in table] == ["trial_0001", "trial_0003", "trial_0004 (default)", "baseline"]
    assert float(table[0]["val/unseen_cross_recon"]) == pytest.approx(0.1)
    assert float(table[1]["violin->piano/mr_stft"]) == pytest.approx(2 * 10 * 0.2)
    assert table[3]["val/unseen_cross_recon"] == "-" and table[3]["ranked"] == "no"

    ranks = {r["metric"]: r for r in csv.DictReader(result.ranks_path.open())}
    # over the ranked trials 1, 3, 4 (objective 0.1, 0.2, 0.25): MR-STFT rises with it, P(target) falls
    assert float(ranks["all/mr_stft"]["spearman_rho"]) == pytest.approx(1.0)
    assert float(ranks["all/mr_stft"]["agreement"]) == pytest.approx(1.0)  # both lower-is-better
    assert float(ranks["all/p_target"]["spearman_rho"]) == pytest.approx(-1.0)
    assert float(ranks["all/p_target"]["agreement"]) == pytest.approx(1.0)  # the objective ranks timbre right
    expected = spearmanr([0.1, 0.2, 0.25], [PITCH[1], PITCH[3], PITCH[4]]).statistic
    assert float(ranks["piano->violin/pitch_acc"]["spearman_rho"]) == pytest.approx(expected)
    assert ranks["all/chroma_cos"]["spearman_rho"] == "-"  # constant: no ranking to compare
    assert ranks["all/mr_stft"]["trials"] == "3"
    assert "all/p_target" in result.table and "spearman_rho" in result.table
    page = (sweep_dir / "index.html").read_text()  # the sweep's page gains the evaluation
    assert "Evaluated trials" in page and "agreement" in page and "No evaluation yet" not in page
    assert page.index(">trial_0001<") < page.index(">trial_0003<") < page.index(">baseline<")

    (sweep_dir / "evaluation" / "trial_0003" / "index.html").write_text("<html></html>")
    from audiostyle.platform.sweeps.report_page import write_sweep_page

    page = write_sweep_page(sweep_dir).read_text()
    assert "<a href='evaluation/trial_0003/index.html'>trial_0003</a>" in page and "href='evaluation/trial_0001" not in page

    mtimes = {p: p.stat().st_mtime_ns for p in (sweep_dir / "bundles").rglob("*") if p.is_file()}
    again = StandIn()
    evaluate_sweep(rows, sweep_dir=sweep_dir, metric="val/unseen_cross_recon", mode="min", count=3,
                   data_root=str(demo_root), input_soundfont="fluidr3", max_pieces=2,
                   baseline_bundle=str(tiny_export["bundle"]), run=again)
    assert again.calls == []  # every bundle and evaluation reused ...
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
    evaluate_sweep(rows, sweep_dir=sweep_dir, metric="val/unseen_cross_recon", mode="min", count=3,
                   data_root=str(demo_root), input_soundfont="musescore", max_pieces=2, run=again)
    assert len(again.calls) == 3  # ... until the inputs change


def test_the_real_evaluation_is_called_as_audiostyle_evaluate_calls_it(sweep, demo_root, tmp_path):
    from audiostyle.datasets.paired import heldout_soundfonts

    sweep_dir, rows = sweep
    soundfont = next(iter(heldout_soundfonts(demo_root / "piano")), None)
    if soundfont is None:
        pytest.skip("no held-out sound set installed")
    result = evaluate_sweep(rows, sweep_dir=tmp_path, metric="val/unseen_cross_recon", mode="min", count=1,
                            data_root=str(demo_root), input_soundfont=soundfont, max_pieces=1)
    (system,) = [s for s in result.systems if s.ranked]
    assert system.results["input_soundfont"] == soundfont and len(system.results["pieces"]) == 1
    scores = system.scores()
    assert {"piano->violin/mr_stft", "violin->piano/p_target", "all/pitch_acc"} <= set(scores)
    assert all(v is not None for k, v in scores.items() if k.startswith("all/"))
    assert (tmp_path / "evaluation" / "trial_0001" / "results.json").is_file()
