"""The evaluation's timbre judge: what it learns from, and the checks it must pass before its numbers count.

`train_timbre_classifier` fits the judge (classifier.py) on sound sets other than the test pieces' (the
demo's `heldout` split and the other players, never the reference set that plays the test split and every
paired target), drawing its windows from every kind of passage the data holds. `judge_checks` then scores
the test pieces' own renderings: P(target) >= 0.9 for the oracle, <= 0.2 for the input unchanged, < 0.3
for each degraded target (degradations.CHECKS), or the evaluation says not to trust P(target).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audiostyle.datasets.audio_io import decode_bytes, to_rate_float32
from audiostyle.datasets.demo_scores import passage_kind
from audiostyle.datasets.soundfonts import TRAINING_SOUNDFONT
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.evaluation.classifier import TimbreClassifier
from audiostyle.platform.evaluation.degradations import CHECKS

if TYPE_CHECKING:
    from audiostyle.datasets.paired import PairedItem

CLASSIFIER_SECONDS = 600.0  # per instrument and SoundFont: 300 windows of 2 s
# The judge's trust thresholds on the test pieces (issue #13): P(target) of the oracle, of the input
# unchanged, and of every degraded target.
TRUST = {"oracle_min": 0.9, "identity_max": 0.2, "degraded_max": 0.3}


def _judge_clips(folders: dict[str, Path], splits: tuple[str, ...], max_seconds: float, skip_pieces: set[str],
                 skip_sets: frozenset[str] = frozenset(), seed: int = 0
                 ) -> tuple[list[tuple[np.ndarray, int]], list[str], dict[str, float], dict[str, float]]:
    """Audio of `splits` per instrument (name -> its folder), at most `max_seconds` per (instrument, sound
    set), leaving out recordings of `skip_pieces` and of the sound sets `skip_sets`; also the seconds taken
    per sound set and per kind of passage (melodies, chords).

    The segments are drawn at random (seeded) from all of a sound set's, not taken in shard order: the
    shards hold the melodies first, so the first ten minutes held no chord passage, and a judge that never
    heard chords gave the chords' own renderings P 0.64."""
    from audiostyle.datasets.manifest import iter_segments
    from audiostyle.datasets.paired import piece_id_of, sound_set_of

    rng = np.random.default_rng(seed)
    clips, labels, seconds, kinds = [], [], {}, {}
    for name, folder in folders.items():
        pool: dict[str, list] = {}  # sound set -> [(segment, kind of passage)]
        for split in splits:
            for segment in iter_segments(folder, split):
                rid = str(segment.record.get("recording_id", ""))
                tag, piece = sound_set_of(rid, TRAINING_SOUNDFONT), piece_id_of(rid)
                if piece not in skip_pieces and tag not in skip_sets:
                    pool.setdefault(tag, []).append((segment, passage_kind(piece)))
        for tag, segments in pool.items():
            taken = 0.0
            for i in rng.permutation(len(segments)):
                if taken >= max_seconds:
                    break
                segment, kind = segments[i]
                audio, sr = decode_bytes(segment.flac, name=f"{segment.url}:{segment.key}.flac")
                clips.append((audio, sr))
                labels.append(name)
                taken += len(audio) / sr
                kinds[kind] = kinds.get(kind, 0.0) + len(audio) / sr
            seconds[tag] = seconds.get(tag, 0.0) + taken
    return clips, labels, seconds, kinds


def train_timbre_classifier(data_root: str | Path, instruments: list[str], sample_rate: int,
                            *, max_seconds: float = CLASSIFIER_SECONDS, recordings: dict[str, Path] | None = None
                            ) -> tuple[TimbreClassifier, dict[str, Any]]:
    """Fit the judge on SoundFonts other than the test split's when the data has them.

    The demo's `heldout` split renders every piece with each held-out SoundFont; its train and val pieces
    (never the test pieces) teach the judge, beside the train and val pieces of the other players when the
    demo was rendered with several (`--players`; never the reference set's, which plays the test split
    and every paired target). Without a held-out set, the train and val splits (other pieces, same
    SoundFont) are used, and the report says that P(target) then measures closeness to that sample set.
    `recordings` adds instruments known from recordings alone (name -> their `data add` folder): their own
    train and val recordings teach the judge those, the only player of them there is.
    """
    from audiostyle.datasets.manifest import read_manifest
    from audiostyle.datasets.paired import heldout_soundfonts

    root = Path(data_root)
    folders = {name: root / name for name in instruments}
    test_pieces = {rid for folder in folders.values()
                   for rid, split in read_manifest(folder).get("recordings", {}).items() if split == "test"}
    heldout_sets = {s for folder in folders.values() for s in heldout_soundfonts(folder)}
    try:
        clips, labels, seconds, kinds = _judge_clips(folders, ("heldout", "train", "val"), max_seconds, test_pieces,
                                                     frozenset({TRAINING_SOUNDFONT}))
        if not heldout_sets & set(seconds):
            raise DataError("no held-out sound set")  # the other players alone would not make a strict judge
        source = (f"heldout split and other players: SoundFonts {', '.join(sorted(seconds))} (never the test "
                  "pieces, never the test split's SoundFont)")
        note = ""
    except DataError:
        clips, labels, seconds, kinds = _judge_clips(folders, ("train", "val"), max_seconds, test_pieces)
        source = "train + val splits (other pieces, same SoundFont as the test split)"
        note = ("No held-out SoundFont in the data: P(target) measures closeness to the test SoundFont's samples, "
                "not instrument identity in general. `apt-get install fluid-soundfont-gm csound-soundfont` and "
                "re-render the demo for a stricter judge.")
    for name, folder in (recordings or {}).items():
        more, more_labels, taken, more_kinds = _judge_clips({name: Path(folder)}, ("train", "val"), max_seconds, set())
        clips, labels = clips + more, labels + more_labels
        seconds[f"{name} recordings"] = sum(taken.values())
        kinds = {k: kinds.get(k, 0.0) + more_kinds.get(k, 0.0) for k in {*kinds, *more_kinds}}
        source += f"; {name}: its own recordings in {folder} (train and val)"
        note = " ".join(filter(None, [note, f"P({name}) measures closeness to its recordings: no other player "
                                            "of it is known."]))
    clf = TimbreClassifier([*instruments, *(recordings or {})]).fit(
        [to_rate_float32(a, sr, sample_rate) for a, sr in clips], labels, sample_rate)
    return clf, {"trained_on": source, "seconds": {k: round(v, 1) for k, v in seconds.items()},
                 "seconds_by_kind": {k: round(v, 1) for k, v in sorted(kinds.items())},
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
