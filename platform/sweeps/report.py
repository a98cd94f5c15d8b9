"""What a finished (or interrupted) sweep leaves for people: results table, best-config YAML and plots.

Inputs are the durable records of the sweep, so a report can be rebuilt at any time, resumed sweeps
included: the Optuna study (params and objective values the sampler saw) and the trial ledger written by
the sweep driver (`trials.jsonl`: each trial's last reported metrics, including the step it reached and
`checkpoint_path`, the Train checkpoint it reported last). Outputs, all under the sweep folder:

- `results.csv` and a printed table, best trial first;
- `best.yaml`: the best trial's full resolved config as a ready-to-run experiment, read from the
  `config.yaml` inside its checkpoint (what really trained), with a header naming sweep, trial and metric;
- `plots/*.png`: optimization history, parameter importance (needs two completed trials), parallel
  coordinates, and the Pareto front when there are several objectives. Plots show the config values that
  ran (curriculum boundaries as boundaries, not the sampler's internal positions);
- `index.html`: all of it in one page (report_page.py), rebuilt again after `--evaluate`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audiostyle.platform.config.loader import config_from_dict
from audiostyle.platform.core.atomic_files import atomic_write, write_text_atomic
from audiostyle.platform.core.modes import optuna_direction, smaller_is_better
from audiostyle.platform.sweeps.report_page import write_sweep_page
from audiostyle.platform.sweeps.space import SearchSpace
from audiostyle.platform.sweeps.study import DEFAULT_ATTR

logger = logging.getLogger(__name__)


@dataclass
class TrialRow:
    """One trial of the sweep as the report shows it."""

    number: int
    state: str  # Optuna state: COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: list[float | None]
    sample: dict[str, Any]
    run_name: str = ""
    step: int | None = None
    checkpoint_path: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    is_default: bool = False  # the trial `--include-default` enqueued: the experiment's own values

    def stopped_early(self, max_steps: int) -> bool:
        return self.state == "COMPLETE" and self.step is not None and self.step < max_steps


@dataclass
class SweepReport:
    rows: list[TrialRow]
    table: str
    csv_path: Path
    best: TrialRow | None
    best_yaml: Path | None
    plots: dict[str, Path]
    skipped_plots: dict[str, str]
    page: Path  # index.html: all of the above in one page


def read_ledger(path: Path) -> dict[int, dict[str, Any]]:
    """The last ledger line per Optuna trial number (a line cut short by a crash is ignored)."""
    entries: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return entries
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("optuna_trial"), int):
            entries[entry["optuna_trial"]] = entry
    return entries


def collect_rows(study: Any, ledger: dict[int, dict[str, Any]], metrics: list[str]) -> list[TrialRow]:
    """Join the study's trials with the ledger's last metrics, by Optuna trial number."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        entry = ledger.get(trial.number, {})
        last = entry.get("metrics", {})
        values: list[float | None] = list(trial.values) if trial.values else [last.get(m) for m in metrics]
        step = last.get("step")
        rows.append(TrialRow(
            number=trial.number, state=trial.state.name, values=values,
            sample=dict(trial.user_attrs.get("sample", {})), run_name=trial.user_attrs.get("run_name", ""),
            step=int(step) if isinstance(step, (int, float)) else None,
            checkpoint_path=last.get("checkpoint_path"), metrics=last,
            is_default=bool(trial.user_attrs.get(DEFAULT_ATTR)),
        ))
    return rows


def rank_key(row: TrialRow, modes: list[str]) -> tuple[float, ...]:
    """Sort key, smaller is better; trials without values last."""
    if row.state != "COMPLETE" or any(v is None or math.isnan(v) for v in row.values):
        return tuple(math.inf for _ in modes)
    return tuple(smaller_is_better(v, m) for v, m in zip(row.values, modes))  # type: ignore[arg-type]


def pareto_front(rows: list[TrialRow], modes: list[str]) -> list[TrialRow]:
    """Completed trials that no other completed trial beats on every objective, best first objective first."""
    scored = [(r, rank_key(r, modes)) for r in rows if math.inf not in rank_key(r, modes)]
    front = [r for r, key in scored
             if not any(all(o <= k for o, k in zip(other, key)) and other != key for _, other in scored)]
    return sorted(front, key=lambda r: rank_key(r, modes))


def best_row(rows: list[TrialRow], modes: list[str]) -> TrialRow | None:
    """The best trial on the first objective among the Pareto front (the plain best for one objective)."""
    front = pareto_front(rows, modes)
    return front[0] if front else None


def _fmt(value: Any, short: bool = True) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if short else repr(value)
    if value is None:
        return "-"
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def format_table(rows: list[TrialRow], metrics: list[str], modes: list[str], paths: list[str],
                 max_steps: int, *, short: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows as text (numbers to 4 digits if `short`, else exact), best trial first."""
    header = ["trial", "run", "state", "step", "stopped_early", *metrics, *paths, "checkpoint_path"]
    body = []
    for row in sorted(rows, key=lambda r: (rank_key(r, modes), r.number)):
        body.append([str(row.number), row.run_name + (" (default)" if row.is_default else ""), row.state, _fmt(row.step),
                     "yes" if row.stopped_early(max_steps) else "no",
                     *(_fmt(v, short) for v in row.values), *(_fmt(row.sample.get(p), short) for p in paths),
                     row.checkpoint_path or "-"])
    return header, body


def render_text(header: list[str], body: list[list[str]]) -> str:
    """A fixed-width table for the terminal (without the long checkpoint column)."""
    cols = [".".join(h.split(".")[-3:]) for h in header[:-1]]  # 'phases.0.until' says enough
    cells = [cols, *[r[:-1] for r in body]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells)


def write_csv(path: Path, header: list[str], body: list[list[str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(body)
    write_text_atomic(path, buffer.getvalue())


def best_config(row: TrialRow, space: SearchSpace) -> dict[str, Any]:
    """The config the best trial trained with: its checkpoint's config.yaml, else the sweep's resolved
    mapping with its sample."""
    if row.checkpoint_path and (Path(row.checkpoint_path) / "config.yaml").is_file():
        return yaml.safe_load((Path(row.checkpoint_path) / "config.yaml").read_text())
    return space.apply_dict(row.sample)


def write_best_yaml(path: Path, row: TrialRow, space: SearchSpace, *, sweep_name: str, sweep_dir: Path,
                    metrics: list[str], modes: list[str]) -> Path:
    """The best trial's config as a runnable experiment (validated before it is written)."""
    data = best_config(row, space)
    data["name"] = f"{space.resolved['name']}_best"
    data["run"] = {**data.get("run", {}), "name": None,
                   "storage_path": space.resolved.get("run", {}).get("storage_path", "runs")}
    data["sweep"] = None  # the result of a sweep, not a sweep: training it runs one experiment
    config_from_dict(data, file=str(path))
    scores = ", ".join(f"{m} = {_fmt(v)} ({mode})" for m, v, mode in zip(metrics, row.values, modes))
    searched = ", ".join(f"{p} = {_fmt(v)}" for p, v in row.sample.items())
    header = [
        f"# Best configuration of sweep {sweep_name} ({sweep_dir})",
        f"# trial {row.number} (run {row.run_name}): {scores} at step {_fmt(row.step)}",
        f"# searched values: {searched}",
        f"# checkpoint of that trial: {row.checkpoint_path or '-'}",
        f"# Run: audiostyle train {path}",
    ]
    write_text_atomic(path, "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False))
    return path


def display_study(rows: list[TrialRow], space: SearchSpace, modes: list[str]) -> Any:
    """An in-memory study whose params are the config values that ran (for Optuna's plots)."""
    import optuna

    directions = [optuna_direction(m) for m in modes]
    study = optuna.create_study(directions=directions)
    by_path = {d.path: d for d in space.entries}
    for row in sorted(rows, key=lambda r: r.number):
        done = row.state == "COMPLETE" and all(v is not None and not math.isnan(v) for v in row.values)
        if row.state not in ("COMPLETE", "PRUNED", "FAIL"):
            continue
        params = {p: by_path[p].display_value(v) for p, v in row.sample.items() if p in by_path}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={p: by_path[p].distribution() for p in params},
            values=row.values if done else None,
            state=optuna.trial.TrialState.COMPLETE if done else optuna.trial.TrialState.FAIL))
    return study


def write_plots(rows: list[TrialRow], space: SearchSpace, metrics: list[str], modes: list[str],
                out_dir: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """PNG plots; returns (written name -> path, skipped name -> reason)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    study = display_study(rows, space, modes)
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}

    def save(name: str, plot: Any, needs: int = 1, **kwargs: Any) -> None:
        if len(completed) < needs:
            skipped[name] = f"needs at least {needs} completed trials, the sweep has {len(completed)}"
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = plot(study, **kwargs)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
            figure.set_size_inches(max(figure.get_figwidth(), 9), max(figure.get_figheight(), 5))
            written[name] = atomic_write(out_dir / f"{name}.png",
                                         lambda tmp, f=figure: f.savefig(tmp, dpi=110, bbox_inches="tight"))
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. no parameter varies
            skipped[name] = str(exc)
        finally:
            plt.close("all")

    for i, metric in enumerate(metrics):
        suffix = "" if len(metrics) == 1 else "_" + metric.replace("/", "_")
        target = None if len(metrics) == 1 else (lambda t, i=i: t.values[i])
        save(f"optimization_history{suffix}", ovm.plot_optimization_history, target=target, target_name=metric)
        save(f"param_importances{suffix}", ovm.plot_param_importances, needs=2, target=target,
             target_name=metric)
        save(f"parallel_coordinate{suffix}", ovm.plot_parallel_coordinate, needs=2, target=target,
             target_name=metric)
    if len(metrics) in (2, 3):
        save("pareto_front", ovm.plot_pareto_front, target_names=metrics)
    return written, skipped


def write_report(study: Any, space: SearchSpace, *, sweep_name: str, sweep_dir: Path, metrics: list[str],
                 modes: list[str], max_steps: int, plots: bool = True) -> SweepReport:
    """Table (CSV + text), best YAML and plots of a sweep, from its study and ledger."""
    rows = collect_rows(study, read_ledger(sweep_dir / "trials.jsonl"), metrics)
    header, body = format_table(rows, metrics, modes, space.paths, max_steps, short=False)
    csv_path = sweep_dir / "results.csv"
    write_csv(csv_path, header, body)
    header, body = format_table(rows, metrics, modes, space.paths, max_steps)
    best = best_row(rows, modes)
    best_yaml = None
    if best is not None:
        best_yaml = write_best_yaml(sweep_dir / "best.yaml", best, space, sweep_name=sweep_name,
                                    sweep_dir=sweep_dir, metrics=metrics, modes=modes)
    written, skipped = write_plots(rows, space, metrics, modes, sweep_dir / "plots") if plots else ({}, {})
    for name, reason in skipped.items():
        logger.info("plot %s skipped: %s", name, reason)
    return SweepReport(rows, render_text(header, body), csv_path, best, best_yaml, written, skipped,
                       write_sweep_page(sweep_dir))
