"""Multi-node correctness, checked on the driver before any Train worker starts.

One run directory, ``<run.storage_path>/<run.name>``, is written from several places: the
driver writes ``config.yaml``, every Ray Train worker persists its checkpoint shard there, and
rank 0 rewrites ``metrics.parquet`` and ``summary.json``. A restart after a lost node reads the
latest checkpoint back from it, possibly on another node. On a multi-node cluster that directory
must therefore be one filesystem seen by all nodes: a ``pyarrow.fs`` URI (``s3://``, ``gs://``,
``hdfs://``) or a shared mount (NFS, EFS, Filestore, Lustre) at the same path on every node.

A plain path cannot say which of the two it is, so the check asks the cluster: the driver writes
a marker holding a random nonce under the storage path and one zero-CPU task pinned to each
alive node reads it back. A node that cannot read the nonce has a disk of its own there, and the
run stops with an error naming the nodes before the trainer starts — instead of checkpoints split
across disks and a restart that silently begins again from step 0.

Ranks are Ray Train's: workers are grouped by node, so ``world_rank`` is contiguous per node and
``local_rank`` / ``node_rank`` come from ``ray.train.get_context()``.
"""

from __future__ import annotations

import os
import secrets

from raytrain_eff.config import ExperimentConfig
from raytrain_eff.engine import storage

MARKER_PREFIX = ".raytrain_eff-shared-"
PROBE_TIMEOUT_S = 120.0  # a busy node may take a while to start a worker process


class StorageNotSharedError(ValueError):
    """run.storage_path is a node-local path on a multi-node cluster."""


def local_path(storage_path: str) -> str | None:
    """The filesystem path behind ``storage_path``, or None for a remote URI (shared by design)."""
    if storage_path.startswith("file://"):
        return storage_path[len("file://") :]
    return None if "://" in storage_path else storage.resolve(storage_path)


def storage_error(storage_path: str, seen: dict[str, bool]) -> str | None:
    """The error for nodes that could not read the driver's marker (``seen``: node id -> read)."""
    blind = sorted(node for node, ok in seen.items() if not ok)
    if len(seen) < 2 or not blind:
        return None
    return (
        f"run.storage_path={storage_path} is not shared by the cluster's nodes: "
        f"{len(blind)} of {len(seen)} nodes ({', '.join(n[:12] for n in blind)}) cannot read "
        f"a file the driver wrote there. Every node writes checkpoints and metrics to the run "
        f"directory and a restart reads them back, so a multi-node run needs a cloud URI "
        f"(run.storage_path=s3://BUCKET/runs, gs://BUCKET/runs) or a shared filesystem "
        f"mounted at the same path on every node (NFS, EFS, Filestore)"
    )


def alive_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]


def _read_marker(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def probe(directory: str, nodes: list[str], timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, bool]:
    """Node id -> whether a task on that node reads the nonce the driver wrote in ``directory``."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    os.makedirs(directory, exist_ok=True)
    nonce = secrets.token_hex(16)
    marker = os.path.join(directory, MARKER_PREFIX + nonce)
    with open(marker, "w") as f:
        f.write(nonce)
    try:
        read = ray.remote(num_cpus=0, max_retries=0)(_read_marker)
        refs = [
            read.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
            ).remote(marker)
            for node in nodes
        ]
        texts = ray.get(refs, timeout=timeout_s)
        return {node: text == nonce for node, text in zip(nodes, texts, strict=True)}
    finally:
        os.remove(marker)


def check_storage(cfg: ExperimentConfig, storage_path: str | None = None) -> None:
    """Raise StorageNotSharedError when a multi-node run would write to node-local disks.

    Call after Ray is connected and before the trainer is built; ``storage_path`` overrides the
    config's (Tune trials). Remote URIs, local mode and single-node clusters need no probe.
    """
    given = storage_path or cfg.run.storage_path
    directory = local_path(given)
    if directory is None or cfg.scaling.num_workers == 0:
        return
    nodes = alive_nodes()
    if len(nodes) < 2:
        return
    message = storage_error(given, probe(directory, nodes))
    if message:
        raise StorageNotSharedError(message)
