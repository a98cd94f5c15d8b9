"""Pairs for an instrument known only from recordings: each recording transcribed to notes by ear (Basic Pitch),
the notes played by the demo instruments' SoundFont presets, and the two written as a paired dataset
(datasets/pair_dataset.py) that trains beside the demo's pairs (`data.pairs: [<root>/pairs, <these>]`).

Self-reconstruction alone teaches an unpaired instrument to rebuild its own recordings, whose content
always sounds like itself: at transfer its style meets another instrument's content it never saw with it.
A transcription gives that content: the flute's phrase played by the piano and the violin, aligned with
the flute's recording note for note (to Basic Pitch's timing), so `cross_reconstruction` trains
piano -> flute and violin -> flute on the user's own audio. The recording is always the real side of the
pair; the renderings carry the transcriber's mistakes, and only on the side of the instrument the model
already knows. The other directions (flute -> piano, flute -> violin) are there too, and a recipe leaves them
out with `data.pair_skip`: a rendering of the transcription as the target of the recording cost the paired
instruments' transfer from unseen players (README, "Add your own instrument"). The demo instruments' other
players (sound sets, programs of the family) play the notes too, as they do in the demo's pairs. Test segments
are left out: they stay the instrument's own.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiostyle.datasets.audio_io import encode_flac
from audiostyle.datasets.demo_render import Recording, player_recordings
from audiostyle.datasets.manifest import iter_split_audio, read_manifest
from audiostyle.datasets.pair_dataset import AlignedRecording, write_pair_dataset
from audiostyle.datasets.soundfonts import (
    TRAINING_SOUNDFONT,
    NoteRenderer,
    choose_soundfonts,
    find_soundfonts,
    instrument_spec,
)
from audiostyle.platform.core.atomic_files import atomic_write
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.evaluation.transcribe_rerender import transcribe, unavailable_reason

SPLITS = ("train", "val")
NOTES_FILE = "notes.jsonl"  # what Basic Pitch heard in each segment: rendering again needs no transcriber


def default_pairs_dir(instrument_dir: str | Path) -> Path:
    """`data/flute` -> `data/flute_pairs`: beside the instrument's folder, never inside the shards' own."""
    folder = Path(instrument_dir)
    return folder.with_name(f"{folder.name}_pairs")


def _transcriptions(instrument_dir: Path, manifest: dict[str, Any], stage: Path, progress: bool) -> list[dict[str, Any]]:
    """Per train/val segment: {key, split, path (the segment as FLAC), notes}; transcribed once, then read
    back from NOTES_FILE (keyed by segment, so a segment added later is transcribed on its own)."""
    from tqdm.auto import tqdm

    done: dict[str, dict[str, Any]] = {}
    notes_path = stage / NOTES_FILE
    if notes_path.is_file():
        for line in notes_path.read_text().splitlines():
            row = json.loads(line)
            done[row["key"]] = row
    rows = []
    splits = manifest["splits"]
    bar = tqdm(total=sum(splits[s]["segments"] for s in SPLITS if s in splits), desc="transcribe", unit="segment",
               disable=not progress)
    for split in SPLITS:  # streamed: an hour of recordings is never in memory at once
        for key, audio, sr, _ in iter_split_audio(instrument_dir, split):
            path = stage / "recordings" / f"{key}.flac"
            if not path.is_file():
                atomic_write(path, lambda tmp, a=audio, r=sr: Path(tmp).write_bytes(encode_flac(a, r)))
            row = done.get(key) or {"key": key, "split": split, "notes": transcribe(audio, sr)}
            rows.append({**row, "split": split, "path": str(path)})
            bar.update(1)
    bar.close()
    text = "".join(json.dumps({k: r[k] for k in ("key", "split", "notes")}) + "\n" for r in rows)
    atomic_write(notes_path, lambda tmp: Path(tmp).write_text(text))
    return rows


def write_transcribed_pairs(instrument_dir: str | Path, partners: Sequence[str], out_dir: str | Path | None = None, *,
                            players: Sequence[str] = (TRAINING_SOUNDFONT,), progress: bool = True) -> dict[str, Any]:
    """Transcribe every train and val segment of the instrument in `instrument_dir` (a `data add` folder),
    play the notes with each demo instrument of `partners` (the reference player's main program, and the
    other `players` and programs of its family as pairs' inputs), and write the pairs to `out_dir`
    (default: default_pairs_dir). Returns the pair manifest."""
    from tqdm.auto import tqdm

    reason = unavailable_reason()
    if reason:
        raise DataError(f"transcribed pairs need Basic Pitch: {reason}")
    folder = Path(instrument_dir)
    manifest = read_manifest(folder)
    name, rate = str(manifest["instrument"]), int(manifest["sample_rate"])
    specs = [instrument_spec(p) for p in partners]  # unknown names fail here, listing the demo's
    if name in partners or not specs:
        raise DataError(f"--with names the instruments that play {name}'s notes: other demo instruments than "
                        f"{name} itself (e.g. piano,violin), got {', '.join(partners) or 'none'}")
    out = Path(out_dir) if out_dir is not None else default_pairs_dir(folder)
    stage = out / ".render"
    rows = _transcriptions(folder, manifest, stage, progress)
    heard = [r for r in rows if r["notes"]]
    if not heard:
        raise DataError(f"{folder}: Basic Pitch heard no notes in any train or val segment; transcribed pairs "
                        "need pitched, mostly clean recordings")
    soundfonts, _ = choose_soundfonts(find_soundfonts(), players)
    renderers: dict[str, NoteRenderer] = {}  # loaded on first need: a re-run that renders nothing loads none
    recordings = []
    for row in tqdm(heard, desc=f"render {', '.join(partners)}", unit="segment", disable=not progress):
        paths: dict[str, Path] = {name: Path(row["path"])}
        others: dict[str, dict[str, Path]] = {}
        rec = Recording(row["key"], row["key"], row["split"], tuple(row["notes"]))
        for spec in specs:
            jobs = [(rec, soundfonts[0], None), *player_recordings([rec], spec, soundfonts)]
            for job, soundfont, tag in jobs:
                path = stage / spec.name / (tag or soundfont.name) / f"{row['key']}.flac"
                if not path.is_file():
                    program = spec.program if job.program is None else job.program
                    if soundfont.name not in renderers:
                        renderers[soundfont.name] = NoteRenderer(soundfont, rate)
                    audio = renderers[soundfont.name].render(program, job.notes, tail_seconds=0.5)
                    atomic_write(path, lambda tmp, a=audio: Path(tmp).write_bytes(encode_flac(a, rate)))
                if tag is None:
                    paths[spec.name] = path
                else:
                    others.setdefault(spec.name, {})[tag] = path
        recordings.append(AlignedRecording(row["key"], row["split"], paths, others))
    return write_pair_dataset(out, recordings, [name, *(s.name for s in specs)], sample_rate=rate,
                              segment_seconds=float(manifest["segment_seconds"]))
