"""Training checkpoint files: round trip, RNG restore, atomic writes, clear errors on damaged files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from audiostyle.platform.checkpoints.format import (
    REQUIRED_FILES,
    TrainingCheckpoint,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from audiostyle.platform.core.errors import CheckpointError


def make_checkpoint() -> tuple[TrainingCheckpoint, torch.nn.Module]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    sched.step()
    optim_state = {"generator": opt.state_dict(), "generator_scheduler": sched.state_dict(), "step": 7,
                   "rng": [capture_rng_state()]}
    state = {"step": 7, "phase": "reconstruction", "metrics": {"val/recon": 0.5}, "instruments": ["piano", "violin"],
             "run_name": "t", "seed": 0}
    stats = (np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32))
    ckpt = TrainingCheckpoint(model.state_dict(), optim_state, state, {"name": "t", "seed": 0}, stats)
    return ckpt, model


def test_round_trip_restores_every_part(tmp_path):
    ckpt, model = make_checkpoint()
    save_checkpoint(tmp_path / "c", ckpt)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(REQUIRED_FILES)  # no temp files left
    back = load_checkpoint(tmp_path / "c")
    assert back.step == 7 and back.config == ckpt.config
    assert {k: v for k, v in back.state.items() if k != "files"} == ckpt.state
    assert set(back.state["files"]) == set(REQUIRED_FILES) - {"state.json"}  # checksums of the others
    for k, v in model.state_dict().items():
        assert torch.equal(back.model_state[k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt2.load_state_dict(back.optim_state["generator"])
    exp_avg = ckpt.optim_state["generator"]["state"][0]["exp_avg"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert back.optim_state["generator_scheduler"]["last_epoch"] == 1
    np.testing.assert_array_equal(back.stats[0], ckpt.stats[0])
    np.testing.assert_array_equal(back.stats[1], ckpt.stats[1])


def test_rng_state_restores_python_numpy_and_torch_streams(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    ckpt, _ = make_checkpoint()
    ckpt.optim_state["rng"] = [capture_rng_state()]
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    save_checkpoint(tmp_path / "c", ckpt)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restore_rng_state(load_checkpoint(tmp_path / "c").optim_state["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_truncated_file_raises_checkpoint_error_naming_it(tmp_path, name):
    ckpt, _ = make_checkpoint()
    save_checkpoint(tmp_path / "c", ckpt)
    path = tmp_path / "c" / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if name != "state.json" else b'{"step": 7, "pha')
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_checkpoint(tmp_path / "c")


def test_missing_file_and_missing_folder_are_named(tmp_path):
    ckpt, _ = make_checkpoint()
    save_checkpoint(tmp_path / "c", ckpt)
    (tmp_path / "c" / "optim.pt").unlink()
    with pytest.raises(CheckpointError, match=r"optim\.pt: missing"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nowhere")


def test_optim_file_refuses_pickled_objects(tmp_path):
    ckpt, _ = make_checkpoint()
    ckpt.optim_state["evil"] = object()  # anything beyond plain data must not load with weights_only
    save_checkpoint(tmp_path / "c", ckpt)
    with pytest.raises(CheckpointError, match=r"optim\.pt"):
        load_checkpoint(tmp_path / "c")


def test_failed_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    ckpt, _ = make_checkpoint()
    save_checkpoint(tmp_path / "c", ckpt)
    before = (tmp_path / "c" / "optim.pt").read_bytes()

    def boom(obj, path):
        with open(path, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "c", ckpt)
    assert (tmp_path / "c" / "optim.pt").read_bytes() == before
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]
