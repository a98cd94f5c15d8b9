"""Demo instruments: the instrument table, SoundFont rendering (deterministic, audible, right pitch,
instrument-specific timbre), splits by piece, the paired test split, held-out SoundFont and re-runs."""

from __future__ import annotations

import json
from collections import defaultdict

import librosa
import numpy as np
import pytest
import soundfile as sf

from audiostyle.datasets.demo_render import plan_recordings, split_of, stage_demo
from audiostyle.datasets.demo_scores import catalog, fit_shift, load_line, realize
from audiostyle.datasets.soundfonts import (
    INSTRUMENTS,
    NoteRenderer,
    choose_soundfonts,
    find_soundfonts,
    instrument_spec,
    paired_range,
    timgm_path,
)
from audiostyle.platform.core.errors import ConfigError

SR = 22050


@pytest.fixture(scope="module")
def renderer() -> NoteRenderer:
    timgm = next(s for s in find_soundfonts() if s.name == "timgm6mb")
    return NoteRenderer(timgm, SR)


@pytest.fixture(scope="module")
def score_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scores")


def _melody(pitches, step=0.4, velocity=90):
    return [{"onset": i * step, "offset": i * step + 0.9 * step, "pitch": p, "velocity": velocity}
            for i, p in enumerate(pitches)]


def test_instrument_table_maps_names_to_general_midi_programs():
    expected = {"piano": 0, "violin": 40, "cello": 42, "flute": 73, "trumpet": 56, "clarinet": 71, "guitar": 24}
    assert {name: instrument_spec(name).program for name in expected} == expected
    assert instrument_spec(" French-Horn ").name == "french_horn"
    low, high = paired_range()
    assert high - low >= 12, "paired test pieces need at least an octave every instrument plays"
    assert all(spec.low <= low and high <= spec.high for spec in INSTRUMENTS.values())


def test_unknown_instrument_names_it_and_lists_the_known_ones():
    with pytest.raises(ConfigError) as info:
        instrument_spec("violn")
    message = str(info.value)
    assert "'violn'" in message and "Did you mean 'violin'" in message
    assert all(name in message for name in ("piano", "cello", "flute", "guitar"))
    with pytest.raises(ConfigError, match="kazoo"):
        stage_demo("/nonexistent", ("piano", "kazoo"))


def test_timgm_trains_and_every_other_soundfont_is_held_out(tmp_path):
    assert [s.name for s in find_soundfonts([tmp_path])] == ["timgm6mb"]
    (tmp_path / "FluidR3_GM.sf2").symlink_to(timgm_path())
    (tmp_path / "sf_GMbank.sf2").symlink_to(timgm_path())
    (tmp_path / "MuseScore_General-Lite.sf3").symlink_to(timgm_path())  # the Lite set is not one of the four
    (tmp_path / "MuseScore_General.sf3").symlink_to(timgm_path())
    (tmp_path / "dangling").mkdir()
    (tmp_path / "dangling" / "FluidR3_GM.sf2").symlink_to(tmp_path / "removed.sf2")  # a package removed
    assert [s.name for s in find_soundfonts([tmp_path / "dangling"])] == ["timgm6mb"]
    found = find_soundfonts([tmp_path])
    assert [s.name for s in found] == ["timgm6mb", "fluidr3", "musescore", "csound"]
    players, heldout = choose_soundfonts(found)
    assert [p.name for p in players] == ["timgm6mb"] and players[0].path == timgm_path()
    assert [h.name for h in heldout] == ["fluidr3", "musescore", "csound"]
    players, heldout = choose_soundfonts(found, ["csound", "timgm6mb"])  # the reference always comes first
    assert [p.name for p in players] == ["timgm6mb", "csound"] and [h.name for h in heldout] == ["fluidr3", "musescore"]
    assert choose_soundfonts(find_soundfonts([tmp_path / "none"]))[1] == []


def test_rendering_is_deterministic_and_audible(renderer):
    notes = _melody([60, 62, 64, 65, 67])
    first = renderer.render(40, notes)
    renderer.render(0, _melody([48, 72, 55], step=0.7))  # state must not leak into the next call
    again = renderer.render(40, notes)
    assert first.dtype == np.float32 and first.tobytes() == again.tobytes()
    assert len(first) == pytest.approx((notes[-1]["offset"] + 1.0) * SR, abs=2)
    rms_db = 20 * np.log10(np.sqrt(np.mean(first[: int(2.0 * SR)] ** 2)))
    assert rms_db > -30, f"rendered violin is nearly silent ({rms_db:.1f} dBFS)"


@pytest.mark.parametrize("program,pitch", [(0, 69), (40, 69), (42, 55)])
def test_rendered_pitch_matches_the_note(renderer, program, pitch):
    audio = renderer.render(program, [{"onset": 0.0, "offset": 1.5, "pitch": pitch, "velocity": 100}])
    steady = audio[int(0.4 * SR): int(1.2 * SR)]  # past the attack (the violin bows in over ~0.4 s)
    f0 = librosa.yin(steady, fmin=60, fmax=1000, sr=SR, frame_length=2048)
    cents = 1200 * np.log2(np.median(f0) / librosa.midi_to_hz(pitch))
    assert abs(cents) < 50, f"program {program}: heard {np.median(f0):.1f} Hz for MIDI {pitch} ({cents:+.0f} cents)"


def test_violin_is_brighter_than_piano(renderer):
    notes = _melody([64, 67, 72, 71, 69, 67, 65, 64])
    centroid = {name: float(np.mean(librosa.feature.spectral_centroid(y=renderer.render(program, notes), sr=SR)))
                for name, program in (("piano", 0), ("violin", 40))}
    assert centroid["violin"] > 1.3 * centroid["piano"], centroid


def test_octave_fitting_and_paired_realization(score_cache):
    assert fit_shift([40, 45, 52], 55, 96) == 24
    assert fit_shift([62, 70, 78], 60, 76, transpose=True) == -2  # no octave fits: transpose
    assert fit_shift([50, 80], 60, 76, transpose=True) is None  # wider than the range
    ref = next(r for r in catalog() if r.source == "chorale")
    line = load_line(ref, score_cache)
    assert line is not None and len(line.notes) > 8
    cached = json.loads((score_cache / f"{ref.piece_id}.json").read_text())
    assert cached["piece_id"] == ref.piece_id and len(cached["notes"]) == len(line.notes)
    spec = instrument_spec("cello")
    notes = realize(line, seed=3, low=spec.low, high=spec.high, max_seconds=8.0)
    assert notes[-1]["offset"] <= 8.0 and all(a["onset"] < b["onset"] for a, b in zip(notes, notes[1:]))
    assert sum(spec.low <= n["pitch"] <= spec.high for n in notes) >= 0.9 * len(notes)
    # Tempo and dynamics depend on (seed, piece) only: another range changes pitches by a constant.
    other = realize(line, seed=3, low=60, high=96, max_seconds=8.0)
    assert [n["onset"] for n in other] == [n["onset"] for n in notes]
    assert len({o["pitch"] - n["pitch"] for o, n in zip(other, notes)}) == 1


def test_splits_are_by_piece_and_every_split_is_paired(score_cache):
    plans = {name: plan_recordings(instrument_spec(name), 60.0, seed=1, cache_dir=score_cache)
             for name in ("piano", "violin", "cello")}
    split_of_piece: dict[str, set[str]] = defaultdict(set)
    for recordings in plans.values():
        assert {r.split for r in recordings} == {"train", "val", "test"}
        for r in recordings:
            split_of_piece[r.piece_id].add(r.split)
            assert split_of(r.piece_id, 1) == r.split
    assert all(len(s) == 1 for s in split_of_piece.values()), "a piece landed in two splits"
    low, high = paired_range()
    for split in ("train", "val", "test"):
        played = {name: [(r.piece_id, r.notes) for r in recs if r.split == split] for name, recs in plans.items()}
        assert played["piano"] == played["violin"] == played["cello"], f"{split} is not paired"
        assert all(low <= n["pitch"] <= high for _, notes in played["piano"] for n in notes)
    # Unpaired: train pieces are drawn per instrument (in its own range); the test split stays paired.
    unpaired = {name: plan_recordings(instrument_spec(name), 60.0, seed=1, cache_dir=score_cache, paired=False)
                for name in ("piano", "violin")}
    train = {name: [r.piece_id for r in recs if r.split == "train"] for name, recs in unpaired.items()}
    assert train["piano"] != train["violin"]
    tests = {name: [(r.piece_id, r.notes) for r in recs if r.split == "test"] for name, recs in unpaired.items()}
    assert tests["piano"] == tests["violin"]
    # Another seed moves pieces between splits.
    assert any(split_of(p, 2) != next(iter(s)) for p, s in split_of_piece.items())


def test_stage_demo_writes_paired_notes_heldout_split_and_reuses_audio(tmp_path, score_cache):
    fonts = tmp_path / "sf2"
    fonts.mkdir()
    # TimGM under FluidR3's file name stands in for an installed system SoundFont, so the held-out path
    # runs here; the held-out audio then comes from TimGM itself.
    (fonts / "FluidR3_GM.sf2").symlink_to(timgm_path())
    out = tmp_path / "demo"
    args = dict(seconds_per_instrument=20, seed=0, cache_dir=score_cache, soundfont_dirs=[fonts])
    result = stage_demo(out, ("piano", "violin", "cello"), **args)
    assert result["heldout_skipped"] is None
    assert result["soundfonts"] == {"train": str(timgm_path()), "players": ["timgm6mb"],
                                    "heldout": [str(fonts / "FluidR3_GM.sf2")]}
    rows = {name: [json.loads(line) for line in open(info["source_manifest"])]
            for name, info in result["instruments"].items()}
    test_ids = result["test_pieces"]
    for manifest in rows.values():
        assert sorted(r["recording_id"] for r in manifest if r["split"] == "test") == test_ids
        # every piece again with the held-out SoundFont: the judge learns from the train and val pieces
        pieces = sorted(r["recording_id"] for r in manifest if r["split"] != "heldout")
        assert sorted(r["recording_id"] for r in manifest if r["split"] == "heldout") == [
            f"{p}--fluidr3" for p in pieces]
        for row in manifest:
            info = sf.info(row["path"])
            assert info.samplerate == SR and info.channels == 1 and info.format == "FLAC"
    for piece_id in test_ids:
        notes = json.loads((out / "notes" / f"{piece_id}.json").read_text())
        assert notes and {"onset", "offset", "pitch", "velocity"} <= notes[0].keys()
    piano_test = next(r["path"] for r in rows["piano"] if r["split"] == "test")
    before = open(piano_test, "rb").read()
    again = stage_demo(out, ("piano", "violin", "cello"), **args)
    assert again["rendered_seconds"] == 0.0 and open(piano_test, "rb").read() == before
    # Same arguments, fresh folder: byte-identical audio.
    fresh = stage_demo(tmp_path / "fresh", ("piano",), **args)
    fresh_rows = [json.loads(line) for line in open(fresh["instruments"]["piano"]["source_manifest"])]
    assert open(next(r["path"] for r in fresh_rows if r["split"] == "test"), "rb").read() == before


def test_heldout_is_skipped_and_reported_with_timgm_only(tmp_path, score_cache, caplog):
    result = stage_demo(tmp_path / "demo", ("violin",), seconds_per_instrument=15, cache_dir=score_cache,
                        soundfont_dirs=[tmp_path / "none"])
    assert "heldout split skipped" in result["heldout_skipped"] and "heldout split skipped" in caplog.text
    rows = [json.loads(line) for line in open(result["instruments"]["violin"]["source_manifest"])]
    assert {r["split"] for r in rows} == {"train", "val", "test"}


def test_render_demo_output_is_ready_for_training(demo_root):
    """The shared fixture (prepare_demo, default SoundFonts): shards, manifest, stats and notes per instrument."""
    notes = sorted(p.stem for p in (demo_root / "notes").glob("*.json"))
    assert notes
    for name in ("piano", "violin", "cello"):
        manifest = json.loads((demo_root / name / "manifest.json").read_text())
        assert manifest["instrument"] == name and manifest["sample_rate"] == SR
        assert {"train", "val", "test"} <= set(manifest["splits"])
        assert sorted(r for r, s in manifest["recordings"].items() if s == "test") == notes
        assert (demo_root / name / "stats.npz").is_file()


def test_render_demo_rerun_reuses_everything(demo_root):
    from audiostyle.platform.data.prepare import prepare_demo

    manifest = (demo_root / "piano" / "manifest.json").read_bytes()
    result = prepare_demo(demo_root, instruments=("piano", "violin", "cello"), seconds_per_instrument=40, seed=0)
    assert result["rendered_seconds"] == 0.0
    assert (demo_root / "piano" / "manifest.json").read_bytes() == manifest


def _most_sounding(notes) -> int:
    """The most notes sounding at once in a note list."""
    events = sorted([(n["onset"], 1) for n in notes] + [(n["offset"], -1) for n in notes])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def test_chord_passages_are_polyphonic_paired_and_split_with_their_chorale(score_cache):
    from audiostyle.datasets.demo_scores import fold_into_range, is_chord_passage, split_key

    plans = {name: plan_recordings(instrument_spec(name), 90.0, seed=1, cache_dir=score_cache, chords=0.4)
             for name in ("piano", "violin")}
    chords = [r for r in plans["piano"] if is_chord_passage(r.piece_id)]
    melodies = [r for r in plans["piano"] if not is_chord_passage(r.piece_id)]
    assert {r.split for r in chords} == {"train", "val", "test"} and melodies
    low, high = paired_range()
    for r in chords:
        assert _most_sounding(r.notes) >= 3, r.piece_id  # chords, not a line
        assert all(low <= n["pitch"] <= high for n in r.notes)
        assert split_of(r.piece_id, 1) == split_of(split_key(r.piece_id), 1) == r.split  # the chorale's split
    assert all(_most_sounding(r.notes) == 1 for r in melodies)
    assert plans["piano"] == plans["violin"]  # every split paired, chords too
    # a test chorale stays out of training as chords and as a melody
    test_chorales = {split_key(r.piece_id) for r in chords if r.split == "test"}
    assert not test_chorales & {split_key(r.piece_id) for r in plans["piano"] if r.split == "train"}
    # folding keeps each chord's pitch classes
    chord = [{"onset": 0.0, "offset": 1.0, "pitch": p, "velocity": 80} for p in (36, 55, 64, 84)]
    folded = fold_into_range(chord, low, high)
    assert {n["pitch"] % 12 for n in folded} == {0, 7, 4} and all(low <= n["pitch"] <= high for n in folded)
    with pytest.raises(ConfigError, match="chords"):
        plan_recordings(instrument_spec("piano"), 90.0, seed=1, cache_dir=score_cache, chords=1.0)
