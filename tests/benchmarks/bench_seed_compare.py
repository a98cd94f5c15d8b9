"""Benchmark: two or more configurations compared by their `audiostyle evaluate` reports over seeds.

Run: `python tests/benchmarks/bench_seed_compare.py --config default=REPORT[,REPORT...] --config best=REPORT,...
[--kind melodies|chords]`. Each REPORT is an evaluation folder (or its results.json) of one seed's bundle,
all on the same data and inputs (the script refuses reports whose pieces or input sound set differ). For every
direction and metric it prints each configuration's mean +- sample std [min, max] over its seeds, then each
configuration against the first:
  change     the mean's relative change, signed so that + is better (MR-STFT lower, the others higher)
  gap>spread the difference of the means is larger than the range (max - min) of either configuration's seeds
and the verdict of the sweep issue's bar: >= 10 % better on MR-STFT to the target or on P(target), beyond the
spread, with no content metric (pitch accuracy, chroma, note F1) worse by more than 2 %. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from audiostyle.platform.evaluation.metrics import METRICS

TARGET = ("mr_stft", "p_target")  # what the bar asks to improve
CONTENT = ("pitch_acc", "chroma_cos", "note_f1")  # what must not get worse
GAIN, CONTENT_LOSS = 0.10, 0.02


def load_report(path: Path) -> dict:
    """results.json of an evaluation folder, or the file itself."""
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise SystemExit(f"{path}: no results.json (give an `audiostyle evaluate --out` folder)")
    return json.loads(file.read_text())


def model_metrics(report: dict, kind: str) -> dict[str, dict[str, float]]:
    """direction -> metric -> the model's value on `kind` (melodies/chords) pieces."""
    by_kind = report.get("by_kind", {})
    if kind not in by_kind:
        raise SystemExit(f"report of {report.get('bundle')}: no {kind!r} pieces (has {sorted(by_kind)})")
    return {direction: {m: v for m, v in systems["model"].items() if v is not None}
            for direction, systems in by_kind[kind].items()}


def better_change(metric: str, base: float, other: float) -> float:
    """Relative change of the mean, + when `other` is better (each metric's direction: evaluation/metrics.py)."""
    change = (other - base) / abs(base) if base else 0.0
    higher_is_better, _ = METRICS[metric]
    return change if higher_is_better else -change


def summary(values: list[float]) -> str:
    std = f" +- {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{std} [{min(values):.3f}, {max(values):.3f}]"


def compare(configs: dict[str, list[dict]], kind: str) -> list[str]:
    """The printed lines: per direction and metric, every configuration, then each against the first."""
    labels = list(configs)
    runs = {label: [model_metrics(r, kind) for r in reports] for label, reports in configs.items()}
    directions = sorted(runs[labels[0]][0])
    lines = []
    verdicts = {label: [] for label in labels[1:]}
    for direction in directions:
        lines.append(f"\n{kind}, {direction}")
        lines.append(f"{'metric':<12}" + "".join(f"{label:<36}" for label in labels)
                     + "".join(f"{label + ' vs ' + labels[0]:<28}" for label in labels[1:]))
        for metric in (*TARGET, *CONTENT):
            values = {label: [run[direction][metric] for run in runs[label] if metric in run.get(direction, {})]
                      for label in labels}
            if any(not v for v in values.values()):
                continue
            cells = "".join(f"{summary(values[label]):<36}" for label in labels)
            base = values[labels[0]]
            for label in labels[1:]:
                change = better_change(metric, statistics.fmean(base), statistics.fmean(values[label]))
                gap = abs(statistics.fmean(values[label]) - statistics.fmean(base))
                beyond = gap > max(max(base) - min(base), max(values[label]) - min(values[label]))
                cells += f"{change:+8.1%} {'gap>spread' if beyond else 'in spread':<19}"
                verdicts[label].append((direction, metric, change, beyond))
            lines.append(f"{metric:<12}{cells}")
    for label, rows in verdicts.items():
        wins = [f"{d} {m} {c:+.1%}" for d, m, c, beyond in rows if m in TARGET and c >= GAIN and beyond]
        losses = [f"{d} {m} {c:+.1%}" for d, m, c, _ in rows if m in CONTENT and c < -CONTENT_LOSS]
        met = bool(wins) and not losses
        lines.append(f"\n{label} vs {labels[0]} ({kind}): bar {'MET' if met else 'not met'}; >= {GAIN:.0%} better "
                     f"beyond the spread: {', '.join(wins) or 'none'}; content worse by > {CONTENT_LOSS:.0%}: "
                     f"{', '.join(losses) or 'none'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, metavar="LABEL=REPORT[,REPORT...]",
                        help="a configuration and its seeds' evaluation folders; the first is the baseline")
    parser.add_argument("--kind", default="melodies", choices=("melodies", "chords"))
    args = parser.parse_args()
    configs: dict[str, list[dict]] = {}
    for spec in args.config:
        label, sep, paths = spec.partition("=")
        if not sep or not paths:
            raise SystemExit(f"--config {spec!r}: expected LABEL=REPORT[,REPORT...]")
        configs[label] = [load_report(Path(p)) for p in paths.split(",")]
    if len(configs) < 2:
        raise SystemExit("--config: give at least two configurations (the first is the baseline)")
    first = next(iter(configs.values()))[0]
    for label, reports in configs.items():
        for report in reports:
            for key in ("pieces", "input_soundfont", "input_condition"):
                if report.get(key) != first.get(key):
                    raise SystemExit(f"{label}: report of {report.get('bundle')} has {key} {report.get(key)!r}, "
                                     f"the first has {first.get(key)!r}: compare the same inputs")
    print(f"inputs: {first.get('input_soundfont') or 'the data root'}"
          f"{', ' + first['input_condition'] if first.get('input_condition') else ''}; pieces "
          f"{', '.join(first.get('pieces', []))}; seeds: "
          + ", ".join(f"{label} {len(reports)}" for label, reports in configs.items()))
    print("\n".join(compare(configs, args.kind)))


if __name__ == "__main__":
    main()
