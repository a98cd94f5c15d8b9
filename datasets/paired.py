"""Paired test pieces for evaluation: the same notes played by several instruments, re-assembled
from each instrument's shards, with the note list the audio was rendered from.

The demo's test split holds the same pieces on every instrument (recording_id = piece id) and
`<root>/notes/<piece_id>.json` holds their notes; the `heldout` split holds every piece again rendered
with each held-out SoundFont, as recording ids `<piece_id>--<soundfont>`; its test pieces are the same
test again, played by a sample set the model never heard. Segments are placed back at their
`offset_seconds`, so gaps that ingest dropped as silence come back as zeros and the audio stays aligned
with the notes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiostyle.datasets.audio_io import decode_bytes
from audiostyle.datasets.manifest import MANIFEST_NAME, iter_segments, read_manifest
from audiostyle.platform.core.errors import DataError

NOTES_DIR = "notes"
HELDOUT_SEPARATOR = "--"  # piece ids are [a-z0-9_] only, so this never occurs inside one
PROGRAM_SEPARATOR = "_p"  # a player's tag: `<sound set>` or `<sound set>_p<program>` (sound set names hold no "_p")


@dataclass
class PairedItem:
    """One test piece: its audio per instrument (mono float32, equal lengths) and its notes in seconds."""

    piece_id: str
    audio: dict[str, np.ndarray]
    notes: list[dict]
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(next(iter(self.audio.values()))) / self.sample_rate


def piece_id_of(recording_id: str) -> str:
    """The piece a recording plays: `chorale_bwv26_6--fluidr3` -> `chorale_bwv26_6`."""
    return recording_id.split(HELDOUT_SEPARATOR, 1)[0]


def soundfont_of(recording_id: str) -> str | None:
    """The held-out SoundFont a recording was rendered with (`...--fluidr3` -> `fluidr3`), else None."""
    _, sep, tag = recording_id.partition(HELDOUT_SEPARATOR)
    return tag if sep else None


def sound_set_of(recording_id: str, reference: str) -> str:
    """The sound set a demo recording was made with: `...--csound_p1` -> `csound`; no tag: `reference`."""
    tag = soundfont_of(recording_id)
    return reference if tag is None else tag.split(PROGRAM_SEPARATOR, 1)[0]


def heldout_soundfonts(instrument_dir: str | Path) -> list[str]:
    """The held-out SoundFonts an instrument's `heldout` split was rendered with, sorted."""
    recordings = read_manifest(instrument_dir).get("recordings", {})
    return sorted({tag for rid, split in recordings.items() if split == "heldout" and (tag := soundfont_of(rid))})


def _assemble(segments: list[tuple[dict, bytes]], sample_rate: int, where: str) -> np.ndarray:
    placed = []
    for record, flac in sorted(segments, key=lambda s: float(s[0]["offset_seconds"])):
        wave, sr = decode_bytes(flac, name=f"{where}:{record['recording_id']}")
        if sr != sample_rate:
            raise DataError(f"{where}: segment of {record['recording_id']!r} is at {sr} Hz, the manifest says "
                            f"{sample_rate} Hz; re-create the dataset")
        placed.append((int(round(float(record["offset_seconds"]) * sample_rate)), wave))
    length = max(start + len(wave) for start, wave in placed)
    audio = np.zeros(length, dtype=np.float32)
    for start, wave in placed:
        audio[start:start + len(wave)] = wave
    return audio


def load_instrument_split(instrument_dir: str | Path, split: str = "test",
                          keep: Callable[[str], bool] | None = None) -> tuple[dict[str, np.ndarray], int]:
    """{recording_id: audio} of one instrument's split (the recordings `keep` accepts), and the sample rate."""
    manifest = read_manifest(instrument_dir)
    sample_rate = int(manifest["sample_rate"])
    by_recording: dict[str, list[tuple[dict, bytes]]] = defaultdict(list)
    for segment in iter_segments(instrument_dir, split, manifest):
        rid = str(segment.record["recording_id"])
        if keep is None or keep(rid):
            by_recording[rid].append((segment.record, segment.flac))
    where = f"{instrument_dir}/{MANIFEST_NAME}"
    return {rid: _assemble(segs, sample_rate, where) for rid, segs in by_recording.items()}, sample_rate


def _load_notes(root: Path, piece_id: str) -> list[dict]:
    path = root / NOTES_DIR / f"{piece_id}.json"
    try:
        notes = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DataError(f"{path}: the note list of paired test piece {piece_id!r} is missing; re-run "
                        "`audiostyle data demo` with the same arguments to write it") from exc
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-run `audiostyle data demo` to rewrite it") from exc
    if not isinstance(notes, list) or not all(isinstance(n, dict) and {"onset", "offset", "pitch"} <= n.keys() for n in notes):
        raise DataError(f"{path}: expected a list of {{onset, offset, pitch, velocity}} notes")
    return notes


def _heldout_test_filter(folder: Path, soundfont: str | None) -> Callable[[str], bool]:
    """Accepts the held-out recordings of `soundfont` that play one of the instrument's test pieces."""
    test_pieces = {rid for rid, split in read_manifest(folder).get("recordings", {}).items() if split == "test"}

    def keep(recording_id: str) -> bool:
        return soundfont_of(recording_id) == soundfont and piece_id_of(recording_id) in test_pieces

    return keep


def load_paired_test(root: str | Path, instruments: Sequence[str], split: str = "test",
                     soundfont: str | None = None) -> list[PairedItem]:
    """The pieces present in `split` of every instrument under `root`, sorted by piece id.

    For the `heldout` split: the test pieces as held-out SoundFont `soundfont` played them (default: the
    first held-out SoundFont of the first instrument).

    Audio of one piece is trimmed to the shortest instrument's length (renderings differ only in
    release tails), and notes are clipped to that length, since ingest may drop a last partial
    segment. Pieces missing from some instrument are left out; none in common is a DataError.
    """
    root = Path(root)
    if not instruments:
        raise DataError(f"{root}: no instruments given to pair")
    per_instrument: dict[str, dict[str, np.ndarray]] = {}
    rates = {}
    for name in instruments:
        folder = root / name
        if not (folder / MANIFEST_NAME).is_file():
            raise DataError(f"{folder / MANIFEST_NAME}: instrument {name!r} has no dataset under {root}; create it "
                            f"with `audiostyle data demo --instruments {','.join(instruments)} --out {root}`")
        keep = None
        if split == "heldout":
            soundfont = soundfont or next(iter(heldout_soundfonts(folder)), None)
            keep = _heldout_test_filter(folder, soundfont)
        audio, rates[name] = load_instrument_split(folder, split, keep)
        per_instrument[name] = {piece_id_of(rid): wave for rid, wave in audio.items()}
    if len(set(rates.values())) != 1:
        raise DataError(f"{root}: instruments have different sample rates {rates}; render them at one rate")
    sample_rate = next(iter(rates.values()))
    common = set.intersection(*(set(pieces) for pieces in per_instrument.values()))
    if not common:
        raise DataError(f"{root}: no piece is in the '{split}' split of all of {', '.join(instruments)}; "
                        "the split is paired only for instruments rendered by `audiostyle data demo` with one seed")
    items = []
    for piece_id in sorted(common):
        length = min(len(per_instrument[name][piece_id]) for name in instruments)
        seconds = length / sample_rate
        notes = [{**n, "offset": min(float(n["offset"]), seconds)} for n in _load_notes(root, piece_id)
                 if float(n["onset"]) < seconds]
        items.append(PairedItem(piece_id, {name: per_instrument[name][piece_id][:length] for name in instruments},
                                notes, sample_rate))
    return items
