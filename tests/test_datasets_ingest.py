"""Ingest: folder and CSV/JSONL sources, split by recording, idempotence, crash safety, bad input reporting."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.datasets import audio_io, shard_writer
from audiostyle.datasets.ingest import add_instrument
from audiostyle.datasets.manifest import read_manifest
from audiostyle.platform.core.atomic_files import sha256_file
from audiostyle.platform.core.errors import DataError

SR_IN = 16000
SR = 8000  # a low dataset rate keeps the tests fast; resampling 16k -> 8k is still exercised
SEG = 1.0
KW = dict(sample_rate=SR, segment_seconds=SEG, shard_max_bytes=40_000, seed=0, progress=False)


def tone(seconds: float, f0: float, seed: int, sr: int = SR_IN, channels: int = 1) -> np.ndarray:
    """A harmonic tone with a note onset every half second (decaying envelope), like a played melody."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 5))
    env = np.exp(-4.0 * (t % 0.5))
    out = (0.1 * wave * env + 1e-3 * rng.standard_normal(t.size)).astype(np.float32)
    return np.stack([out, out * 0.5], axis=1) if channels == 2 else out


def make_recordings(folder: Path, n: int = 6, seconds: float = 3.2) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"take {i}.wav"  # a space: ids must be made key-safe
        sf.write(p, tone(seconds, 200 + 30 * i, i, channels=2 if i == 0 else 1), SR_IN)
        paths.append(p)
    return paths


def shard_members(folder: Path, manifest: dict) -> list[tuple[str, str, list[str]]]:
    """(split, shard, member names in tar order) for every shard the manifest lists."""
    out = []
    for split, info in manifest["splits"].items():
        for name in info["shards"]:
            with tarfile.open(folder / name) as tar:
                out.append((split, name, tar.getnames()))
    return out


def segment_records(folder: Path, manifest: dict) -> list[dict]:
    records = []
    for info in manifest["splits"].values():
        for name in info["shards"]:
            with tarfile.open(folder / name) as tar:
                for m in tar.getmembers():
                    if m.name.endswith(".json"):
                        records.append(json.loads(tar.extractfile(m).read()))
    return records


def test_folder_ingest_writes_adjacent_members_split_by_recording(tmp_path):
    make_recordings(tmp_path / "src")
    out = tmp_path / "violin"
    manifest = add_instrument("violin", tmp_path / "src", out, **KW)
    assert read_manifest(out) == json.loads((out / "manifest.json").read_text())
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert len(manifest["recordings"]) == 6 and manifest["skipped"] == []
    assert sum(len(i["shards"]) for i in manifest["splits"].values()) > 3  # 40 kB shards: several per split

    for split, name, names in shard_members(out, manifest):
        assert name.startswith(split + "-")
        keys = [n.rsplit(".", 1)[0] for n in names]
        assert [n.rsplit(".", 1)[1] for n in names] == ["flac", "json"] * (len(names) // 2)
        assert keys[0::2] == keys[1::2]  # both members of a segment adjacent
        assert all("." not in k for k in keys)
        assert manifest["shards"][name]["segments"] == len(names) // 2
        assert manifest["shards"][name]["sha256"] == sha256_file(out / name)

    records = segment_records(out, manifest)
    split_of = {}
    for r in records:
        assert split_of.setdefault(r["recording_id"], r["split"]) == r["split"]  # never in two splits
        assert manifest["recordings"][r["recording_id"]] == r["split"]
        assert r["instrument"] == "violin" and r["sample_rate"] == SR and r["source"].startswith("take ")
        assert SEG * 0.5 <= r["duration_seconds"] <= SEG
    assert sum(i["segments"] for i in manifest["splits"].values()) == len(records)

    with tarfile.open(out / manifest["splits"]["train"]["shards"][0]) as tar:
        flac = tar.extractfile(tar.getmembers()[0]).read()
    wave, sr = sf.read(io.BytesIO(flac))
    assert sr == SR and wave.ndim == 1 and wave.shape[0] == int(SEG * SR)
    # loudness-normalized towards the target level (segments differ a little from the recording mean)
    assert abs(audio_io.rms_db(wave.astype(np.float32)) - audio_io.TARGET_RMS_DB) < 4.0


def test_split_assignment_depends_on_seed_not_on_run(tmp_path):
    make_recordings(tmp_path / "src", n=8)
    a = add_instrument("piano", tmp_path / "src", tmp_path / "a", **KW)["recordings"]
    b = add_instrument("piano", tmp_path / "src", tmp_path / "b", **KW)["recordings"]
    c = add_instrument("piano", tmp_path / "src", tmp_path / "c", **{**KW, "seed": 5})["recordings"]
    assert a == b and a != c
    assert sorted(a.values()).count("val") >= 1 and sorted(a.values()).count("test") >= 1


def test_csv_and_jsonl_sources_respect_split_and_recording_columns(tmp_path):
    paths = make_recordings(tmp_path / "audio", n=6)
    rows = [("audio/take 0.wav", "session_a", "test"), ("audio/take 1.wav", "session_a", ""),
            ("audio/take 2.wav", "", "val"), ("audio/take 3.wav", "", ""), ("audio/take 4.wav", "", ""),
            ("audio/take 5.wav", "", "")]
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,recording_id,split\n" + "".join(f"{p},{r},{s}\n" for p, r, s in rows))
    jsonl_path = tmp_path / "list.jsonl"
    jsonl_path.write_text("".join(json.dumps({"path": str(paths[i]), **({"recording_id": r} if r else {}),
                                              **({"split": s} if s else {})}) + "\n"
                                  for i, (_, r, s) in enumerate(rows)))
    results = []
    for source in (csv_path, jsonl_path):
        out = tmp_path / source.suffix[1:]
        manifest = add_instrument("cello", source, out, **KW)
        recs = manifest["recordings"]
        assert recs["session_a"] == "test" and recs["audio_take_2"] == "val"
        by_source = {r["source"].rsplit("/", 1)[-1]: r for r in segment_records(out, manifest)}
        assert by_source["take 1.wav"]["recording_id"] == "session_a"  # shares its recording's split
        assert by_source["take 1.wav"]["split"] == "test"
        results.append(recs)
    assert results[0] == results[1]  # the same rows give the same split, whichever list format


def test_rerun_is_idempotent_and_has_no_duplicates(tmp_path):
    make_recordings(tmp_path / "src")
    out = tmp_path / "piano"
    first = add_instrument("piano", tmp_path / "src", out, **KW)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    second = add_instrument("piano", tmp_path / "src", out, **KW)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert first["shards"] == second["shards"]
    assert {k: v[1] for k, v in before.items()} == {k: v[1] for k, v in after.items()}  # same files, same bytes
    shards = [k for k in after if k.endswith(".tar")]
    assert all(before[k][0] == after[k][0] for k in shards)  # identical shards are not even rewritten
    names = [n for _, _, ns in shard_members(out, second) for n in ns]
    assert len(names) == len(set(names))


def test_killed_run_leaves_nothing_readable_and_next_run_completes(tmp_path, monkeypatch):
    make_recordings(tmp_path / "src")
    reference = add_instrument("piano", tmp_path / "src", tmp_path / "clean", **KW)
    out = tmp_path / "piano"
    real_write = shard_writer.ShardSequenceWriter.write_segment
    calls = {"n": 0}

    def dying_write(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # mid-way through the second train shard
            # what SIGKILL would leave behind: a temporary shard that never got renamed
            (out / f"{shard_writer.TEMP_PREFIX}train-000009.tar.4242").write_bytes(b"partial")
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(shard_writer.ShardSequenceWriter, "write_segment", dying_write)
    with pytest.raises(KeyboardInterrupt):
        add_instrument("piano", tmp_path / "src", out, **KW)
    with pytest.raises(DataError, match="manifest"):
        read_manifest(out)  # readers find no manifest, so no shard list to pick anything up from
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]

    monkeypatch.setattr(shard_writer.ShardSequenceWriter, "write_segment", real_write)
    completed = add_instrument("piano", tmp_path / "src", out, **KW)
    assert completed["shards"] == reference["shards"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "clean").iterdir())


def test_changed_input_crash_withdraws_stale_manifest(tmp_path, monkeypatch):
    make_recordings(tmp_path / "src")
    out = tmp_path / "piano"
    add_instrument("piano", tmp_path / "src", out, **KW)
    sf.write(tmp_path / "src" / "take 0.wav", tone(3.2, 450, 99), SR_IN)  # a re-recorded take

    def crash(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shard_writer.ShardSequenceWriter, "close", crash)
    with pytest.raises(RuntimeError):
        add_instrument("piano", tmp_path / "src", out, **KW)
    try:
        manifest = read_manifest(out)
    except DataError:
        manifest = None
    if manifest is not None:  # still there only if every shard it lists is still the one it describes
        for name, info in manifest["shards"].items():
            assert sha256_file(out / name) == info["sha256"]
    assert not list(out.glob(f"{shard_writer.TEMP_PREFIX}*"))


def test_bad_inputs_are_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    make_recordings(src, n=4)
    (src / "corrupt.flac").write_bytes(os.urandom(4000))
    (src / "empty.wav").write_bytes(b"")
    sf.write(src / "no_frames.wav", np.zeros((0,), np.float32), SR_IN)
    sf.write(src / "silent.wav", np.zeros(SR_IN * 3, np.float32), SR_IN)
    sf.write(src / "short.wav", tone(0.3, 300, 1), SR_IN)
    (src / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not audio")
    (src / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    manifest = add_instrument("flute", src, tmp_path / "out", **KW)
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    expected = {"corrupt.flac": "corrupt", "empty.wav": "empty", "no_frames.wav": "empty",
                "silent.wav": "silent", "short.wav": "too short", "cover.jpg": "wrong format",
                "gone.wav": "unreadable"}
    assert {f: reasons.get(f, "").split(":")[0] for f in expected} == expected
    assert len(manifest["recordings"]) == 4  # the good files all made it
    assert all(r["recording_id"].startswith("take_") for r in segment_records(tmp_path / "out", manifest))


def test_source_list_with_missing_file_and_nothing_usable(tmp_path):
    (tmp_path / "list.csv").write_text("path\nmissing.wav\n")
    with pytest.raises(DataError, match="no usable audio") as info:
        add_instrument("oboe", tmp_path / "list.csv", tmp_path / "out", **KW)
    assert "list.csv" in str(info.value) and "missing.wav: unreadable" in str(info.value)  # the reasons, here
    assert not (tmp_path / "out").exists()  # refused before anything was created
    with pytest.raises(DataError, match="not found"):
        add_instrument("oboe", tmp_path / "nowhere", tmp_path / "out2", **KW)


def test_a_folder_of_real_world_files_mixed_formats_rates_and_channels_is_taken_whole(tmp_path):
    """What a user's own folder holds: wav, flac, ogg and mp3, at 44.1, 48, 22.05 and 16 kHz, stereo and
    mono. Every file becomes a recording, mono at the dataset rate, none skipped, each as long as its file."""
    src = tmp_path / "flute"
    files = {"a.wav": (44100, 2), "b.flac": (48000, 1), "c.ogg": (22050, 2), "d.mp3": (16000, 1)}
    for i, (name, (rate, channels)) in enumerate(files.items()):
        (src / "takes").mkdir(parents=True, exist_ok=True)
        sf.write(src / "takes" / name, tone(3.0, 300 + 40 * i, i, sr=rate, channels=channels), rate)
    manifest = add_instrument("flute", src, tmp_path / "out", **KW)
    assert manifest["skipped"] == [] and len(manifest["recordings"]) == len(files)
    records = segment_records(tmp_path / "out", manifest)
    assert {r["sample_rate"] for r in records} == {SR}
    seconds: dict[str, float] = {}
    for r in records:
        seconds[r["recording_id"]] = seconds.get(r["recording_id"], 0.0) + r["duration_seconds"]
    # silence is dropped at a pause, never a note: 3 s per file with onsets every 0.5 s keeps nearly all of it
    assert all(2.4 <= s <= 3.2 for s in seconds.values()), seconds
