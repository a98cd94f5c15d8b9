"""Many players per instrument: every sound set plays the notes it is given, the demo renders the training
pieces by several players and pairs them across players, recording conditions touch the input of a pair
only, and the whitened content path holds what was played rather than who played it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audiostyle.datasets.soundfonts import SOUND_SETS, NoteRenderer, find_soundfonts, instrument_spec

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
INSTALLED = {sf.name: sf for sf in find_soundfonts()}


def _comb_contrast_db(audio: np.ndarray, sr: int, f0: float) -> float:
    """How much louder (dB) the partials of `f0` (f0, 2 f0, 3 f0) are than the half-way frequencies
    (f0/2, 1.5 f0, 2.5 f0): a note an octave low has partials at the latter, one an octave high none at f0."""
    clip = audio[int(0.05 * sr): int(0.55 * sr)]
    spec = np.abs(np.fft.rfft(clip * np.hanning(len(clip)), n=8 * len(clip)))
    hz = np.fft.rfftfreq(8 * len(clip), 1 / sr)

    def level(f: float) -> float:
        band = (hz > f * 0.97) & (hz < f * 1.03)
        return 20 * np.log10(spec[band].max() + 1e-12)

    return float(np.mean([level(k * f0) for k in (1, 2, 3)]) - np.mean([level(k * f0) for k in (0.5, 1.5, 2.5)]))


@pytest.mark.parametrize("sound_set", SOUND_SETS)
@pytest.mark.parametrize("instrument,pitch", [("piano", 60), ("piano", 72), ("violin", 67), ("cello", 48)])
def test_every_sound_set_plays_the_pitch_it_is_given(sound_set, instrument, pitch):
    if sound_set not in INSTALLED:
        pytest.skip(f"{sound_set} is not installed here")
    spec = instrument_spec(instrument)
    renderer = NoteRenderer(INSTALLED[sound_set], 22050)
    expected = 440.0 * 2 ** ((pitch - 69) / 12)
    for program in spec.programs:  # every program of the family a player may use
        audio = renderer.render(program, [{"onset": 0.0, "offset": 0.8, "pitch": pitch, "velocity": 90}])
        contrast = _comb_contrast_db(audio, 22050, expected)
        assert contrast > 30, (sound_set, instrument, program, round(contrast, 1))


def test_a_player_that_is_not_installed_is_named_with_its_package(tmp_path):
    from audiostyle.datasets.soundfonts import choose_soundfonts
    from audiostyle.platform.core.errors import ConfigError, DataError

    only_timgm = find_soundfonts([tmp_path])
    with pytest.raises(DataError, match="apt-get install fluid-soundfont-gm"):
        choose_soundfonts(only_timgm, ["timgm6mb", "fluidr3"])
    with pytest.raises(ConfigError, match="unknown sound set 'fluidr2'"):
        choose_soundfonts(only_timgm, ["fluidr2"])
    players, heldout = choose_soundfonts(only_timgm)
    assert [p.name for p in players] == ["timgm6mb"] and heldout == []


@pytest.fixture(scope="module")
def players_root(tmp_path_factory) -> Path:
    """piano and violin played by TimGM6mb (reference) and csound, every program of their families."""
    if "csound" not in INSTALLED:
        pytest.skip("csound-soundfont is not installed (apt-get install csound-soundfont)")
    from audiostyle.platform.data.prepare import prepare_demo

    root = tmp_path_factory.mktemp("players")
    prepare_demo(root, ("piano", "violin"), seconds_per_instrument=40, seed=0, players=("timgm6mb", "csound"))
    return root


def test_training_pieces_are_played_by_every_player_and_program(players_root):
    from audiostyle.datasets.manifest import read_manifest

    recordings = read_manifest(players_root / "piano")["recordings"]
    train = {rid for rid, split in recordings.items() if split == "train"}
    pieces = {rid for rid in train if "--" not in rid}
    assert pieces, recordings
    for piece in pieces:  # reference (timgm6mb, program 0) + 5 other (set, program) players
        assert {f"{piece}--{tag}" for tag in ("timgm6mb_p1", "timgm6mb_p2", "csound", "csound_p1", "csound_p2")} <= train
    tests = [rid for rid, split in recordings.items() if split == "test"]
    assert tests and all("--" not in rid for rid in tests)  # the test split is the reference player's alone


def _stream(players_root, augment: float, seed: int = 3, soft_attack: float = 0.0, bow_noise: float = 0.0,
            loader_workers: int = 0):
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.config.loader import load_experiment

    cfg = load_experiment(EXPERIMENTS / "any_player.yaml", [f"data.root={players_root}", "data.segment_seconds=1.0",
                                                            "data.pair_batch_size=8", f"data.pair_augment={augment}",
                                                            f"data.pair_soft_attack={soft_attack}",
                                                            f"data.pair_bow_noise={bow_noise}",
                                                            f"data.loader_workers={loader_workers}",
                                                            "data.steps_per_epoch=3"])
    return iter(make_loader(cfg, "train", seed=seed))


def test_a_loader_process_gives_the_batches_the_training_process_would_draw(players_root):
    """data.loader_workers 1 takes decoding and the recording conditions out of the training process: its one
    worker draws every crop, pair, player and condition the training process drew itself, so a run keeps its
    batches whichever way it loads them (and a speed comparison of the two compares speed alone)."""
    in_process = list(_stream(players_root, 0.4))
    one_worker = list(_stream(players_root, 0.4, loader_workers=1))
    assert len(in_process) == len(one_worker) == 3
    for a, b in zip(in_process, one_worker):
        assert a.keys() == b.keys() and "pair_source" in a
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


def test_pairs_take_their_input_from_any_player_and_their_target_from_the_reference(tmp_path):
    """Each rendering is a sine of its own frequency, so the frequency of a drawn clip says who played it."""
    import soundfile as sf

    from audiostyle.datasets.manifest import shard_urls
    from audiostyle.datasets.pair_dataset import AlignedRecording, read_pair_manifest, write_pair_dataset
    from audiostyle.datasets.streaming import MixedBatchStream, PairSource

    sr = 8000
    t = np.arange(sr * 6) / sr
    freqs = {"piano": 200.0, "piano.a": 300.0, "piano.b": 400.0, "violin": 500.0, "violin.c": 600.0}
    paths = {}
    for name, f in freqs.items():
        paths[name] = tmp_path / f"{name}.wav"
        sf.write(paths[name], (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), sr)
    rec = AlignedRecording("p1", "train", {"piano": paths["piano"], "violin": paths["violin"]},
                           {"piano": {"a": paths["piano.a"], "b": paths["piano.b"]}, "violin": {"c": paths["violin.c"]}})
    write_pair_dataset(tmp_path / "pairs", [rec], ["piano", "violin"], sample_rate=sr, segment_seconds=2.0)
    manifest = read_pair_manifest(tmp_path / "pairs")
    pairs = PairSource([shard_urls(tmp_path / "pairs", manifest, "train")], {"piano": 0, "violin": 1}, 1)
    stream = MixedBatchStream([], [], sr // 2, shuffle_buffer=4, seed=0, rank=0, world_size=1, pairs=pairs)

    def frequency(clip: np.ndarray) -> float:
        return float(np.argmax(np.abs(np.fft.rfft(clip)))) * sr / len(clip)

    seen = {0: set(), 1: set()}
    drawn = stream.pair_draws(0)  # resampled shards: endless
    for _ in range(60):
        source, target, src_label, tgt_label = next(drawn)
        seen[src_label].add(round(frequency(source)))
        assert round(frequency(target)) == (200 if tgt_label == 0 else 500)  # always the reference
    assert seen[0] == {200, 300, 400} and seen[1] == {500, 600}, seen  # every player is an input


@pytest.mark.parametrize("chances", [{"augment": 1.0}, {"augment": 0.0, "bow_noise": 1.0}])
def test_recording_conditions_change_the_input_and_never_the_target(players_root, chances):
    clean, augmented = _stream(players_root, 0.0), _stream(players_root, **chances)
    for _ in range(3):
        a, b = next(clean), next(augmented)
        np.testing.assert_array_equal(a["pair_target"].numpy(), b["pair_target"].numpy())
        np.testing.assert_array_equal(a["audio"].numpy(), b["audio"].numpy())  # unpaired clips stay clean too
        assert not np.allclose(a["pair_source"].numpy(), b["pair_source"].numpy())


def test_a_soft_attack_on_the_inputs_softens_their_onsets_and_never_the_target(players_root):
    from audiostyle.platform.evaluation.metrics import onset_contrast

    clean, bowed = _stream(players_root, 0.0), _stream(players_root, 0.0, soft_attack=1.0)
    contrast = {"clean": [], "bowed": []}
    for _ in range(2):
        a, b = next(clean), next(bowed)
        np.testing.assert_array_equal(a["pair_target"].numpy(), b["pair_target"].numpy())
        for name, batch in (("clean", a), ("bowed", b)):
            contrast[name] += [onset_contrast(clip, 22050) for clip in batch["pair_source"].numpy()]
    assert np.median(contrast["bowed"]) < 0.9 * np.median(contrast["clean"]), contrast


def test_a_soft_attack_softens_a_voice_entering_under_a_held_one_and_leaves_held_levels():
    """Per frequency: a broadband level barely rises when one voice of a chord enters (3 dB here), so a
    level follower over the whole clip would leave the new voice's onset as sharp as it was."""
    from audiostyle.datasets.recording_conditions import soft_attack

    sr = 22050
    t = np.arange(2 * sr) / sr
    held = 0.2 * np.sin(2 * np.pi * 440 * t)
    entering = 0.2 * np.sin(2 * np.pi * 660 * t) * (t >= 1.0)
    out = soft_attack((held + entering).astype(np.float32), sr, rise_seconds=0.2)
    assert out.shape == t.shape and out.dtype == np.float32

    def level(wave: np.ndarray, hz: float, start: float) -> float:
        seg = wave[int(start * sr): int(start * sr) + 1024] * np.hanning(1024)
        return float(np.abs(np.fft.rfft(seg))[int(round(hz * 1024 / sr))])

    clean = held + entering
    assert level(out, 660, 1.01) < 0.5 * level(clean, 660, 1.01)  # the new voice's first 50 ms: softened
    assert level(out, 660, 1.8) == pytest.approx(level(clean, 660, 1.8), rel=0.12)  # ...and it ends at its level
    for start in (0.5, 1.01, 1.8):  # the held voice is left alone, before and after the entry
        assert level(out, 440, start) == pytest.approx(level(clean, 440, start), rel=0.12)


def test_bow_noise_fills_the_valleys_while_a_note_sounds_and_leaves_silence_and_partials():
    """Noise that follows the notes: the valley between two partials fills in while the note sounds, the
    partials keep their level, a rest stays silent (a stationary hiss would fill it)."""
    from audiostyle.datasets.recording_conditions import apply_condition

    sr = 22050
    t = np.arange(2 * sr) / sr
    note = sum(0.2 / k * np.sin(2 * np.pi * 220 * k * t) for k in range(1, 8)) * (t < 1.0)
    out, rate = apply_condition(note.astype(np.float32), sr, "bow_noise", seed=3)
    assert rate == sr and out.shape == t.shape

    def level_db(wave: np.ndarray, hz: float) -> float:
        seg = wave[2000:2000 + 8192] * np.hanning(8192)  # inside the note
        spectrum = np.abs(np.fft.rfft(seg))
        k = int(round(hz * 8192 / sr))
        return float(20 * np.log10(spectrum[k - 3:k + 4].max() + 1e-9))

    for valley in (330.0, 550.0):
        assert level_db(out, valley) > level_db(note, valley) + 30  # filled in
        assert level_db(out, valley) < level_db(note, valley - 110.0) - 20  # and still under the partials
    for partial in (220.0, 440.0):
        assert level_db(out, partial) == pytest.approx(level_db(note, partial), abs=1.0)
    assert np.sqrt(np.mean(out[int(1.15 * sr):] ** 2)) < 1e-4  # the rest after the note stays silent


def test_every_evaluation_condition_changes_the_clip_as_named():
    from audiostyle.datasets.recording_conditions import CONDITIONS, apply_condition

    sr = 22050
    t = np.arange(sr * 2) / sr
    clip = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * (t % 0.5))).astype(np.float32)
    rms = float(np.sqrt(np.mean(clip ** 2)))
    out = {name: apply_condition(clip, sr, name, seed=0) for name in CONDITIONS}
    assert out["rate_44k"][1] == 44100 and len(out["rate_44k"][0]) == 2 * 44100
    quiet = out["quiet"][0]
    assert 20 * np.log10(rms / np.sqrt(np.mean(quiet ** 2))) == pytest.approx(20.0, abs=0.1)
    noise = out["hiss"][0] - clip
    assert 10 * np.log10(np.mean(clip ** 2) / np.mean(noise ** 2)) == pytest.approx(30.0, abs=1.0)
    # the room keeps sounding after the notes stop; the clean clip's last 0.3 s hold the same decaying tone
    room = out["room"][0]
    assert room.shape == clip.shape and not np.allclose(room, clip)
    up, down = out["tilt_up"][0], out["tilt_down"][0]
    spec = {k: np.abs(np.fft.rfft(v)) for k, v in {"clip": clip, "up": up, "down": down}.items()}
    assert spec["up"][220 * 2] < spec["clip"][220 * 2] < spec["down"][220 * 2]  # 220 Hz: below the low shelf
    np.testing.assert_array_equal(apply_condition(clip, sr, "hiss", seed=4)[0], apply_condition(clip, sr, "hiss", seed=4)[0])
    with pytest.raises(ValueError, match="unknown recording condition"):
        apply_condition(clip, sr, "underwater")


def test_vibrato_swings_the_pitch_and_the_level_by_what_it_names():
    from scipy.signal import hilbert

    from audiostyle.datasets.recording_conditions import apply_condition

    sr = 22050
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr)).astype(np.float32)
    out, rate = apply_condition(tone, sr, "vibrato")
    assert rate == sr and out.shape == tone.shape
    analytic = hilbert(out)
    hz = np.diff(np.unwrap(np.angle(analytic))) * sr / (2 * np.pi)
    hz = np.convolve(hz, np.ones(220) / 220, "valid")[2000:-2000]  # 10 ms means: the carrier's ripple averages out
    cents = 1200 * np.log2(hz / 440)
    assert cents.min() == pytest.approx(-30, abs=3) and cents.max() == pytest.approx(30, abs=3)
    level = np.abs(analytic)[2000:-2000]
    assert 20 * np.log10(level.max() / level.min()) == pytest.approx(4.0, abs=0.5)  # +-2 dB


def _swing_cents(wave: np.ndarray, sr: int, notes_hz: list[float]) -> list[float]:
    """Per note (one second each), the largest distance of the 10 ms instantaneous pitch from the note."""
    from scipy.signal import hilbert

    hz = np.diff(np.unwrap(np.angle(hilbert(wave)))) * sr / (2 * np.pi)
    hz = np.convolve(hz, np.ones(220) / 220, "valid")
    # the middle of each note: the step between notes is not a swing
    return [float(np.abs(1200 * np.log2(hz[k * sr + 4000:(k + 1) * sr - 4000] / f)).max()) for k, f in enumerate(notes_hz)]


def test_steady_pitch_takes_a_vibrato_out_and_leaves_the_notes():
    from audiostyle.datasets.recording_conditions import apply_condition
    from audiostyle.datasets.steady_pitch import steady_pitch

    sr, notes = 22050, [440.0, 493.88, 523.25, 392.0]
    melody = (0.3 * np.sin(2 * np.pi * np.cumsum(np.repeat(notes, sr)) / sr)).astype(np.float32)
    swung, _ = apply_condition(melody, sr, "vibrato")
    assert min(_swing_cents(swung, sr, notes)) > 25  # +-30 cents in
    steadied = steady_pitch(swung, sr)
    assert steadied.shape == swung.shape
    assert max(_swing_cents(steadied, sr, notes)) < 12, _swing_cents(steadied, sr, notes)  # a third or less left
    assert max(_swing_cents(steady_pitch(melody, sr), sr, notes)) < 5  # a steady melody keeps its notes


def test_whitened_content_holds_the_notes_not_the_player(players_root):
    """The content encoder's input of one passage by two sound sets is closer than two passages by one (on
    the demo's players: 0.07-0.12 x whitened, 0.20-0.26 x raw with csound; 0.66-0.81 x whitened, 0.75-0.94 x
    raw with FluidR3, whose pianos decay and sustain differently)."""
    import torch

    from audiostyle.components.log_stft_frontend import LogStftFrontend
    from audiostyle.components.spectral_whitening import fine_structure
    from audiostyle.datasets.audio_io import read_audio

    stage = next((players_root / ".render").glob("piano-*"))
    pieces = sorted(p.stem for p in (stage / "timgm6mb").glob("*.flac") if "--" not in p.stem)[:2]
    assert len(pieces) == 2
    front = LogStftFrontend(22050)

    def feats(path: Path) -> torch.Tensor:
        wave, _ = read_audio(path)
        return front(torch.from_numpy(wave[: 22050 * 3][None].astype(np.float32)))

    a_ref, b_ref = feats(stage / "timgm6mb" / f"{pieces[0]}.flac"), feats(stage / "timgm6mb" / f"{pieces[1]}.flac")
    a_other = feats(stage / "csound" / f"{pieces[0]}--csound.flac")

    def distance(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).abs().mean())

    same_notes = distance(fine_structure(a_ref), fine_structure(a_other))
    same_player = distance(fine_structure(a_ref), fine_structure(b_ref))
    assert same_notes < 0.5 * same_player, (same_notes, same_player)
    # the raw log-spectrum does not have this margin: the player's envelope weighs as much as the notes
    raw_ratio = distance(a_ref, a_other) / distance(a_ref, b_ref)
    assert same_notes / same_player < raw_ratio, (same_notes / same_player, raw_ratio)


def test_render_manifest_records_the_players(players_root):
    stage = next((players_root / ".render").glob("violin-*"))
    rows = [json.loads(line) for line in (stage / "manifest.jsonl").read_text().splitlines()]
    tags = {row["recording_id"].split("--")[1] for row in rows if "--" in row["recording_id"] and row["split"] == "train"}
    assert {"timgm6mb_p110", "csound", "csound_p110"} <= tags


def test_minutes_of_training_move_an_unseen_player_towards_the_target(players_root, train_in_process):
    """A small learning test of the any-player recipe, in process: 150 steps on TimGM6mb and csound pairs
    (with recording conditions), then piano test pieces as FluidR3 played them, a player it never heard,
    transferred to violin must land closer to the reference violin than the input itself is."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.datasets.paired import heldout_soundfonts, load_paired_test
    from audiostyle.platform.config.loader import load_experiment

    unseen = [s for s in heldout_soundfonts(players_root / "piano") if s in ("fluidr3", "musescore")]
    if not unseen:
        pytest.skip("no unseen sound set installed (apt-get install fluid-soundfont-gm)")
    cfg = load_experiment(EXPERIMENTS / "any_player.yaml", [
        f"data.root={players_root}", "data.segment_seconds=2.0", "data.pair_batch_size=6", "data.batch_size=2",
        "model.content_encoder.dim=96", "model.decoder.dim=96"])
    torch.manual_seed(0)
    model = build_timbre_model(cfg)
    train_in_process(model, cfg, 150)
    targets = {it.piece_id: it for it in load_paired_test(players_root, ["piano", "violin"])}
    inputs = load_paired_test(players_root, ["piano", "violin"], split="heldout", soundfont=unseen[0])
    moved, unchanged = [], []
    for item in inputs:
        n = min(len(item.audio["piano"]), len(targets[item.piece_id].audio["violin"]), 22050 * 8)
        source = torch.from_numpy(item.audio["piano"][:n][None].astype(np.float32))
        target = model.features(torch.from_numpy(targets[item.piece_id].audio["violin"][:n][None].astype(np.float32)))
        with torch.no_grad():
            output = model.features(model.transfer(source, model.prototype("violin")))
        moved.append(float((output - target).abs().mean()))
        unchanged.append(float((model.features(source) - target).abs().mean()))
    assert np.mean(moved) < 0.9 * np.mean(unchanged), (moved, unchanged)  # measured: 0.82 x
