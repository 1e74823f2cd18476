"""Finding the per-node exporters, and the Prometheus file_sd JSON that follows the cluster.

**Exporters.** On a Ray cluster each node runs one ``NodeExporter`` as a detached actor named
after the node id, in the namespace ``NAMESPACE``, pinned to its node
(``NodeAffinitySchedulingStrategy``, ``num_cpus=0`` so it never takes a training slot). Whoever
needs it first -- a training worker, the Tune driver, ``raytrain-eff exporter`` -- creates it;
everyone else gets the same actor. One asking for other settings (host, port) than the
running exporter's replaces it. Detached, it outlives the run that created it, so finished runs
stay scrapeable for their grace period; ``stop_exporters`` (``raytrain-eff exporter --stop``)
ends them all.

**Addresses.** ``monitor.host`` says what an exporter binds to and so what it advertises:

============================  ===========================  ================================
``monitor.host``              binds                        advertises
============================  ===========================  ================================
``127.0.0.1`` (default)       loopback only                ``127.0.0.1`` (same machine only)
``node``                      the Ray node's IP            the node's IP
``0.0.0.0`` / ``::``          every interface              the node's IP
any other address             that address                 that address
============================  ===========================  ================================

A node may impose its own with the environment variable ``HOST_ENV`` (the cluster configs set
``node`` in every ``ray start``), which wins over the run's. The port is the first free one from
``monitor.port`` on that node, so two Ray nodes on one machine (test clusters) get two ports.

**file_sd.** A detached ``FileSdWriter`` actor on the node that started the run (the head, where
Prometheus runs) owns one file per cluster, ``<dir>/cluster-<key>.json`` under
``$RAYTRAIN_EFF_FILE_SD_DIR`` (default ``DEFAULT_FILE_SD_DIR``; ``clusters/prometheus`` reads
``*.json`` there). Every ``refresh_s`` seconds, on every training attempt (rank 0 asks) and at
each run's start it starts exporters on nodes that joined, drops the targets of nodes that
left (and ends their exporters), and rewrites the file atomically if it changed. The file holds
the cluster's live exporters, not a run's, so concurrent runs on one cluster share it and runs
on two clusters write two files: none clobbers another. Each group is::

    {"targets": ["10.0.0.12:9464"], "labels": {"node_id": "<hex node id>"}}

A loopback target of another machine is left out (a Prometheus there would scrape its own
node's exporter instead): set ``monitor.host`` for a cluster of several machines.

**Stale files.** A file names live targets only while its writer lives. The writer removes it
when it is closed (``raytrain-eff exporter --stop``, or the end of a ``train`` that started its
own local Ray), and holds a lease beside it (``.cluster-<key>.lease``: host, pid, expiry) that
it renews on every refresh. Every writer, on start and on each refresh, removes the files of the
directory whose lease has run out or whose writer process on this host is gone -- a killed run
leaves nothing that a later exporter on the same address would be scraped through twice. The
shipped ``prometheus.yml`` also names targets by address, so two files that still name one
address give one target.

Ray is imported inside the functions that need it, so writing a file_sd for an exporter run
outside Ray does not pay for the Ray import.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import socket
import threading
import time
from typing import Any

from raytrain_eff.monitor.exporter import WILDCARD_HOSTS, NodeExporter

# A handle to one of our named actors, found by name (``ray.get_actor``): untyped in Ray.
ActorRef = Any

NAMESPACE = "raytrain_eff_monitor"
ACTOR_PREFIX = "exporter-"
WRITER_PREFIX = "file-sd-"
HOST_ENV = "RAYTRAIN_EFF_MONITOR_HOST"  # a node's own monitor.host, over the run's
FILE_SD_DIR_ENV = "RAYTRAIN_EFF_FILE_SD_DIR"
# where clusters/prometheus/prometheus.yml looks for the exporters' targets (*.json)
DEFAULT_FILE_SD_DIR = "/tmp/raytrain_eff/file_sd"
NODE_HOST = "node"
LEASE_S = 60.0  # a file whose writer has not renewed its lease for this long is stale
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def bind_and_advertise(host: str, node_ip: str) -> tuple[str, str]:
    """(address to bind, address to advertise) for ``monitor.host`` on a node at ``node_ip``."""
    host = os.environ.get(HOST_ENV) or host
    if host == NODE_HOST:
        return node_ip, node_ip
    if host in WILDCARD_HOSTS:
        return host, node_ip
    return host, host


class _RayNodeExporter(NodeExporter):
    """A NodeExporter on a Ray node: binds and advertises as ``monitor.host`` says."""

    def __init__(self, host: str, port: int, node_id: str):
        import ray

        self.node_ip = ray.util.get_node_ip_address()
        self._settings = {"host": host, "port": port}
        bind, advertise = bind_and_advertise(host, self.node_ip)
        super().__init__(host=bind, port=port, node_id=node_id, advertise_host=advertise)

    def settings(self) -> dict:
        """What it was asked for (not the port it moved to): a different request replaces it."""
        return dict(self._settings)

    def address(self) -> dict[str, str]:
        return {**super().address(), "node_ip": self.node_ip}


@functools.cache
def _actor_class():
    import ray

    return ray.remote(_RayNodeExporter)


def _pinned(node_id: str):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def node_exporter(
    host: str = "127.0.0.1", port: int = 9464, node_id: str | None = None, *, replace: bool = True
):
    """The exporter actor of ``node_id`` (default: the caller's node), created if missing and,
    with ``replace``, started anew if it runs with other settings."""
    import ray

    node_id = node_id or ray.get_runtime_context().get_node_id()
    name = ACTOR_PREFIX + node_id

    def get_or_create():
        return (
            _actor_class()
            .options(
                name=name,
                namespace=NAMESPACE,
                get_if_exists=True,
                lifetime="detached",
                num_cpus=0,
                max_restarts=-1,
                scheduling_strategy=_pinned(node_id),
            )
            .remote(host, port, node_id)
        )

    handle = get_or_create()
    if replace and ray.get(handle.settings.remote()) != {"host": host, "port": port}:
        _end({name: handle})
        handle = get_or_create()
    return handle


def _end(actors: dict[str, ActorRef], timeout_s: float = 30.0) -> None:
    """Close (the HTTP port is free when this returns), kill, and wait until the names are free."""
    import ray

    refs = [handle.close.remote() for handle in actors.values()]
    ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    for handle in actors.values():
        ray.kill(handle)
    for name, handle in actors.items():
        _wait_released(name, handle, timeout_s)


def _wait_released(name: str, old, timeout_s: float = 30.0) -> None:
    """Wait until the name of a killed actor is free (or taken by a new one)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            current = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return
        if current._actor_id != old._actor_id:
            return
        time.sleep(0.1)
    raise TimeoutError(f"actor {name} did not release its name within {timeout_s} s")


def _named(prefix: str) -> dict[str, ActorRef]:
    """{name: handle} of this package's actors whose name starts with ``prefix``."""
    import ray

    names = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)
    ]
    handles = {}
    for name in names:
        try:
            handles[name] = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # killed since the listing
            continue
    return handles


def _alive_nodes() -> set[str]:
    import ray

    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def ensure_exporters(
    host: str = "127.0.0.1", port: int = 9464, *, replace: bool = True
) -> list[dict]:
    """Start (or find) an exporter on every alive node; returns their addresses."""
    import ray

    handles = [node_exporter(host, port, n, replace=replace) for n in sorted(_alive_nodes())]
    return ray.get([h.address.remote() for h in handles])


def exporter_handles() -> list:
    """Handles of the exporters on alive nodes. Those of nodes that left are ended: pinned to
    their node and restartable, they would otherwise wait for it forever."""
    import ray

    alive, handles = _alive_nodes(), []
    for name, handle in _named(ACTOR_PREFIX).items():
        if name[len(ACTOR_PREFIX) :] in alive:
            handles.append(handle)
        else:
            ray.kill(handle)
    return handles


def list_exporters(timeout_s: float = 30.0) -> list[dict]:
    """Addresses of the exporters on the cluster's alive nodes, sorted by node id."""
    import ray

    refs = [h.address.remote() for h in exporter_handles()]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    addresses = []
    for ref in ready:
        try:
            addresses.append(ray.get(ref))
        except ray.exceptions.RayActorError:  # its node died since the listing
            continue
    return sorted(addresses, key=lambda a: a["node_id"])


def reachable_from(addresses: list[dict], node_ip: str) -> list[dict]:
    """The addresses a scraper on ``node_ip`` can reach: loopback ones of its own IP only."""
    return [
        a
        for a in addresses
        if a["target"].rsplit(":", 1)[0].strip("[]") not in LOOPBACK_HOSTS
        or a.get("node_ip", node_ip) == node_ip
    ]


def file_sd_groups(addresses: list[dict]) -> list[dict]:
    return [{"targets": [a["target"]], "labels": {"node_id": a["node_id"]}} for a in addresses]


def write_file_sd(path: str | os.PathLike, addresses: list[dict] | None = None) -> list[dict]:
    """Write the file_sd JSON of ``addresses`` (default: every exporter on the cluster).

    The file is replaced atomically so Prometheus never reads half of it.
    """
    groups = file_sd_groups(list_exporters() if addresses is None else addresses)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(groups, indent=2) + "\n")
    tmp.replace(path)
    return groups


# -- the file_sd that follows the cluster -------------------------------------------------------
def file_sd_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get(FILE_SD_DIR_ENV) or DEFAULT_FILE_SD_DIR)


def cluster_file_sd(directory: str | os.PathLike | None = None) -> pathlib.Path:
    """``<dir>/cluster-<key>.json`` of the connected cluster (key: a hash of its GCS address)."""
    import ray

    key = hashlib.sha256(ray.get_runtime_context().gcs_address.encode()).hexdigest()[:12]
    return pathlib.Path(directory or file_sd_dir()) / f"cluster-{key}.json"


def lease_path(file_sd: pathlib.Path) -> pathlib.Path:
    return file_sd.with_name(f".{file_sd.stem}.lease")


def renew_lease(file_sd: pathlib.Path, lease_s: float = LEASE_S) -> None:
    """Say that ``file_sd``'s writer (this process) is alive for ``lease_s`` more seconds."""
    lease = {"host": socket.gethostname(), "pid": os.getpid(), "until": time.time() + lease_s}
    path = lease_path(file_sd)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(lease))
    tmp.replace(path)


def _lease_alive(file_sd: pathlib.Path, now: float) -> bool:
    try:
        lease = json.loads(lease_path(file_sd).read_text())
    except (OSError, ValueError):  # no lease: written by hand, or before leases
        return True
    if lease["until"] < now:
        return False
    if lease["host"] != socket.gethostname():
        return True  # another machine's writer: trust its lease
    try:
        os.kill(int(lease["pid"]), 0)  # signal 0: does the writer's process still exist?
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


def sweep_stale(directory: pathlib.Path, keep: pathlib.Path | None = None) -> list[str]:
    """Remove the cluster files of ``directory`` whose writer is gone (lease run out, or its
    process on this host dead), with their leases; returns the names removed."""
    removed, now = [], time.time()
    for path in sorted(directory.glob("cluster-*.json")):
        if path == keep or _lease_alive(path, now):
            continue
        path.unlink(missing_ok=True)
        lease_path(path).unlink(missing_ok=True)
        removed.append(path.name)
    return removed


class FileSdWriter:
    """Keeps one file_sd up to date with the cluster's live exporters (a detached actor)."""

    def __init__(self, path: str, host: str, port: int, refresh_s: float):
        import ray

        self.path, self.refresh_s = pathlib.Path(path), float(refresh_s)
        self.node_ip = ray.util.get_node_ip_address()
        self._settings = (host, port)
        self._written: list[dict] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def configure(self, host: str, port: int) -> None:
        """The settings for exporters it starts on nodes that join."""
        self._settings = (host, port)

    def refresh(self) -> list[dict]:
        """Exporters on joined nodes, dead targets dropped, the file rewritten if it changed,
        the lease renewed and dead writers' files removed."""
        with self._lock:
            ensure_exporters(*self._settings, replace=False)
            addresses = reachable_from(list_exporters(timeout_s=10), self.node_ip)
            groups = file_sd_groups(addresses)
            renew_lease(self.path, max(LEASE_S, 3 * self.refresh_s))
            if groups != self._written or not self.path.exists():
                write_file_sd(self.path, addresses)
                self._written = groups
            sweep_stale(self.path.parent, keep=self.path)
            return groups

    def close(self) -> None:
        """Stop following the cluster and remove the file (its targets go with it)."""
        self._stop.set()
        with self._lock:
            self.path.unlink(missing_ok=True)
            lease_path(self.path).unlink(missing_ok=True)

    def file(self) -> str:
        return str(self.path)

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
            except Exception as err:  # noqa: BLE001 -- a node died mid-refresh: next time
                print(f"file_sd refresh failed: {err!r}", flush=True)


def start_file_sd(
    host: str = "127.0.0.1",
    port: int = 9464,
    path: str | os.PathLike | None = None,
    refresh_s: float = 5.0,
) -> str:
    """Make sure this node's writer keeps ``path`` (default ``cluster_file_sd()``) current and
    rewrite it now; returns the path."""
    import ray

    path = str(path or cluster_file_sd())
    node_id = ray.get_runtime_context().get_node_id()
    name = f"{WRITER_PREFIX}{node_id}-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    writer: ActorRef = (
        ray.remote(FileSdWriter)
        .options(
            name=name,
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            num_cpus=0,
            max_concurrency=4,
            scheduling_strategy=_pinned(node_id),
        )
        .remote(path, host, port, refresh_s)
    )
    ray.get(writer.configure.remote(host, port))
    ray.get(writer.refresh.remote())
    return path


def refresh_file_sd(wait: bool = False) -> None:
    """Ask every writer to rewrite its file now (a new training attempt starts)."""
    import ray

    refs = [w.refresh.remote() for w in _named(WRITER_PREFIX).values()]
    if wait:
        ray.get(refs)


def stop_file_sd() -> int:
    """End this cluster's writers, removing their files; returns how many there were."""
    writers = _named(WRITER_PREFIX)
    _end(writers)
    return len(writers)


def stop_exporters() -> dict[str, int]:
    """End every writer (removing its file) and every exporter of the cluster."""
    writers, exporters = _named(WRITER_PREFIX), _named(ACTOR_PREFIX)
    _end(writers)  # first: a writer would start exporters again
    _end(exporters)
    return {"writers": len(writers), "exporters": len(exporters)}
