"""`audiostyle sweep ... --evaluate N`: the best N trials exported and evaluated, and how well the sweep's
objective ranks what the evaluation ranks.

After a sweep (or with `--resume` on a finished one) each chosen trial's checkpoint (the one its objective
value was reported with: the ledger's `checkpoint_path`) is exported as a bundle (bundles/export.py) into
`<sweep>/bundles/trial_NNNN/` and evaluated as `audiostyle evaluate` does (evaluation/evaluate.py) into
`<sweep>/evaluation/trial_NNNN/`, with inputs from `sweep.evaluate_input_soundfont` (a sound set no trial
trained on). A bundle or an evaluation already there for the same checkpoint and inputs is reused, so a
re-run only does what is missing. The trial `--include-default` ran is evaluated too, and `--baseline-bundle`
adds a bundle trained outside the sweep (e.g. the default for the whole sweep's budget); neither counts in
the correlations, which are over the trials chosen by rank alone.

Outputs beside the sweep report: `evaluation.csv` (one row per evaluated system: the sweep objective, then
each evaluation metric per direction and over all directions) and `evaluation_ranks.csv` (per metric, the
Spearman rank correlation between objective and metric over the trials, and `agreement`: the same
correlation oriented so that +1 means the objective orders the trials best-first exactly as the metric does).
The transcribe-and-re-render baseline is skipped: it does not depend on the trial, `audiostyle evaluate`
shows it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiostyle.platform.core.atomic_files import write_json_atomic
from audiostyle.platform.core.errors import CheckpointError
from audiostyle.platform.sweeps.report import TrialRow, rank_key, render_text, write_csv
from audiostyle.platform.sweeps.report_page import write_sweep_page

EVALUATION_CSV = "evaluation.csv"
RANKS_CSV = "evaluation_ranks.csv"
METRICS = ("mr_stft", "p_target", "pitch_acc", "chroma_cos")  # target fidelity, timbre, content
BASELINE = "baseline"


@dataclass
class EvaluatedSystem:
    """One evaluated bundle: a trial's (row given) or the baseline bundle's, with evaluate()'s results."""

    label: str  # "trial_0003", "trial_0000 (default)", "baseline"
    row: TrialRow | None
    bundle: Path
    results: dict[str, Any]
    ranked: bool  # one of the best N: counted in the correlations

    def scores(self) -> dict[str, float | None]:
        """`<direction>/<metric>` of the model for every direction, then `all/<metric>` over them."""
        out = {}
        for direction, systems in sorted(self.results["pairs"].items()):
            for metric in METRICS:
                out[f"{direction}/{metric}"] = systems.get("model", {}).get(metric)
        for metric in METRICS:
            out[f"all/{metric}"] = self.results["summary"].get("model", {}).get(metric)
        return out


@dataclass
class RankCorrelation:
    column: str
    rho: float  # Spearman's rho between objective value and metric value
    p_value: float
    agreement: float  # rho oriented: +1 = the objective ranks best-first as the metric does
    trials: int


@dataclass
class SweepEvaluation:
    systems: list[EvaluatedSystem]
    correlations: list[RankCorrelation]
    csv_path: Path
    ranks_path: Path
    table: str


def trials_to_evaluate(rows: list[TrialRow], modes: list[str], count: int) -> list[tuple[TrialRow, bool]]:
    """(row, ranked) for the best `count` completed trials with a checkpoint, best first, then the default
    trial when it is not among them (ranked False)."""
    done = [r for r in rows if r.checkpoint_path and math.inf not in rank_key(r, modes)]
    best = sorted(done, key=lambda r: (rank_key(r, modes), r.number))[:count]
    extra = [r for r in done if r.is_default and r not in best]
    return [(r, True) for r in best] + [(r, False) for r in extra]


def export_trial(row: TrialRow, folder: Path, *, data_root: str | None, device: str) -> Path:
    """The trial's reported checkpoint as a bundle in `folder` (kept when it already holds that checkpoint's)."""
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.bundles.load import read_bundle_meta

    try:
        if read_bundle_meta(folder).get("provenance", {}).get("checkpoint") == str(row.checkpoint_path):
            return folder
    except CheckpointError:  # none there yet, or damaged: exported (again) below
        pass
    return export_bundle(str(row.checkpoint_path), folder, data_root=data_root, metrics=row.metrics,
                         device=device, overwrite=True)


def evaluate_bundle(bundle: Path, out: Path, *, data_root: str, input_soundfont: str | None,
                    max_pieces: int | None, device: str, run: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """evaluate()'s results for `bundle` in `out` (reused when results.json there scored the same bundle
    contents on the same inputs)."""
    from audiostyle.platform.bundles.load import read_bundle_meta

    checkpoint = read_bundle_meta(bundle).get("provenance", {}).get("checkpoint")
    try:
        previous = json.loads((out / "results.json").read_text())
        if (previous.get("provenance", {}).get("checkpoint") == checkpoint and previous.get("data_root") == data_root
                and previous.get("input_soundfont") == input_soundfont and previous.get("max_pieces") == max_pieces):
            return previous
    except (OSError, ValueError):
        pass
    results = run(str(bundle), data_root, out_dir=str(out), max_pieces=max_pieces, device=device,
                  baselines=False, progress=False, input_soundfont=input_soundfont)
    results["max_pieces"] = max_pieces  # what the reuse check above compares; rewritten with it
    write_json_atomic(out / "results.json", results, indent=2)
    return results


def rank_correlations(systems: list[EvaluatedSystem], mode: str, higher_is_better: dict[str, bool]
                      ) -> list[RankCorrelation]:
    """Spearman's rho between the objective and each score column over the ranked trials (nan below 3)."""
    from scipy.stats import spearmanr

    ranked = [s for s in systems if s.ranked and s.row is not None and s.row.values[0] is not None]
    columns = list(ranked[0].scores()) if ranked else []
    out = []
    for column in columns:
        pairs = [(s.row.values[0], s.scores()[column]) for s in ranked]
        pairs = [(o, m) for o, m in pairs if m is not None and math.isfinite(m)]
        rho, p = math.nan, math.nan
        if len(pairs) >= 3 and len({m for _, m in pairs}) > 1 and len({o for o, _ in pairs}) > 1:
            result = spearmanr([o for o, _ in pairs], [m for _, m in pairs])
            rho, p = float(result.statistic), float(result.pvalue)
        sign = (1 if mode == "max" else -1) * (1 if higher_is_better[column.rsplit("/", 1)[1]] else -1)
        out.append(RankCorrelation(column, rho, p, rho * sign, len(pairs)))
    return out


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def evaluate_sweep(rows: list[TrialRow], *, sweep_dir: Path, metric: str, mode: str, count: int, data_root: str,
                   input_soundfont: str | None, baseline_bundle: str | None = None, max_pieces: int | None = None,
                   device: str = "cpu", run: Callable[..., dict[str, Any]] | None = None) -> SweepEvaluation:
    """Export and evaluate the best `count` trials (and the default trial, and a baseline bundle), write
    evaluation.csv and evaluation_ranks.csv into `sweep_dir`. `run`: evaluate() (tests pass a stand-in)."""
    from audiostyle.platform.evaluation.evaluate import evaluate
    from audiostyle.platform.evaluation.metrics import METRICS as EVALUATION_METRICS

    run = run or evaluate
    chosen = trials_to_evaluate(rows, [mode], count)
    if not chosen and baseline_bundle is None:
        raise CheckpointError(f"{sweep_dir}: no completed trial with a checkpoint to evaluate; run the sweep first")
    systems = []
    for row, ranked in chosen:
        name = f"trial_{row.number:04d}"
        bundle = export_trial(row, sweep_dir / "bundles" / name, data_root=data_root, device=device)
        results = evaluate_bundle(bundle, sweep_dir / "evaluation" / name, data_root=data_root,
                                  input_soundfont=input_soundfont, max_pieces=max_pieces, device=device, run=run)
        systems.append(EvaluatedSystem(name + (" (default)" if row.is_default else ""), row, bundle, results, ranked))
    if baseline_bundle is not None:
        results = evaluate_bundle(Path(baseline_bundle), sweep_dir / "evaluation" / BASELINE, data_root=data_root,
                                  input_soundfont=input_soundfont, max_pieces=max_pieces, device=device, run=run)
        systems.append(EvaluatedSystem(BASELINE, None, Path(baseline_bundle), results, False))
    higher = {m: hib for m, (hib, _) in EVALUATION_METRICS.items()}
    correlations = rank_correlations(systems, mode, higher)

    columns = list(systems[0].scores())
    header = ["system", "trial", "ranked", "step", metric, *columns, "bundle"]
    body = [[s.label, _cell(s.row.number if s.row else None), "yes" if s.ranked else "no",
             _cell(s.row.step if s.row else None), _cell(s.row.values[0] if s.row else None),
             *(_cell(v) for v in s.scores().values()), str(s.bundle)] for s in systems]
    csv_path, ranks_path = sweep_dir / EVALUATION_CSV, sweep_dir / RANKS_CSV
    write_csv(csv_path, header, body)
    rank_header = ["metric", "spearman_rho", "p_value", "agreement", "trials"]
    rank_body = [[c.column, _cell(c.rho), _cell(c.p_value), _cell(c.agreement), str(c.trials)] for c in correlations]
    write_csv(ranks_path, rank_header, rank_body)
    write_sweep_page(sweep_dir)
    shown = ["system", "step", metric, *(c for c in columns if c.startswith("all/")), "-"]
    table = render_text(shown, [[b[0], b[3], b[4], *(b[5 + columns.index(c)] for c in shown[3:-1]), ""] for b in body])
    table += "\n\n" + render_text([*rank_header, "-"], [[*r, ""] for r in rank_body])
    return SweepEvaluation(systems, correlations, csv_path, ranks_path, table)
