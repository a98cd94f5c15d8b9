"""The `audiostyle` CLI: every subcommand has --help, and user errors exit 2 with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from audiostyle.platform.cli.main import COMMAND_MODULES, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ["quickstart", "data", "train", "sweep", "checkpoints", "transfer", "evaluate", "validate",
               "config", "components"]


def test_one_subcommand_per_user_job():
    names = set(build_parser()._subparsers._group_actions[0].choices)
    assert set(SUBCOMMANDS) <= names
    assert len(COMMAND_MODULES) == len(set(COMMAND_MODULES))


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"audiostyle {name}" in out and len(out.splitlines()) >= 3


def test_validate_reports_each_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"defaults: [{ROOT / 'experiments' / 'piano_violin.yaml'}]\ndata: {{batch_size: -1}}\n")
    code = main(["validate", str(ROOT / "experiments" / "piano_violin.yaml"), str(bad)])
    out = capsys.readouterr().out
    assert code == 2
    assert "ok      " in out and "INVALID" in out and "data.batch_size" in out and "bad.yaml" in out


def test_validate_folder_skips_base_fragments(capsys):
    assert main(["validate", str(ROOT / "experiments")]) == 0
    out = capsys.readouterr().out
    assert "piano_violin.yaml" in out and "base/model.yaml" not in out


def test_config_show_prints_resolved_yaml(capsys):
    import yaml

    assert main(["config", "show", str(ROOT / "experiments" / "quickstart.yaml"), "data.root=/x", "seed=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["seed"] == 3 and shown["instruments"][0]["data"] == "/x/piano"


def test_components_lists_arguments(capsys):
    assert main(["components", "decoder"]) == 0
    out = capsys.readouterr().out
    assert "autoregressive_decoder" in out and "parallel_decoder" in out and "out_bins = <from config>" in out


def test_user_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "audiostyle.platform", "config", "show", str(tmp_path / "no.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr and "no.yaml" in proc.stderr


def test_overrides_may_follow_options():
    from audiostyle.platform.cli.main import parse

    args = parse(build_parser(), ["train", "x.yaml", "seed=1", "--workers", "2", "train.max_steps=5"])
    assert args.overrides == ["seed=1", "train.max_steps=5"] and args.workers == 2
    with pytest.raises(SystemExit):
        parse(build_parser(), ["train", "x.yaml", "--workers", "2", "--bogus"])
    with pytest.raises(SystemExit):  # validate takes no positional overrides
        parse(build_parser(), ["validate", "x.yaml", "--override", "a=1", "b=2"])


def test_run_options_are_overrides_of_the_config_the_workers_and_checkpoints_read(tmp_path, monkeypatch):
    """--workers, --gpu, --storage and --name set scaling.* and run.*: the one typed config carries them to
    the run plan and to what the workers receive (and a job's resolved YAML), nothing writes them back."""
    from audiostyle.platform.cli.main import parse
    from audiostyle.platform.cli.submit import run_option_overrides
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.training.driver import build_loop_config, plan_run, settle_run

    monkeypatch.chdir(tmp_path)
    experiment = str(ROOT / "experiments" / "first_run.yaml")
    args = parse(build_parser(), ["train", experiment, "train.max_steps=5", "--workers", "1-3", "--gpu",
                                  "--storage", "shared/runs", "--name", "2026"])
    overrides = run_option_overrides(args)
    assert overrides == ['scaling.num_workers=[1, 3]', 'scaling.use_gpu=true', 'run.storage_path="shared/runs"',
                         'run.name="2026"']
    cfg = settle_run(load_experiment(experiment, [*args.overrides, *overrides]))
    assert cfg.scaling.num_workers == [1, 3] and cfg.scaling.use_gpu is True
    assert cfg.run.name == "2026" and cfg.run.storage_path == str(tmp_path / "shared" / "runs")  # pinned here
    plan = plan_run(cfg)
    assert (plan.min_workers, plan.max_workers, plan.use_gpu, plan.location) == (
        1, 3, True, str(tmp_path / "shared" / "runs" / "2026"))
    sent = build_loop_config(cfg)["config"]
    assert sent["scaling"]["num_workers"] == [1, 3] and sent["run"] == {**sent["run"], "name": "2026",
                                                                        "storage_path": plan.storage}
    # no options: the YAML's own settings, the run named after the experiment
    plain = settle_run(load_experiment(experiment))
    assert run_option_overrides(parse(build_parser(), ["train", experiment])) == []
    assert plain.run.name == plain.name and plain.scaling.num_workers == 1


def test_data_add_writes_shards_manifest_and_statistics(tmp_path, capsys):
    """The `data add` job end to end: a folder of recordings in, everything an experiment needs out."""
    import numpy as np
    import soundfile as sf

    from audiostyle.stats.normalization_stats import read_stats

    src = tmp_path / "recordings"
    src.mkdir()
    sr = 22050
    t = np.arange(int(9 * sr)) / sr
    for i, f0 in enumerate((196.0, 247.0, 294.0, 330.0)):  # four recordings: one per split at least
        notes = np.sin(2 * np.pi * f0 * t) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * 1.5 * t)))
        sf.write(src / f"take{i}.wav", (0.3 * notes).astype(np.float32), sr)
    out = tmp_path / "data" / "cello"
    code = main(["data", "add", "cello", str(src), "--out", str(out), "--segment-seconds", "3", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert (out / "manifest.json").is_file() and list(out.glob("train-*.tar"))
    stats = read_stats(out / "stats.npz")
    assert stats.mean.shape == (2, 513 + 84) and stats.count > 0 and np.all(np.isfinite(stats.std))
    assert np.all(stats.std[0] > 0)  # real parts; the imaginary part is exactly 0 at DC and Nyquist
    assert "- {name: cello" in printed and "stats.npz" in printed


def test_evaluate_offers_every_input_condition_the_evaluation_knows():
    from audiostyle.datasets.recording_conditions import CONDITIONS
    from audiostyle.platform.cli.evaluate import INPUT_CONDITIONS

    assert set(INPUT_CONDITIONS) == set(CONDITIONS)
