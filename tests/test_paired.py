"""Paired test loader: the demo's test pieces re-assembled from shards, aligned across instruments and
with their note lists; clear errors for missing instruments and notes."""

from __future__ import annotations

import json
import shutil

import librosa
import numpy as np
import pytest
import soundfile as sf

from audiostyle.datasets.paired import load_paired_test, piece_id_of
from audiostyle.platform.core.errors import DataError

INSTRUMENTS = ["piano", "violin", "cello"]


@pytest.fixture(scope="module")
def items(demo_root):
    return load_paired_test(demo_root, INSTRUMENTS)


def test_every_paired_piece_is_loaded_for_every_instrument(demo_root, items):
    assert [it.piece_id for it in items] == sorted(p.stem for p in (demo_root / "notes").glob("*.json"))
    manifest = json.loads((demo_root / "piano" / "manifest.json").read_text())
    for it in items:
        assert it.sample_rate == manifest["sample_rate"]
        assert set(it.audio) == set(INSTRUMENTS)
        lengths = {len(a) for a in it.audio.values()}
        assert len(lengths) == 1 and it.seconds > 4.0
        for name, audio in it.audio.items():
            assert audio.dtype == np.float32 and audio.ndim == 1
            assert np.sqrt(np.mean(audio**2)) > 0.01, f"{it.piece_id}/{name} is silent"
        assert it.notes and all(0 <= n["onset"] < n["offset"] <= it.seconds + 1e-6 for n in it.notes)


@pytest.fixture(scope="module")
def short_segment_root(tmp_path_factory):
    """Piano and violin ingested in 3-s segments, so every test piece spans several segments."""
    from audiostyle.datasets.demo_render import stage_demo
    from audiostyle.datasets.ingest import add_instrument

    root = tmp_path_factory.mktemp("paired")
    staged = stage_demo(root, ("piano", "violin"), seconds_per_instrument=30, seed=4)
    for name, info in staged["instruments"].items():
        add_instrument(name, info["source_manifest"], root / name, segment_seconds=3.0, progress=False)
    return root


def test_segments_are_put_back_where_they_were_rendered(short_segment_root):
    """Loaded audio lines up with the staged rendering at lag 0, across all of its segments."""
    root = short_segment_root
    manifest = json.loads((root / "piano" / "manifest.json").read_text())
    assert manifest["splits"]["test"]["segments"] > len([r for r, s in manifest["recordings"].items() if s == "test"])
    items = load_paired_test(root, ["piano", "violin"])
    assert items
    for name in ("piano", "violin"):
        (stage,) = (root / ".render").glob(f"{name}-*")
        staged = {row["recording_id"]: row["path"] for row in map(json.loads, (stage / "manifest.jsonl").read_text().splitlines())}
        for it in items:
            audio = it.audio[name]
            source = sf.read(staged[it.piece_id], dtype="float32")[0][: len(audio)]
            assert len(source) == len(audio)
            for start in range(0, len(audio) - it.sample_rate, 3 * it.sample_rate):  # segment by segment
                a, b = source[start:start + it.sample_rate], audio[start:start + it.sample_rate]
                if np.abs(a).max() > 0.01:
                    corr = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
                    assert corr > 0.99, (name, it.piece_id, start / it.sample_rate, corr)


def test_piano_onsets_match_the_note_list(items):
    for it in items:
        detected = librosa.onset.onset_detect(y=it.audio["piano"], sr=it.sample_rate, units="time", backtrack=False)
        onsets = np.array([n["onset"] for n in it.notes])
        # A note whose pitch repeats with no gap is hard to hear as a new onset; most are still found.
        hits = sum(np.min(np.abs(detected - t)) < 0.06 for t in onsets) if len(detected) else 0
        assert hits >= 0.7 * len(onsets), f"{it.piece_id}: {hits} of {len(onsets)} note onsets found in the piano audio"


def test_missing_instrument_and_missing_notes_are_clear_errors(demo_root, tmp_path):
    with pytest.raises(DataError, match="flute"):
        load_paired_test(demo_root, ["piano", "flute"])
    root = tmp_path / "demo"
    shutil.copytree(demo_root / "piano", root / "piano")
    shutil.copytree(demo_root / "notes", root / "notes")
    victim = sorted((root / "notes").glob("*.json"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=victim.name):
        load_paired_test(root, ["piano"])
    victim.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_paired_test(root, ["piano"])


def test_heldout_split_pairs_by_piece_or_says_it_is_absent(demo_root, items):
    assert piece_id_of("chorale_bwv26_6--timgm6mb") == "chorale_bwv26_6" == piece_id_of("chorale_bwv26_6")
    manifest = json.loads((demo_root / "piano" / "manifest.json").read_text())
    if "heldout" not in manifest["splits"]:  # only TimGM6mb installed: nothing could be held out
        with pytest.raises(DataError, match="heldout"):
            load_paired_test(demo_root, INSTRUMENTS, split="heldout")
    else:
        heldout = load_paired_test(demo_root, INSTRUMENTS, split="heldout")
        assert [h.piece_id for h in heldout] == [it.piece_id for it in items]
