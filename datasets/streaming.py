"""`make_loader`: stream multi-instrument batches from WebDataset shards to one training rank.

One WebDataset pipeline per instrument (resampled shards -> explicit node splitter -> worker
splitter -> tar -> shuffle buffer -> soundfile decode of a random crop) and a batcher that takes a
fixed quota from each instrument, so every batch holds every class (the contrastive losses need
positives and negatives of each). Shards are drawn with replacement and the loader stops after a
fixed count (`with_epoch`), so every rank sees exactly the same number of batches, for validation
too: an uneven count makes the ranks that finish first skip a collective and DDP hangs.

With `data.pairs` (a paired dataset, datasets/pair_dataset.py), each batch also holds aligned pairs:
the same window of one passage as two instruments of the experiment played it, (source, target) drawn
uniformly among the instruments the passage has, streamed from the pair shards the same way. The
source is any player's rendering of its instrument (reference or another sound set / program, when the
passage holds them: pairs across players); the target is always the reference rendering, and only the
source is put through random recording conditions (`data.pair_augment`, datasets/recording_conditions.py).
Several paired datasets (`data.pairs` a list) give training pairs in proportion to their passages, or in the
shares `data.pair_shares` names, each dataset then streamed on its own and drawn per pair. Directions that
`data.pair_skip` names are drawn again.

`wds.WebDataset(resampled=True)` seeds its shard sampler from the clock and /dev/urandom, so the
same stages are assembled here in a `wds.DataPipeline` around a deterministic `ResampledShards`;
every random choice is seeded from (seed, instrument, epoch, rank, worker). Rank and world size are
passed in explicitly rather than read from RANK/WORLD_SIZE, which Ray workers do not always set.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from audiostyle.datasets.audio_io import read_crop, read_window
from audiostyle.datasets.manifest import read_manifest, shard_urls
from audiostyle.datasets.pair_dataset import player_members, read_pair_manifest, record_of
from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.errors import ConfigError, DataError
from audiostyle.platform.core.locations import open_url

_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2, "heldout": 3}  # so val crops differ from train crops
_PAIR_STREAM = 1 << 20  # seeds the pair stream apart from every instrument's (labels are small numbers)


def instrument_quotas(weights: list[float], batch_size: int) -> list[int]:
    """Samples per instrument in each batch: at least one each, the rest shared by weight."""
    n = len(weights)
    if batch_size < n:
        raise ConfigError(f"batch_size {batch_size} is smaller than the {n} instruments; every batch must "
                          f"hold every instrument, so set data.batch_size >= {n}", path="data.batch_size")
    spare = batch_size - n
    shares = [w / sum(weights) * spare for w in weights]
    quotas = [1 + int(s) for s in shares]
    # largest remainder, ties to the earlier instrument: deterministic and sums to batch_size
    order = sorted(range(n), key=lambda i: (-(shares[i] - int(shares[i])), i))
    for i in order[: batch_size - sum(quotas)]:
        quotas[i] += 1
    return quotas


def mix_seed(*parts: int) -> int:
    """A 32-bit seed from integers (not Python's hash(), which is salted per process for strings)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


def _node_splitter(rank: int, world_size: int):
    """WebDataset's split_by_node with the rank given, not looked up in the environment."""
    def split(src: Iterator[Any]) -> Iterator[Any]:
        return itertools.islice(src, rank, None, world_size)
    return split


def _open_shards(src: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for sample in src:
        url = sample["url"]
        try:
            stream = open_url(url)
        except (OSError, ValueError) as exc:
            raise DataError(f"{url}: cannot open shard ({exc}); check the instrument's `data` location "
                            "and that the shard listed in its manifest.json exists") from exc
        yield dict(sample, stream=stream)


@dataclass(frozen=True)
class PairSource:
    """Where a batch's pairs come from: the pair shards of a split per paired dataset, the experiment's
    instruments they may pair (name -> label), how many pairs go into each batch, the chance of each
    recording condition and of a soft attack on a source (0: clean sources), the sample rate, and the share
    of the pairs each dataset gives (None: all shards drawn alike, so in proportion to their passages)."""

    datasets: list[list[str]]
    labels: dict[str, int]
    per_batch: int
    augment: float = 0.0
    soft_attack: float = 0.0
    bow_noise: float = 0.0
    sample_rate: int = 22050
    shares: tuple[float, ...] | None = None
    skip: frozenset[tuple[str, str]] = frozenset()  # (source, target) names never drawn (data.pair_skip)

    @property
    def shards(self) -> list[str]:
        return [url for shards in self.datasets for url in shards]


class MixedBatchStream(torch.utils.data.IterableDataset):
    """Endless batches {"audio": [B, N], "label": [B]} holding `quotas[i]` crops of instrument i, and with
    `pairs` also {"pair_source", "pair_target": [P, N], "pair_source_label", "pair_target_label": [P]}."""

    def __init__(self, shard_lists: list[list[str]], quotas: list[int], num_samples: int, *,
                 shuffle_buffer: int, seed: int, rank: int, world_size: int, pairs: PairSource | None = None):
        super().__init__()
        self.shard_lists = shard_lists
        self.quotas = quotas
        self.num_samples = num_samples
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pairs = pairs
        self.epoch = 0

    def _pipeline(self, shard_list: list[str], stream: int, worker: int, decode) -> wds.DataPipeline:
        # Every rank and worker draws the same shard sequence, then keeps its own slice of it
        # (node splitter, then worker splitter): readers never collide on the same draw.
        shards = wds.ResampledShards(shard_list, seed=mix_seed(self.seed, stream, self.epoch),
                                     deterministic=True, worker_seed=lambda: 0)
        local = mix_seed(self.seed, stream, self.epoch, self.rank, worker)
        return wds.DataPipeline(
            shards,
            _node_splitter(self.rank, self.world_size),
            wds.split_by_worker,
            _open_shards,
            tar_file_expander,
            group_by_keys,
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, seed=local),
            wds.map(decode(np.random.default_rng(local))),
        )

    def instrument_pipeline(self, label: int, worker: int) -> wds.DataPipeline:
        n = self.num_samples

        def decoder(rng: np.random.Generator):
            def crop(sample: dict[str, Any]) -> np.ndarray:
                return read_crop(sample["flac"], n, rng, name=f"{sample['__url__']}:{sample['__key__']}.flac")
            return crop

        return self._pipeline(self.shard_lists[label], label, worker, decoder)

    def pair_draws(self, worker: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
        """Endless (source, target, source label, target label): from all pair shards alike, or with
        `shares` from each paired dataset's own stream, the dataset drawn per pair."""
        pairs = self.pairs
        augment = None
        if pairs.augment > 0 or pairs.soft_attack > 0 or pairs.bow_noise > 0:
            from audiostyle.datasets.recording_conditions import InputAugmenter

            augment = InputAugmenter(pairs.sample_rate, pairs.augment, soft_attack=pairs.soft_attack,
                                     bow_noise=pairs.bow_noise,
                                     seed=mix_seed(self.seed, _PAIR_STREAM) % 1000)
        if pairs.shares is None:  # the draws every recipe trained with before shares existed
            return iter(self.pair_pipeline(pairs.shards, _PAIR_STREAM, worker, augment))
        streams = [iter(self.pair_pipeline(shards, _PAIR_STREAM + 1 + i, worker, augment))
                   for i, shards in enumerate(pairs.datasets)]
        shares = np.asarray(pairs.shares, dtype=float) / sum(pairs.shares)
        rng = np.random.default_rng(mix_seed(self.seed, _PAIR_STREAM, self.epoch, self.rank, worker))
        return (next(streams[rng.choice(len(streams), p=shares)]) for _ in itertools.count())

    def pair_pipeline(self, shards: list[str], stream: int, worker: int,
                      augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None) -> wds.DataPipeline:
        """The pairs of `shards` as a pipeline seeded by `stream`, each source put through `augment` (with a
        generator of its own) when given."""
        pairs, n = self.pairs, self.num_samples

        def decoder(rng: np.random.Generator):
            augment_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])

            def pick(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, int, int]:
                members = player_members(sample)
                names = sorted(name for name in members if name in pairs.labels)
                where = f"{sample['__url__']}:{sample['__key__']}"
                if len(names) < 2:
                    raise DataError(f"{where}: the passage holds {names or 'none'} of the experiment's instruments "
                                    f"{sorted(pairs.labels)}; a pair needs two")
                if pairs.skip and all((a, b) in pairs.skip for a in names for b in names if a != b):
                    raise DataError(f"{where}: data.pair_skip skips every direction between {', '.join(names)}, "
                                    "the instruments this passage holds; leave one of them in")
                src, tgt = rng.choice(len(names), size=2, replace=False)
                while (names[src], names[tgt]) in pairs.skip:
                    src, tgt = rng.choice(len(names), size=2, replace=False)
                record = record_of(sample)
                frames = int(round(float(record["duration_seconds"]) * float(record["sample_rate"])))
                start = int(rng.integers(0, max(frames - n, 0) + 1))
                players = members[names[src]]
                player = int(rng.integers(len(players)))
                source = read_window(players[player], start, n, name=f"{where}.{names[src]}.flac (player {player})")
                target = read_window(members[names[tgt]][0], start, n, name=f"{where}.{names[tgt]}.flac")
                if augment is not None:  # its own generator: the same draws of passage, window and player
                    source = augment(source, augment_rng)
                return source, target, pairs.labels[names[src]], pairs.labels[names[tgt]]
            return pick

        return self._pipeline(shards, stream, worker, decoder)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        streams = [iter(self.instrument_pipeline(i, worker)) for i in range(len(self.quotas))]
        pair_stream = self.pair_draws(worker) if self.pairs is not None else None
        labels = torch.tensor([i for i, q in enumerate(self.quotas) for _ in range(q)], dtype=torch.long)
        batch_size = int(labels.shape[0])
        while True:
            audio = np.empty((batch_size, self.num_samples), dtype=np.float32)
            row = 0
            for stream, quota in zip(streams, self.quotas):
                for _ in range(quota):
                    audio[row] = next(stream)
                    row += 1
            batch = {"audio": torch.from_numpy(audio), "label": labels.clone()}
            if pair_stream is not None:
                drawn = [next(pair_stream) for _ in range(self.pairs.per_batch)]
                batch["pair_source"] = torch.from_numpy(np.stack([d[0] for d in drawn]))
                batch["pair_target"] = torch.from_numpy(np.stack([d[1] for d in drawn]))
                batch["pair_source_label"] = torch.tensor([d[2] for d in drawn], dtype=torch.long)
                batch["pair_target_label"] = torch.tensor([d[3] for d in drawn], dtype=torch.long)
            yield batch


class StreamingLoader:
    """Iterable giving exactly `len(self)` batches per pass, on every rank.

    Training passes advance the epoch (new shard draws, shuffles and crops); validation passes
    (`advance=False`) replay the same batches each time so metrics compare across checkpoints.
    """

    def __init__(self, stream: MixedBatchStream, num_batches: int, num_workers: int, *, advance: bool):
        self.stream = stream
        self.num_batches = num_batches
        self.num_workers = num_workers
        self.advance = advance
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Resume at a given epoch (e.g. after restoring a checkpoint)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # set before the DataLoader copies the stream into its worker processes
        self.stream.epoch = self.epoch
        if self.advance:
            self.epoch += 1
        loader = wds.WebLoader(self.stream, batch_size=None, num_workers=self.num_workers)
        return iter(loader.with_epoch(self.num_batches))


def make_loader(cfg: ExperimentConfig, split: str, *, seed: int, rank: int = 0,
                world_size: int = 1) -> StreamingLoader:
    """Batches of `split` for one rank: steps_per_epoch batches per pass for 'train', val_batches otherwise."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    sr = cfg.data.sample_rate
    shard_lists = []
    for i, inst in enumerate(cfg.instruments):
        manifest = read_manifest(inst.data)
        if int(manifest["sample_rate"]) != sr:
            raise DataError(
                f"{inst.data}/manifest.json: shards are at {manifest['sample_rate']} Hz but data.sample_rate is "
                f"{sr} (instruments.{i}, {inst.name}). Re-run `audiostyle data add {inst.name} SOURCE "
                f"--sample-rate {sr}` or set data.sample_rate: {manifest['sample_rate']}.")
        shard_lists.append(shard_urls(inst.data, manifest, split))
    quotas = instrument_quotas([inst.weight for inst in cfg.instruments], cfg.data.batch_size)
    num_samples = int(round(cfg.data.segment_seconds * sr))
    pairs = pair_source(cfg, split) if cfg.data.pairs is not None and split in ("train", "val") else None
    if pairs is not None and split == "train":  # validation stays clean: its metrics compare across runs
        pairs = dataclasses.replace(pairs, augment=cfg.data.pair_augment, soft_attack=cfg.data.pair_soft_attack,
                                    bow_noise=cfg.data.pair_bow_noise, sample_rate=sr,
                                    shares=tuple(cfg.data.pair_shares) if cfg.data.pair_shares else None)
    stream = MixedBatchStream(shard_lists, quotas, num_samples, shuffle_buffer=cfg.data.shuffle_buffer,
                              seed=mix_seed(seed, _SPLIT_INDEX.get(split, len(_SPLIT_INDEX))),
                              rank=rank, world_size=world_size, pairs=pairs)
    num_batches = cfg.data.steps_per_epoch if split == "train" else cfg.data.val_batches
    return StreamingLoader(stream, num_batches, cfg.data.loader_workers, advance=split == "train")


def pair_source(cfg: ExperimentConfig, split: str) -> PairSource:
    """The pairs of `split` for the experiment's instruments, from every paired dataset data.pairs names;
    ConfigError/DataError naming data.pairs when one does not fit the experiment."""
    locations = [cfg.data.pairs] if isinstance(cfg.data.pairs, str) else list(cfg.data.pairs)
    datasets, labels = [], {}
    for i, location in enumerate(locations):
        where = "data.pairs" if isinstance(cfg.data.pairs, str) else f"data.pairs.{i}"
        manifest = read_pair_manifest(location)
        if int(manifest["sample_rate"]) != cfg.data.sample_rate:
            raise DataError(f"{location}/manifest.json: pairs are at {manifest['sample_rate']} Hz but "
                            f"data.sample_rate is {cfg.data.sample_rate}; render the demo at that rate or change "
                            "data.sample_rate")
        paired = {name: label for label, name in enumerate(cfg.instrument_names) if name in manifest["instruments"]}
        if len(paired) < 2:
            raise ConfigError(f"{location} pairs {', '.join(manifest['instruments'])}, which includes "
                              f"{len(paired)} of the experiment's instruments ({', '.join(cfg.instrument_names)}); "
                              "pairs need two of them", path=where,
                              hint="render every instrument of the experiment in one `audiostyle data demo "
                                   "--instruments a,b,c` call, which pairs them all")
        labels.update(paired)
        datasets.append(shard_urls(location, manifest, split))
    return PairSource(datasets, labels, cfg.data.pair_batch_size, skip=frozenset(cfg.data.skipped_directions))
