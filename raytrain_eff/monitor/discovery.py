"""Finding the per-node exporters, and the Prometheus file_sd JSON that lists them.

On a Ray cluster each node runs one ``NodeExporter`` as a detached actor named after the node
id, in the namespace ``NAMESPACE``, pinned to its node (``NodeAffinitySchedulingStrategy``,
``num_cpus=0`` so it never takes a training slot). Whoever needs it first -- a training worker,
the Tune driver, ``raytrain-eff exporter`` -- creates it with ``get_if_exists=True``; everyone
else gets the same actor. Detached, it outlives the run that created it, so finished runs stay
scrapeable for their grace period and the scrape targets stay put between runs.

``write_file_sd`` writes what Prometheus's ``file_sd_configs`` reads::

    [{"targets": ["127.0.0.1:9464"], "labels": {"node_id": "<hex node id>"}}, ...]

one group per exporter. A port that was taken moved the exporter to the next free one; the file
records the port it really listens on. Prometheus re-reads the file when it changes.

Ray is imported inside the functions that need it, so writing a file_sd for an exporter run
outside Ray does not pay for the Ray import.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib

from raytrain_eff.monitor.exporter import WILDCARD_HOSTS, NodeExporter

NAMESPACE = "raytrain_eff_monitor"
ACTOR_PREFIX = "exporter-"
# where clusters/prometheus/prometheus.yml looks for the exporters' targets
DEFAULT_FILE_SD = "/tmp/raytrain_eff/prometheus_file_sd.json"


class _RayNodeExporter(NodeExporter):
    """A NodeExporter that advertises the Ray node's address when bound to all interfaces."""

    def __init__(self, host: str, port: int, node_id: str):
        import ray
        advertise = ray.util.get_node_ip_address() if host in WILDCARD_HOSTS else None
        super().__init__(host=host, port=port, node_id=node_id, advertise_host=advertise)


@functools.cache
def _actor_class():
    import ray
    return ray.remote(_RayNodeExporter)


def node_exporter(host: str = "127.0.0.1", port: int = 9464, node_id: str | None = None):
    """The exporter actor of ``node_id`` (default: the caller's node), created if missing."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    node_id = node_id or ray.get_runtime_context().get_node_id()
    return _actor_class().options(
        name=ACTOR_PREFIX + node_id, namespace=NAMESPACE, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_restarts=-1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote(host, port, node_id)


def ensure_exporters(host: str = "127.0.0.1", port: int = 9464) -> list[dict]:
    """Start (or find) an exporter on every alive node; returns their addresses."""
    import ray
    handles = [node_exporter(host, port, n["NodeID"]) for n in ray.nodes() if n["Alive"]]
    return ray.get([h.address.remote() for h in handles])


def list_exporters(timeout_s: float = 30.0) -> list[dict]:
    """Addresses of every exporter actor now on the cluster, sorted by node id."""
    import ray
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == NAMESPACE and a["name"].startswith(ACTOR_PREFIX)]
    refs = [ray.get_actor(name, namespace=NAMESPACE).address.remote() for name in names]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    addresses = []
    for ref in ready:
        try:
            addresses.append(ray.get(ref))
        except ray.exceptions.RayActorError:   # its node died since the listing
            continue
    return sorted(addresses, key=lambda a: a["node_id"])


def file_sd_groups(addresses: list[dict]) -> list[dict]:
    return [{"targets": [a["target"]], "labels": {"node_id": a["node_id"]}} for a in addresses]


def write_file_sd(path: str | os.PathLike, addresses: list[dict] | None = None) -> list[dict]:
    """Write the file_sd JSON of ``addresses`` (default: every exporter on the cluster).

    The file is replaced atomically so Prometheus never reads half of it.
    """
    groups = file_sd_groups(list_exporters() if addresses is None else addresses)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(groups, indent=2) + "\n")
    tmp.replace(path)
    return groups
