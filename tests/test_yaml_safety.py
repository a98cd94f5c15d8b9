"""Experiment YAML that PyYAML would accept silently, hang on or crash on: duplicate keys, alias bombs,
deep nesting, recursive aliases; and the scientific notation (1e-3) YAML 1.1 reads as text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from audiostyle.platform.config.loader import load_experiment, parse_override, read_yaml
from audiostyle.platform.core.errors import ConfigError

BASE = Path(__file__).resolve().parents[1] / "experiments" / "piano_violin.yaml"


def error_of(tmp_path: Path, body: str) -> ConfigError:
    """The error of loading an experiment whose YAML text is the base experiment plus `body`."""
    path = tmp_path / "exp.yaml"
    path.write_text(f"defaults: [{BASE}]\n{body}")
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    return info.value


def test_duplicate_scalar_key_names_the_line_and_key(tmp_path):
    err = error_of(tmp_path, "optim:\n  lr: 1.0e-3\n  weight_decay: 0.0\n  lr: 5.0e-4\n")
    assert err.field_path == "optim.lr" and "exp.yaml" in str(err)
    assert "line 5" in str(err) and "duplicate key 'lr' (first at line 3)" in str(err)


def test_duplicate_section_is_refused_not_merged(tmp_path):
    err = error_of(tmp_path, "train: {max_steps: 10}\nseed: 1\ntrain: {val_every: 5}\n")
    assert err.field_path == "train" and "line 4" in str(err) and "first at line 2" in str(err)


def test_alias_bomb_is_refused_at_once(tmp_path):
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")  # 9**9 = 387 million leaves
    start = time.perf_counter()
    err = error_of(tmp_path, "\n".join(levels) + "\n")
    assert time.perf_counter() - start < 5.0  # was: unbounded time and memory
    assert "expands to more than 100000 values" in str(err) and "line " in str(err)


@pytest.mark.parametrize("text", ["a: " + "[" * 3000 + "]" * 3000 + "\n",
                                  "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "x: 1\n"])
def test_deep_nesting_is_a_message_not_a_recursion_error(text, tmp_path):
    (tmp_path / "deep.yaml").write_text(text)
    with pytest.raises(ConfigError, match="nested more than 40 levels deep") as info:
        read_yaml(tmp_path / "deep.yaml")  # was: RecursionError traceback
    assert "deep.yaml" in str(info.value) and "line " in str(info.value)


def test_recursive_alias_is_refused(tmp_path):
    (tmp_path / "r.yaml").write_text("a: &loop [1, *loop]\n")
    with pytest.raises(ConfigError, match=r"alias \*loop refers to a node that contains it"):
        read_yaml(tmp_path / "r.yaml")


def test_merge_keys_and_a_few_aliases_still_work(tmp_path):
    (tmp_path / "m.yaml").write_text("base: &b {dim: 64, heads: 2}\nuse:\n  <<: *b\n  dim: 32\nagain: *b\n")
    data = read_yaml(tmp_path / "m.yaml")
    assert data["use"] == {"dim": 32, "heads": 2} and data["again"] == {"dim": 64, "heads": 2}


def test_scientific_notation_in_files_and_overrides(tmp_path):
    (tmp_path / "sci.yaml").write_text(f"defaults: [{BASE}]\noptim: {{lr: 1e-3, disc_lr: 5E-5}}\n")
    cfg = load_experiment(tmp_path / "sci.yaml")
    assert cfg.optim.lr == pytest.approx(1e-3) and cfg.optim.disc_lr == pytest.approx(5e-5)
    # the example `audiostyle train --help` prints
    assert load_experiment(BASE, ["optim.lr=1e-4"]).optim.lr == pytest.approx(1e-4)
    assert parse_override("x=2.5e+3") == ("x", 2500.0) and parse_override("x=1e3x") == ("x", "1e3x")


def test_override_value_with_duplicate_keys_is_refused():
    with pytest.raises(ConfigError, match="duplicate key 'lr'"):
        load_experiment(BASE, ["optim={lr: 1.0e-3, lr: 2.0e-3}"])
