"""Melodies and chords from music21's bundled corpus for the demo instruments: list the pieces, parse
each once into a cached JSON note list, and turn one into timed notes (tempo, velocity, octave fit).

Melodies: Bach chorale sopranos, Ryan's Mammoth Collection fiddle tunes and string-quartet violin-1
parts. Every instrument draws from the same pool, so musical style does not give away the instrument.
Chords (`chord_catalog`): every voice of the same chorales, each note folded by octaves into the range
every instrument plays (close-position chords; the harmony's pitch classes are kept), piece ids
`chords_<chorale>`; a chord passage takes its chorale's split (`split_key`), so a test chorale's melody
and chords both stay out of training.
Parsing costs 0.07-2 s per piece, hence the cache (one JSON per piece, written atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiostyle.platform.core.atomic_files import write_json_atomic

CACHE_FORMAT = 1
# Playing tempi (quarter notes per minute) before a +-15 % per-piece variation: chorales are sung slowly;
# fiddle tunes and quartet allegros move faster.
BASE_BPM = {"chorale": 90.0, "fiddle": 110.0, "quartet": 110.0, "chords": 80.0}
CHORDS = "chords"
_CHORDS_PREFIX, _CHORALE_PREFIX = "chords_", "chorale_"
_QUARTET_DIRS = ("beethoven", "haydn", "mozart")


@dataclass(frozen=True)
class PieceRef:
    """A corpus file holding one melody; `piece_id` is safe for file names and shard keys (no dots)."""

    piece_id: str
    source: str  # chorale | fiddle | quartet | chords
    corpus_path: str  # relative to music21/corpus


@dataclass(frozen=True)
class ScoreLine:
    """Parsed notes: (onset, duration) in quarter notes and MIDI pitch, sorted; a melody (no overlaps), or
    every voice when `source` is "chords"."""

    piece_id: str
    source: str
    notes: tuple[tuple[float, float, int], ...]


def default_cache_dir() -> Path:
    """$AUDIOSTYLE_CACHE/scores, else ~/.cache/audiostyle/scores."""
    root = os.environ.get("AUDIOSTYLE_CACHE") or Path.home() / ".cache" / "audiostyle"
    return Path(root) / "scores"


def _safe_id(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def catalog() -> list[PieceRef]:
    """Every candidate piece, sorted by id; listing files only, nothing is parsed (about 1,500 pieces)."""
    import music21

    corpus = Path(music21.__file__).parent / "corpus"
    refs: list[PieceRef] = []
    # Primary chorale files only (bwvNNN.M.mxl): the -a/-w/... variants are alternative versions of the
    # same chorale and would put one melody into two splits. BWV 846 is the keyboard prelude.
    for path in (corpus / "bach").glob("bwv*.mxl"):
        if re.fullmatch(r"bwv\d+(\.\d+)?\.mxl", path.name) and path.stem != "bwv846":
            refs.append(PieceRef("chorale_" + _safe_id(path.stem), "chorale", f"bach/{path.name}"))
    for path in (corpus / "ryansMammoth").glob("*.abc"):
        refs.append(PieceRef("fiddle_" + _safe_id(path.stem), "fiddle", f"ryansMammoth/{path.name}"))
    for folder in _QUARTET_DIRS:
        for path in (corpus / folder).rglob("*.mxl"):
            rel = path.relative_to(corpus).as_posix()
            if "k545" in rel:  # a piano sonata, not a quartet
                continue
            refs.append(PieceRef("quartet_" + _safe_id(rel.removesuffix(".mxl")), "quartet", rel))
    return sorted(refs, key=lambda r: r.piece_id)


def chord_catalog() -> list[PieceRef]:
    """The chorales again, every voice: one chord passage per chorale of `catalog()`."""
    return [PieceRef(_CHORDS_PREFIX + ref.piece_id.removeprefix(_CHORALE_PREFIX), CHORDS, ref.corpus_path)
            for ref in catalog() if ref.source == "chorale"]


def is_chord_passage(piece_id: str) -> bool:
    """Whether a piece id (or a recording id built on it) names a chord passage."""
    return piece_id.startswith(_CHORDS_PREFIX)


def passage_kind(piece_id: str) -> str:
    """"chords" for a chord passage (every voice of a chorale), else "melodies": how evaluation and the
    timbre judge group pieces."""
    return "chords" if is_chord_passage(piece_id) else "melodies"


def split_key(piece_id: str) -> str:
    """The id a piece's split is drawn from: a chord passage's is its chorale's."""
    if is_chord_passage(piece_id):
        return _CHORALE_PREFIX + piece_id.removeprefix(_CHORDS_PREFIX)
    return piece_id


def _extract_voices(score) -> list[tuple[float, float, int]]:
    """Every note of every part, (onset, length, pitch), one per (onset, pitch)."""
    notes: dict[tuple[float, int], float] = {}
    for part in score.parts:
        for element in part.stripTies().flatten().notes:
            length = float(element.quarterLength)
            if length <= 0:
                continue
            for pitch in element.pitches:
                key = (round(float(element.offset), 6), int(pitch.midi))
                notes[key] = max(notes.get(key, 0.0), round(length, 6))
    return [(onset, length, pitch) for (onset, pitch), length in sorted(notes.items())]


def _choose_part(score, source: str):
    parts = list(score.parts)
    if not parts:
        return score
    names = [(p.partName or "").lower() for p in parts]
    wanted = "soprano" if source == "chorale" else "violin"
    for part, name in zip(parts, names):
        if wanted in name:
            return part
    return parts[0]


def _extract_line(part) -> list[tuple[float, float, int]]:
    by_onset: dict[float, tuple[float, int]] = {}
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if length <= 0:  # grace notes carry no duration of their own
            continue
        pitch = max(p.midi for p in element.pitches)  # a chord's top note is the melody
        onset = float(element.offset)
        if onset not in by_onset or pitch > by_onset[onset][1]:
            by_onset[onset] = (length, pitch)
    onsets = sorted(by_onset)
    line = []
    for i, onset in enumerate(onsets):
        length, pitch = by_onset[onset]
        if i + 1 < len(onsets):  # keep the line monophonic: a note ends where the next begins
            length = min(length, onsets[i + 1] - onset)
        line.append((round(onset, 6), round(length, 6), int(pitch)))
    return line


def load_line(ref: PieceRef, cache_dir: str | os.PathLike | None = None) -> ScoreLine | None:
    """The piece's melody, parsed with music21 on first use and cached; None if it has no usable line.

    Unparseable pieces are cached as empty too, so they cost nothing on the next run.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"{ref.piece_id}.json"
    payload = None
    if path.is_file():
        try:
            payload = json.loads(path.read_text())
            if payload.get("format") != CACHE_FORMAT or payload.get("corpus_path") != ref.corpus_path:
                payload = None
        except (OSError, ValueError):
            payload = None  # a damaged cache entry is re-parsed, not trusted
    if payload is None:
        from music21 import corpus

        try:
            score = corpus.parse(ref.corpus_path)
            notes = _extract_voices(score) if ref.source == CHORDS else _extract_line(_choose_part(score, ref.source))
            reason = "" if len(notes) >= 8 else "fewer than 8 notes"
        except Exception as exc:  # music21 raises many types on odd encodings; the piece is just skipped
            notes, reason = [], f"parse failed: {type(exc).__name__}: {exc}"[:300]
        payload = {"format": CACHE_FORMAT, "piece_id": ref.piece_id, "source": ref.source,
                   "corpus_path": ref.corpus_path, "notes": [] if reason else notes, "skipped": reason}
        write_json_atomic(path, payload)
    if payload["skipped"] or not payload["notes"]:
        return None
    return ScoreLine(ref.piece_id, ref.source, tuple((float(a), float(b), int(c)) for a, b, c in payload["notes"]))


def stable_rng(*keys: object) -> np.random.Generator:
    """A generator seeded from `keys` by SHA-256: the same on every machine and Python (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def ordered(refs: Sequence[PieceRef], *keys: object) -> list[PieceRef]:
    """`refs` in a deterministic pseudo-random order that depends only on `keys` (e.g. seed, split)."""
    order = stable_rng("order", *keys).permutation(len(refs))
    return [refs[i] for i in order]


def fit_shift(pitches: Sequence[int], low: int, high: int, *, transpose: bool = False) -> int | None:
    """Semitones to add so the pitches sit in [low, high].

    Without `transpose`: the octave multiple that leaves the fewest pitches outside (centred on ties),
    never None. With `transpose`: the shift nearest that octave multiple that fits every pitch (a
    transposition when no octave does), or None when the line spans more than the range.
    """
    centre = (low + high) / 2
    mean = float(np.mean(pitches))
    octave = min(range(-48, 49, 12), key=lambda s: (sum(not low <= p + s <= high for p in pitches), abs(mean + s - centre)))
    if not transpose:
        return octave
    fitting = [s for s in range(low - min(pitches), high - max(pitches) + 1)]
    return min(fitting, key=lambda s: (abs(s - octave), s)) if fitting else None


def fold_into_range(notes: list[dict], low: int, high: int) -> list[dict]:
    """Each note moved by octaves to its nearest place in [low, high] (at least an octave wide), voices
    that land on one pitch at one onset merged: every pitch class of each chord is kept, in close position."""
    if high - low < 11:
        raise ValueError(f"a range of {high - low + 1} semitones cannot hold every pitch class")
    folded: dict[tuple[float, int], dict] = {}
    for n in notes:
        places = range(low + (n["pitch"] - low) % 12, high + 1, 12)
        pitch = min(places, key=lambda p, orig=n["pitch"]: abs(p - orig))
        key = (n["onset"], pitch)
        if key not in folded or n["offset"] > folded[key]["offset"]:
            folded[key] = {**n, "pitch": pitch}
    return [folded[k] for k in sorted(folded)]


def realize(line: ScoreLine, *, seed: int, low: int, high: int, max_seconds: float | None = None,
            require_fit: bool = False) -> list[dict] | None:
    """Timed notes [{onset, offset, pitch, velocity}] in seconds, fitted into [low, high] by octaves.

    Tempo, dynamics and articulation depend only on (seed, piece_id), so a piece realized for two
    instruments with the same range is note-for-note identical (what the paired test split relies on).
    With `require_fit`, every note must fit: the line is transposed when no octave shift fits, and a
    line spanning more than the range gives None.
    """
    rng = stable_rng("realize", seed, line.piece_id)
    seconds_per_quarter = 60.0 / (BASE_BPM[line.source] * rng.uniform(0.85, 1.15))
    base_velocity = int(rng.integers(64, 105))  # mezzo-piano to forte: the range where samples differ least
    jitter = rng.integers(-8, 9, size=len(line.notes))
    notes = []
    for (onset_q, length_q, pitch), dv in zip(line.notes, jitter):
        onset = onset_q * seconds_per_quarter
        if max_seconds is not None and onset >= max_seconds:
            break
        # 90 % of the written length (at least 50 ms) leaves a short gap so repeated pitches re-attack.
        offset = onset + max(0.05, 0.9 * length_q * seconds_per_quarter)
        if max_seconds is not None:
            offset = min(offset, max_seconds)
        notes.append({"onset": round(onset, 6), "offset": round(offset, 6), "pitch": pitch,
                      "velocity": int(np.clip(base_velocity + dv, 1, 127))})
    if not notes:
        return None
    if line.source == CHORDS:
        return fold_into_range(notes, low, high)
    shift = fit_shift([n["pitch"] for n in notes], low, high, transpose=require_fit)
    if shift is None:
        return None
    for n in notes:
        n["pitch"] += shift
    return notes
