"""Validation on unseen players (training/unseen_validation.py), without Ray: the pairs' inputs are a held-out
sound set's renderings of VAL pieces (never test pieces), their targets the reference renderings of the same
window on another instrument, the metric is the mean transfer loss over them, and the config refuses it where
it cannot be computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiostyle.datasets.paired import heldout_soundfonts, load_instrument_split
from audiostyle.platform.config.loader import load_experiment
from audiostyle.platform.core.errors import ConfigError, DataError
from audiostyle.platform.training.unseen_validation import (
    METRIC,
    UnseenPairValidation,
    unseen_windows,
    val_only_pieces,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SR = 22050


def splits_of(folder: Path) -> dict[str, str]:
    return json.loads((folder / "manifest.json").read_text())["recordings"]


@pytest.fixture(scope="module")
def unseen_player(demo_root) -> str:
    available = [s for s in heldout_soundfonts(demo_root / "piano") if s in ("musescore", "fluidr3")]
    if not available:
        pytest.skip("no held-out sound set installed (apt-get install musescore-general-soundfont)")
    return available[-1]  # musescore when both are: the player a sweep validates on


def paired_config(demo_root: Path, *overrides: str):
    return load_experiment(EXPERIMENTS / "paired_spectral.yaml", [
        f"data.root={demo_root}", "data.segment_seconds=1.0", "data.val_batches=2", "data.pair_batch_size=3",
        "model.content_encoder.dim=16", "model.decoder.dim=16", "model.style_encoder.width=16",
        "model.style_encoder.dim=8", *overrides])


def test_windows_are_heldout_renderings_of_val_pieces_against_reference_targets(demo_root, unseen_player):
    folders = [(name, str(demo_root / name)) for name in ("piano", "violin")]
    n = SR  # one-second windows
    windows = unseen_windows(folders, [unseen_player], n, count=50, sample_rate=SR)
    assert windows
    heldout = {name: load_instrument_split(folder, "heldout")[0] for name, folder in folders}
    val = {name: load_instrument_split(folder, "val")[0] for name, folder in folders}
    for window, source, target in windows:
        recordings = splits_of(demo_root / window.source)
        assert recordings[window.piece] == "val"  # a val piece of the source instrument ...
        assert all(not (rid == window.piece or rid.startswith(window.piece + "--")) or split != "test"
                   for rid, split in recordings.items())  # ... never a test piece
        assert window.player == unseen_player and window.source != window.target
        # the input is that held-out rendering, the target the other instrument's reference rendering
        expected_source = heldout[window.source][f"{window.piece}--{unseen_player}"][window.start:window.start + n]
        np.testing.assert_array_equal(source, expected_source)
        np.testing.assert_array_equal(target, val[window.target][window.piece][window.start:window.start + n])
        assert not np.array_equal(source, val[window.source][window.piece][window.start:window.start + n])
    assert {(w.source, w.target) for w, _, _ in windows} == {("piano", "violin"), ("violin", "piano")}


def test_a_piece_listed_in_test_never_counts_as_a_val_piece(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({
        "instrument": "piano", "sample_rate": SR, "segment_seconds": 4.0, "splits": {}, "shards": {},
        "recordings": {"a": "val", "a--musescore": "heldout", "b": "val", "b--csound": "val", "c": "test",
                       "c--musescore": "heldout", "d": "train", "b_t": "test", "a_x": "val"}}))
    assert val_only_pieces(tmp_path) == {"a", "b", "a_x"}
    (tmp_path / "manifest.json").write_text(json.dumps({
        "instrument": "piano", "sample_rate": SR, "segment_seconds": 4.0, "splits": {}, "shards": {},
        "recordings": {"a": "val", "a--fluidr3": "test"}}))  # a hand-made manifest with the piece in both
    assert val_only_pieces(tmp_path) == set()


def test_the_count_is_spread_over_directions_and_is_the_same_every_time(demo_root, unseen_player):
    folders = [(name, str(demo_root / name)) for name in ("piano", "violin", "cello")]
    every = unseen_windows(folders, [unseen_player], SR, count=10_000, sample_rate=SR)
    some = unseen_windows(folders, [unseen_player], SR, count=6, sample_rate=SR)
    assert len(some) == min(6, len(every))
    assert [w for w, _, _ in some] == [w for w, _, _ in unseen_windows(folders, [unseen_player], SR, 6, SR)]
    if len(every) > 6:  # evenly spread over the candidates, so not all from the first direction
        assert len({(w.source, w.target) for w, _, _ in some}) > 1


def test_metric_is_the_mean_transfer_loss_over_the_batches(demo_root, unseen_player):
    cfg = paired_config(demo_root, f"data.val_unseen_players=[{unseen_player}]")
    check = UnseenPairValidation.from_config(cfg)
    assert check is not None and len(check.windows) <= cfg.data.val_batches * cfg.data.pair_batch_size
    assert [len(b["source"]) for b in check.batches][0] == cfg.data.pair_batch_size

    class Distance:  # stands in for the model: a loss that depends on the pair and the target's label
        def transfer_loss(self, source, target, labels):
            return float((source - target).abs().mean() + labels.float().mean())

    per_batch = [Distance().transfer_loss(b["source"], b["target"], b["target_label"]) for b in check.batches]
    got = check.metrics(Distance(), rank=0, world=1, device=torch.device("cpu"))
    assert got == {METRIC: pytest.approx(float(np.mean(per_batch)))}
    labels = {"piano": 0, "violin": 1}
    flat = [int(x) for b in check.batches for x in b["target_label"]]
    assert flat == [labels[w.target] for w in check.windows]

    from audiostyle.components.timbre_transfer import build_timbre_model
    from audiostyle.stats.normalization_stats import load_stats

    model = build_timbre_model(cfg, stats=load_stats(cfg)).eval()
    value = check.metrics(model, rank=0, world=1, device=torch.device("cpu"))[METRIC]
    assert np.isfinite(value) and value > 0
    assert UnseenPairValidation.from_config(paired_config(demo_root)) is None  # off by default


def test_an_unknown_player_and_a_recipe_without_pairs_are_refused(demo_root, tiny_config):
    cfg = paired_config(demo_root, "data.val_unseen_players=[no_such_font]")
    with pytest.raises(DataError, match=r"data.val_unseen_players.*no_such_font"):
        UnseenPairValidation.from_config(cfg)
    with pytest.raises(ConfigError, match="cross_reconstruction") as info:
        tiny_config("data.val_unseen_players=[musescore]")
    assert info.value.field_path == "data.val_unseen_players"
