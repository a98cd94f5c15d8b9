"""`evaluate(bundle, data_root)`: score a bundle's transfers on the paired test split, beside baselines.

For every test piece and every ordered pair of instruments (source -> target), the source rendering
is transferred to the target and scored with the metric suite of `metrics.py` plus P(target)
from the timbre classifier. The same metrics are computed for three reference systems:
  identity     the input unchanged: perfect content, wrong instrument (the floor for timbre)
  wrong_notes  the target instrument's rendering of a DIFFERENT test piece: right timbre, wrong content
  oracle       the paired target rendering itself: the best any transfer could do
A model is useful only where it beats identity on timbre AND wrong_notes on content. Results go to
`results.json` (per clip and averaged) and a static HTML report (report.py). `evaluate` runs these
steps in order: choose_instruments, load_test_pieces, train_timbre_classifier, score_pairs, aggregate.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiostyle.platform.core.atomic_files import write_json_atomic
from audiostyle.platform.core.errors import DataError, did_you_mean
from audiostyle.platform.evaluation.classifier import TimbreClassifier
from audiostyle.platform.evaluation.metrics import METRICS, content_and_fidelity
from audiostyle.platform.inference.transfer import Transferer, to_rate_float32, write_audio_atomic

if TYPE_CHECKING:
    from audiostyle.datasets.paired import PairedItem

SYSTEMS = ("model", "identity", "wrong_notes", "oracle")
CLASSIFIER_SECONDS = 300.0  # per instrument and split: enough windows for a 46-feature logistic regression


def train_timbre_classifier(data_root: str | Path, instruments: list[str], sample_rate: int,
                            *, max_seconds: float = CLASSIFIER_SECONDS) -> tuple[TimbreClassifier, dict[str, Any]]:
    """Fit the classifier on SoundFonts other than the test split's when the data has them.

    The demo's `heldout` split is rendered with a SoundFont kept out of training (and so out of the test
    split); without it, the train and val splits (other pieces, same SoundFont) are used, and the
    report says that P(target) then measures closeness to that one sample set.
    """
    from audiostyle.datasets.manifest import iter_split_audio

    def gather(splits: tuple[str, ...]) -> tuple[list[np.ndarray], list[str]]:
        clips, labels = [], []
        for name in instruments:
            for split in splits:
                for _, audio, sr, _ in iter_split_audio(Path(data_root) / name, split, max_seconds=max_seconds):
                    clips.append(to_rate_float32(audio, sr, sample_rate))
                    labels.append(name)
        return clips, labels

    try:
        clips, labels = gather(("heldout",))
        source = "heldout split (a SoundFont not used for the test split)"
        note = ""
    except DataError:
        clips, labels = gather(("train", "val"))
        source = "train + val splits (other pieces, same SoundFont as the test split)"
        note = ("No held-out SoundFont in the data: P(target) measures closeness to the test SoundFont's samples, "
                "not instrument identity in general. Install fluid-soundfont-gm and re-render for a stricter test.")
    clf = TimbreClassifier(instruments).fit(clips, labels, sample_rate)
    return clf, {"trained_on": source, "windows": clf.training_windows, "note": note}


def wrong_notes(audio: list[dict[str, np.ndarray]], i: int, instrument: str) -> np.ndarray:
    """`instrument`'s rendering of another test piece; with a single piece, its own rendering rotated by
    half its length, which puts other notes under every moment of the input just the same."""
    if len(audio) > 1:
        return audio[(i + 1) % len(audio)][instrument]
    clip = audio[i][instrument]
    return np.roll(clip, len(clip) // 2)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def choose_instruments(tr: Transferer, data_root: str | Path, instruments: list[str] | None) -> list[str]:
    """The instruments to evaluate: those asked for, else every bundle instrument the data holds; two at least."""
    chosen = instruments or [n for n in tr.instruments if (Path(data_root) / n / "manifest.json").exists()]
    for name in chosen:
        if name not in tr.instruments:
            raise DataError(f"instrument {name!r} is not in the bundle ({', '.join(tr.instruments)})."
                            f"{did_you_mean(name, tr.instruments)}")
    if len(chosen) < 2:
        raise DataError(f"{data_root}: the test data holds {len(chosen)} of the bundle's instruments "
                        f"({', '.join(tr.instruments)}); evaluation needs two to transfer between")
    return chosen


def load_test_pieces(data_root: str | Path, instruments: list[str], max_pieces: int | None) -> list[PairedItem]:
    """The paired test pieces of `instruments` (the first `max_pieces`); DataError when there are none."""
    from audiostyle.datasets.paired import load_paired_test

    items = load_paired_test(data_root, instruments, split="test")
    if max_pieces is not None:
        items = items[:max_pieces]
    if not items:
        raise DataError(f"{data_root}: no paired test pieces for {', '.join(instruments)}")
    return items


def score_pairs(tr: Transferer, items: list[PairedItem], audio: list[dict[str, np.ndarray]],
                pairs: list[tuple[str, str]], clf: TimbreClassifier, out: Path, *, f0_method: str,
                progress: bool) -> tuple[list[dict[str, Any]], float, float]:
    """Transfer every piece along every pair and score the model beside the three baselines.

    Returns (one row per piece and pair, seconds spent in the model, seconds of audio transferred)."""
    from tqdm import tqdm

    sr = tr.sample_rate
    rows, model_seconds, audio_seconds = [], 0.0, 0.0
    bar = tqdm(total=len(items) * len(pairs), desc="evaluate", unit="clip", disable=not progress)
    for i, it in enumerate(items):
        for src, tgt in pairs:
            x, target = audio[i][src], audio[i][tgt]
            t0 = time.perf_counter()
            y = tr.transfer_array(x, sr, to=tgt)
            model_seconds += time.perf_counter() - t0
            audio_seconds += len(x) / sr
            out_rel = f"audio/{it.piece_id}__{src}_to_{tgt}.flac"
            write_audio_atomic(out / out_rel, y, sr)
            systems = {"model": y, "identity": x, "oracle": target, "wrong_notes": wrong_notes(audio, i, tgt)}
            scores = {}
            for system, clip in systems.items():
                s = content_and_fidelity(clip, x, target, sr, it.notes, f0_method=f0_method)
                s["p_target"] = clf.probabilities(clip, sr)[tgt]
                scores[system] = s
            rows.append({"piece": it.piece_id, "source": src, "target": tgt, "scores": scores,
                         "audio": {"input": f"audio/{it.piece_id}__{src}.flac", "output": out_rel,
                                   "target": f"audio/{it.piece_id}__{tgt}.flac"}})
            bar.update(1)
    bar.close()
    return rows, model_seconds, audio_seconds


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per system over `rows` (non-finite values left out)."""
    return {system: {m: _mean([r["scores"][system][m] for r in rows if system in r["scores"]]) for m in METRICS}
            for system in SYSTEMS if any(system in r["scores"] for r in rows)}


def evaluate(bundle: str | Path | Transferer, data_root: str | Path, *, out_dir: str | Path,
             instruments: list[str] | None = None, max_pieces: int | None = None, device: str = "cpu",
             f0_method: str = "yin", report: bool = True, progress: bool = True) -> dict[str, Any]:
    """Evaluate on `<data_root>`'s paired test split; writes results.json (+ index.html) into out_dir."""
    tr = bundle if isinstance(bundle, Transferer) else Transferer(bundle, device)
    sr = tr.sample_rate
    chosen = choose_instruments(tr, data_root, instruments)
    items = load_test_pieces(data_root, chosen, max_pieces)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    clf, clf_info = train_timbre_classifier(data_root, chosen, sr)

    audio = [{k: to_rate_float32(v, it.sample_rate, sr) for k, v in it.audio.items()} for it in items]
    for it, clips in zip(items, audio):
        for name, clip in clips.items():
            write_audio_atomic(out / "audio" / f"{it.piece_id}__{name}.flac", clip, sr)
    pairs = [(s, t) for s in chosen for t in chosen if s != t]
    rows, model_seconds, audio_seconds = score_pairs(tr, items, audio, pairs, clf, out, f0_method=f0_method,
                                                     progress=progress)
    results = {
        "bundle": "(in memory)" if isinstance(bundle, Transferer) else str(bundle),
        "provenance": tr.meta.get("provenance", {}), "data_root": str(data_root), "sample_rate": sr,
        "instruments": chosen, "pieces": [it.piece_id for it in items],
        "systems": {"model": "the bundle's transfer", "identity": "input unchanged",
                    "wrong_notes": "right instrument, wrong notes (target rendering of another test piece)",
                    "oracle": "paired target rendering (same notes, target instrument)"},
        "metrics": {m: {"higher_is_better": hib, "description": d} for m, (hib, d) in METRICS.items()},
        "classifier": clf_info, "f0_method": f0_method,
        "pairs": {f"{s}->{t}": aggregate([r for r in rows if (r["source"], r["target"]) == (s, t)]) for s, t in pairs},
        "summary": aggregate(rows),
        "realtime_factor": model_seconds / max(audio_seconds, 1e-9), "device": str(tr.device),
        "items": rows,
    }
    if len(items) < 2:
        results["notes"] = ["only one test piece: wrong_notes is its target rendering rotated by half its length"]
    write_json_atomic(out / "results.json", results, indent=2)
    if report:
        from audiostyle.platform.evaluation.report import write_report

        write_report(results, out)
    return results
