"""A string player's vibrato in the demo (`data demo --vibrato`): every note of a rendering swings on a MIDI
channel of its own, so the voices of a chord swing independently; a plain rendering is untouched by one
made before it; only players' renderings of bowed instruments get it, never the reference's (the targets)."""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest

from audiostyle.datasets.soundfonts import NoteRenderer, find_soundfonts

SR = 22050
INSTALLED = {sf.name: sf for sf in find_soundfonts()}
# C4 and E5 held together: C4's third partial (785 Hz) and E5's fundamental (659 Hz) have no partial of the
# other voice within 4 %, so each voice's pitch can be followed on its own.
CHORD = [{"onset": 0.0, "offset": 3.0, "pitch": 60, "velocity": 90},
         {"onset": 0.0, "offset": 3.0, "pitch": 76, "velocity": 90}]
PARTIALS_HZ = (3 * 261.63, 659.26)


@pytest.fixture(scope="module")
def violin() -> NoteRenderer:
    return NoteRenderer(INSTALLED["timgm6mb"], SR)


def _cents_track(audio: np.ndarray, partial_hz: float) -> np.ndarray:
    """The partial's frequency per 6 ms frame (93 ms windows, parabolic peak interpolation), in cents
    from `partial_hz`, over the held part of the chord."""
    mag = np.abs(librosa.stft(audio, n_fft=2048, hop_length=128))
    hz = librosa.fft_frequencies(sr=SR, n_fft=2048)
    band = np.flatnonzero((hz > partial_hz * 0.96) & (hz < partial_hz * 1.04))
    log = np.log(mag[band] + 1e-9)
    k = np.clip(log.argmax(axis=0), 1, len(band) - 2)
    t = np.arange(log.shape[1])
    below, peak, above = log[k - 1, t], log[k, t], log[k + 1, t]
    curvature = below - 2 * peak + above
    shift = np.where(curvature < 0, 0.5 * (below - above) / np.where(curvature < 0, curvature, -1.0), 0.0)
    track = 1200 * np.log2((hz[band[0]] + (k + shift) * (hz[1] - hz[0])) / partial_hz)
    return track[40:480]  # 0.23-2.8 s: past the attack, before the release


def _swing(track: np.ndarray) -> float:
    return float(np.subtract(*np.percentile(track, [95, 5])))


def test_each_voice_of_a_chord_swings_on_its_own(violin):
    plain = [_cents_track(violin.render(40, CHORD), f) for f in PARTIALS_HZ]
    plain_swing = max(_swing(t) for t in plain)
    assert np.corrcoef(*plain)[0, 1] > 0.9  # the sample's own wobble: both voices alike
    for seed in range(4):
        audio = violin.render(40, CHORD, vibrato=np.random.default_rng(seed))
        low, high = (_cents_track(audio, f) for f in PARTIALS_HZ)
        assert min(_swing(low), _swing(high)) > 1.5 * plain_swing, (seed, _swing(low), _swing(high), plain_swing)
        assert abs(np.corrcoef(low, high)[0, 1]) < 0.5, seed  # measured 0.02-0.21: each voice its own rate, phase


def test_a_vibrato_rendering_is_repeatable_and_leaves_the_next_plain_one_alone(violin):
    plain = violin.render(40, CHORD)
    swung = violin.render(40, CHORD, vibrato=np.random.default_rng(7))
    assert np.array_equal(swung, violin.render(40, CHORD, vibrato=np.random.default_rng(7)))
    assert not np.array_equal(swung[: len(plain)], plain)
    assert np.array_equal(violin.render(40, CHORD), plain)  # every channel's bend is back at rest


def test_channels_are_never_shared_by_sounding_notes_nor_the_drum_channel():
    from audiostyle.datasets.soundfonts import _assign_channels
    from audiostyle.platform.core.errors import DataError

    notes = [{"onset": 0.25 * i, "offset": 0.25 * i + 1.0, "pitch": 60 + i % 12} for i in range(40)]
    channels = _assign_channels(notes)
    assert 9 not in channels
    for i, note in enumerate(notes):
        sounding = [j for j, other in enumerate(notes) if j != i and other["onset"] < note["offset"]
                    and note["onset"] < other["offset"]]
        assert all(channels[j] != channels[i] for j in sounding), i
    with pytest.raises(DataError, match="more than 15 notes sound at 0.00 s"):
        _assign_channels([{"onset": 0.0, "offset": 1.0, "pitch": 40 + i} for i in range(16)])


def test_demo_vibrato_touches_players_renderings_of_bowed_instruments_only(tmp_path):
    if "csound" not in INSTALLED:
        pytest.skip("csound-soundfont is not installed (apt-get install csound-soundfont)")
    import soundfile as sf

    from audiostyle.datasets.demo_render import stage_demo

    def audio_by_id(vibrato: float) -> dict[str, dict[str, np.ndarray]]:
        result = stage_demo(tmp_path / f"v{vibrato}", ("piano", "violin"), seconds_per_instrument=40, seed=0,
                            players=("timgm6mb", "csound"), vibrato=vibrato, heldout_soundfont=False)
        out = {}
        for name, info in result["instruments"].items():
            rows = [json.loads(line) for line in open(info["source_manifest"])]
            out[name] = {row["recording_id"]: sf.read(row["path"], dtype="float32")[0] for row in rows}
        return out

    plain, swung = audio_by_id(0.0), audio_by_id(1.0)
    assert plain.keys() == swung.keys()
    for instrument in plain:
        assert plain[instrument].keys() == swung[instrument].keys()
        for rid, audio in plain[instrument].items():
            changed = not np.array_equal(audio, swung[instrument][rid])
            # players' renderings carry "--<tag>"; the reference's (the pairs' targets, the test split) do not
            assert changed == (instrument == "violin" and "--" in rid), (instrument, rid)


@pytest.mark.parametrize("value,ok", [("0.5", True), ("1", True), ("1.5", False), ("-0.1", False)])
def test_demo_vibrato_is_a_chance(value, ok, capsys):
    from audiostyle.platform.cli.main import build_parser

    parser = build_parser()
    if ok:
        assert parser.parse_args(["data", "demo", "--vibrato", value]).vibrato == float(value)
        return
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["data", "demo", "--vibrato", value])
    assert info.value.code == 2 and "--vibrato" in capsys.readouterr().err
