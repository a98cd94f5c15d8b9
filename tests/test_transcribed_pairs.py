"""An instrument from recordings alone: its plain recordings exported by the demo, added with `data add`, and
paired with the demo instruments by transcribing them (platform/data/transcribed_pairs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.platform.core.errors import DataError

pytest.importorskip("basic_pitch")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def flute_from_recordings(tmp_path_factory):
    """(demo result, exported recordings folder, the flute's `data add` folder)."""
    from audiostyle.platform.data.prepare import add_instrument_dataset, export_plain_recordings, prepare_demo

    tmp = tmp_path_factory.mktemp("flute")
    result = prepare_demo(tmp / "demo", ("piano", "flute"), seconds_per_instrument=60, seed=0,
                          heldout_soundfont=False)
    counts = export_plain_recordings(result, tmp / "recordings")
    assert counts == {name: sum(split in ("train", "val") for split, _ in info["training_renders"].values())
                      for name, info in result["instruments"].items()}
    add_instrument_dataset("flute", tmp / "recordings" / "flute", tmp / "flute", segment_seconds=4.0,
                           split_fractions=(0.8, 0.2, 0.0), progress=False)
    return result, tmp / "recordings", tmp / "flute"


@pytest.fixture(scope="module")
def flute_pairs(flute_from_recordings, tmp_path_factory):
    """(the flute's folder, its transcribed pairs with the piano, their manifest)."""
    from audiostyle.platform.data.transcribed_pairs import write_transcribed_pairs

    _, _, flute = flute_from_recordings
    out = tmp_path_factory.mktemp("flute_pairs")
    return flute, out, write_transcribed_pairs(flute, ["piano"], out, progress=False)


def test_exported_recordings_are_the_reference_renderings_of_train_and_val_pieces_only(flute_from_recordings):
    result, recordings, _ = flute_from_recordings
    renders = result["instruments"]["flute"]["training_renders"]
    files = sorted(p.stem for p in (recordings / "flute").iterdir())
    assert files == sorted(piece for piece, (split, _) in renders.items() if split in ("train", "val"))
    assert not set(files) & set(result["test_pieces"])  # a test piece never becomes a "recording"
    for piece in files[:3]:
        assert np.array_equal(sf.read(recordings / "flute" / f"{piece}.flac")[0], sf.read(renders[piece][1])[0])
    assert not list((recordings / "flute").glob("*.json"))  # no notes beside them


def _chroma(audio: np.ndarray, sr: int) -> np.ndarray:
    import librosa

    c = librosa.feature.chroma_stft(y=audio, sr=sr, n_fft=2048, hop_length=512).mean(axis=1)
    return c / np.linalg.norm(c)


def test_transcribed_pairs_play_the_recordings_notes_and_train_beside_the_demo_pairs(
        flute_pairs, tiny_config, demo_root, monkeypatch):
    from audiostyle.datasets.pair_dataset import read_pair_manifest
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.data import transcribed_pairs

    flute, out, manifest = flute_pairs
    assert manifest["instruments"] == ["flute", "piano"] and read_pair_manifest(out) == manifest
    assert set(manifest["splits"]) == {"train", "val"} and manifest["splits"]["train"]["segments"] >= 4

    # the demo's pairs (piano, violin, cello) and these, in one experiment: pairs come from both
    four = ", ".join(f"{{name: {n}, data: {demo_root / n}}}" for n in ("piano", "violin", "cello"))
    cfg = tiny_config(f"instruments=[{four}, {{name: flute, data: {flute}}}]", "data.segment_seconds=3.0",
                      f"data.pairs=[{demo_root / 'pairs'}, {out}]", "data.pair_batch_size=8")
    sources, targets, directions = [], [], set()
    for batch in make_loader(cfg, "train", seed=0):
        for src, tgt, a, b in zip(batch["pair_source"].numpy(), batch["pair_target"].numpy(),
                                  batch["pair_source_label"].tolist(), batch["pair_target_label"].tolist()):
            directions.add((a, b))
            if 3 in (a, b):  # flute <-> piano: the recording and its notes played by the piano
                sources.append(_chroma(src, cfg.data.sample_rate))
                targets.append(_chroma(tgt, cfg.data.sample_rate))
    assert {(0, 3), (3, 0)} <= directions and {(0, 1), (1, 2)} & directions, directions
    sims = np.array(sources) @ np.array(targets).T
    matched = float(np.mean(np.diag(sims)))
    others = float(np.mean(sims[~np.eye(len(sims), dtype=bool)]))
    assert len(sims) >= 4 and matched > others + 0.1, (matched, others)

    # the notes are kept: rendering again (other players) needs no transcriber
    rows = [json.loads(line) for line in (out / ".render" / transcribed_pairs.NOTES_FILE).read_text().splitlines()]
    assert rows and any(r["notes"] for r in rows)

    def deaf(*_):
        raise AssertionError("transcribed again")

    monkeypatch.setattr(transcribed_pairs, "transcribe", deaf)
    assert transcribed_pairs.write_transcribed_pairs(flute, ["piano"], out, progress=False)["pieces"] == manifest["pieces"]


def test_transcribed_pairs_refuse_the_instrument_itself_and_unknown_partners(flute_from_recordings, tmp_path):
    _, _, flute = flute_from_recordings
    from audiostyle.platform.data.transcribed_pairs import write_transcribed_pairs

    with pytest.raises(DataError, match="other demo instruments than flute"):
        write_transcribed_pairs(flute, ["flute"], tmp_path / "p", progress=False)
    with pytest.raises(Exception, match="unknown demo instrument 'pianno'"):
        write_transcribed_pairs(flute, ["pianno"], tmp_path / "p", progress=False)
    assert not (tmp_path / "p").exists()  # refused before anything is written


def test_minutes_of_training_on_recordings_alone_move_piano_towards_the_hidden_flute(flute_from_recordings,
                                                                                      flute_pairs, train_in_process):
    """A small learning test: 250 steps on the piano's demo data and the flute's recordings with their
    transcribed pairs; the flute's self-reconstruction falls, and the piano's test pieces transferred to the
    flute land closer to the flute's renderings of them (hidden: never in training) than the input is."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.datasets.paired import load_paired_test
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.config.loader import load_experiment

    result, _, _ = flute_from_recordings
    flute, pairs, _ = flute_pairs
    demo = Path(result["out_root"])
    cfg = load_experiment(EXPERIMENTS / "any_player_flute.yaml", [
        f"data.root={demo}", f"data.pairs={pairs}", "data.segment_seconds=2.0", "data.pair_batch_size=6",
        "data.batch_size=2", "model.content_encoder.dim=96", "model.decoder.dim=96",
        f"instruments=[{{name: piano, data: {demo / 'piano'}}}, {{name: flute, data: {flute}}}]"])
    torch.manual_seed(0)
    model = build_timbre_model(cfg)
    flute_clips = next(iter(make_loader(cfg, "val", seed=0)))
    flute_only = flute_clips["label"] == 1

    def flute_reconstruction() -> float:
        with torch.no_grad():
            return float(model.generator_terms(flute_clips["audio"][flute_only], flute_clips["label"][flute_only],
                                               active={"reconstruction"})["reconstruction"])

    before = flute_reconstruction()
    train_in_process(model, cfg, 250)
    after = flute_reconstruction()
    assert after < 0.8 * before
    moved, unchanged = [], []
    for item in load_paired_test(demo, ["piano", "flute"]):
        n = min(len(item.audio["piano"]), len(item.audio["flute"]), 22050 * 8)
        source = torch.from_numpy(item.audio["piano"][:n][None].astype(np.float32))
        target = model.features(torch.from_numpy(item.audio["flute"][:n][None].astype(np.float32)))
        with torch.no_grad():
            output = model.features(model.transfer(source, model.prototype("flute")))
        moved.append(float((output - target).abs().mean()))
        unchanged.append(float((model.features(source) - target).abs().mean()))
    # measured: 0.45 x (150 steps gave 0.89 x); self-reconstruction 2.39 -> 0.69
    assert np.mean(moved) < 0.75 * np.mean(unchanged), (moved, unchanged)
