"""Streaming: batch shapes and labels, every class in every batch, exact batch counts per rank, seeds, URLs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiostyle.datasets.ingest import add_instrument
from audiostyle.datasets.streaming import instrument_quotas, make_loader
from audiostyle.platform.config.loader import load_resolved
from audiostyle.platform.config.schema import parse_experiment
from audiostyle.platform.core.errors import ConfigError, DataError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SR = 8000
F0 = {"piano": 250.0, "violin": 500.0, "cello": 1000.0}  # one octave apart: the label is audible in the data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """Three instruments, five 6 s recordings each, sharded small (several shards per split)."""
    root = tmp_path_factory.mktemp("streaming")
    for name, f0 in F0.items():
        src = root / "src" / name
        src.mkdir(parents=True)
        for i in range(5):
            t = np.arange(6 * SR) / SR
            wave = np.sin(2 * np.pi * f0 * (1 + 0.01 * i) * t) * np.exp(-3.0 * (t % 0.5))
            sf.write(src / f"r{i}.wav", (0.2 * wave).astype(np.float32), SR)
        add_instrument(name, src, root / name, sample_rate=SR, segment_seconds=1.0, shard_max_bytes=30_000,
                       progress=False)
    return root


def make_cfg(root: Path, *overrides: str, instruments=("piano", "violin")):
    """A typed config from the quickstart YAML (data fields only matter here; no components are built)."""
    raw, _ = load_resolved(EXPERIMENTS / "quickstart.yaml",
                      [f"data.root={root}", f"data.sample_rate={SR}", "data.segment_seconds=0.5",
                       "data.batch_size=4", "data.steps_per_epoch=5", "data.val_batches=3",
                       "data.shuffle_buffer=8", *overrides])
    raw["instruments"] = [{"name": n, "data": str(root / n)} for n in instruments]
    return parse_experiment(raw)


def dominant_hz(wave: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(wave.numpy()))
    return float(np.argmax(spectrum) * SR / wave.shape[0])


def test_batches_have_shape_labels_and_every_class(data_root):
    cfg = make_cfg(data_root)
    train = list(make_loader(cfg, "train", seed=0))
    val = list(make_loader(cfg, "val", seed=0))
    assert len(train) == 5 and len(val) == 3
    for batch in train + val:
        assert batch["audio"].shape == (4, 4000) and batch["audio"].dtype == torch.float32
        assert batch["label"].tolist() == [0, 0, 1, 1]
        for wave, label in zip(batch["audio"], batch["label"]):
            if wave.abs().max() > 0.05:  # skip a crop that fell on a rest
                name = cfg.instruments[int(label)].name
                assert abs(dominant_hz(wave) - F0[name]) < 0.1 * F0[name]


def test_quotas_follow_weights_with_one_of_each():
    assert instrument_quotas([1.0, 1.0], 8) == [4, 4]
    assert instrument_quotas([3.0, 1.0, 1.0], 8) == [4, 2, 2]
    assert instrument_quotas([100.0, 1.0, 1.0], 3) == [1, 1, 1]
    assert sum(instrument_quotas([0.3, 0.5, 0.2], 11)) == 11
    with pytest.raises(ConfigError, match="data.batch_size"):
        instrument_quotas([1.0, 1.0, 1.0], 2)


def test_two_ranks_get_equal_counts_and_different_data(data_root):
    cfg = make_cfg(data_root)
    for split, n in (("train", 5), ("val", 3)):
        r0 = list(make_loader(cfg, split, seed=0, rank=0, world_size=2))
        r1 = list(make_loader(cfg, split, seed=0, rank=1, world_size=2))
        assert len(r0) == len(r1) == n
        assert not any(torch.equal(a["audio"], b["audio"]) for a, b in zip(r0, r1))


def test_deterministic_under_seed_epochs_differ_validation_repeats(data_root):
    cfg = make_cfg(data_root)
    loader = make_loader(cfg, "train", seed=3)
    epoch0, epoch1 = list(loader), list(loader)
    again = list(make_loader(cfg, "train", seed=3))
    other = list(make_loader(cfg, "train", seed=4))
    same = lambda xs, ys: all(torch.equal(x["audio"], y["audio"]) for x, y in zip(xs, ys))  # noqa: E731
    assert same(epoch0, again)
    assert not same(epoch0, epoch1) and not same(epoch0, other)
    resumed = make_loader(cfg, "train", seed=3)
    resumed.set_epoch(1)
    assert same(list(resumed), epoch1)
    val = make_loader(cfg, "val", seed=3)
    assert same(list(val), list(val))  # every validation sees the same batches


def test_worker_processes_keep_counts_classes_and_determinism(data_root):
    cfg = make_cfg(data_root, "data.loader_workers=2")
    a = list(make_loader(cfg, "train", seed=0))
    b = list(make_loader(cfg, "train", seed=0))
    assert len(a) == 5 and all(x["label"].tolist() == [0, 0, 1, 1] for x in a)
    assert all(torch.equal(x["audio"], y["audio"]) for x, y in zip(a, b))


def test_url_locations_file_pipe_and_object_store(data_root):
    import fsspec

    local = list(make_loader(make_cfg(data_root), "train", seed=0))
    cfg = make_cfg(data_root)
    cfg.instruments[0].data = (data_root / "piano").as_uri()  # file:///...
    cfg.instruments[1].data = f"pipe:cat {data_root / 'violin'}"  # the file name is appended to the command
    batches = list(make_loader(cfg, "train", seed=0))
    assert len(batches) == 5
    assert all(torch.equal(x["audio"], y["audio"]) for x, y in zip(batches, local))

    # an fsspec object store (the in-memory one stands in for s3:// or gs://, which need credentials)
    store = fsspec.filesystem("memory")
    for name in ("piano", "violin"):
        for f in (data_root / name).iterdir():
            store.pipe(f"/bucket/{name}/{f.name}", f.read_bytes())
    cfg = make_cfg(data_root)
    for inst in cfg.instruments:
        inst.data = f"memory://bucket/{inst.name}"
    remote = list(make_loader(cfg, "train", seed=0))
    assert all(torch.equal(x["audio"], y["audio"]) for x, y in zip(remote, local))


def test_third_instrument_is_one_more_entry(data_root):
    cfg = make_cfg(data_root, "data.batch_size=6", instruments=("piano", "violin", "cello"))
    batches = list(make_loader(cfg, "train", seed=0))
    assert len(batches) == 5
    for batch in batches:
        assert batch["label"].tolist() == [0, 0, 1, 1, 2, 2]
        loud = [(w, lab) for w, lab in zip(batch["audio"], batch["label"]) if w.abs().max() > 0.05]
        assert all(abs(dominant_hz(w) - F0["cello"]) < 100 for w, lab in loud if lab == 2)


def test_clear_errors_for_missing_data_rate_and_split(data_root, tmp_path):
    cfg = make_cfg(data_root)
    cfg.instruments[1].data = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere/manifest.json"):
        make_loader(cfg, "train", seed=0)
    with pytest.raises(DataError, match="at 8000 Hz but data.sample_rate is 16000"):
        make_loader(make_cfg(data_root, "data.sample_rate=16000"), "train", seed=0)
    with pytest.raises(DataError, match="no 'heldout' shards"):
        make_loader(make_cfg(data_root), "heldout", seed=0)


def _sine_pairs(out: Path, piano_hz: float, seconds: float) -> str:
    """A paired dataset of a train and a val piece, each `seconds` long (1 s passages): piano a sine of
    `piano_hz`, violin 500 Hz."""
    from audiostyle.datasets.pair_dataset import AlignedRecording, write_pair_dataset

    t = np.arange(int(seconds * SR)) / SR
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, hz in (("piano", piano_hz), ("violin", 500.0)):
        paths[name] = out / f"{name}.wav"
        sf.write(paths[name], (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), SR)
    pieces = [AlignedRecording(piece, split, paths) for piece, split in (("p1", "train"), ("p2", "val"))]
    write_pair_dataset(out / "pairs", pieces, ["piano", "violin"], sample_rate=SR, segment_seconds=1.0)
    return str(out / "pairs")


@pytest.mark.parametrize("shares,expected", [(None, 0.25), ([1, 1], 0.5), ([1, 3], 0.75)])
def test_pair_shares_set_how_many_pairs_each_paired_dataset_gives(data_root, tmp_path, shares, expected):
    """Two paired datasets of 6 and 2 passages, told apart by their piano's pitch: without shares the
    second gives a quarter of the pairs (by passages), with shares what they say; validation keeps passages."""
    big, small = _sine_pairs(tmp_path / "big", 250.0, 6), _sine_pairs(tmp_path / "small", 750.0, 2)
    overrides = [f"data.pairs=[{big},{small}]", "data.pair_batch_size=8", "data.steps_per_epoch=40",
                 "data.val_batches=40"]
    if shares is not None:
        overrides.append(f"+data.pair_shares=[{shares[0]},{shares[1]}]")
    cfg = make_cfg(data_root, *overrides)

    def share_of_small(split: str) -> float:
        from_small = total = 0
        for batch in make_loader(cfg, split, seed=0):
            for clip, clip_target, label in zip(batch["pair_source"], batch["pair_target"],
                                                batch["pair_source_label"]):
                piano = clip if label == 0 else clip_target
                from_small += abs(dominant_hz(piano) - 750.0) < 50
                total += 1
        return from_small / total

    assert abs(share_of_small("train") - expected) < 0.08
    assert abs(share_of_small("val") - 0.25) < 0.08


def test_pair_shares_must_match_the_pairs_list(data_root):
    with pytest.raises(ConfigError, match="2 shares for 1 paired datasets") as info:
        make_cfg(data_root, "data.pairs=[somewhere]", "+data.pair_shares=[1,2]")
    assert info.value.field_path == "data.pair_shares"
    with pytest.raises(ConfigError, match="must be > 0") as info:
        make_cfg(data_root, "data.pairs=[a,b]", "+data.pair_shares=[1,0]")
    assert info.value.field_path == "data.pair_shares.1"


def test_pair_skip_leaves_a_direction_out_of_training_and_validation(data_root, tmp_path):
    """Without data.pair_skip a passage of piano and violin gives both directions; with violin->piano
    skipped every pair is piano -> violin, in both splits, and the piano is the source's audio."""
    pairs = _sine_pairs(tmp_path / "pairs", 250.0, 6)

    def directions(cfg, split: str) -> set[tuple[int, int]]:
        seen = set()
        for batch in make_loader(cfg, split, seed=0):
            for clip, source, target in zip(batch["pair_source"], batch["pair_source_label"],
                                            batch["pair_target_label"]):
                seen.add((int(source), int(target)))
                if int(source) == 0:
                    assert abs(dominant_hz(clip) - 250.0) < 50
        return seen

    both = make_cfg(data_root, f"data.pairs={pairs}", "data.pair_batch_size=8")
    assert directions(both, "train") == {(0, 1), (1, 0)}
    skipped = make_cfg(data_root, f"data.pairs={pairs}", "data.pair_batch_size=8", "+data.pair_skip=[violin->piano]")
    assert directions(skipped, "train") == directions(skipped, "val") == {(0, 1)}


def test_pair_skip_names_directions_between_the_experiments_instruments(data_root, tmp_path):
    with pytest.raises(ConfigError, match="not a direction") as info:
        make_cfg(data_root, "data.pairs=somewhere", "+data.pair_skip=[piano->violin,piano]")
    assert info.value.field_path == "data.pair_skip.1"
    with pytest.raises(ConfigError, match="not a direction"):
        make_cfg(data_root, "data.pairs=somewhere", "+data.pair_skip=[piano->violin->piano]")
    with pytest.raises(ConfigError, match="'flute', which is not one of the experiment's instruments") as info:
        make_cfg(data_root, "data.pairs=somewhere", "+data.pair_skip=[flute->violin]")
    assert info.value.field_path == "data.pair_skip.0"
    cfg = make_cfg(data_root, f"data.pairs={_sine_pairs(tmp_path / 'pairs', 250.0, 2)}",
                   "+data.pair_skip=[violin->piano,piano->violin]")
    with pytest.raises(DataError, match="skips every direction between piano, violin"):
        next(iter(make_loader(cfg, "train", seed=0)))
