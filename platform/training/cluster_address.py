"""Connecting the driver to a Ray cluster by address: which kind of address it is, whether anything answers
there, and one clear error, within a bounded time, when nothing does.

Runs in the driver process (the CLI's, or a submitted job's entrypoint). `ray.init(address=...)` alone has
two failure modes that look like a hang: it retries an unreachable GCS for many minutes while printing
"Failed to connect to GCS" warnings, and it rewrites 127.0.0.1 / localhost into this machine's outward
address before connecting, where a head bound to loopback does not listen. Here the address is parsed,
loopback is kept as given (private_apis.keep_loopback), the port is probed over TCP until a deadline,
and ray.init itself runs under the same deadline; failing any of them raises ClusterUnreachable, which
the CLI prints as one message with exit code 2.

Address forms: `auto` (this machine is a node: RAY_ADDRESS, else the cluster Ray recorded last),
`HOST:PORT` (the head's GCS port, 6379 by default), `ray://HOST:PORT` (Ray Client, 10001 by default).
`http(s)://HOST:8265` is the dashboard's Jobs API, used by `audiostyle submit`, never by ray.init.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from audiostyle.platform.core.errors import AudiostyleError

CONNECT_TIMEOUT_S = float(os.environ.get("AUDIOSTYLE_CONNECT_TIMEOUT_S", "30"))
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


class ClusterUnreachable(AudiostyleError):
    """No Ray cluster answered at the given address within the deadline (printed with exit code 2)."""


@dataclass(frozen=True)
class ClusterAddress:
    """A parsed --address: what ray.init is given, and the host and port that must answer."""

    given: str  # as the user wrote it
    kind: str  # "gcs" | "client" | "jobs"
    host: str
    port: int

    @property
    def for_ray(self) -> str:
        """The address handed to ray.init (or the Jobs client), loopback spelled as 127.0.0.1."""
        host = "127.0.0.1" if self.host == "localhost" else self.host
        hostport = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        if self.kind == "client":
            return f"ray://{hostport}"
        if self.kind == "jobs":
            return f"{urlparse(self.given).scheme}://{hostport}"
        return hostport

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_NAMES or self.host.startswith("127.")


def parse_address(address: str) -> ClusterAddress:
    """`auto`, HOST:PORT, ray://HOST:PORT or http(s)://HOST:PORT; ClusterUnreachable for anything else."""
    text = address.strip()
    if text == "auto":
        return _resolve_auto(text)
    parsed = urlparse(text if "://" in text else f"gcs://{text}")
    kind = {"gcs": "gcs", "ray": "client", "http": "jobs", "https": "jobs"}.get(parsed.scheme)
    default_port = {"gcs": 6379, "client": 10001, "jobs": 8265}.get(kind or "", 0)
    try:
        port = parsed.port or default_port
    except ValueError:
        port = 0
    if kind is None or not parsed.hostname or not port:
        raise ClusterUnreachable(
            f"--address {address!r} is not a Ray address; use HOST:PORT (the head's GCS port, e.g. "
            "10.0.0.5:6379), ray://HOST:10001 (Ray Client), auto (on a cluster node), or "
            "http://HOST:8265 with `audiostyle submit`")
    return ClusterAddress(text, kind, parsed.hostname, port)


def _resolve_auto(text: str) -> ClusterAddress:
    """The address `auto` stands for, found as Ray finds it (RAY_ADDRESS, then the recorded cluster)."""
    from audiostyle.platform.training.private_apis import find_auto_address

    try:
        found = find_auto_address()
    except (ConnectionError, ValueError) as exc:
        raise ClusterUnreachable(
            f"--address auto found no Ray cluster on this machine ({exc}); `auto` means this machine is a "
            "node of a running cluster: start one with `ray start --head`, or give the head's HOST:PORT") from None
    if found is None:
        raise ClusterUnreachable("--address auto found no Ray cluster on this machine; give the head's HOST:PORT")
    host, _, port = found.rpartition(":")
    return ClusterAddress(text, "gcs", host.strip("[]"), int(port))


def unreachable_message(target: ClusterAddress, reason: str, waited_s: float, attempts: int) -> str:
    """One message: what was tried, for how long, and what to check."""
    what = {"gcs": "the head's GCS port", "client": "the Ray Client server", "jobs": "the dashboard's Jobs API"}
    checks = [
        f"the head is running and reachable from here (on the head: `ray status`); {target.host} resolves to it",
    ]
    if target.kind == "gcs":
        checks.append("the port is the GCS port that `ray start --head` printed (6379 unless --port was given); "
                      "the dashboard port 8265 is for `audiostyle submit`, ray://HOST:10001 for Ray Client")
    elif target.kind == "client":
        checks.append("the head runs the Ray Client server (`ray start --head --ray-client-server-port 10001`)")
    else:
        checks.append("the head runs the dashboard (`ray start --head --dashboard-host 0.0.0.0`, needs ray[default])")
    if target.loopback:
        checks.append(f"{target.host} is used as given (Ray alone rewrites a loopback address into this "
                      "machine's outward address, where a head started with --node-ip-address 127.0.0.1 does "
                      "not listen): a head on this machine must listen on loopback, or give its outward address")
    checks.append("no firewall between here and the head drops the port")
    lines = [f"cannot reach a Ray cluster at --address {target.given}: tried {what[target.kind]} "
             f"{target.for_ray} {attempts} time(s) over {waited_s:.0f} s; last result: {reason}", "  check:"]
    lines += [f"  - {c}" for c in checks]
    return "\n".join(lines)


def probe_tcp(target: ClusterAddress, timeout_s: float) -> tuple[float, int]:
    """Wait until something accepts a TCP connection at the target, up to timeout_s; returns (seconds
    waited, attempts). A head still starting refuses for a few seconds, hence the retries."""
    start = time.monotonic()
    attempts, reason = 0, "no attempt"
    while True:
        attempts += 1
        left = timeout_s - (time.monotonic() - start)
        try:
            with socket.create_connection((target.host, target.port), timeout=max(0.5, min(5.0, left))):
                return time.monotonic() - start, attempts
        except OSError as exc:  # refused, timed out, unresolvable name, unreachable network
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        waited = time.monotonic() - start
        if waited + 1.0 >= timeout_s:
            raise ClusterUnreachable(unreachable_message(target, reason, waited, attempts))
        time.sleep(1.0)


def connect(address: str, *, runtime_env: Callable[[], dict[str, Any]],
            timeout_s: float = CONNECT_TIMEOUT_S) -> ClusterAddress:
    """ray.init against `address`, or ClusterUnreachable within about timeout_s (plus the time
    runtime_env() takes, e.g. building the wheel, which runs only once the port answers)."""
    import ray

    from audiostyle.platform.training.private_apis import keep_loopback, without_ray_init_records

    target = parse_address(address)
    if target.kind == "jobs":
        raise ClusterUnreachable(
            f"--address {address} is the dashboard's Jobs API: submit the run as a job with `audiostyle submit "
            f"EXPERIMENT.yaml --address {address}` (or `train --submit`), or connect with HOST:6379 / ray://HOST:10001")
    probed_s, attempts = probe_tcp(target, timeout_s)
    env = runtime_env()
    start = time.monotonic()
    outcome: dict[str, Any] = {}

    def init() -> None:
        try:
            with keep_loopback():
                ray.init(address=target.for_ray, runtime_env=env, log_to_driver=True)
            outcome["ok"] = True
        except Exception as exc:  # surfaced below with the address it was about
            outcome["error"] = exc

    # ray.init retries a port that accepts TCP but is not a GCS for many minutes: bound it by the deadline
    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    # ray.init off the main thread warns that it cannot set its SIGTERM handler: set below, as ray.init would
    with without_ray_init_records("SIGTERM handler is not set"):
        thread.start()
        thread.join(max(5.0, timeout_s - probed_s))
    if "ok" in outcome:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))  # exit through atexit: ray.shutdown
        return target
    reason = (f"{type(outcome['error']).__name__}: {str(outcome['error']).splitlines()[0]}" if "error" in outcome
              else "the port accepts connections but ray.init got no answer from a Ray cluster there")
    raise ClusterUnreachable(unreachable_message(target, reason, probed_s + time.monotonic() - start, attempts))
