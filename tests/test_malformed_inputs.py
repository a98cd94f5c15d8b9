"""Malformed input, case by case, through the `audiostyle` command as a user runs it: experiment YAML,
audio folders and lists, bundles and checkpoints, command-line arguments.

Each case sets up its input under the test's folder (copies of a real dataset, bundle and checkpoint
where it needs them), runs one command, and asserts exit code 2, its own message, no traceback, and
that not one file or folder under the test's folder was created, changed or removed.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.platform.cli.main import main
from audiostyle.platform.core.atomic_files import sha256_file

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "experiments" / "piano_violin.yaml"
SWEEP = ROOT / "experiments" / "sweep_curriculum.yaml"
SR = 22050
LOCK_NAME = ".audiostyle-lock"  # platform/core/folder_lock.py


@dataclass
class Env:
    """One case's folder and the shared real inputs it may copy in."""

    tmp: Path
    shared: dict[str, Path]

    def yaml(self, body: str, base: Path = BASE, name: str = "exp.yaml") -> str:
        path = self.tmp / name
        path.write_text((f"defaults: [{base}]\n" if base else "") + body)
        return str(path)

    def clip(self, name: str, silent: bool = False) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(SR) / SR
        audio = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 330 * t) * np.exp(-3 * (t % 0.5))
        sf.write(path, audio.astype(np.float32), SR, format="FLAC" if name.endswith(".flac") else "WAV")
        return str(path)

    def file(self, name: str, data: bytes | str = b"x") -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def copy(self, key: str, name: str) -> Path:
        return Path(shutil.copytree(self.shared[key], self.tmp / name, symlinks=True))

    def bundle(self, edit: Callable[[Path], None] | None = None) -> str:
        path = self.copy("bundle", "bundle")
        if edit:
            edit(path)
        return str(path)

    def src(self, key: str = "first") -> str:
        return str(self.copy(key, f"src_{key}"))


def _truncate(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / name).write_bytes((folder / name).read_bytes()[:1000])
    return edit


def _meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        meta = json.loads((folder / "bundle.json").read_text())
        change(meta)
        (folder / "bundle.json").write_text(json.dumps(meta))
    return edit


def _flip_config(folder: Path) -> None:
    text = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(text.replace("seed: 0", "seed: 9", 1))


BOMB = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]) + "\n"
TRANSFER = ["transfer", "{bundle}", "--to", "violin"]

# id -> (argv builder, message); `{bundle}` in argv is a copy of the tiny bundle
CASES: dict[str, tuple[Callable[[Env], list[str]], str]] = {
    # ---------------------------------------------------------------- experiment YAML (`validate`)
    "yaml_duplicate_key": (lambda e: ["validate", e.yaml("optim:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")],
                           "optim.lr: line 4: duplicate key 'lr' (first at line 3)"),
    "yaml_duplicate_section": (lambda e: ["validate", e.yaml("train: {max_steps: 10}\ntrain: {val_every: 5}\n")],
                               "train: line 3: duplicate key 'train' (first at line 2)"),
    "yaml_alias_bomb": (lambda e: ["validate", e.yaml(BOMB)], "expands to more than 100000 values"),
    "yaml_deep_nesting": (lambda e: ["validate", e.yaml("x: " + "[" * 2000 + "]" * 2000 + "\n")],
                          "nested more than 40 levels deep"),
    "yaml_recursive_alias": (lambda e: ["validate", e.yaml("x: &r [1, *r]\n")], "refers to a node that contains it"),
    "yaml_syntax": (lambda e: ["validate", e.yaml("optim: {lr: 1e-3\n")], "malformed YAML at line 3"),
    "yaml_top_level_list": (lambda e: ["validate", e.yaml("- a\n- b\n", base=None)],
                            "the top level must be a mapping"),
    "yaml_not_utf8": (lambda e: ["validate", e.file("exp.yaml", b"name: \xff\xfe\n")], "cannot read this file"),
    "unknown_key": (lambda e: ["validate", e.yaml("trian: {max_steps: 3}\n")], "Did you mean 'train'"),
    "lr_nan": (lambda e: ["validate", e.yaml("optim: {lr: .nan}\n")], "optim.lr: must be > 0, got NaN"),
    "lr_negative": (lambda e: ["validate", e.yaml("optim: {lr: -1e-4}\n")], "optim.lr: must be > 0, got -0.0001"),
    "lr_text": (lambda e: ["validate", e.yaml("optim: {lr: fast}\n")], "optim.lr: expected a number, got 'fast'"),
    "betas_one_element": (lambda e: ["validate", e.yaml("optim: {betas: [0.9]}\n")], "must hold exactly 2 numbers"),
    "grad_accum_zero": (lambda e: ["validate", e.yaml("optim: {grad_accum: 0}\n")],
                        "optim.grad_accum: must be >= 1, got 0"),
    "max_steps_float": (lambda e: ["validate", e.yaml("train: {max_steps: 1e3}\n")],
                        "train.max_steps: expected an integer, got 1000.0"),
    "loss_weight_negative": (lambda e: ["validate", str(BASE), "-o", "curriculum.phases.1.weights.hsic=-1"],
                             "curriculum.phases.1.weights.hsic: must be >= 0"),
    "until_mixed_units": (lambda e: ["validate", str(BASE), "-o", "curriculum.phases.0.until=0.5", "-o",
                                     "curriculum.phases.1.until=100"], "'disentanglement' would never run"),
    "phase_after_max_steps": (lambda e: ["validate", str(BASE), "-o", "train.max_steps=100", "-o",
                                         "curriculum.phases.0.until=150", "-o", "curriculum.phases.1.until=200",
                                         "-o", "curriculum.phases.2.until=300"], "at or after train.max_steps=100"),
    "batch_below_instruments": (lambda e: ["validate", e.yaml("data: {batch_size: 1}\n")],
                                "batch_size 1 is smaller than the 2 instruments"),
    "instruments_share_a_folder": (lambda e: ["validate", str(BASE), "-o", "instruments.1.data=${data.root}/piano"],
                                   "instruments.1.data: reads the same data as instruments.0 (piano)"),
    "reference_to_nothing": (lambda e: ["validate", e.yaml("run: {name: '${data.nope}'}\n")],
                             "reference ${data.nope} points to no field"),
    "defaults_cycle": (lambda e: ["validate", e.yaml("name: b\n", base=e.tmp / "exp.yaml")],
                       "`defaults:` form a cycle"),
    "defaults_missing": (lambda e: ["validate", e.yaml("name: x\n", base=e.tmp / "nope.yaml")],
                         "default file not found"),
    "defaults_names_a_folder": (lambda e: ["validate", e.yaml("name: x\n", base=Path(e.file("base/.keep")).parent)],
                                "defaults.0: default {tmp}/base is a directory: a YAML file is needed here"),
    "experiment_is_a_folder": (lambda e: ["config", "show", str(Path(e.file("exps/.keep")).parent)],
                               "{tmp}/exps is a directory: a YAML file is needed here, not a folder"),
    "sweep_unknown_field": (lambda e: ["validate", e.yaml("sweep:\n  space: {optim.lrr: {float: [0.1, 0.2]}}\n", SWEEP)],
                            "'optim.lrr' is not a field of the experiment"),
    "sweep_empty_range": (lambda e: ["validate", e.yaml("sweep:\n  space: {optim.grad_clip: {float: [2.0, 1.0]}}\n",
                                                        SWEEP)], "the range [2.0, 1.0] is empty"),
    "sweep_log_from_zero": (lambda e: ["validate", e.yaml(
        "sweep:\n  space: {optim.weight_decay: {float: [0.0, 0.1], log: true}}\n", SWEEP)], "a log range needs lo > 0"),
    "sweep_mode": (lambda e: ["validate", str(SWEEP), "-o", "sweep.mode=maximize"], "mode must be 'min' or 'max'"),
    "sweep_value_breaks_model": (lambda e: ["validate", e.yaml(
        "sweep:\n  space: {model.decoder.num_heads: {choice: [4, 3]}}\n", SWEEP)], "must split into 3 heads"),
    "component_list_item_type": (lambda e: ["validate", e.yaml("model:\n  style_encoder: {channels: [8, '16', 32, 64]}\n")],
                                 "model.style_encoder.channels.1: expected an integer, got '16'"),
    "component_heads_divide_dim": (lambda e: ["validate", e.yaml("model:\n  decoder: {dim: 96, num_heads: 5}\n")],
                                   "dim 96 must split into 5 heads"),
    "component_negative_size": (lambda e: ["validate", e.yaml("model:\n  content_encoder: {width: -8}\n")],
                                "model.content_encoder: encoder 'content_transformer' cannot be built"),
    "component_unknown": (lambda e: ["validate", e.yaml("model:\n  decoder: {component: transformer_decoder}\n")],
                          "unknown decoder 'transformer_decoder'"),
    "component_injected_argument": (lambda e: ["validate", e.yaml("model:\n  discriminator: {num_classes: 2}\n")],
                                    "is set from the rest of the config"),
    "sweep_without_block": (lambda e: ["sweep", str(BASE)], "no `sweep:` block"),
    # ---------------------------------------------------------------- audio (`data add`, `data demo`)
    "source_missing": (lambda e: ["data", "add", "cello", str(e.tmp / "nowhere"), "--out", str(e.tmp / "d")],
                       "SOURCE not found"),
    "source_empty_folder": (lambda e: ["data", "add", "cello", str(Path(e.file("empty/.keep")).parent), "--out",
                                       str(e.tmp / "d")], "no audio files found"),
    "source_no_usable_audio_onto_dataset": (
        lambda e: ["data", "add", "cello", str(Path(e.file("junk/a.flac", b"fLaC" + bytes(99))).parent), "--out",
                   str(e.copy("cello", "cello"))], "no usable audio, nothing was changed"),
    "source_silent_only": (lambda e: ["data", "add", "cello", str(Path(e.clip("quiet/q.wav", silent=True)).parent),
                                      "--out", str(e.tmp / "d")], "q.wav: silent"),
    "source_csv_without_path": (lambda e: ["data", "add", "cello", e.file("list.csv", "name,split\na,train\n"),
                                           "--out", str(e.tmp / "d")], "no audio path (expected a column named"),
    "source_jsonl_garbage": (lambda e: ["data", "add", "cello", e.file("list.jsonl", "{not json\n[1, 2]\n"),
                                        "--out", str(e.tmp / "d")], "invalid JSON"),
    "other_instrument_in_folder": (lambda e: ["data", "add", "violin", e.src("violin"), "--out",
                                              str(e.copy("cello", "cello"))], "holds instrument 'cello', not 'violin'"),
    "append_other_sample_rate": (lambda e: ["data", "add", "cello", e.src("second"), "--out",
                                            str(e.copy("cello", "cello")), "--sample-rate", "16000"],
                                 "--sample-rate 16000 differs from the 22050"),
    "append_onto_corrupt_manifest": (
        lambda e: ["data", "add", "cello", e.src("second"), "--out",
                   str(_corrupt_manifest(e.copy("cello", "cello")))], "cannot be appended to; pass --replace"),
    "out_is_a_file": (lambda e: ["data", "add", "cello", e.src(), "--out", e.file("taken")],
                      "is an existing file, not a folder"),
    "out_under_a_file": (lambda e: ["data", "add", "cello", e.src(), "--out", e.file("taken") + "/cello"],
                         "is a file, so no folder can be created inside it"),
    "out_inside_source": (lambda e: ["data", "add", "cello", e.src(), "--out", str(e.tmp / "src_first" / "ds")],
                          "is inside SOURCE"),
    "instrument_name": (lambda e: ["data", "add", "Cello", e.src(), "--out", str(e.tmp / "d")],
                        "must be lower-case letters, digits and '_'"),
    "split_two_numbers": (lambda e: ["data", "add", "cello", e.src(), "--split", "1,1"],
                          "--split must be three non-negative numbers"),
    "segment_seconds_zero": (lambda e: ["data", "add", "cello", e.src(), "--segment-seconds", "0"],
                             "argument --segment-seconds: must be > 0 seconds, got 0"),
    "shard_size_negative": (lambda e: ["data", "add", "cello", e.src(), "--shard-size-mb", "-1"],
                            "argument --shard-size-mb: must be > 0, got -1"),
    "demo_seconds_negative": (lambda e: ["data", "demo", "--seconds", "-5", "--out", str(e.tmp / "demo")],
                              "argument --seconds: must be > 0 seconds, got -5"),
    "demo_out_is_a_file": (lambda e: ["data", "demo", "--out", e.file("demo")], "is an existing file, not a folder"),
    "info_without_manifest": (lambda e: ["data", "info", str(Path(e.file("nothing/readme.txt")).parent)],
                              "no readable manifest"),
    # ---------------------------------------------------------------- transfer arguments and outputs
    "chunk_seconds_zero": (lambda e: [*TRANSFER, e.clip("a.wav"), "--chunk-seconds", "0"],
                           "argument --chunk-seconds: must be > 0 seconds, got 0"),
    "overlap_negative": (lambda e: [*TRANSFER, e.clip("a.wav"), "--overlap-seconds", "-1"],
                         "argument --overlap-seconds: must be >= 0 seconds, got -1"),
    "overlap_over_half_chunk": (lambda e: [*TRANSFER, e.clip("a.wav"), "--chunk-seconds", "1", "--overlap-seconds",
                                           "0.8"], "--overlap-seconds: must be within [0, 0.5] seconds"),
    "chunk_too_short": (lambda e: [*TRANSFER, e.clip("a.wav"), "--chunk-seconds", "0.1"],
                        "--chunk-seconds: must be at least 0.25 seconds"),
    "transfer_out_is_a_file": (lambda e: [*TRANSFER, e.clip("a.wav"), "-o", e.file("out")],
                               "-o/--out " + "{tmp}/out: is an existing file, not a folder"),
    "transfer_out_under_a_file": (lambda e: [*TRANSFER, e.clip("a.wav"), "-o", e.file("out") + "/x"],
                                  "is a file, so no folder can be created inside it"),
    "transfer_same_stem": (lambda e: [*TRANSFER, e.clip("song.wav"), e.clip("song.flac"), "-o", str(e.tmp / "o")],
                           "would both be written to"),
    "transfer_unknown_instrument": (lambda e: ["transfer", "{bundle}", "--to", "violn", e.clip("a.wav")],
                                    "unknown instrument 'violn'"),
    "transfer_silent_input": (lambda e: [*TRANSFER, e.clip("q.wav", silent=True), "-o", str(e.tmp / "o")], "silent"),
    "transfer_missing_input": (lambda e: [*TRANSFER, str(e.tmp / "gone.wav"), "-o", str(e.tmp / "o")],
                               "no such file or folder"),
    "transfer_no_bundle": (lambda e: ["transfer", str(e.tmp / "nobundle"), "--to", "violin", e.clip("a.wav")],
                           "bundle folder not found"),
    # ---------------------------------------------------------------- bundles
    "bundle_truncated_weights": (lambda e: [*TRANSFER[:1], e.bundle(_truncate("model.safetensors")), *TRANSFER[2:],
                                            e.clip("a.wav"), "-o", str(e.tmp / "o")],
                                 "model.safetensors: 1000 bytes, expected"),
    "bundle_meta_not_json": (lambda e: [*TRANSFER[:1], e.bundle(lambda b: (b / "bundle.json").write_text("{no")),
                                        *TRANSFER[2:], e.clip("a.wav")], "bundle.json: unreadable or corrupt"),
    "bundle_meta_version": (lambda e: [*TRANSFER[:1], e.bundle(_meta(lambda m: m.update(format_version=99))),
                                       *TRANSFER[2:], e.clip("a.wav")], "format_version 99 is not 1"),
    "bundle_meta_files_list": (lambda e: [*TRANSFER[:1], e.bundle(_meta(lambda m: m.update(files=["model"]))),
                                          *TRANSFER[2:], e.clip("a.wav")], "the file list is not a mapping"),
    "bundle_config_edited": (lambda e: [*TRANSFER[:1], e.bundle(_flip_config), *TRANSFER[2:], e.clip("a.wav")],
                             "config.yaml: checksum mismatch"),
    "bundle_meta_missing": (lambda e: [*TRANSFER[:1], e.bundle(lambda b: (b / "bundle.json").unlink()),
                                       *TRANSFER[2:], e.clip("a.wav")], "is not an audiostyle bundle"),
    # ---------------------------------------------------------------- checkpoints, export, evaluate, sweep
    "export_out_is_a_file": (lambda e: ["checkpoints", "export", str(e.copy("storage", "runs")), "--out",
                                        e.file("b")], "is an existing file, not a bundle folder"),
    "export_onto_a_bundle": (lambda e: ["checkpoints", "export", str(e.copy("storage", "runs")), "--out",
                                        e.bundle()], "already exists; choose another --out, pass --overwrite"),
    "export_without_out": (lambda e: ["checkpoints", "export", str(e.copy("storage", "runs"))], "export needs --out"),
    "export_damaged_checkpoint": (lambda e: ["checkpoints", "export", "x", "--checkpoint",
                                             str(_damaged(e.copy("storage", "runs"))), "--out", str(e.tmp / "b")],
                                  "model.safetensors: 1000 bytes, expected"),
    "best_all_damaged": (lambda e: ["checkpoints", "best", str(_damaged(e.copy("storage", "runs")).parents[1])],
                         "every checkpoint found is damaged"),
    "list_top_negative": (lambda e: ["checkpoints", "list", "runs", "--top", "-1"], "argument --top: must be >= 0"),
    "storage_missing": (lambda e: ["checkpoints", "list", str(e.tmp / "no_runs")], "storage location not found"),
    "evaluate_out_is_a_file": (lambda e: ["evaluate", "{bundle}", str(e.tmp), "--out", e.file("report")],
                               "is an existing file, not a folder"),
    "evaluate_max_pieces_zero": (lambda e: ["evaluate", "{bundle}", str(e.tmp), "--max-pieces", "0"],
                                 "argument --max-pieces: must be >= 1, got 0"),
    "sweep_trials_zero": (lambda e: ["sweep", str(SWEEP), "--trials", "0"], "argument --trials: must be >= 1, got 0"),
}


def _corrupt_manifest(folder: Path) -> Path:
    (folder / "manifest.json").write_text('{"instrument": "cello", ')
    return folder


def _damaged(storage: Path) -> Path:
    ckpt = next(storage.rglob("model.safetensors")).parent
    _truncate("model.safetensors")(ckpt)
    return ckpt


@pytest.fixture(scope="module")
def shared(tiny_export, recordings, tmp_path_factory) -> dict[str, Path]:
    cello = tmp_path_factory.mktemp("malformed") / "cello"
    assert main(["data", "add", "cello", str(recordings["first"]), "--out", str(cello), "--segment-seconds", "2",
                 "--no-progress"]) == 0
    return {**tiny_export, **recordings, "cello": cello}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every folder and file under root (lock files aside: a refused writer may open one) with its bytes."""
    return {str(p.relative_to(root)): ("dir",) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns,
                                                                    sha256_file(p))
            for p in sorted(root.rglob("*")) if p.name != LOCK_NAME}


def test_the_suite_is_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_input_is_refused_with_its_message_and_changes_nothing(case, shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative defaults (data/<instrument>, transferred/) land here, and are watched
    env = Env(tmp_path, shared)
    build, message = CASES[case]
    argv = build(env)
    if "{bundle}" in argv:
        argv[argv.index("{bundle}")] = env.bundle()
    before = snapshot(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code
    printed = out.getvalue() + err.getvalue()
    assert code == 2, printed
    assert message.replace("{tmp}", str(tmp_path)) in printed, printed
    assert "Traceback" not in printed
    assert snapshot(tmp_path) == before  # no partial file, no new folder, existing data untouched
