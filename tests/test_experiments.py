"""Every experiment YAML in experiments/ validates (torchtune's rule): the checked load, as `audiostyle validate`
runs it (the model built on the meta device only, the sweep checked), with no Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from audiostyle.platform.checking.checked_load import load_checked_experiment
from audiostyle.platform.config.loader import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FILES = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if "base" not in p.relative_to(EXPERIMENTS).parts[:-1])


def test_there_are_experiments():
    assert len(FILES) >= 4


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_experiment_validates(path):
    cfg = load_checked_experiment(path)
    assert len(cfg.instruments) >= 2


def test_validation_does_not_import_ray_or_build(tmp_path):
    import subprocess

    code = ("import sys; from audiostyle.platform.checking.checked_load import load_checked_experiment;"
            f"load_checked_experiment({str(EXPERIMENTS / 'sweep_curriculum.yaml')!r});"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_class_count_follows_instrument_list():
    two = load_experiment(EXPERIMENTS / "piano_violin.yaml")
    three = load_experiment(EXPERIMENTS / "three_instruments.yaml")
    assert len(two.instrument_names) == 2 and three.instrument_names == ["piano", "violin", "cello"]
