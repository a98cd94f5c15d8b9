"""What a training rank derives from the world size of an elastic run (no Ray): the global batch kept by
accumulation, where each rank's data stream continues, the validation split, the size history; and the
`scaling.num_workers` range a config may give."""

from __future__ import annotations

import pytest

from audiostyle.platform.config.field_domains import worker_range
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.training.worker_scaling import (
    DataPosition,
    WorldScale,
    micro_batches_per_step,
    validation_share,
)


def test_the_global_batch_of_max_workers_is_kept_by_accumulation():
    assert [micro_batches_per_step(1, 4, w) for w in (4, 2, 1)] == [1, 2, 4]
    assert micro_batches_per_step(2, 3, 2) == 3  # 6 micro-batches over 2 ranks
    assert micro_batches_per_step(1, 3, 2) == 2  # rounded up: at most one micro-batch more per rank
    small, full = (WorldScale.derive(world=w, num_workers=[1, 2], grad_accum=1, batch_size=4) for w in (1, 2))
    assert small.global_batch == full.global_batch == 8
    assert small.metrics() == {"scale/workers": 1, "scale/grad_accum": 2, "scale/global_batch": 8}
    fixed = WorldScale.derive(world=2, num_workers=2, grad_accum=3, batch_size=4)
    assert (fixed.grad_accum, fixed.global_batch) == (3, 24)  # a fixed-size run is unchanged


def test_a_rank_continues_its_stream_at_the_same_size_and_starts_a_fresh_epoch_at_another():
    p = DataPosition(epoch=3, offset=5, world=2)
    assert p.advance(17, batches_per_epoch=20) == DataPosition(4, 2, 2)
    assert p.for_world(2) is p  # resumed at the same size: exactly where it was
    assert p.for_world(1) == DataPosition(4, 0, 1)  # the next epoch: no replay under the new partition
    assert DataPosition(3, 0, 2).for_world(4) == DataPosition(3, 0, 4)  # at an epoch boundary already
    # checkpoints written before elastic runs kept only the batch count of a fixed-size group
    assert DataPosition.from_state({"batches_seen": 47}, {"world_size": 2}, 20) == DataPosition(2, 7, 2)
    assert DataPosition.from_state({"data_position": p.to_state()}, {}, 20) == p


def test_validation_splits_the_same_batches_over_any_group_and_history_records_sizes():
    for world in (1, 2, 3):
        shares = [[i for i in range(7) if validation_share(i, r, world)] for r in range(world)]
        assert sorted(sum(shares, [])) == list(range(7))  # every batch once, whatever the size
    two = WorldScale.derive(world=2, num_workers=[1, 2], grad_accum=1, batch_size=4)
    one = WorldScale.derive(world=1, num_workers=[1, 2], grad_accum=1, batch_size=4)
    history = two.extend_history([], 0)
    history = two.extend_history(history, 6)  # a restart at the same size adds nothing
    history = one.extend_history(history, 8)
    assert history == [{"from_step": 0, "workers": 2, "grad_accum": 1}, {"from_step": 8, "workers": 1, "grad_accum": 2}]


def test_worker_counts_and_ranges():
    assert worker_range(4) == (4, 4) and worker_range([2, 8]) == (2, 8) and worker_range((1, 1)) == (1, 1)
    for bad, message in (([3, 2], "1 <= min <= max"), ([0, 2], "1 <= min <= max"), (0, "1 <= min <= max"),
                         ([1, 2, 3], "a range"), (True, "a range")):
        with pytest.raises(ConfigError, match=message):
            worker_range(bad)
