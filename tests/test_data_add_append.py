"""`data add` onto an existing instrument: appends by content, keeps earlier recordings where they were,
updates statistics exactly, `--replace` starts over, bad input changes nothing, one writer at a time.

The recordings are real SoundFont renders (conftest's `recordings`: demo segments written out as files).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from audiostyle.datasets.manifest import iter_segments, read_manifest
from audiostyle.platform.cli.main import main
from audiostyle.platform.core.atomic_files import sha256_file

ROOT = Path(__file__).resolve().parents[1]
ADD = ["--segment-seconds", "2", "--no-progress"]
LOCK_NAME = ".audiostyle-lock"  # platform/core/folder_lock.py


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under `folder` but the lock: (mtime_ns, sha256)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, sha256_file(p))
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != LOCK_NAME}


def add(*args: object) -> int:
    return main(["data", "add", *map(str, args), *ADD])


def splits_of_segments(out: Path, manifest: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for split in manifest["splits"]:
        for seg in iter_segments(out, split, manifest):
            found.setdefault(seg.record["recording_id"], set()).add(split)
    return found


@pytest.fixture
def cello(recordings, tmp_path) -> Path:
    out = tmp_path / "data" / "cello"
    assert add("cello", recordings["first"], "--out", out) == 0
    return out


def test_adding_appends_and_never_moves_earlier_recordings(cello, recordings):
    first = read_manifest(cello)
    kept = {name: sha256_file(cello / name) for name in first["shards"]}
    assert add("cello", recordings["second"], "--out", cello) == 0
    now = read_manifest(cello)
    assert len(first["recordings"]) == 4 and len(now["recordings"]) == 7
    assert {r: now["recordings"][r] for r in first["recordings"]} == first["recordings"]  # splits unchanged
    assert {name: sha256_file(cello / name) for name in kept} == kept  # earlier shards untouched, still listed
    assert set(kept) <= set(now["shards"])
    assert all(len(s) == 1 for s in splits_of_segments(cello, now).values())  # no recording in two splits
    assert len(now["sources"]) == 7 and [a["recordings"] for a in now["additions"]] == [4, 3]


def test_readding_the_same_files_changes_nothing(cello, recordings, capsys):
    before = snapshot(cello)
    capsys.readouterr()
    assert add("cello", recordings["first"], "--out", cello) == 0
    assert "nothing new" in capsys.readouterr().out
    assert snapshot(cello) == before  # not a byte, not a timestamp


def test_statistics_after_an_append_equal_a_full_recompute(cello, recordings, tmp_path):
    from audiostyle.stats.normalization_stats import compute_default_stats, read_stats

    first = read_stats(cello / "stats.npz")
    assert add("cello", recordings["second"], "--out", cello) == 0
    updated = read_stats(cello / "stats.npz")
    copy = shutil.copytree(cello, tmp_path / "copy")
    full = read_stats(compute_default_stats(copy, sample_rate=22050))
    assert updated.count == full.count > first.count
    np.testing.assert_allclose(updated.mean, full.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(updated.var, full.var, rtol=1e-9, atol=1e-12)


def test_replace_starts_the_instrument_over(cello, recordings):
    old = set(read_manifest(cello)["shards"])
    assert add("cello", recordings["second"], "--out", cello, "--replace") == 0
    now = read_manifest(cello)
    assert len(now["recordings"]) == 3 and len(now["additions"]) == 1
    assert sorted(p.name for p in cello.glob("*.tar")) == sorted(now["shards"])  # old shards removed
    assert old - set(now["shards"])


@pytest.mark.parametrize("case", ["other_instrument", "no_usable_audio", "sample_rate"])
def test_refused_adds_leave_the_folder_as_it_was(case, cello, recordings, tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "broken.flac").write_bytes(b"fLaC" + bytes(200))
    (junk / "empty.wav").write_bytes(b"")
    args = {"other_instrument": ("violin", recordings["violin"], "--out", cello),
            "no_usable_audio": ("cello", junk, "--out", cello),
            "sample_rate": ("cello", recordings["second"], "--out", cello, "--sample-rate", "16000")}[case]
    expected = {"other_instrument": "holds instrument 'cello', not 'violin'",
                "no_usable_audio": "no usable audio, nothing was changed (2 file(s) skipped: broken.flac: corrupt",
                "sample_rate": "--sample-rate 16000 differs from the 22050"}[case]
    before = snapshot(cello)
    capsys.readouterr()
    assert add(*args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(cello) == before


def test_two_copies_of_one_recording_are_one_recording(recordings, tmp_path):
    src = shutil.copytree(recordings["first"], tmp_path / "src")
    shutil.copy(src / "take0.flac", src / "take0_copy.flac")
    assert add("cello", src, "--out", tmp_path / "out") == 0
    manifest = read_manifest(tmp_path / "out")
    assert len(manifest["recordings"]) == 4
    assert {"file": "take0_copy.flac", "reason": "duplicate: the same bytes as take0.flac"} in manifest["skipped"]
    assert {s for s in manifest["recordings"].values()} == {"train", "val", "test"}  # 4 recordings: one each


def test_a_second_writer_is_told_who_holds_the_folder_and_a_dead_holder_frees_it(cello, recordings, capsys, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom audiostyle.platform.core.folder_lock import folder_lock\n"
                               f"with folder_lock({str(cello)!r}, purpose='data add (test holder)'):\n"
                               "    print('locked', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(cello)
        capsys.readouterr()
        assert add("cello", recordings["second"], "--out", cello) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {holder.pid}" in err and "data add (test holder)" in err
        assert snapshot(cello) == before
    finally:
        holder.kill()  # SIGKILL: no clean release, as when a run is killed
        holder.wait()
    assert json.loads((cello / LOCK_NAME).read_text())["pid"] == holder.pid  # what a pid file would trust
    assert add("cello", recordings["second"], "--out", cello) == 0  # the kernel dropped the dead holder's lock
    assert f"the previous writer (pid {holder.pid}" in caplog.text and "stopped before finishing" in caplog.text
    assert len(read_manifest(cello)["recordings"]) == 7


def test_readers_see_a_whole_dataset_while_an_append_runs(cello, recordings):
    """A training run reading the folder during `data add` always finds a manifest whose shards are all
    there with the bytes it records (the old one until the new one is in place)."""
    proc = subprocess.Popen([sys.executable, "-m", "audiostyle.platform", "data", "add", "cello",
                             str(recordings["second"]), "--out", str(cello), *ADD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        manifest = read_manifest(cello)  # never missing or withdrawn
        for name, info in manifest["shards"].items():
            assert (cello / name).stat().st_size == info["bytes"]
        seen.add(len(manifest["recordings"]))
        time.sleep(0.01)
    assert proc.returncode == 0, proc.stderr.read()
    assert 4 in seen and len(read_manifest(cello)["recordings"]) == 7


def test_readme_data_add_example_writes_the_folder_its_yaml_line_reads(recordings, tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("audiostyle data add cello "))
    out = re.search(r"--out (\S+)", command).group(1)
    yaml_line = re.search(r"`(- \{name: cello, data: [^}]*\})`", readme).group(1)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "add", "cello", str(recordings["first"]), "--out", out, *ADD]) == 0
    assert (tmp_path / out / "manifest.json").is_file()
    assert yaml_line in capsys.readouterr().out  # the line the command prints is the line README shows
