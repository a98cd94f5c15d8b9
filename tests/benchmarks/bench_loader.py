"""Benchmark: shards -> ready batches (make_loader) beside a per-file STFT+CQT loader and plain decode.

Run: `python tests/benchmarks/bench_loader.py [--recordings 20] [--seconds 30]`. Prints segments/s and
MB/s (of FLAC read) for, in the same run and on the same 10 s segments at 22,050 Hz:
  plain decode    soundfile.read of each segment's FLAC bytes from memory: the limit for any loader
  make_loader     WebDataset shards -> shuffle -> decode -> batches of two instruments (full 10 s crops),
                  and the 4 s crops training uses (decodes only the crop)
  per-file        the research loader: decode each file, then torch.stft (1024/256) and librosa.cqt
                  (84 bins, hop 256) per item
Everything runs on one thread (torch and BLAS) so the rows compare like for like. Asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

SR = 22050
SEGMENT = 10.0


def synth_recording(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A melody of harmonic notes with onsets and decays (compresses like real instrument audio)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    notes = f0 * 2 ** (rng.integers(0, 12, size=int(seconds * 2) + 1) / 12)
    freq = notes[(t * 2).astype(int)]
    phase = 2 * np.pi * np.cumsum(freq) / SR
    wave = sum(np.sin(k * phase) * (0.6 ** k) for k in range(1, 8))
    wave *= np.exp(-2.5 * (t % 0.5))
    return (0.2 * wave + 2e-3 * rng.standard_normal(t.size)).astype(np.float32)


def build_dataset(root: Path, recordings: int, seconds: float) -> dict[str, Path]:
    from audiostyle.datasets.ingest import add_instrument

    dirs = {}
    for name, f0 in (("piano", 220.0), ("violin", 440.0)):
        src = root / "src" / name
        src.mkdir(parents=True)
        for i in range(recordings):
            sf.write(src / f"r{i:03d}.flac", synth_recording(seconds, f0, i), SR)
        # all recordings in train, so every segment is reachable by the train loader
        add_instrument(name, src, root / name, sample_rate=SR, segment_seconds=SEGMENT,
                       shard_max_bytes=8 * 1024 * 1024, split_fractions=(1.0, 0.0, 0.0), progress=False)
        dirs[name] = root / name
    return dirs


def segment_bytes(dirs: dict[str, Path]) -> list[bytes]:
    """Every full-length segment's FLAC bytes (short tails left out, so all rows decode 10 s items)."""
    out = []
    for d in dirs.values():
        for shard in sorted(d.glob("train-*.tar")):
            with tarfile.open(shard) as tar:
                for m in tar.getmembers():
                    if m.name.endswith(".flac"):
                        data = tar.extractfile(m).read()
                        if sf.info(io.BytesIO(data)).frames == int(SEGMENT * SR):
                            out.append(data)
    return out


def bench_plain(items: list[bytes]) -> float:
    start = time.perf_counter()
    for data in items:
        sf.read(io.BytesIO(data), dtype="float32")
    return time.perf_counter() - start


def bench_per_file(files: list[Path]) -> float:
    import librosa

    window = torch.hann_window(1024)
    start = time.perf_counter()
    for path in files:
        wave, sr = sf.read(path, dtype="float32")
        torch.stft(torch.from_numpy(wave), 1024, 256, window=window, return_complex=True)
        librosa.cqt(wave, sr=sr, hop_length=256, n_bins=84, bins_per_octave=12)
    return time.perf_counter() - start


def bench_loader(dirs: dict[str, Path], segments: int, crop_seconds: float, workers: int) -> float:
    from audiostyle.datasets.streaming import make_loader
    from audiostyle.platform.config.loader import load_resolved
    from audiostyle.platform.config.schema import parse_experiment

    experiments = Path(__file__).resolve().parents[2] / "experiments"
    batch = 8
    raw, _ = load_resolved(experiments / "quickstart.yaml",
                      [f"data.sample_rate={SR}", f"data.segment_seconds={crop_seconds}", f"data.batch_size={batch}",
                       f"data.steps_per_epoch={max(1, segments // batch)}", "data.shuffle_buffer=64",
                       f"data.loader_workers={workers}"])
    raw["instruments"] = [{"name": n, "data": str(d)} for n, d in dirs.items()]
    loader = make_loader(parse_experiment(raw), "train", seed=0)
    start = time.perf_counter()
    count = sum(b["audio"].shape[0] for b in loader)  # includes shard opening and shuffle-buffer fill
    elapsed = time.perf_counter() - start
    return elapsed * segments / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=int, default=20, help="recordings per instrument (default 20)")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per recording (default 30)")
    parser.add_argument("--per-file-items", type=int, default=48, help="items timed for the slow per-file loader")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        dirs = build_dataset(root, args.recordings, args.seconds)
        items = segment_bytes(dirs)
        n = len(items)
        mb = sum(map(len, items)) / n / 1e6  # MB of FLAC per segment
        print(f"dataset: {n} segments of {SEGMENT:g} s at {SR} Hz, {mb * 1e3:.0f} kB FLAC each "
              f"(ingest took {time.perf_counter() - t0:.1f} s)")
        files = []
        for i, data in enumerate(items[: args.per_file_items]):
            files.append(root / f"clip{i}.flac")
            files[-1].write_bytes(data)

        bench_plain(items[:8])  # warm-up: libsndfile and page cache
        rows = [("plain soundfile decode (limit)", bench_plain(items), n)]
        # shards are drawn with replacement, so the loader can run past n: 3n amortizes the start-up
        # (opening shards, filling the shuffle buffers), which is still counted
        rows.append(("make_loader, 10 s crops, 0 workers", bench_loader(dirs, 3 * n, SEGMENT, 0), 3 * n))
        rows.append(("make_loader, 4 s crops, 0 workers", bench_loader(dirs, 3 * n, 4.0, 0), 3 * n))
        rows.append(("per-file decode+STFT+CQT (research)", bench_per_file(files), len(files)))

    plain_rate = rows[0][2] / rows[0][1]
    ours_rate = rows[1][2] / rows[1][1]
    print(f"{'loader':<40}{'segments/s':>12}{'MB/s':>9}{'vs plain':>10}")
    for name, seconds, count in rows:
        rate = count / seconds
        print(f"{name:<40}{rate:>12.1f}{rate * mb:>9.2f}{rate / plain_rate:>9.2f}x")
    per_file_rate = rows[3][2] / rows[3][1]
    print(f"make_loader (10 s) is {plain_rate / ours_rate:.2f}x slower than plain decode (aim <= 2x) and "
          f"{ours_rate / per_file_rate:.1f}x faster than the per-file loader (aim >= 10x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
