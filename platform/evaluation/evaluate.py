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
from audiostyle.datasets.demo_scores import is_chord_passage
from audiostyle.datasets.manifest import MANIFEST_NAME
from audiostyle.datasets.recording_conditions import CONDITIONS
from audiostyle.platform.core.atomic_files import write_json_atomic
from audiostyle.platform.core.errors import DataError, did_you_mean
from audiostyle.platform.evaluation.classifier import TimbreClassifier
from audiostyle.platform.evaluation.degradations import CHECKS
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
CLASSIFIER_SECONDS = 600.0  # per instrument and SoundFont: 300 windows of 2 s
# The judge's trust thresholds on the test pieces (issue #13): P(target) of the oracle, of the input
# unchanged, and of every degraded target.
TRUST = {"oracle_min": 0.9, "identity_max": 0.2, "degraded_max": 0.3}


def _judge_clips(data_root: Path, instruments: list[str], splits: tuple[str, ...], max_seconds: float,
                 skip_pieces: set[str], skip_sets: frozenset[str] = frozenset()
                 ) -> tuple[list[np.ndarray], list[str], dict[str, float]]:
    """Audio of `splits` per instrument, at most `max_seconds` per (instrument, sound set), leaving out
    recordings of `skip_pieces` and of the sound sets `skip_sets`; also the seconds taken per sound set."""
    from audiostyle.datasets.manifest import iter_split_audio
    from audiostyle.datasets.paired import piece_id_of, sound_set_of
    from audiostyle.datasets.soundfonts import TRAINING_SOUNDFONT

    clips, labels, seconds = [], [], {}
    for name in instruments:
        taken: dict[str, float] = {}
        for split in splits:
            for _, audio, sr, record in iter_split_audio(data_root / name, split):
                rid = str(record.get("recording_id", ""))
                tag = sound_set_of(rid, TRAINING_SOUNDFONT)
                if piece_id_of(rid) in skip_pieces or tag in skip_sets or taken.get(tag, 0.0) >= max_seconds:
                    continue
                clips.append((audio, sr))
                labels.append(name)
                taken[tag] = taken.get(tag, 0.0) + len(audio) / sr
        for tag, s in taken.items():
            seconds[tag] = seconds.get(tag, 0.0) + s
    return clips, labels, seconds


def train_timbre_classifier(data_root: str | Path, instruments: list[str], sample_rate: int,
                            *, max_seconds: float = CLASSIFIER_SECONDS) -> tuple[TimbreClassifier, dict[str, Any]]:
    """Fit the judge on SoundFonts other than the test split's when the data has them.

    The demo's `heldout` split renders every piece with each held-out SoundFont; its train and val pieces
    (never the test pieces) teach the judge, beside the train and val pieces of the other players when the
    demo was rendered with several (`--players`; never the reference set's, which plays the test split
    and every paired target). Without a held-out set, the train and val splits (other pieces, same
    SoundFont) are used, and the report says that P(target) then measures closeness to that sample set.
    """
    from audiostyle.datasets.manifest import read_manifest
    from audiostyle.datasets.paired import heldout_soundfonts
    from audiostyle.datasets.soundfonts import TRAINING_SOUNDFONT

    root = Path(data_root)
    test_pieces = {rid for name in instruments
                   for rid, split in read_manifest(root / name).get("recordings", {}).items() if split == "test"}
    heldout_sets = {s for name in instruments for s in heldout_soundfonts(root / name)}
    try:
        clips, labels, seconds = _judge_clips(root, instruments, ("heldout", "train", "val"), max_seconds,
                                              test_pieces, frozenset({TRAINING_SOUNDFONT}))
        if not heldout_sets & set(seconds):
            raise DataError("no held-out sound set")  # the other players alone would not make a strict judge
        source = (f"heldout split and other players: SoundFonts {', '.join(sorted(seconds))} (never the test "
                  "pieces, never the test split's SoundFont)")
        note = ""
    except DataError:
        clips, labels, seconds = _judge_clips(root, instruments, ("train", "val"), max_seconds, test_pieces)
        source = "train + val splits (other pieces, same SoundFont as the test split)"
        note = ("No held-out SoundFont in the data: P(target) measures closeness to the test SoundFont's samples, "
                "not instrument identity in general. `apt-get install fluid-soundfont-gm csound-soundfont` and "
                "re-render the demo for a stricter judge.")
    clf = TimbreClassifier(instruments).fit([to_rate_float32(a, sr, sample_rate) for a, sr in clips], labels,
                                            sample_rate)
    return clf, {"trained_on": source, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                 "windows": clf.training_windows, "note": note}


def judge_checks(clf: TimbreClassifier, items: list[PairedItem], audio: list[dict[str, np.ndarray]],
                 sr: int, seed: int = 0) -> dict[str, Any]:
    """P(instrument) of each test piece's renderings, of the other instruments' (the input unchanged),
    and of degraded versions (degradations.CHECKS); averaged, with the TRUST verdict."""
    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {"oracle": [], "identity": [], **{k: [] for k in CHECKS}}
    for clips in audio:
        for name, clip in clips.items():
            scores["oracle"].append(clf.probabilities(clip, sr)[name])
            scores["identity"] += [clf.probabilities(other, sr)[name] for o, other in clips.items() if o != name]
            for key, (_, degrade) in CHECKS.items():
                scores[key].append(clf.probabilities(degrade(clip, sr, rng), sr)[name])
    means = {k: float(np.mean(v)) for k, v in scores.items() if v}
    failed = []
    if means["oracle"] < TRUST["oracle_min"]:
        failed.append(f"oracle {means['oracle']:.2f} < {TRUST['oracle_min']}")
    if means.get("identity", 0.0) > TRUST["identity_max"]:
        failed.append(f"input unchanged {means['identity']:.2f} > {TRUST['identity_max']}")
    failed += [f"{k} {means[k]:.2f} >= {TRUST['degraded_max']}" for k in CHECKS if means[k] >= TRUST["degraded_max"]]
    return {"p_instrument": means, "descriptions": {"oracle": "the paired rendering itself",
                                                    "identity": "another instrument's rendering",
                                                    **{k: d for k, (d, _) in CHECKS.items()}},
            "thresholds": TRUST, "trusted": not failed, "failed": failed, "pieces": len(items)}


def piece_kind(piece_id: str) -> str:
    """"chords" for a chord passage (every voice of a chorale), else "melodies"."""
    return "chords" if is_chord_passage(piece_id) else "melodies"


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
    kinds = [piece_kind(it.piece_id) for it in items]
    heard = TranscriptionMemo()
    for i, it in enumerate(items):
        for src, tgt in pairs:
            fed, target = (inputs or audio)[i][src], audio[i][tgt]
            rate = input_rate or sr
            x = fed if rate == sr else to_rate_float32(fed, rate, sr)
            t0 = time.perf_counter()
            y = tr.transfer_array(fed, rate, to=tgt)
            model_seconds += time.perf_counter() - t0
            audio_seconds += len(x) / sr
            files = {"model": f"audio/{it.piece_id}__{src}_to_{tgt}.flac"}
            write_audio_atomic(out / files["model"], y, sr)
            systems = {"model": y, "identity": x, "oracle": target,
                       "wrong_notes": wrong_notes(audio, i, tgt, kinds)}
            if baseline is not None and baseline.supports(tgt):
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
                                   "target": f"audio/{it.piece_id}__{tgt}.flac",
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
    chosen = choose_instruments(tr, data_root, instruments)
    items = load_test_pieces(data_root, chosen, max_pieces)
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    clf, clf_info = train_timbre_classifier(data_root, chosen, sr)

    audio = [{k: to_rate_float32(v, it.sample_rate, sr) for k, v in it.audio.items()} for it in items]
    for it, clips in zip(items, audio):
        for name, clip in clips.items():
            write_audio_atomic(out / "audio" / f"{it.piece_id}__{name}.flac", clip, sr)
    clf_info["checks"] = judge_checks(clf, items, audio, sr)
    kinds = sorted({piece_kind(it.piece_id) for it in items})
    if len(kinds) > 1:  # the judge earns trust on chords and on melodies apart
        clf_info["checks_by_kind"] = {
            kind: judge_checks(clf, [it for it in items if piece_kind(it.piece_id) == kind],
                               [a for it, a in zip(items, audio) if piece_kind(it.piece_id) == kind], sr)
            for kind in kinds}
    baseline, baseline_note = baseline_systems(sr, chosen) if baselines else (None, "not requested (--no-baselines)")
    inputs = heldout_inputs(data_root, chosen, items, input_soundfont, sr) if input_soundfont else None
    input_rate = None
    if input_condition is not None:
        inputs, input_rate = conditioned_inputs(inputs or audio, sr, input_condition)
    pairs = [(s, t) for s in chosen for t in chosen if s != t]
    rows, model_seconds, audio_seconds = score_pairs(tr, items, audio, pairs, clf, out, f0_method=f0_method,
                                                     progress=progress, baseline=baseline, inputs=inputs,
                                                     input_rate=input_rate)
    results = {
        "bundle": "(in memory)" if isinstance(bundle, Transferer) else str(bundle),
        "provenance": tr.meta.get("provenance", {}), "data_root": str(data_root), "sample_rate": sr,
        "instruments": chosen, "pieces": [it.piece_id for it in items],
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
