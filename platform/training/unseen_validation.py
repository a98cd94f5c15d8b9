"""Validation on pairs whose input a sound set kept out of training played: `val/unseen_cross_recon`.

The validation pairs of `data.pairs` take their inputs from the training players, so a sweep ranking
trials on `val/cross_recon` rewards fitting those players. With `data.val_unseen_players: [musescore]`
every validation also scores the transfer (model.transfer_loss, the cross_reconstruction loss of the
inference path) on fixed windows of the VAL pieces as a held-out sound set played them (an instrument's
`heldout` split, recording ids `<piece>--<sound set>`, datasets/paired.py), against the reference
rendering of the same piece by another instrument (its `val` split, recording id `<piece>`). Test pieces,
which `audiostyle evaluate` scores, are never used, so tuning on this metric does not tune on the test.

Windows are cut once per worker, in a fixed order, so the metric compares across checkpoints and trials;
ranks share the batches as they share the val batches (batch i on rank i mod world), and the means are
reduced over ranks (a collective: every rank calls `metrics`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audiostyle.datasets.audio_io import SILENT_PEAK_DB, rms_db
from audiostyle.datasets.manifest import read_manifest
from audiostyle.datasets.paired import heldout_soundfonts, load_instrument_split, piece_id_of, soundfont_of
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import DataError
from audiostyle.platform.training.rank_collectives import mean_of_sums
from audiostyle.platform.training.worker_scaling import validation_share

METRIC = "val/unseen_cross_recon"


@dataclass(frozen=True)
class UnseenWindow:
    """Where one validation pair comes from: `source`'s rendering of `piece` by `player`, at `start`
    samples, against `target`'s reference rendering of the same window."""

    piece: str
    player: str
    source: str
    target: str
    start: int


def val_only_pieces(folder: str | Path) -> set[str]:
    """The instrument's val pieces that are no test piece (the demo splits by piece, so that is all of
    them; a manifest listing a piece in both never lets its test rendering into validation)."""
    by_split: dict[str, set[str]] = {}
    for rid, split in read_manifest(folder).get("recordings", {}).items():
        by_split.setdefault(split, set()).add(piece_id_of(rid))
    return by_split.get("val", set()) - by_split.get("test", set())


def _renderings(folder: str, split: str, pieces: set[str], player: str | None,
                sample_rate: int) -> dict[str, np.ndarray]:
    """{piece: audio} of `split` in `folder`, by `player` (None: the reference rendering), val pieces only."""
    audio, rate = load_instrument_split(
        folder, split, keep=lambda rid: soundfont_of(rid) == player and piece_id_of(rid) in pieces)
    if audio and rate != sample_rate:
        raise DataError(f"{folder}: the {split} split is at {rate} Hz, data.sample_rate is {sample_rate}; "
                        "render the demo at that rate")
    return {piece_id_of(rid): wave for rid, wave in audio.items()}


def unseen_windows(instruments: Sequence[tuple[str, str]], players: Sequence[str], num_samples: int,
                   count: int, sample_rate: int) -> list[tuple[UnseenWindow, np.ndarray, np.ndarray]]:
    """Up to `count` (window, source audio, target audio) of every ordered pair of `instruments`
    ((name, folder)), each listed held-out player and each val piece both have, spread evenly over
    them in a fixed order; windows where either side is silent are left out."""
    pieces = {name: val_only_pieces(folder) for name, folder in instruments}
    references = {name: _renderings(folder, "val", pieces[name], None, sample_rate) for name, folder in instruments}
    candidates = []
    for player in players:
        offered = {name: _renderings(folder, "heldout", pieces[name], player, sample_rate)
                   for name, folder in instruments}
        if not any(offered.values()):
            available = {name: heldout_soundfonts(folder) for name, folder in instruments}
            raise DataError(f"data.val_unseen_players: no instrument has val pieces rendered by {player!r} in its "
                            f"heldout split (held-out sound sets per instrument: {available}); install that "
                            "SoundFont and re-run `audiostyle data demo`, or name one of those")
        for source, _ in instruments:
            for target, _ in instruments:
                if source == target:
                    continue
                for piece in sorted(set(offered[source]) & set(references[target])):
                    src, tgt = offered[source][piece], references[target][piece]
                    for start in range(0, min(len(src), len(tgt)) - num_samples + 1, num_samples):
                        a, b = src[start:start + num_samples], tgt[start:start + num_samples]
                        if rms_db(a) >= SILENT_PEAK_DB and rms_db(b) >= SILENT_PEAK_DB:
                            candidates.append((UnseenWindow(piece, player, source, target, start), a, b))
    if not candidates:
        raise DataError(f"data.val_unseen_players {list(players)}: no val piece is rendered by them on one "
                        f"instrument and by the reference on another, in windows of {num_samples} samples; "
                        "render the data with `audiostyle data demo` (every piece goes to the heldout split)")
    if len(candidates) <= count:
        return candidates
    chosen = np.unique(np.linspace(0, len(candidates) - 1, count).round().astype(int))
    return [candidates[i] for i in chosen]


class UnseenPairValidation:
    """The fixed unseen-player validation batches of one worker, and the metric they give."""

    def __init__(self, windows: list[tuple[UnseenWindow, np.ndarray, np.ndarray]], labels: dict[str, int],
                 batch_size: int):
        self.windows = [w for w, _, _ in windows]
        self.batches = []
        for i in range(0, len(windows), batch_size):
            chunk = windows[i:i + batch_size]
            self.batches.append({
                "source": torch.from_numpy(np.stack([a for _, a, _ in chunk])),
                "target": torch.from_numpy(np.stack([b for _, _, b in chunk])),
                "target_label": torch.tensor([labels[w.target] for w, _, _ in chunk], dtype=torch.long)})

    @classmethod
    def from_config(cls, cfg: ExperimentConfig) -> UnseenPairValidation | None:
        """The batches `cfg.data.val_unseen_players` asks for (as many pairs as val_batches x
        pair_batch_size), or None when it names no player."""
        data = cfg.data
        if not data.val_unseen_players:
            return None
        windows = unseen_windows([(i.name, i.data) for i in cfg.instruments], data.val_unseen_players,
                                 int(round(data.segment_seconds * data.sample_rate)),
                                 data.val_batches * data.pair_batch_size, data.sample_rate)
        return cls(windows, {name: i for i, name in enumerate(cfg.instrument_names)}, data.pair_batch_size)

    def metrics(self, model: Any, *, rank: int, world: int, device: torch.device,
                autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext
                ) -> dict[str, float]:
        """{METRIC: mean cross-reconstruction loss over the batches}; every rank must call it (a collective)."""
        total, count = 0.0, 0
        for index, batch in enumerate(self.batches):
            if not validation_share(index, rank, world):
                continue
            with autocast():
                total += model.transfer_loss(batch["source"].to(device), batch["target"].to(device),
                                             batch["target_label"].to(device))
            count += 1
        return {METRIC: mean_of_sums({"x": total}, count, world, device)["x"]}
