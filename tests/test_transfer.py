"""Transfer: chunked overlap-add without seams, file handling, reference clips, and bad input.

The seam test measures what a listener would hear as a click: the energy of the sample-to-sample
difference at chunk boundaries against that of the rest of the signal, with a chunk processor whose
output differs from chunk to chunk (as a model's does). Without crossfade the seams stand out; with it
they must not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiostyle.datasets.audio_io import read_input_clip
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.inference.transfer import Transferer, overlap_add, transfer_files

SR = 22050


@pytest.mark.parametrize("length", [100, SR - 1, SR, 5 * SR + 123])
def test_overlap_add_of_identity_reconstructs_any_length(length):
    x = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    y = overlap_add(x, lambda chunks: chunks, chunk=SR // 2, overlap=SR // 8, batch_size=3)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-5)


def seam_ratios(y: np.ndarray, seams: list[int], width: int = 4, context: int = 1024) -> np.ndarray:
    """Per seam: energy of the second difference within +-width samples of a seam over that of the
    +-context samples around it. A click is a jump between two samples: the second difference turns it
    into a spike while smooth audio stays small, and the local context keeps loudness changes between
    chunks from counting as clicks."""
    d2 = np.diff(y.astype(np.float64), n=2) ** 2
    return np.array([d2[s - width:s + width].mean() / d2[s - context:s + context].mean()
                     for s in seams if context <= s < len(d2) - context])


def test_crossfade_leaves_no_discontinuity_at_chunk_boundaries():
    t = np.arange(30 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 331 * t)).astype(np.float32)
    rng = np.random.default_rng(0)

    def chunk_dependent(chunks: np.ndarray) -> np.ndarray:
        # each chunk comes back with its own gain and a small phase shift, like a model's output
        gains = rng.uniform(0.6, 1.4, size=(len(chunks), 1)).astype(np.float32)
        shifts = rng.integers(1, 6, size=len(chunks))
        return np.stack([np.roll(c, s) for c, s in zip(chunks, shifts)]) * gains

    chunk, overlap = 2 * SR, SR // 2
    hard = overlap_add(x, chunk_dependent, chunk=chunk, overlap=0)
    hard_seams = list(range(chunk, len(x) - 1, chunk))
    faded = overlap_add(x, chunk_dependent, chunk=chunk, overlap=overlap)
    hop = chunk - overlap
    # with a crossfade, the joins are spread over the overlap regions: check both their edges and middles
    faded_seams = [s for i in range(1, len(x) // hop) for s in (i * hop, i * hop + overlap // 2, i * hop + overlap)
                   if s < len(x) - 1]
    assert seam_ratios(hard, hard_seams).min() > 10.0  # the measurement does see every unfaded seam
    assert seam_ratios(faded, faded_seams).max() < 1.5


@pytest.fixture(scope="module")
def bundle(demo_root, tmp_path_factory):
    """A tiny random-weight model exported as a bundle, with training-set prototypes from the demo data."""
    import torch

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.platform.bundles.export import export_bundle
    from audiostyle.platform.checkpoints.format import TrainingCheckpoint, save_checkpoint
    from audiostyle.platform.config.loader import load_experiment
    from audiostyle.platform.config.typed_convert import to_dict
    from audiostyle.stats.normalization_stats import load_stats

    tmp = tmp_path_factory.mktemp("transfer")
    cfg = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml", [
        f"data.root={demo_root}", "data.segment_seconds=1.0", "model.style_encoder.dim=32",
        "model.content_encoder.dim=32", "model.decoder.dim=32", "model.discriminator.hidden=32"])
    torch.manual_seed(0)
    mean, std = load_stats(cfg)
    model = build_timbre_model(cfg, stats=(mean, std))
    state = {"step": 1, "phase": "reconstruction", "metrics": {}, "instruments": cfg.instrument_names,
             "run_name": "t", "seed": 0}
    ckpt = save_checkpoint(tmp / "runs" / "t" / "checkpoint_000000",
                           TrainingCheckpoint(model.state_dict(), {}, state, to_dict(cfg), (mean.numpy(), std.numpy())))
    return export_bundle(ckpt, tmp / "bundle", data_root=demo_root)


def test_long_file_through_the_model_has_no_seams(bundle, tmp_path):
    tr = Transferer(bundle, "cpu", overlap_seconds=0.25)
    t = np.arange(9 * SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 262 * t) * (1 + 0.3 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    y = tr.transfer_array(x, SR, to="violin")
    assert y.shape == x.shape and np.all(np.isfinite(y)) and np.abs(y).max() > 0
    hop = tr.chunk - tr.overlap
    seams = [s for i in range(1, len(x) // hop) for s in (i * hop, i * hop + tr.overlap) if s < len(x) - 1]
    # the output is noise-like (random weights), so a single window scatters: no seam may stand out on
    # average, and none may reach the ratios a hard seam gives (> 10 above)
    ratios = seam_ratios(y, seams)
    assert ratios.mean() < 2.0 and ratios.max() < 8.0


def test_reference_clip_replaces_the_prototype(bundle):
    tr = Transferer(bundle, "cpu")
    rng = np.random.default_rng(1)
    ref = (0.2 * rng.standard_normal(2 * SR)).astype(np.float32)
    style_ref = tr.style_for(reference=ref, reference_sr=SR)
    assert style_ref.shape == tr.style_for("violin").shape
    assert not np.allclose(style_ref.numpy(), tr.style_for("violin").numpy())
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    assert not np.allclose(tr.transfer_array(x, SR, reference=ref), tr.transfer_array(x, SR, to="violin"))


def test_cli_transfers_to_a_reference_clip_and_names_outputs_after_it(bundle, tmp_path):
    """`transfer BUNDLE --reference CLIP IN` (no --to): the style of the clip, outputs named after it."""
    from audiostyle.platform.cli.main import main

    rng = np.random.default_rng(2)
    sf.write(tmp_path / "my flute.flac", (0.2 * rng.standard_normal(2 * SR)).astype(np.float32), SR)
    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    sf.write(tmp_path / "tune.wav", x, SR)
    args = ["transfer", str(bundle), str(tmp_path / "tune.wav"), "-o", str(tmp_path / "out")]
    assert main([*args, "--reference", str(tmp_path / "my flute.flac")]) == 0
    written, rate = sf.read(tmp_path / "out" / "tune.my_flute.wav", dtype="float32")
    tr = Transferer(bundle, "cpu")
    heard = read_input_clip(tmp_path / "tune.wav", SR)  # as `transfer` reads a file: level-normalised
    expected = tr.transfer_array(heard, SR, style=tr.style_for(reference=tmp_path / "my flute.flac"))
    assert rate == tr.sample_rate and np.allclose(written, expected, atol=2e-4)  # 16-bit wav
    assert not np.allclose(written, tr.transfer_array(heard, SR, to="violin"), atol=2e-4)
    assert main(args) == 2  # neither --to nor --reference: refused, nothing written beside the first output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tune.my_flute.wav"]


def test_transfer_files_resamples_formats_and_folders(bundle, tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    t = np.arange(int(1.5 * 44100)) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 330 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.3
    sf.write(src / "a.wav", stereo, 44100)
    sf.write(src / "sub" / "b.flac", stereo[:, 0], 16000)
    sf.write(src / "c.ogg", stereo[:, 1], 22050)
    sf.write(src / "d.mp3", stereo[:, 1], 22050)
    lines = []
    written = transfer_files(bundle, [src], "piano", out_dir=tmp_path / "out", log=lines.append)
    assert sorted(p.name for p in written) == ["a.piano.wav", "b.piano.wav", "c.piano.wav", "d.piano.wav"]
    assert tmp_path / "out" / "sub" / "b.piano.wav" in written  # the path inside the input folder is kept
    # mp3 frames pad the start and end a little: hence the tolerance
    for p, seconds in zip(sorted(written, key=lambda p: p.name), (1.5, 1.5 * 44100 / 16000, 1.5 * 44100 / 22050, 1.5 * 44100 / 22050)):
        info = sf.info(p)
        assert info.samplerate == SR and info.channels == 1
        assert info.frames == pytest.approx(seconds * SR, abs=SR * 0.1)
    assert any("real-time factor" in line for line in lines)


def test_bad_inputs_name_the_file_and_write_nothing(bundle, tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, 0.3 * np.sin(np.arange(SR) / 5.0), SR)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR), SR)
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"not audio at all" * 100)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="silent.wav.*silent"):
        transfer_files(bundle, [good, silent], "violin", out_dir=out)
    with pytest.raises(DataError, match="garbage.flac"):
        transfer_files(bundle, [good, garbage], "violin", out_dir=out)
    with pytest.raises(DataError, match="unknown instrument 'violn'.*Did you mean 'violin'"):
        transfer_files(bundle, [good], "violn", out_dir=out)
    with pytest.raises(DataError, match="missing.wav"):
        transfer_files(bundle, [good, tmp_path / "missing.wav"], "violin", out_dir=out)
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even the good file's output


def test_cli_transfer_reports_errors_without_traceback(bundle, tmp_path, capsys):
    from audiostyle.platform.cli.main import main

    silent = tmp_path / "quiet.wav"
    sf.write(silent, np.zeros(SR), SR)
    assert main(["transfer", str(bundle), "--to", "violin", str(silent), "-o", str(tmp_path / "o")]) == 2
    assert "quiet.wav" in capsys.readouterr().err
    tone = tmp_path / "tone.wav"
    sf.write(tone, 0.3 * np.sin(np.arange(SR) / 4.0), SR)
    assert main(["transfer", str(bundle), "--to", "violin", str(tone), "-o", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "tone.violin.wav").is_file()
