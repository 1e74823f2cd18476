"""``raytrain-eff exporter``: run the metrics exporter by hand, or stop the cluster's.

Without a Ray address it serves one ``NodeExporter`` in this process (node memory, and whatever
in-process pushers send). With ``address`` (``"auto"`` for the local cluster) it joins the Ray
cluster, makes sure every alive node runs its exporter actor with these settings (replacing
one started with others), and starts the cluster's file_sd writer on this node
(``discovery.start_file_sd``: ``file_sd`` or the per-cluster default under
``$RAYTRAIN_EFF_FILE_SD_DIR``), which follows nodes joining and leaving on its own; it then
echoes the targets as they change, every ``refresh_s`` seconds. Either way the file_sd records
the port each exporter really listens on (a port in use moves to the next free one).
``stop_cluster`` (``--stop``) ends every exporter and writer of the cluster and removes the
writers' files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from raytrain_eff.monitor.discovery import write_file_sd
from raytrain_eff.monitor.exporter import NodeExporter


def run_exporter(
    host: str = "127.0.0.1",
    port: int = 9464,
    file_sd: str | None = None,
    *,
    address: str | None = None,
    refresh_s: float = 10.0,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = print,
) -> int:
    """Serve until ``stop`` is set (or Ctrl-C); returns a process exit code."""
    stop = stop or threading.Event()
    try:
        if address is None:
            _serve_local(host, port, file_sd, stop, echo)
        else:
            _serve_cluster(host, port, file_sd, address, refresh_s, stop, echo)
    except KeyboardInterrupt:
        pass
    return 0


def stop_cluster(address: str = "auto", echo: Callable[[str], None] = print) -> int:
    """End the exporters and file_sd writers of the cluster at ``address``."""
    import ray

    from raytrain_eff.monitor import discovery

    joined = not ray.is_initialized()
    if joined:
        ray.init(address=address, namespace=discovery.NAMESPACE, log_to_driver=False)
    try:
        stopped = discovery.stop_exporters()
    finally:
        if joined:
            ray.shutdown()
    echo(f"stopped {stopped['exporters']} exporter(s) and {stopped['writers']} file_sd writer(s)")
    return 0


def _serve_local(host, port, file_sd, stop, echo) -> None:
    exporter = NodeExporter(host, port)
    try:
        if file_sd:
            write_file_sd(file_sd, [exporter.address()])
        echo(f"exporter for node {exporter.node_id} at {exporter.url()}")
        while not stop.wait(1.0):
            pass
    finally:
        exporter.close()


def _serve_cluster(host, port, file_sd, address, refresh_s, stop, echo) -> None:
    import ray

    from raytrain_eff.monitor import discovery

    joined = not ray.is_initialized()  # a caller already connected keeps its connection
    if joined:
        ray.init(address=address, namespace=discovery.NAMESPACE, log_to_driver=False)
    try:
        discovery.ensure_exporters(host, port)  # replaces ones with other settings
        path = discovery.start_file_sd(host, port, file_sd, refresh_s=refresh_s)
        echo(f"Prometheus file_sd: {path}")
        seen: list[dict] = []
        while True:
            addresses = discovery.list_exporters()
            if addresses != seen:
                for a in addresses:
                    echo(f"exporter for node {a['node_id']} at {a['url']}")
                seen = addresses
            if stop.wait(refresh_s):
                return
    finally:
        if joined:
            ray.shutdown()
