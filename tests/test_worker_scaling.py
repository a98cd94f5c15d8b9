"""What a training rank derives from the world size of an elastic run (no Ray): the global batch kept by
accumulation, where each rank's data stream continues, the validation split, the size history; the
`scaling.num_workers` range a config may give; and, on the controller's side, which nodes count as live
and how many workers they hold (live_nodes.py, on a fake node table)."""

from __future__ import annotations

import pytest

from audiostyle.platform.config.field_domains import worker_range
from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.training.live_nodes import (
    live_node_ids,
    only_live,
    wait_unless_unplaceable,
    workers_that_fit,
)
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


def node(node_id: str, *, alive: bool = True, cpus: float = 1.0, port: int = 7000) -> dict:
    """An entry of ray.nodes() as the GCS's node table gives it."""
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "127.0.0.1", "NodeManagerPort": port,
            "Resources": {"CPU": cpus, "memory": 1e9}}


def test_a_node_counts_as_live_while_the_gcs_says_alive_and_its_raylet_answers():
    # the GCS still says Alive for a killed node (its health checks take ~15 s): its refused port tells
    table = [node("live-a", port=1), node("killed-b", port=2), node("dead-c", alive=False, port=3),
             node("silent-d", port=4)]
    verdicts = {1: False, 2: True, 3: False, 4: None}  # port -> refused? (None: no answer in time)
    probed: list[int] = []

    def probe(host: str, port: int) -> bool | None:
        probed.append(port)
        return verdicts[port]

    assert live_node_ids(table, probe=probe) == {"live-a"}
    assert sorted(probed) == [1, 2, 4]  # a node the GCS has declared dead is not probed
    probed.clear()
    verdicts.update({2: False, 4: False})  # a refusal is final (node ids never return); silence is not
    assert live_node_ids(table, probe=probe) == {"live-a", "silent-d"} and sorted(probed) == [1, 4]


def test_workers_are_counted_on_live_nodes_only():
    per_worker = {"CPU": 1.0, "GPU": 0.0}
    assert workers_that_fit([{"CPU": 1.0}, {"CPU": 3.5}, {}], per_worker) == 4  # no worker spans two nodes
    assert workers_that_fit([{"CPU": 4.0, "GPU": 1.0}], {"CPU": 1.0, "GPU": 1.0}) == 1
    reserved = {"live-a": {"CPU": 1.0}, "killed-b": {"CPU": 1.0}}
    assert workers_that_fit(only_live(reserved, {"live-a"}).values(), per_worker) == 1


def test_an_elastic_start_gives_up_once_the_live_nodes_cannot_hold_it():
    import time

    rooms = iter([2, 2, 1])  # the node is found dead at the third check
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    started = time.monotonic()
    assert not wait_unless_unplaceable(wait, 2, lambda: next(rooms), timeout_s=60, check_every_s=0.01)
    assert len(waits) == 3 and time.monotonic() - started < 5  # not the 60 s start timeout
    assert wait_unless_unplaceable(lambda s: True, 2, lambda: 0, timeout_s=60)  # placed: done
    started = time.monotonic()  # placeable but not placed (resources busy elsewhere): the whole timeout
    assert not wait_unless_unplaceable(lambda s: time.sleep(s) or False, 2, lambda: 2, timeout_s=0.3,
                                       check_every_s=0.05)
    assert 0.3 <= time.monotonic() - started < 2
