"""Experiment YAML: composition, overrides, references, and one specific message per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from audiostyle.platform.config.loader import load_experiment, load_resolved
from audiostyle.platform.core.errors import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
BASE = EXPERIMENTS / "piano_violin.yaml"


def write(tmp_path: Path, body: dict, name: str = "exp.yaml") -> Path:
    body = {"defaults": [str(BASE)], **body} if "defaults" not in body else body
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def error_of(path: Path, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return info.value


def test_defaults_compose_and_later_files_win(tmp_path):
    cfg = load_experiment(write(tmp_path, {"name": "mine", "data": {"batch_size": 6}}))
    assert cfg.name == "mine" and cfg.data.batch_size == 6
    assert cfg.data.sample_rate == 22050  # from base/data.yaml, untouched
    assert [p.name for p in cfg.curriculum.phases][0] == "reconstruction"


def test_override_and_reference_follow_each_other(tmp_path):
    cfg = load_experiment(BASE, ["data.root=/srv/audio", "train.max_steps=7", "instruments.1.weight=2"])
    assert cfg.instruments[0].data == "/srv/audio/piano"  # ${data.root} resolved after the override
    assert cfg.train.max_steps == 7 and isinstance(cfg.train.max_steps, int)
    assert cfg.instruments[1].weight == 2.0


def test_local_paths_are_pinned_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_experiment(BASE, ["data.root=data/demo", "instruments.1.data=s3://bucket/violin"])
    assert cfg.instruments[0].data == str(tmp_path / "data" / "demo" / "piano")  # workers run elsewhere
    assert cfg.instruments[1].data == "s3://bucket/violin"
    assert cfg.run.storage_path == str(tmp_path / "runs")
    # a list of paired datasets is pinned entry by entry (a ${data.root} inside one included)
    cfg = load_experiment(BASE, ["data.root=data/demo", "data.pairs=['${data.root}/pairs', extra/pairs, s3://b/p]"])
    assert cfg.data.pairs == [str(tmp_path / "data" / "demo" / "pairs"), str(tmp_path / "extra" / "pairs"), "s3://b/p"]


def test_whole_string_reference_keeps_type(tmp_path):
    raw, _ = load_resolved(write(tmp_path, {"train": {"val_every": "${train.log_every}"}}))
    assert raw["train"]["val_every"] == raw["train"]["log_every"] and isinstance(raw["train"]["val_every"], int)


def test_override_may_set_a_schema_field_the_yaml_leaves_out():
    cfg = load_experiment(EXPERIMENTS / "sweep_curriculum.yaml", ["sweep.grace_period=700", "train.audio_examples=0"])
    assert cfg.sweep.grace_period == 700 and cfg.train.audio_examples == 0
    err = error_of(BASE, ["train.audio_exampels=0"])  # a typo is still an error, not a new key
    assert err.field_path == "train.audio_exampels"


def test_plus_override_adds_a_key(tmp_path):
    raw, _ = load_resolved(BASE, ["+sweep.metric=val/recon"])
    assert raw["sweep"] == {"metric": "val/recon"}


def test_switching_component_drops_the_old_arguments(tmp_path):
    cfg = load_experiment(write(tmp_path, {"model": {"decoder": {"component": "parallel_decoder"}}}))
    assert cfg.model.decoder == {"component": "parallel_decoder"}
    kept = load_experiment(write(tmp_path, {"model": {"decoder": {"num_layers": 2}}}, name="same.yaml"))
    assert kept.model.decoder["component"] == "autoregressive_decoder" and kept.model.decoder["dim"] == 256


def test_unknown_key_suggests_closest(tmp_path):
    err = error_of(write(tmp_path, {"trian": {"max_steps": 3}}))
    assert err.field_path == "trian" and "Did you mean 'train'" in str(err) and "exp.yaml" in str(err)


def test_unknown_nested_key_names_path(tmp_path):
    err = error_of(write(tmp_path, {"data": {"batch_sise": 3}}))
    assert err.field_path == "data.batch_sise" and "'batch_size'" in str(err)


def test_wrong_type(tmp_path):
    err = error_of(write(tmp_path, {"data": {"batch_size": "eight"}}))
    assert err.field_path == "data.batch_size" and "expected an integer" in str(err) and "'eight'" in str(err)


def test_literal_choice(tmp_path):
    err = error_of(write(tmp_path, {"optim": {"schedule": "linear"}}))
    assert err.field_path == "optim.schedule" and "'cosine'" in str(err) and "'linear'" in str(err)


def test_unknown_component(tmp_path):
    err = error_of(write(tmp_path, {"model": {"decoder": {"component": "autoregresive_decoder"}}}))
    assert err.field_path == "model.decoder.component"
    assert "unknown decoder 'autoregresive_decoder'" in str(err) and "autoregressive_decoder" in str(err)
    assert "base/model.yaml" not in str(err) and "exp.yaml" in str(err)  # attributed to the file that set it


def test_bad_component_argument(tmp_path):
    err = error_of(write(tmp_path, {"model": {"decoder": {"num_layerz": 2}}}))
    assert err.field_path == "model.decoder.num_layerz" and "no argument 'num_layerz'" in str(err)
    assert "num_layers" in str(err)


def test_component_argument_type(tmp_path):
    err = error_of(write(tmp_path, {"model": {"decoder": {"num_layers": "four"}}}))
    assert err.field_path == "model.decoder.num_layers" and "expected an integer" in str(err)


def test_injected_argument_is_refused(tmp_path):
    err = error_of(write(tmp_path, {"model": {"discriminator": {"num_classes": 2}}}))
    assert err.field_path == "model.discriminator.num_classes" and "set from the rest of the config" in str(err)


def test_missing_required_field(tmp_path):
    body = yaml.safe_load(BASE.read_text())
    path = tmp_path / "nocurriculum.yaml"
    path.write_text(yaml.safe_dump({**body, "defaults": [str(EXPERIMENTS / "base" / n) for n in
                                                         ("data.yaml", "model.yaml", "train.yaml")]}))
    err = error_of(path)
    assert err.field_path == "curriculum" and "missing required field 'curriculum'" in str(err)


def test_bad_override_path():
    err = error_of(BASE, ["trian.max_steps=3"])
    assert err.file == "command line" and err.field_path == "trian" and "Did you mean 'train'" in str(err)


def test_override_without_equals():
    err = error_of(BASE, ["train.max_steps"])
    assert "key.path=value" in str(err)


def test_bad_reference(tmp_path):
    err = error_of(write(tmp_path, {"instruments": [{"name": "piano", "data": "${data.rooot}/p"},
                                                     {"name": "violin", "data": "x"}]}))
    assert err.field_path == "instruments.0.data" and "${data.rooot}" in str(err) and "'root'" in str(err)


def test_reference_cycle(tmp_path):
    err = error_of(write(tmp_path, {"description": "${name}", "name": "${description}"}))
    assert "cycle" in str(err)


def test_duplicate_instrument(tmp_path):
    err = error_of(write(tmp_path, {"instruments": [{"name": "piano", "data": "a"}, {"name": "piano", "data": "b"}]}))
    assert err.field_path == "instruments.1.name" and "duplicate instrument 'piano'" in str(err)


def test_empty_instrument_list(tmp_path):
    err = error_of(write(tmp_path, {"instruments": []}))
    assert err.field_path == "instruments" and "empty" in str(err)


def test_file_not_found(tmp_path):
    err = error_of(tmp_path / "nope.yaml")
    assert "file not found" in str(err) and "nope.yaml" in str(err)


def test_missing_default_file(tmp_path):
    err = error_of(write(tmp_path, {"defaults": ["base/missing.yaml"], "name": "x"}))
    assert err.field_path == "defaults.0" and "missing.yaml" in str(err)


def test_malformed_yaml_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndata:\n  batch_size: [1, 2\n")
    err = error_of(path)
    assert "malformed YAML at line" in str(err) and "broken.yaml" in str(err)


def test_phase_boundaries_must_increase(tmp_path):
    err = error_of(write(tmp_path, {"curriculum": {"phases": [
        {"name": "a", "until": 0.5, "weights": {"reconstruction": 1.0}},
        {"name": "b", "until": 0.3, "weights": {"reconstruction": 1.0}}]}}))
    assert err.field_path == "curriculum.phases.1.until" and "must increase" in str(err)


def test_curriculum_weight_for_undefined_loss(tmp_path):
    err = error_of(write(tmp_path, {"curriculum": {"phases": [
        {"name": "a", "until": 1.0, "weights": {"reconstruction": 1.0, "hsci": 0.1}}]}}))
    assert err.field_path == "curriculum.phases.0.weights.hsci" and "'hsic'" in str(err)


def test_one_instrument_is_not_enough(tmp_path):
    err = error_of(write(tmp_path, {"instruments": [{"name": "piano", "data": "a"}]}))
    assert "at least two instruments" in str(err)
