"""Paired data: the demo's pairs dataset (aligned passages of every instrument, split by piece) and the
stream that serves aligned (source, target) pairs beside unpaired clips."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict

import librosa
import numpy as np
import pytest
import soundfile as sf

from audiostyle.datasets.audio_io import rms_db
from audiostyle.datasets.pair_dataset import AlignedRecording, read_pair_manifest, write_pair_dataset
from audiostyle.platform.core.errors import ConfigError, DataError

INSTRUMENTS = ["piano", "violin", "cello"]


def _passages(folder, split):
    """{key: {"json": record, instrument: audio}} of a pairs split, read straight from the tars."""
    manifest = read_pair_manifest(folder)
    samples: dict[str, dict] = defaultdict(dict)
    for name in manifest["splits"][split]["shards"]:
        with tarfile.open(folder / name) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member).read()
                if ext == "json":
                    samples[key]["json"] = json.loads(data)
                else:
                    samples[key][ext.removesuffix(".flac")] = sf.read(io.BytesIO(data), dtype="float32")[0]
    return manifest, samples


def _chroma(audio, sr):
    return librosa.feature.chroma_stft(y=audio, sr=sr, n_fft=2048, hop_length=512).mean(axis=1)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_demo_pairs_are_aligned_passages_of_every_instrument_split_by_piece(demo_root):
    folder = demo_root / "pairs"
    manifest = read_pair_manifest(folder)
    assert manifest["instruments"] == INSTRUMENTS and {"train", "val", "test"} <= set(manifest["splits"])
    for name in INSTRUMENTS:  # the same pieces, in the same splits, as every instrument's own dataset
        recordings = json.loads((demo_root / name / "manifest.json").read_text())["recordings"]
        assert manifest["pieces"] == {r: s for r, s in recordings.items() if s != "heldout"}
    sr = manifest["sample_rate"]
    _, samples = _passages(folder, "train")
    assert samples
    same, other = [], []
    keys = sorted(samples)
    for i, key in enumerate(keys):
        sample = samples[key]
        record = sample["json"]
        assert set(sample) == {"json", *INSTRUMENTS} and record["instruments"] == INSTRUMENTS
        assert record["offset_seconds"] % manifest["segment_seconds"] == 0
        lengths = {len(sample[name]) for name in INSTRUMENTS}
        assert lengths == {round(record["duration_seconds"] * sr)}, "a passage's instruments differ in length"
        for name in INSTRUMENTS:  # each normalized on its own, like an instrument dataset's recordings
            assert -30.0 < rms_db(sample[name]) < -12.0
        # the piano and the violin play the same notes: their chroma agrees more than with another passage
        piano, violin = _chroma(sample["piano"], sr), _chroma(sample["violin"], sr)
        same.append(_cos(piano, violin))
        other.append(_cos(piano, _chroma(samples[keys[(i + 1) % len(keys)]]["violin"], sr)))
    assert np.mean(same) > np.mean(other) + 0.1, (np.mean(same), np.mean(other))


def test_pairs_stream_aligned_source_target_pairs_beside_unpaired_clips(tiny_config, demo_root):
    from audiostyle.datasets.streaming import make_loader

    three = ", ".join(f"{{name: {n}, data: {demo_root / n}}}" for n in INSTRUMENTS)
    cfg = tiny_config(f"data.pairs={demo_root / 'pairs'}", "data.pair_batch_size=6", f"instruments=[{three}]")
    n = int(cfg.data.segment_seconds * cfg.data.sample_rate)
    batches = list(make_loader(cfg, "train", seed=0))
    assert len(batches) == cfg.data.steps_per_epoch
    directions = set()
    for batch in batches:
        assert batch["audio"].shape == (cfg.data.batch_size, n)
        assert batch["pair_source"].shape == batch["pair_target"].shape == (6, n)
        src, tgt = batch["pair_source_label"], batch["pair_target_label"]
        assert bool((src != tgt).all()) and int(src.min()) >= 0 and int(tgt.max()) <= 2
        directions |= set(zip(src.tolist(), tgt.tolist()))
    assert len(directions) >= 4, f"pairs should go in several directions, saw {directions}"
    # the stream is a pure function of the seed: the same pairs again
    again = next(iter(make_loader(cfg, "train", seed=0)))
    assert np.array_equal(again["pair_source"], batches[0]["pair_source"])
    assert "pair_source" in next(iter(make_loader(cfg, "val", seed=0)))


def test_pairs_need_two_of_the_experiments_instruments(tiny_config, demo_root, tmp_path):
    from audiostyle.datasets.streaming import make_loader

    _, samples = _passages(demo_root / "pairs", "train")
    passage = samples[sorted(samples)[0]]
    renders = {}
    for name in ("piano", "cello"):
        renders[name] = tmp_path / f"{name}.wav"
        sf.write(renders[name], passage[name], 22050)
    folder = tmp_path / "pairs"
    write_pair_dataset(folder, [AlignedRecording("piece_a", "train", renders), AlignedRecording("piece_b", "val", renders)],
                       ["piano", "cello"], sample_rate=22050, segment_seconds=4.0)
    assert read_pair_manifest(folder)["instruments"] == ["piano", "cello"]
    cfg = tiny_config(f"data.pairs={folder}")  # piano + violin: only piano is paired here
    with pytest.raises(ConfigError, match="data.pairs") as info:
        make_loader(cfg, "train", seed=0)
    assert "includes 1 of the experiment's instruments" in str(info.value)
    with pytest.raises(ConfigError, match=r"data\.pairs\.1") as info:  # in a list: the entry is named
        make_loader(tiny_config(f"data.pairs=[{demo_root / 'pairs'}, {folder}]"), "train", seed=0)
    assert str(folder) in str(info.value)
    with pytest.raises(DataError, match="not a paired dataset|manifest lacks"):
        make_loader(tiny_config(f"data.pairs={demo_root / 'piano'}"), "train", seed=0)


def test_cross_reconstruction_without_pairs_is_refused_by_validate(tiny_config):
    with pytest.raises(ConfigError, match="data.pairs") as info:
        tiny_config("+losses.cross_reconstruction={component: log_spectral_l1}")
    assert "cross_reconstruction" in str(info.value) and "${data.root}/pairs" in str(info.value)


def test_an_instrument_without_pairs_still_trains_beside_paired_ones(tiny_config, demo_root, tmp_path):
    """violin has no pairs here (as an instrument added from recordings would): its clips still come in
    every batch for self-reconstruction, and pairs are drawn among piano and cello only."""
    from audiostyle.datasets.streaming import make_loader

    _, samples = _passages(demo_root / "pairs", "train")
    renders = {}
    for name in ("piano", "cello"):
        renders[name] = tmp_path / f"{name}.wav"
        sf.write(renders[name], np.concatenate([samples[k][name] for k in sorted(samples)[:3]]), 22050)
    folder = tmp_path / "pairs"
    write_pair_dataset(folder, [AlignedRecording("piece_a", "train", renders)], ["piano", "cello"],
                       sample_rate=22050, segment_seconds=4.0)
    three = ", ".join(f"{{name: {n}, data: {demo_root / n}}}" for n in INSTRUMENTS)
    cfg = tiny_config(f"data.pairs={folder}", f"instruments=[{three}]", "data.batch_size=3")
    for batch in make_loader(cfg, "train", seed=0):
        assert sorted(batch["label"].tolist()) == [0, 1, 2]  # every instrument, violin (1) included
        assert set(batch["pair_source_label"].tolist()) | set(batch["pair_target_label"].tolist()) <= {0, 2}
