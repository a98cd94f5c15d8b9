"""Normalization statistics: exact pooled variance over shards and instruments, loading by name, clear errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds

from audiostyle.components.frontend import StftCqtFrontend
from audiostyle.platform.config.schema import InstrumentConfig
from audiostyle.platform.core.errors import DataError
from audiostyle.stats.normalization_stats import (
    DEMO_STATS_DIR,
    FeatureStats,
    compute_instrument_stats,
    load_stats,
    pool_stats,
    read_stats,
    write_stats,
)

SR = 22050


def _write_instrument(folder: Path, lengths_per_shard: list[list[int]], seed: int, sr: int = SR) -> None:
    """A real WebDataset instrument folder: train shards of FLAC + JSON segments and a manifest."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = []
    for s, lengths in enumerate(lengths_per_shard):
        name = f"train-{s:06d}.tar"
        with wds.TarWriter(str(folder / name)) as sink:
            for i, n in enumerate(lengths):
                t = np.arange(n) / sr
                wave = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 900) * t) + 0.02 * rng.standard_normal(n)
                buf = io.BytesIO()
                sf.write(buf, wave.astype(np.float32), sr, format="FLAC", subtype="PCM_16")
                key = f"rec{s}__{i}"
                sink.write({"__key__": key, "flac": buf.getvalue(),
                            "json": {"instrument": folder.name, "recording_id": f"rec{s}", "sample_rate": sr}})
        names.append(name)
    segments = sum(len(x) for x in lengths_per_shard)
    manifest = {"instrument": folder.name, "sample_rate": sr, "segment_seconds": 1.0,
                "splits": {"train": {"shards": names, "segments": segments, "seconds": 1.0}},
                "shards": {n: {} for n in names}, "recordings": {}, "skipped": []}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _features_concatenated(folder: Path, frontend: StftCqtFrontend) -> np.ndarray:
    """Every segment analyzed on its own, read back independently, frames concatenated: [2, frames, F]."""
    frames = []
    for shard in sorted(folder.glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".flac"):
                    wave, _ = sf.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")
                    frames.append(frontend.analyze(torch.from_numpy(wave)[None])[0].double().numpy())
    return np.concatenate(frames, axis=1)


@pytest.fixture(scope="module")
def frontend() -> StftCqtFrontend:
    return StftCqtFrontend(SR)


def test_pool_stats_is_exact_for_concatenation_and_weighted_mixture() -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.normal(loc, scale, size=(2, n, 5)) for loc, scale, n in [(0, 1, 7), (3, 0.1, 40), (-2, 5, 3)]]
    parts = [FeatureStats(c.mean(1), c.var(1), c.shape[1]) for c in chunks]
    pooled = pool_stats(parts)
    together = np.concatenate(chunks, axis=1)
    np.testing.assert_allclose(pooled.mean, together.mean(1), rtol=1e-12)
    np.testing.assert_allclose(pooled.var, together.var(1), rtol=1e-12)
    assert pooled.count == together.shape[1]
    # Equal weights: every part counts as much as the others whatever its length (weights 1/n per frame).
    frame_w = np.concatenate([np.full(c.shape[1], 1.0 / c.shape[1]) for c in chunks])
    mixed = pool_stats(parts, [1, 1, 1])
    mean = np.average(together, axis=1, weights=frame_w)
    np.testing.assert_allclose(mixed.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(mixed.var, np.average((together - mean[:, None]) ** 2, axis=1, weights=frame_w),
                               rtol=1e-12)


def test_instrument_stats_equal_those_of_all_frames_concatenated(tmp_path: Path, frontend: StftCqtFrontend) -> None:
    folder = tmp_path / "flute"
    # Two shards, uneven segment lengths: batches of 3 group equal lengths, so several partial updates combine.
    _write_instrument(folder, [[SR, SR, SR // 2, SR, SR], [SR // 2, SR, 3000]], seed=1)
    path = compute_instrument_stats(folder, frontend, batch_size=3)
    assert path == folder / "stats.npz"
    stats = read_stats(path)
    feats = _features_concatenated(folder, frontend)
    assert stats.count == feats.shape[1] and stats.segments == 8
    scale = np.abs(feats).max()
    np.testing.assert_allclose(stats.mean, feats.mean(1), atol=1e-6 * scale)
    np.testing.assert_allclose(stats.var, feats.var(1), rtol=1e-4, atol=1e-9 * scale**2)
    assert stats.settings == frontend.settings()
    # max_segments stops early; the result is still a complete, atomically written file.
    assert read_stats(compute_instrument_stats(folder, frontend, max_segments=2)).segments == 2
    assert not list(folder.glob(".*tmp"))


def test_bad_shards_and_files_give_clear_errors(tmp_path: Path, frontend: StftCqtFrontend) -> None:
    folder = tmp_path / "oboe"
    _write_instrument(folder, [[SR]], seed=2, sr=16000)
    with pytest.raises(DataError, match="16000 Hz"):
        compute_instrument_stats(folder, frontend)
    with pytest.raises(DataError, match="manifest"):
        compute_instrument_stats(tmp_path / "missing", frontend)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="bad.npz"):
        read_stats(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, mean=np.zeros((2, 3)))
    with pytest.raises(DataError, match="lacks var, count"):
        read_stats(partial)


def test_load_stats_pools_instruments_by_weight(tiny_config, demo_root: Path) -> None:
    cfg = tiny_config()
    piano, violin = (read_stats(demo_root / n / "stats.npz") for n in ("piano", "violin"))
    mean, std = load_stats(cfg)
    assert mean.shape == std.shape == (2, 513 + 84)
    # Equal weights: the mean of the means, and the law of total variance, computed here by hand.
    want_mean = (piano.mean + violin.mean) / 2
    want_var = (piano.var + violin.var) / 2 + ((piano.mean - violin.mean) / 2) ** 2
    np.testing.assert_allclose(mean.numpy(), want_mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(std.numpy(), np.sqrt(want_var), rtol=1e-5, atol=1e-7)
    # A third instrument with weight 2 moves the pool towards it.
    cfg.instruments.append(InstrumentConfig("cello", str(demo_root / "cello"), 2.0))
    cello = read_stats(demo_root / "cello" / "stats.npz")
    mean3, _ = load_stats(cfg)
    np.testing.assert_allclose(mean3.numpy(), (piano.mean + violin.mean + 2 * cello.mean) / 4, rtol=1e-5, atol=1e-7)
    # The front end normalizes demo audio to about unit scale with them, without any label.
    fe = StftCqtFrontend(SR)
    fe.set_stats(mean, std)
    wave, _ = sf.read(io.BytesIO(_first_flac(demo_root / "violin")), dtype="float32")
    normed = fe(torch.from_numpy(wave)[None])
    assert 0.2 < float(normed.std()) < 5.0


def _first_flac(folder: Path) -> bytes:
    with tarfile.open(sorted(folder.glob("train-*.tar"))[0]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".flac"))
        return tar.extractfile(member).read()


def test_load_stats_errors_and_fallbacks(tiny_config, demo_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"n_fft=1024 \(the experiment uses 512\)"):
        load_stats(tiny_config("model.frontend.n_fft=512"))
    with pytest.raises(DataError, match=r"sample_rate=22050 \(the experiment uses 16000\)"):
        load_stats(tiny_config("data.sample_rate=16000"))
    cfg = tiny_config()
    cfg.instruments[1] = InstrumentConfig("theremin", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"instruments.1 \(theremin\).*normalization_stats"):
        load_stats(cfg)
    # An explicit file in data.stats wins over pooling.
    explicit = write_stats(tmp_path / "mine.npz", read_stats(demo_root / "cello" / "stats.npz"))
    mean, _ = load_stats(tiny_config(f"data.stats={explicit}"))
    np.testing.assert_allclose(mean.numpy(), read_stats(explicit).mean, rtol=1e-6, atol=1e-8)
    with pytest.raises(DataError, match="data.stats"):
        load_stats(tiny_config(f"data.stats={tmp_path / 'absent.npz'}"))
    # No stats.npz beside the shards: the committed demo statistics of that instrument are used.
    if (DEMO_STATS_DIR / "piano.npz").is_file():
        cfg = tiny_config()
        cfg.instruments[0] = InstrumentConfig("piano", str(tmp_path / "piano_without_stats"))
        cfg.instruments[1] = InstrumentConfig("violin", str(tmp_path / "violin_without_stats"))
        mean, _ = load_stats(cfg)
        committed = [read_stats(DEMO_STATS_DIR / f"{n}.npz") for n in ("piano", "violin")]
        np.testing.assert_allclose(mean.numpy(), (committed[0].mean + committed[1].mean) / 2, rtol=1e-5, atol=1e-7)
