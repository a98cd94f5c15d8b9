"""`transfer` never lets two inputs write one output: folder inputs keep their relative paths, and what
would still collide is refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.platform.cli.main import main
from audiostyle.platform.core.errors import DataError

SR = 22050


def clip(path: Path, f0: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t) * np.exp(-3 * (t % 0.5))).astype(np.float32), SR)
    return path


def test_same_names_in_two_folders_keep_their_folders(tiny_export, tmp_path, capsys):
    a, b = clip(tmp_path / "in" / "a" / "song.wav", 330), clip(tmp_path / "in" / "b" / "song.wav", 440)
    out = tmp_path / "out"
    assert main(["transfer", str(tiny_export["bundle"]), "--to", "violin", str(tmp_path / "in"), "-o", str(out)]) == 0
    assert "2 file(s) written" in capsys.readouterr().out
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == ["a/song.violin.wav", "b/song.violin.wav"]
    assert a.is_file() and b.is_file()


@pytest.mark.parametrize("layout", ["stem", "folders"])
def test_colliding_outputs_are_refused_before_anything_is_written(layout, tiny_export, tmp_path, capsys):
    if layout == "stem":  # song.wav + song.flac
        inputs = [clip(tmp_path / "song.wav", 330), tmp_path / "song.flac"]
        sf.write(inputs[1], sf.read(inputs[0])[0], SR, format="FLAC")
    else:  # two folders that hold the same name
        inputs = [clip(tmp_path / "x" / "take.wav", 330).parent, clip(tmp_path / "y" / "take.wav", 440).parent]
    out = tmp_path / "out"
    assert main(["transfer", str(tiny_export["bundle"]), "--to", "violin", *map(str, inputs), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "would both be written to" in err and "nothing was written" in err and "Traceback" not in err
    assert not out.exists()


def test_plan_keeps_subfolders_dedupes_and_protects_inputs(tmp_path):
    from audiostyle.platform.inference.transfer import plan_outputs

    song = clip(tmp_path / "in" / "sub" / "song.wav", 330)
    plan = plan_outputs([tmp_path / "in", song], tmp_path / "out", "violin")
    assert plan == [(song, tmp_path / "out" / "sub" / "song.violin.wav")]  # named twice, transferred once
    victim = clip(tmp_path / "out" / "song.violin.wav", 440)
    with pytest.raises(DataError, match="would overwrite the input"):
        plan_outputs([clip(tmp_path / "song.wav", 330), victim], tmp_path / "out", "violin")
