"""A static HTML report of an evaluation: metric tables beside the baselines, spectrograms, audio players.

One self-contained folder (index.html, spectrograms/*.png, audio/*.flac with relative links) that opens
from disk in any browser and can be copied or served as it is. Each table cell is coloured by whether the
model beats the baseline in that metric's direction, so a reader sees at a glance where the transfer
keeps the notes (content columns) and where it changes the instrument (P(target)).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from audiostyle.platform.core.atomic_files import atomic_write, write_text_atomic

MAX_EXAMPLES = 12  # spectrogram figures cost ~0.3 s each; a dozen shows the behaviour without bloating the page
EXCERPT_SECONDS = 10.0  # a few bars: each note's partials stay visible at the figure's width

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: right; }
th { background: #eee; } td.name { text-align: left; }
td.better { background: #d8f0d8; } td.worse { background: #f6dada; }
.example { border-top: 1px solid #ccc; padding: 1em 0; }
.players { display: flex; gap: 2em; flex-wrap: wrap; } .players div { text-align: center; }
img { max-width: 100%; } .note { color: #555; font-size: 0.9em; }
"""


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def metric_table(block: dict[str, dict[str, float | None]], metrics: dict[str, dict[str, Any]]) -> str:
    """Rows = systems, columns = metrics; baseline cells marked where the model is better or worse."""
    systems = list(block)
    # spaces instead of underscores let the long research-metric headers wrap
    head = "".join(f"<th title='{html.escape(m['description'])}'>{html.escape(name.replace('_', ' '))} "
                   f"{'&uarr;' if m['higher_is_better'] else '&darr;'}</th>" for name, m in metrics.items())
    rows = []
    for system in systems:
        cells = []
        for name, m in metrics.items():
            value = block[system].get(name)
            ours = block.get("model", {}).get(name)
            cls = ""
            if system not in ("model", "oracle") and value is not None and ours is not None and ours != value:
                model_better = (ours > value) == m["higher_is_better"]
                cls = " class='better'" if model_better else " class='worse'"
            cells.append(f"<td{cls}>{_fmt(value)}</td>")
        rows.append(f"<tr><td class='name'>{html.escape(system)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>system</th>{head}</tr>{''.join(rows)}</table>"


def judge_table(checks: dict[str, Any]) -> str:
    """P(instrument) the judge gives each kind of clip of the test pieces, beside its trust threshold."""
    t = checks["thresholds"]
    limits = {"oracle": f"&ge; {t['oracle_min']}", "identity": f"&le; {t['identity_max']}"}
    rows = []
    for key, value in checks["p_instrument"].items():
        limit = limits.get(key, f"&lt; {t['degraded_max']}")
        ok = (value >= t["oracle_min"] if key == "oracle" else value <= t["identity_max"] if key == "identity"
              else value < t["degraded_max"])
        rows.append(f"<tr><td class='name'>{html.escape(checks['descriptions'].get(key, key))}</td>"
                    f"<td class='{'better' if ok else 'worse'}'>{value:.3f}</td><td>{limit}</td></tr>")
    verdict = "trusted" if checks["trusted"] else "NOT trusted: " + "; ".join(checks["failed"])
    return (f"<p>Judge on these pieces: <b>{html.escape(verdict)}</b></p><table><tr><th>clip</th>"
            f"<th>P(its instrument)</th><th>needed</th></tr>{''.join(rows)}</table>")


def spectrogram_png(path: Path, clips: dict[str, np.ndarray], sr: int) -> None:
    """Side-by-side log-magnitude spectrograms of the first EXCERPT_SECONDS (dB, shared colour scale),
    written atomically."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(clips), figsize=(4.2 * len(clips), 3.2), sharey=True, squeeze=False)
    for ax, (title, clip) in zip(axes[0], clips.items()):
        clip = clip[: int(EXCERPT_SECONDS * sr)]
        db = librosa.amplitude_to_db(np.abs(librosa.stft(clip, n_fft=1024, hop_length=256)), ref=1.0, top_db=None)
        extent = (0, len(clip) / sr, 0, sr / 2000)
        ax.imshow(np.maximum(db, -80), origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=-80, vmax=20)
        ax.set_title(title)
        ax.set_xlabel("time (s)")
    axes[0][0].set_ylabel("frequency (kHz)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80))
    plt.close(fig)


def _player(label: str, rel: str) -> str:
    return (f"<div>{html.escape(label)}<br><audio controls preload='none' src='{html.escape(rel)}'>"
            f"<a href='{html.escape(rel)}'>{html.escape(rel)}</a></audio></div>")


def interleaved_by_kind(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The clips with the kinds (melodies, chords) taking turns, each kind's in their order: the examples
    of a report on both show both."""
    seen: dict[Any, int] = {}
    ranked = []
    for item in items:
        kind = item.get("kind")
        ranked.append((seen.get(kind, 0), item))
        seen[kind] = seen.get(kind, 0) + 1
    return [item for _, item in sorted(ranked, key=lambda pair: pair[0])]


def write_report(results: dict[str, Any], out_dir: str | Path, *, max_examples: int = MAX_EXAMPLES) -> Path:
    """Write `<out_dir>/index.html` (and spectrogram PNGs) for an `evaluate` results dict."""
    import soundfile as sf

    out = Path(out_dir)
    (out / "spectrograms").mkdir(parents=True, exist_ok=True)
    metrics = results["metrics"]
    prov = results.get("provenance", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>audiostyle evaluation</title>"
             f"<style>{STYLE}</style></head><body>",
             "<h1>audiostyle evaluation</h1>",
             f"<p>Bundle <code>{html.escape(str(results.get('bundle')))}</code>: run "
             f"{html.escape(str(prov.get('run')))}, step {html.escape(str(prov.get('step')))}, commit "
             f"<code>{html.escape(str(prov.get('source_commit')))}</code>. Data <code>"
             f"{html.escape(results['data_root'])}</code>, {len(results['pieces'])} test pieces, instruments "
             f"{html.escape(', '.join(results['instruments']))}; inputs: {html.escape(results.get('inputs', 'test split'))}. Real-time factor {results['realtime_factor']:.3f} on "
             f"{html.escape(results['device'])}.</p>",
             "<p class='note'>Systems: " + "; ".join(f"<b>{html.escape(k)}</b> = {html.escape(v)}"
                                                     for k, v in results["systems"].items()) + ". Green baseline "
             "cells: the model is better than that baseline; red: worse. Arrows give each metric's good direction."
             "</p>",
             f"<p class='note'>Timbre judge trained on {html.escape(results['classifier']['trained_on'])}. "
             f"{html.escape(results['classifier'].get('note', ''))}</p>",
             *(f"<p class='note'><b>Note:</b> {html.escape(n)}</p>" for n in results.get("notes", [])),
             "<h2>All pairs</h2>", metric_table(results["summary"], metrics)]
    if "checks" in results["classifier"]:
        parts += ["<h2>Can the timbre judge be trusted?</h2>", judge_table(results["classifier"]["checks"])]
    for pair, block in results["pairs"].items():
        src, _, tgt = pair.partition("->")
        parts += [f"<h2>{html.escape(src)} &rarr; {html.escape(tgt)}</h2>", metric_table(block, metrics)]
    for kind, pairs in results.get("by_kind", {}).items():  # melodies and chords apart, when both were tested
        parts.append(f"<h2>{html.escape(kind.capitalize())}</h2>")
        checks = results["classifier"].get("checks_by_kind", {}).get(kind)
        if checks:
            parts += [f"<h3>The timbre judge on {html.escape(kind)}</h3>", judge_table(checks)]
        for pair, block in pairs.items():
            src, _, tgt = pair.partition("->")
            parts += [f"<h3>{html.escape(kind)}: {html.escape(src)} &rarr; {html.escape(tgt)}</h3>",
                      metric_table(block, metrics)]
    parts.append("<h2>Examples</h2>")
    sr = results["sample_rate"]
    for k, item in enumerate(interleaved_by_kind(results["items"])[:max_examples]):
        png = f"spectrograms/{k:03d}_{item['piece']}_{item['source']}_to_{item['target']}.png"
        clips = {}
        roles = [("input", f"input ({item['source']})"), ("output", f"output ({item['target']})"),
                 ("baseline", "transcribe + re-render"), ("target", f"target rendering ({item['target']})")]
        for role, label in roles:
            if role in item["audio"]:
                audio, _ = sf.read(str(out / item["audio"][role]), dtype="float32")
                clips[label] = audio
        spectrogram_png(out / png, clips, sr)
        m = item["scores"]["model"]
        summary = ", ".join(f"{name} {_fmt(m.get(name))}" for name in ("pitch_acc", "chroma_cos", "p_target"))
        parts.append(
            f"<div class='example'><h3>{html.escape(item['piece'])}: {html.escape(item['source'])} &rarr; "
            f"{html.escape(item['target'])}</h3><p class='note'>model: {html.escape(summary)}</p>"
            f"<img src='{html.escape(png)}' alt='spectrograms of input, output and target'>"
            "<div class='players'>" + _player("input", item["audio"]["input"]) + _player("output", item["audio"]["output"])
            + (_player("transcribe + re-render", item["audio"]["baseline"]) if "baseline" in item["audio"] else "")
            + (_player("target rendering", item["audio"]["target"]) if "target" in item["audio"] else "")
            + "</div></div>")
    if len(results["items"]) > max_examples:
        parts.append(f"<p class='note'>{len(results['items']) - max_examples} more clips in results.json and audio/.</p>")
    parts.append("</body></html>")
    path = out / "index.html"
    write_text_atomic(path, "\n".join(parts))
    return path
