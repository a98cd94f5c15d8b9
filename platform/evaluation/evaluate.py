"""`evaluate(bundle, data_root)`: score a bundle's transfers on the paired test split, beside baselines.

For every test piece and every ordered pair of instruments (source -> target), the source rendering
is transferred to the target and scored with the metric suite of `metrics.py` plus P(target) from the
timbre judge (classifier.py). The same metrics are computed for reference systems:
  transcribe_rerender  Basic Pitch's notes played by the target's SoundFont preset (the baseline a user
                       would pick instead; demo instruments only)
  identity             the input unchanged: perfect content, wrong instrument (the floor for timbre)
  wrong_notes          the target instrument's rendering of a DIFFERENT test piece: right timbre, wrong content
  oracle               the paired target rendering itself: the best any transfer could do
A model is useful only where it beats identity on timbre AND wrong_notes on content. Before its numbers
count, the judge must earn trust on the same pieces (`judge_checks`): P(target) >= 0.9 for the oracle,
<= 0.2 for the input unchanged, < 0.3 for each degraded target (degradations.CHECKS). Results go to
`results.json` (per clip and averaged) and a static HTML report (report.py). `evaluate` runs these
steps in order: choose_instruments, load_test_pieces, train_timbre_classifier, judge_checks,
score_pairs, aggregate.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiostyle.datasets.audio_io import to_rate_float32, write_audio_atomic
from audiostyle.datasets.demo_scores import passage_kind
from audiostyle.datasets.manifest import MANIFEST_NAME
from audiostyle.datasets.recording_conditions import CONDITIONS
from audiostyle.platform.core.atomic_files import write_json_atomic
from audiostyle.platform.core.errors import DataError, did_you_mean
from audiostyle.platform.evaluation.classifier import TimbreClassifier
from audiostyle.platform.evaluation.judge import judge_checks, train_timbre_classifier
from audiostyle.platform.evaluation.metrics import METRICS, content_and_fidelity, note_f1
from audiostyle.platform.evaluation.transcribe_rerender import DESCRIPTION as TRANSCRIBE_DESCRIPTION
from audiostyle.platform.evaluation.transcribe_rerender import SYSTEM as TRANSCRIBE
from audiostyle.platform.evaluation.transcribe_rerender import transcribe
from audiostyle.platform.inference.transfer import Transferer

if TYPE_CHECKING:
    from audiostyle.datasets.paired import PairedItem

SYSTEMS = ("model", TRANSCRIBE, "identity", "wrong_notes", "oracle")
SYSTEM_DESCRIPTIONS = {"model": "the bundle's transfer", TRANSCRIBE: TRANSCRIBE_DESCRIPTION,
                       "identity": "input unchanged",
                       "wrong_notes": "right instrument, wrong notes (target rendering of another test piece)",
                       "oracle": "paired target rendering (same notes, target instrument)"}


def wrong_notes(audio: list[dict[str, np.ndarray]], i: int, instrument: str,
                kinds: list[str] | None = None) -> np.ndarray:
    """`instrument`'s rendering of another test piece (of the same kind, melody or chords, when `kinds`
    gives one); with a single piece, its own rendering rotated by half its length, which puts other
    notes under every moment of the input just the same."""
    if len(audio) > 1:
        others = [(i + k) % len(audio) for k in range(1, len(audio))]
        same = [j for j in others if kinds is None or kinds[j] == kinds[i]]
        return audio[(same or others)[0]][instrument]
    clip = audio[i][instrument]
    return np.roll(clip, len(clip) // 2)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def choose_instruments(tr: Transferer, data_root: str | Path, instruments: list[str] | None) -> list[str]:
    """The instruments to evaluate: those asked for, else every bundle instrument the data holds; two at least."""
    chosen = instruments or [n for n in tr.instruments if (Path(data_root) / n / MANIFEST_NAME).exists()]
    for name in chosen:
        if name not in tr.instruments:
            raise DataError(f"instrument {name!r} is not in the bundle ({', '.join(tr.instruments)})."
                            f"{did_you_mean(name, tr.instruments)}")
    if len(chosen) < 2:
        raise DataError(f"{data_root}: the test data holds {len(chosen)} of the bundle's instruments "
                        f"({', '.join(tr.instruments)}); evaluation needs two to transfer between")
    return chosen


def recording_targets(tr: Transferer, data_root: str | Path, instruments: list[str] | None) -> dict[str, Path]:
    """The bundle's instruments that `data_root` holds no renderings of but whose own recordings (the
    folder the bundle trained on, e.g. from `data add`) are on this machine: name -> folder. Evaluation
    transfers the test pieces to them and scores what needs no paired target (P(target) from a judge that
    learns them from their recordings, content against the input)."""
    found = {}
    for inst in tr.cfg.instruments:
        held = (Path(data_root) / inst.name / MANIFEST_NAME).exists()
        if not held and (instruments is None or inst.name in instruments) \
                and (Path(inst.data) / MANIFEST_NAME).is_file():
            found[inst.name] = Path(inst.data)
    return found


def recordings_test_clips(folders: dict[str, Path], sr: int, count: int) -> dict[str, list[np.ndarray]]:
    """`count` test clips per instrument folder (its test split, else its val split), cycled when it has fewer."""
    from audiostyle.datasets.manifest import iter_split_audio

    clips = {}
    for name, folder in folders.items():
        found = [to_rate_float32(a, r, sr) for _, a, r, _ in iter_split_audio(folder, "test")] or \
                [to_rate_float32(a, r, sr) for _, a, r, _ in iter_split_audio(folder, "val")]
        if not found:
            raise DataError(f"{folder}: no test or val recordings to check the timbre judge on; re-add it with "
                            "`audiostyle data add` and a --split that keeps some")
        clips[name] = [found[i % len(found)] for i in range(count)]
    return clips


def load_test_pieces(data_root: str | Path, instruments: list[str], max_pieces: int | None) -> list[PairedItem]:
    """The paired test pieces of `instruments` (the first `max_pieces`); DataError when there are none."""
    from audiostyle.datasets.paired import load_paired_test

    items = load_paired_test(data_root, instruments, split="test")
    if max_pieces is not None:
        items = items[:max_pieces]
    if not items:
        raise DataError(f"{data_root}: no paired test pieces for {', '.join(instruments)}")
    return items


def heldout_inputs(data_root: str | Path, instruments: list[str], items: list[PairedItem], soundfont: str,
                   sample_rate: int) -> list[dict[str, np.ndarray]]:
    """The test pieces as held-out SoundFont `soundfont` played them, aligned with `items` (same notes and
    times; trimmed or padded to the training rendering's length)."""
    from audiostyle.datasets.paired import heldout_soundfonts, load_paired_test

    available = heldout_soundfonts(Path(data_root) / instruments[0])
    if soundfont not in available:
        raise DataError(f"{data_root}: no heldout split rendered with {soundfont!r} (available: "
                        f"{', '.join(available) or 'none'}); install it and re-run `audiostyle data demo`")
    by_piece = {it.piece_id: it for it in load_paired_test(data_root, instruments, split="heldout",
                                                           soundfont=soundfont)}
    inputs = []
    for it in items:
        if it.piece_id not in by_piece:
            raise DataError(f"{data_root}: test piece {it.piece_id!r} has no {soundfont} rendering in the heldout split")
        other = by_piece[it.piece_id]
        clips = {}
        for name, clip in other.audio.items():
            clip = to_rate_float32(clip, other.sample_rate, sample_rate)
            n = len(it.audio[name]) * sample_rate // it.sample_rate
            clips[name] = np.pad(clip, (0, max(0, n - len(clip))))[:n]
        inputs.append(clips)
    return inputs


def conditioned_inputs(inputs: list[dict[str, np.ndarray]], sr: int, condition: str
                       ) -> tuple[list[dict[str, np.ndarray]], int]:
    """(every clip of `inputs` under recording `condition`, seeded by its piece, the rate they are now at)."""
    from audiostyle.datasets.recording_conditions import apply_condition

    out, rate = [], sr
    for i, clips in enumerate(inputs):
        changed = {}
        for name, clip in clips.items():
            changed[name], rate = apply_condition(clip, sr, condition, seed=i)
        out.append(changed)
    return out, rate


def baseline_systems(sample_rate: int, instruments: list[str]) -> tuple[Any, str | None]:
    """(the transcribe-and-re-render system or None, why it is missing)."""
    from audiostyle.platform.evaluation.transcribe_rerender import TranscribeRerender, unavailable_reason

    reason = unavailable_reason()
    if reason is None and not any(TranscribeRerender.supports(n) for n in instruments):
        reason = "none of the instruments is a demo instrument with a SoundFont preset"
    return (None, reason) if reason else (TranscribeRerender(sample_rate), None)


class TranscriptionMemo:
    """Basic Pitch's notes of a clip, transcribed once per distinct clip: a test rendering is the oracle of
    its own rows, the wrong notes of others' and, without other inputs, the input of the reverse pair."""

    def __init__(self) -> None:
        self._notes: dict[tuple[int, str], list[dict]] = {}

    def __call__(self, clip: np.ndarray, sr: int) -> list[dict]:
        key = (sr, hashlib.sha1(np.ascontiguousarray(clip, dtype=np.float32).tobytes()).hexdigest())
        if key not in self._notes:
            self._notes[key] = transcribe(clip, sr)
        return self._notes[key]


def score_pairs(tr: Transferer, items: list[PairedItem], audio: list[dict[str, np.ndarray]],
                pairs: list[tuple[str, str]], clf: TimbreClassifier, out: Path, *, f0_method: str,
                progress: bool, baseline: Any = None, inputs: list[dict[str, np.ndarray]] | None = None,
                input_rate: int | None = None) -> tuple[list[dict[str, Any]], float, float]:
    """Transfer every piece along every pair and score the model beside the reference systems. The
    inputs are `audio`'s renderings, or `inputs` (the same pieces by another SoundFont, or under a
    recording condition; at `input_rate` when given, else the model's rate) when given; the targets are
    always `audio`'s. Every system is scored at the model's rate, the input unchanged too.

    Returns (one row per piece and pair, seconds spent in the model, seconds of audio transferred)."""
    from tqdm import tqdm

    sr = tr.sample_rate
    rows, model_seconds, audio_seconds = [], 0.0, 0.0
    bar = tqdm(total=len(items) * len(pairs), desc="evaluate", unit="clip", disable=not progress)
    kinds = [passage_kind(it.piece_id) for it in items]
    heard = TranscriptionMemo()
    for i, it in enumerate(items):
        for src, tgt in pairs:
            fed, target = (inputs or audio)[i][src], audio[i].get(tgt)  # None: known from recordings alone
            rate = input_rate or sr
            x = fed if rate == sr else to_rate_float32(fed, rate, sr)
            t0 = time.perf_counter()
            y = tr.transfer_array(fed, rate, to=tgt)
            model_seconds += time.perf_counter() - t0
            audio_seconds += len(x) / sr
            files = {"model": f"audio/{it.piece_id}__{src}_to_{tgt}.flac"}
            write_audio_atomic(out / files["model"], y, sr)
            systems = {"model": y, "identity": x}
            if target is not None:
                systems.update(oracle=target, wrong_notes=wrong_notes(audio, i, tgt, kinds))
            if baseline is not None and target is not None and baseline.supports(tgt):
                systems[TRANSCRIBE] = baseline.transfer_array(x, sr, to=tgt, notes=heard(x, sr))
                files[TRANSCRIBE] = f"audio/{it.piece_id}__{src}_to_{tgt}__{TRANSCRIBE}.flac"
                write_audio_atomic(out / files[TRANSCRIBE], systems[TRANSCRIBE], sr)
            scores = {}
            for system, clip in systems.items():
                s = content_and_fidelity(clip, x, target, sr, it.notes, f0_method=f0_method)
                s["p_target"] = clf.probabilities(clip, sr)[tgt]
                # Basic Pitch hears every voice; it is loaded only with the baseline that runs it anyway
                s["note_f1"] = note_f1(heard(clip, sr), it.notes) if baseline is not None and it.notes \
                    else float("nan")
                scores[system] = s
            input_rel = f"audio/{it.piece_id}__{src}.flac"
            if inputs is not None:
                input_rel = f"audio/{it.piece_id}__{src}__input.flac"
                write_audio_atomic(out / input_rel, x, sr)
            rows.append({"piece": it.piece_id, "kind": kinds[i], "source": src, "target": tgt,
                         "scores": scores,
                         "audio": {"input": input_rel, "output": files["model"],
                                   **({"target": f"audio/{it.piece_id}__{tgt}.flac"} if target is not None else {}),
                                   **({"baseline": files[TRANSCRIBE]} if TRANSCRIBE in files else {})}})
            bar.update(1)
    bar.close()
    return rows, model_seconds, audio_seconds


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per system over `rows` (non-finite values left out)."""
    return {system: {m: _mean([r["scores"][system][m] for r in rows if system in r["scores"]]) for m in METRICS}
            for system in SYSTEMS if any(system in r["scores"] for r in rows)}


def evaluate(bundle: str | Path | Transferer, data_root: str | Path, *, out_dir: str | Path,
             instruments: list[str] | None = None, max_pieces: int | None = None, device: str = "cpu",
             f0_method: str = "yin", report: bool = True, progress: bool = True,
             baselines: bool = True, input_soundfont: str | None = None,
             input_condition: str | None = None, steady: bool | None = None) -> dict[str, Any]:
    """Evaluate on `<data_root>`'s paired test split; writes results.json (+ index.html) into out_dir.

    input_soundfont: take the inputs from the heldout split rendered with that SoundFont (a player the
    model never heard); the targets stay the test split's renderings. input_condition: put the inputs
    through that recording condition first (datasets/recording_conditions.CONDITIONS: a room, an EQ tilt,
    hiss, 20 dB quieter, 44.1 kHz). steady: take the inputs' vibrato out first (None: as the bundle says)."""
    if input_condition is not None and input_condition not in CONDITIONS:
        raise DataError(f"unknown input condition {input_condition!r}.{did_you_mean(input_condition, CONDITIONS)}"
                        f" Known: {', '.join(CONDITIONS)}")
    tr = bundle if isinstance(bundle, Transferer) else Transferer(bundle, device, steady=steady)
    sr = tr.sample_rate
    recorded = recording_targets(tr, data_root, instruments)
    chosen = choose_instruments(tr, data_root, [n for n in instruments if n not in recorded] if instruments else None)
    items = load_test_pieces(data_root, chosen, max_pieces)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    clf, clf_info = train_timbre_classifier(data_root, chosen, sr, recordings=recorded)

    audio = [{k: to_rate_float32(v, it.sample_rate, sr) for k, v in it.audio.items()} for it in items]
    for it, clips in zip(items, audio):
        for name, clip in clips.items():
            write_audio_atomic(out / "audio" / f"{it.piece_id}__{name}.flac", clip, sr)
    # the judge is checked on the recorded instruments too: their own test recordings beside each piece
    own = recordings_test_clips(recorded, sr, len(items))
    judged = [{**clips, **{name: own[name][i] for name in own}} for i, clips in enumerate(audio)]
    clf_info["checks"] = judge_checks(clf, items, judged, sr)
    kinds = sorted({passage_kind(it.piece_id) for it in items})
    if len(kinds) > 1:  # the judge earns trust on chords and on melodies apart
        clf_info["checks_by_kind"] = {
            kind: judge_checks(clf, [it for it in items if passage_kind(it.piece_id) == kind],
                               [a for it, a in zip(items, judged) if passage_kind(it.piece_id) == kind], sr)
            for kind in kinds}
    baseline, baseline_note = baseline_systems(sr, chosen) if baselines else (None, "not requested (--no-baselines)")
    inputs = heldout_inputs(data_root, chosen, items, input_soundfont, sr) if input_soundfont else None
    input_rate = None
    if input_condition is not None:
        inputs, input_rate = conditioned_inputs(inputs or audio, sr, input_condition)
    pairs = [(s, t) for s in chosen for t in [*chosen, *recorded] if s != t]
    rows, model_seconds, audio_seconds = score_pairs(tr, items, audio, pairs, clf, out, f0_method=f0_method,
                                                     progress=progress, baseline=baseline, inputs=inputs,
                                                     input_rate=input_rate)
    results = {
        "bundle": "(in memory)" if isinstance(bundle, Transferer) else str(bundle),
        "provenance": tr.meta.get("provenance", {}), "data_root": str(data_root), "sample_rate": sr,
        "instruments": chosen, "pieces": [it.piece_id for it in items],
        "recording_targets": {name: str(folder) for name, folder in recorded.items()},
        "systems": {k: v for k, v in SYSTEM_DESCRIPTIONS.items() if k != TRANSCRIBE or baseline is not None},
        "metrics": {m: {"higher_is_better": hib, "description": d} for m, (hib, d) in METRICS.items()},
        "classifier": clf_info, "f0_method": f0_method,
        "inputs": (f"heldout split, SoundFont {input_soundfont}" if input_soundfont else "test split")
                  + (f"; {CONDITIONS[input_condition]}" if input_condition else "")
                  + ("; vibrato taken out before transfer (steady pitch)" if tr.steady else ""),
        "steady_pitch": tr.steady,
        "input_soundfont": input_soundfont, "input_condition": input_condition,
        "pairs": {f"{s}->{t}": aggregate([r for r in rows if (r["source"], r["target"]) == (s, t)]) for s, t in pairs},
        "summary": aggregate(rows),
        "by_kind": {kind: {f"{s}->{t}": aggregate([r for r in rows if (r["source"], r["target"]) == (s, t)
                                                    and r["kind"] == kind]) for s, t in pairs}
                    for kind in kinds} if len(kinds) > 1 else {},
        "realtime_factor": model_seconds / max(audio_seconds, 1e-9), "device": str(tr.device),
        "items": rows, "notes": [],
    }
    if baseline_note:
        results["notes"].append(f"{TRANSCRIBE} is missing: {baseline_note}")
    for name, folder in recorded.items():
        results["notes"].append(f"{name} is known from its recordings alone ({folder}): the test pieces are "
                                "transferred to it and scored without a paired target (no MR-STFT, oracle or wrong "
                                "notes); P(target) tells how close to those recordings the output sounds")
    if not clf_info["checks"]["trusted"]:
        results["notes"].append("the timbre judge failed its checks on these pieces ("
                                + "; ".join(clf_info["checks"]["failed"]) + "): do not trust p_target")
    for kind, checks in clf_info.get("checks_by_kind", {}).items():
        if not checks["trusted"]:
            results["notes"].append(f"the timbre judge failed its checks on the {kind} ("
                                    + "; ".join(checks["failed"]) + f"): do not trust p_target on {kind}")
    if len(items) < 2:
        results["notes"].append("only one test piece: wrong_notes is its target rendering rotated by half its length")
    write_json_atomic(out / "results.json", results, indent=2)
    if report:
        from audiostyle.platform.evaluation.report import write_report

        write_report(results, out)
    return results
