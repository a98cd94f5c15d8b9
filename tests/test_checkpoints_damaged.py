"""A checkpoint whose files were cut short is marked by `checkpoints list`, and `best`/`export` skip it
with a warning instead of choosing it (and failing, or worse, exporting it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audiostyle.platform.cli.main import main


@pytest.fixture
def storage(tiny_export, tmp_path) -> Path:
    """Two runs: `good` (val/recon 2.0) and `cut` (val/recon 0.5, the best, but its weights truncated)."""
    root = tmp_path / "runs"
    for run, recon in (("good", 2.0), ("cut", 0.5)):
        ckpt = shutil.copytree(tiny_export["checkpoint"], root / run / "checkpoint_000000")
        state = json.loads((ckpt / "state.json").read_text())
        state["metrics"] = {"val/recon": recon}
        (ckpt / "state.json").write_text(json.dumps(state))
    weights = root / "cut" / "checkpoint_000000" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return root


def test_list_marks_the_damaged_checkpoint(storage, capsys):
    assert main(["checkpoints", "list", str(storage)]) == 0
    out = capsys.readouterr().out
    cut = next(line for line in out.splitlines() if line.startswith("cut "))
    good = next(line for line in out.splitlines() if line.startswith("good "))
    assert "DAMAGED (model.safetensors: 1000 bytes, expected" in cut and "truncated" in cut
    assert good.rstrip().endswith("ok")
    assert "2 checkpoints in 2 runs (1 damaged: `best` and `export` skip them)" in out


def test_best_and_export_skip_it_with_a_warning(storage, tmp_path, capsys, caplog):
    assert main(["checkpoints", "best", str(storage)]) == 0
    out = capsys.readouterr().out
    assert "good/checkpoint_000000" in out and "2" in out.splitlines()[0]
    assert "skipping damaged checkpoint" in caplog.text and "cut/checkpoint_000000" in caplog.text
    caplog.clear()
    assert main(["checkpoints", "export", str(storage), "--out", str(tmp_path / "bundle"), "--data",
                 str(tmp_path / "no_data")]) == 0
    assert "exporting " + str(storage / "good" / "checkpoint_000000") in capsys.readouterr().out
    assert "skipping damaged checkpoint" in caplog.text


def test_only_damaged_checkpoints_is_an_error_naming_one(storage, capsys):
    shutil.rmtree(storage / "good")
    assert main(["checkpoints", "best", str(storage)]) == 2
    err = capsys.readouterr().err
    assert "every checkpoint found is damaged" in err and "model.safetensors" in err
