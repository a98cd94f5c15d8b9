"""The sweep folder's `index.html`: what a sweep found, in one page a browser opens from disk.

Built only from the files the sweep already left (report.py's results.csv, best.yaml and plots/*.png;
evaluate_trials.py's evaluation.csv, evaluation_ranks.csv and evaluation/trial_NNNN/index.html), so it can be
rebuilt at any time and never disagrees with them: the trials table (best first, as results.csv), the plots,
the best configuration, then the evaluated trials beside the default with each one's evaluation report linked,
and how well the objective ranks what the evaluation ranks. Whatever is not there yet is skipped with a line
saying how to make it.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

from audiostyle.platform.core.atomic_files import write_text_atomic
from audiostyle.platform.evaluation.report import STYLE

PAGE = "index.html"
PLOT_ORDER = ("optimization_history", "param_importances", "parallel_coordinate", "pareto_front")
# evaluation.csv (evaluate_trials.py) is system, trial, ranked, step, <objective>, then every direction's metrics:
# the page shows the system, its step, the objective and the metrics over all directions, and names the file.
EVALUATION_SHOWN = ("system", "step")
OBJECTIVE_COLUMN = 4


# A trial row holds every searched parameter: smaller cells so a dozen of them fit the page; wider still, the
# table scrolls on its own and the plots below stay put. best.yaml's long comment lines wrap.
PAGE_STYLE = """
table.compact { font-size: 0.85em; } table.compact th, table.compact td { padding: 3px 5px; }
div.scroll { overflow-x: auto; } pre { white-space: pre-wrap; }
"""


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def _short(cell: str) -> str:
    """A CSV number at 4 significant digits (the CSV keeps them all); anything else as it is."""
    try:
        return cell if cell.isdigit() else f"{float(cell):.4g}"
    except ValueError:
        return cell


def _breakable(header: str) -> str:
    """A column header, escaped, that the browser may wrap after each '.' or '/'."""
    text = html.escape(header.replace("_", " "))
    return text.replace(".", ".<wbr>").replace("/", "/<wbr>")


def _table(rows: list[list[str]], *, links: dict[str, str] | None = None) -> str:
    """HTML table from CSV rows (first row the header), numbers shortened; a first cell found in `links`
    links to its page."""
    links = links or {}
    # A parameter's dotted path is one long word: a break after each dot keeps the table inside the page.
    head = "".join(f"<th>{_breakable(h)}</th>" for h in rows[0])
    body = []
    for row in rows[1:]:
        first = html.escape(row[0])
        key = row[0].split(" ")[0]
        if key in links:
            first = f"<a href='{html.escape(links[key])}'>{first}</a>"
        cells = "".join(f"<td>{html.escape(_short(c))}</td>" for c in row[1:])
        body.append(f"<tr><td class='name'>{first}</td>{cells}</tr>")
    return f"<div class='scroll'><table class='compact'><tr>{head}</tr>{''.join(body)}</table></div>"


def _plots(plots_dir: Path) -> list[str]:
    """Known plots first, in reading order, then any other PNG."""
    found = sorted(plots_dir.glob("*.png")) if plots_dir.is_dir() else []
    ordered = sorted(found, key=lambda p: next((i for i, name in enumerate(PLOT_ORDER) if p.stem.startswith(name)),
                                               len(PLOT_ORDER)))
    return [f"<h3>{html.escape(p.stem.replace('_', ' '))}</h3><img src='plots/{html.escape(p.name)}' "
            f"alt='{html.escape(p.stem)}'>" for p in ordered]


def _evaluation_summary(rows: list[list[str]]) -> list[list[str]]:
    """evaluation.csv cut to the system, its step, the objective and the metrics over all directions."""
    header = rows[0]
    keep = [i for i, h in enumerate(header) if h in EVALUATION_SHOWN or i == OBJECTIVE_COLUMN or h.startswith("all/")]
    return [[row[i] for i in keep] for row in rows]


def write_sweep_page(sweep_dir: Path) -> Path:
    """Write `<sweep_dir>/index.html` from the sweep's files; returns its path."""
    title = f"audiostyle sweep {sweep_dir.name}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}{PAGE_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    results = sweep_dir / "results.csv"
    if results.is_file():
        rows = _read_csv(results)
        parts += [f"<h2>Trials ({len(rows) - 1}), best first</h2>",
                  "<p class='note'>From <code>results.csv</code>: each trial's objective at its last report, the step "
                  "it reached (fewer than the budget: stopped by ASHA), and the values it ran with.</p>",
                  _table(rows)]
    else:
        parts.append("<p>No trial has finished yet: <code>results.csv</code> is written when the sweep ends or is "
                     "interrupted.</p>")
    plots = _plots(sweep_dir / "plots")
    parts += ["<h2>Plots</h2>", *(plots or ["<p class='note'>No plots (the sweep ran with --no-plots, or too few "
                                            "trials completed).</p>"])]
    best = sweep_dir / "best.yaml"
    if best.is_file():
        parts += ["<h2>Best configuration</h2>",
                  f"<p class='note'>Train it: <code>audiostyle train {html.escape(str(best))}</code></p>",
                  f"<pre>{html.escape(best.read_text())}</pre>"]
    evaluation = sweep_dir / "evaluation.csv"
    if evaluation.is_file():
        reports = {p.parent.name: f"evaluation/{p.parent.name}/index.html"
                   for p in (sweep_dir / "evaluation").glob("*/index.html")}
        parts += ["<h2>Evaluated trials</h2>",
                  "<p class='note'>Each bundle evaluated as <code>audiostyle evaluate</code> does (a trial's name links "
                  "to its report, spectrograms included); the metrics over all directions. Every direction's: "
                  "<code>evaluation.csv</code>.</p>", _table(_evaluation_summary(_read_csv(evaluation)), links=reports)]
        ranks = sweep_dir / "evaluation_ranks.csv"
        if ranks.is_file():
            parts += ["<h3>Does the objective rank the trials as the evaluation does?</h3>",
                      "<p class='note'>Spearman's rho over the evaluated trials; agreement +1: the objective orders "
                      "them best-first exactly as the metric does.</p>", _table(_read_csv(ranks))]
    else:
        parts.append("<p class='note'>No evaluation yet: <code>audiostyle sweep EXPERIMENT.yaml --resume --evaluate "
                     "N</code> exports and evaluates the best N trials and the default.</p>")
    parts.append("</body></html>")
    path = sweep_dir / PAGE
    write_text_atomic(path, "\n".join(parts))
    return path
