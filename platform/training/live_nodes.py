"""Which nodes of the Ray cluster can take training workers right now, and how many workers they hold.

Runs in the Train controller: the elastic scaling policy sizes a restarted group with it, and the start of
an elastic group gives up with it on a size that cannot be placed (both hooked into Ray Train by
private_apis.py; everything here uses public Ray APIs only).

A node lost without a drain (its processes killed, its machine gone) stays `Alive` in the GCS's node table
until the GCS's health checks give up on it: five missed checks three seconds apart by default, 15 s
measured on a loopback cluster. The resource view and the AutoscalingCoordinator's reservations follow
the node table, so a restart sized in that window asks for the dead node's workers, and Ray Train then
waits out the worker-group start timeout (60 s) before it tries a smaller group. Here a node is live when
the node table says `Alive` **and** its raylet still accepts a TCP connection on its node-manager port:
the port of a killed raylet refuses at once, a vanished machine's port does not answer within
PROBE_TIMEOUT_S. A live raylet's kernel completes the handshake however busy the raylet is, so load
does not make a node look dead.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

# A raylet port that has not answered by then is treated as gone (for this query). Linux resends a lost SYN
# after 1 s and again after 3 s: 2.5 s lets one lost packet pass without shrinking a healthy group.
PROBE_TIMEOUT_S = 2.5
CHECK_EVERY_S = 1.0  # how often a pending elastic start re-checks whether it can still be placed

# Node ids whose raylet refused a connection. A refusal means no process listens on the port any more, and
# a node id never returns (a restarted node registers a new one), so the verdict is kept for the life of
# this process; a silent port is probed again on the next query (it may have been a slow network).
_refused: set[str] = set()


def probe_raylet(host: str, port: int, timeout_s: float = PROBE_TIMEOUT_S) -> bool | None:
    """Whether a raylet's port refuses a TCP connection: True if it refused (nothing listens there any
    more), False if it answered, None if it stayed silent for timeout_s (gone, or an unreachable network)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return None


def live_node_ids(nodes: list[dict[str, Any]] | None = None, *, probe: Callable[[str, int], bool | None] = probe_raylet
                  ) -> set[str]:
    """Ids of the nodes that the GCS's node table calls alive and whose raylet still answers.

    nodes: entries of `ray.nodes()` (the GCS's node table; read now when None). probe(host, port): True if
    the raylet's port refused (dead for good), False if it answered, None if it stayed silent (dead for now).
    The probes run in parallel, so a query costs at most one PROBE_TIMEOUT_S however many nodes are gone.
    """
    if nodes is None:
        import ray

        nodes = ray.nodes()
    candidates = [n for n in nodes if n.get("Alive") and n["NodeID"] not in _refused]
    if not candidates:
        return set()
    with ThreadPoolExecutor(max_workers=min(32, len(candidates))) as pool:
        verdicts = list(pool.map(lambda n: probe(n["NodeManagerAddress"], int(n["NodeManagerPort"])), candidates))
    live = set()
    for node, refused in zip(candidates, verdicts):
        if refused is None:
            logger.info("node %s (%s) is alive in the GCS but its raylet does not answer; not counting it now",
                        node["NodeID"][:8], node["NodeManagerAddress"])
        elif refused:
            logger.warning("node %s (%s) is alive in the GCS but its raylet refuses connections: lost, not "
                           "counting it", node["NodeID"][:8], node["NodeManagerAddress"])
            _refused.add(node["NodeID"])
        else:
            live.add(node["NodeID"])
    return live


def workers_that_fit(node_resources: Iterable[Mapping[str, float]], per_worker: Mapping[str, float]) -> int:
    """How many workers needing `per_worker` fit on nodes with these resources (no worker spans two nodes);
    a huge number if a worker needs nothing (the caller caps it)."""
    needs = {name: amount for name, amount in per_worker.items() if amount > 0}
    if not needs:
        return 1 << 30
    return sum(int(min(resources.get(name, 0.0) // amount for name, amount in needs.items()))
               for resources in node_resources)


def only_live(per_node: Mapping[str, Any], live: set[str]) -> dict[str, Any]:
    """The entries of a node-id-keyed mapping (the coordinator's reservations) that are on live nodes."""
    return {node_id: value for node_id, value in per_node.items() if node_id in live}


def live_capacity(per_worker: Mapping[str, float], nodes: list[dict[str, Any]] | None = None) -> int:
    """Workers of this shape that the live nodes' total resources hold (what is in use elsewhere counts as
    free: this says what can never be placed, not what can be placed now)."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    live = live_node_ids(nodes)
    return workers_that_fit((n.get("Resources", {}) for n in nodes if n["NodeID"] in live), per_worker)


def wait_unless_unplaceable(wait: Callable[[float], bool], workers: int, capacity: Callable[[], int],
                            timeout_s: float, *, check_every_s: float = CHECK_EVERY_S) -> bool:
    """Wait up to timeout_s for a placement group of `workers` bundles (`wait(seconds)` -> ready), giving
    up as soon as `capacity()` says the live nodes cannot hold that many: a start sized from a view that
    still held a lost node then fails within seconds and is retried at the size the cluster has, instead
    of after the whole timeout. Returns whether the group was placed."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if wait(max(0.0, min(check_every_s, remaining))):
            return True
        if deadline - time.monotonic() <= 0:
            return False
        room = capacity()
        if room < workers:
            logger.warning("the live nodes hold %d worker(s), not the %d this start asked for: giving up the "
                           "start now, not after the %.0f s start timeout", room, workers, timeout_s)
            return False
