"""Getting a Ray runtime to train on: the embedded local instance or a cluster, storage and code shipping.

Runs in the driver process (the CLI's, or a Tune trial's driver, which finds Ray already running).

- Embedded (no address): always a fresh `ray.init(address="local")` in-process on this machine, bound to
  loopback, no dashboard, one CPU slot per core (at least enough for the requested workers), one BLAS
  thread per worker process.
- Cluster (`auto`, `HOST:PORT` or `ray://HOST:PORT`; cluster_address.py connects): the workers need the
  package. From a source checkout it is built into a wheel whose `audiostyle/` folder is shipped with
  the job's runtime environment (`py_modules`); the `platform/` folder is
  never put on anyone's path, since as a top-level `platform` it would shadow the standard library.
  An installed (non-editable) package is assumed to be in the cluster's image as well.
- Storage: every node writes checkpoints to `storage_path`, so on a multi-node cluster a plain local
  folder is refused with an explanation, unless it is on a network filesystem or declared shared.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from audiostyle.platform.core.errors import ConfigError
from audiostyle.platform.core.locations import is_url

logger = logging.getLogger(__name__)

# Filesystem types that every node can mount at the same path (read from /proc/mounts).
NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "glusterfs", "cephfs", "ceph",
                       "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.sshfs", "9p", "efs"}
SHARED_STORAGE_ENV = "AUDIOSTYLE_SHARED_STORAGE"  # set to 1 to vouch that a local-looking path is shared
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray in the entrypoint process of a Ray Job


def worker_env_vars(threads: int) -> dict[str, str]:
    """Thread caps for worker processes: without them each of N workers starts one BLAS thread per core.
    And the workers' priority: Ray renices every worker by +15, so any ordinary process beside a training
    (an evaluation, a browser) took almost all of the cores from it; +0 keeps the priority the user started
    `audiostyle` with (`nice audiostyle train` still lowers it)."""
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "TOKENIZERS_PARALLELISM": "false", "RAY_worker_niceness": "0"}


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding `path` (longest matching mount point in /proc/mounts)."""
    target = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3:
                    mount = parts[1].replace("\\040", " ")
                    inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                    if inside and len(mount) > len(best):
                        best, fstype = mount, parts[2]
    except OSError:
        pass
    return fstype


def alive_node_count() -> int:
    import ray

    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_shared_storage(storage_path: str, *, num_nodes: int | None = None) -> None:
    """Refuse a node-local storage path on a multi-node cluster, saying why and what to use instead."""
    if is_url(storage_path):
        return
    nodes = alive_node_count() if num_nodes is None else num_nodes
    if nodes <= 1 or os.environ.get(SHARED_STORAGE_ENV) == "1":
        return
    fstype = filesystem_type(storage_path)
    if fstype in NETWORK_FILESYSTEMS:
        return
    raise ConfigError(
        f"storage path {storage_path} is on a local '{fstype}' filesystem, but the cluster has {nodes} nodes: "
        "workers on other nodes would write checkpoints to their own disks, where no one can find them, and "
        "a restarted run could not resume",
        path="run.storage_path",
        hint="use shared storage: an object store (--storage s3://bucket/runs or gs://...) or an NFS/Lustre "
             f"mount present at the same path on every node; if this path is such a mount, set {SHARED_STORAGE_ENV}=1",
    )


def source_checkout() -> Path | None:
    """The repository root when the package runs from a source tree (editable install), else None."""
    import audiostyle.platform.config.schema as anchor  # <root>/platform/config/schema.py

    root = Path(anchor.__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "platform").is_dir() else None


def clean_source_copy(source: Path, dest: Path) -> Path:
    """Copy what a wheel is built from (pyproject.toml, README.md, the mapped package folders) to `dest`.

    Building in the checkout itself reuses its ignored build/lib, where setuptools never deletes a module
    removed from the source: the wheel would ship modules that no longer exist, importing names that
    no longer exist, to every cluster node."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    pyproject = source / "pyproject.toml"
    folders = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"].values()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(source / name, dest / name)
    for folder in folders:
        shutil.copytree(source / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def build_wheel(out_dir: str | Path, source: Path | None = None) -> Path:
    """Build the audiostyle wheel from the source checkout into out_dir; returns its path."""
    source = source or source_checkout()
    if source is None:
        raise RuntimeError("no source checkout to build a wheel from")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="audiostyle-source-") as tmp:
        clean = clean_source_copy(Path(source), Path(tmp))
        # --no-build-isolation: setuptools is already here and the cluster nodes may have no index to fetch it
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
               str(clean)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the audiostyle wheel failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(out.glob("audiostyle-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip wheel produced no audiostyle wheel in {out}")
    return wheels[-1]


def cluster_runtime_env(threads: int) -> dict[str, Any]:
    """The job runtime environment for a cluster: thread caps plus the package when running from source."""
    from audiostyle.platform.training.private_apis import SETUP_HOOK

    env: dict[str, Any] = {"env_vars": worker_env_vars(threads), "worker_process_setup_hook": SETUP_HOOK}
    if os.environ.get(JOB_CONFIG_ENV):
        # inside a Ray Job (audiostyle submit): the job's runtime env already carries the package, and
        # Ray refuses to merge a second py_modules into it
        return env
    package = package_for_cluster()
    if package is not None:
        env["py_modules"] = [str(package)]
    return env


def package_for_cluster() -> Path | None:
    """The `audiostyle` folder of a freshly built wheel, to ship as a py_module when running from a source
    checkout; None for an installed package (the cluster's image is assumed to hold it too).

    The wheel's contents are shipped rather than the .whl itself: Ray installs a py_modules wheel with
    `pip install --target`, dependencies included, so every node would download torch (GBs) and a second
    Ray that shadows its own. Unpacked, the folder lands on the workers' path and nothing else changes.
    """
    if source_checkout() is None:
        logger.info("using the audiostyle installed in the cluster's image")
        return None
    out = Path(tempfile.mkdtemp(prefix="audiostyle-package-"))
    wheel = build_wheel(out / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(out / "unpacked", [n for n in archive.namelist() if n.startswith("audiostyle/")])
    logger.info("shipping %s (unpacked) to the cluster through the runtime environment", wheel.name)
    return out / "unpacked" / "audiostyle"


def ensure_ray(address: str | None, *, num_cpus: int, num_gpus: int | None = None, threads: int = 1) -> bool:
    """Start the embedded Ray, or connect to `address`; returns True if this call started/connected Ray.

    No address always starts a fresh local instance (`address="local"`), never one Ray recorded
    earlier: a leftover head on this machine must not turn the embedded default into a cluster run.
    It binds loopback only (see private_apis.keep_loopback). An already initialized Ray (a Tune
    trial's driver, a test fixture) is used as it is. An unreachable address raises ClusterUnreachable
    within about 30 s (cluster_address.connect).
    """
    import ray

    from audiostyle.platform.training.cluster_address import connect

    if ray.is_initialized():
        return False
    if address is None:
        start_local_ray(max(num_cpus, os.cpu_count() or 1), num_gpus=num_gpus, env_vars=worker_env_vars(threads))
    else:
        connect(address, runtime_env=lambda: cluster_runtime_env(threads))
    return True


def start_local_ray(num_cpus: int, *, num_gpus: int | None = None, env_vars: dict[str, str] | None = None) -> None:
    """A fresh Ray instance in this process (`address="local"`), bound to loopback, no dashboard: the
    embedded default of the CLI, and the Ray of the tests and benchmarks."""
    import ray

    from audiostyle.platform.training.private_apis import SETUP_HOOK, keep_loopback

    with keep_loopback():
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=True,
                 runtime_env={"env_vars": env_vars or worker_env_vars(1), "worker_process_setup_hook": SETUP_HOOK})
