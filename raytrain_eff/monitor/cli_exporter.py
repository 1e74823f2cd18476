"""``raytrain-eff exporter``: run the metrics exporter by hand.

Without a Ray address it serves one ``NodeExporter`` in this process (node memory, and whatever
in-process pushers send). With ``address`` (``"auto"`` for the local cluster) it joins the Ray
cluster, makes sure every alive node runs its exporter actor, and keeps the file_sd JSON up to
date as nodes come and go, every ``refresh_s`` seconds. Either way the file_sd records the port
each exporter really listens on (a port in use moves to the next free one).
"""
from __future__ import annotations

import threading
from typing import Callable

from raytrain_eff.monitor.discovery import write_file_sd
from raytrain_eff.monitor.exporter import NodeExporter


def run_exporter(host: str = "127.0.0.1", port: int = 9464, file_sd: str | None = None, *,
                 address: str | None = None, refresh_s: float = 10.0,
                 stop: threading.Event | None = None, echo: Callable[[str], None] = print) -> int:
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
    ray.init(address=address, namespace=discovery.NAMESPACE, log_to_driver=False)
    try:
        seen: list[dict] = []
        while True:
            addresses = sorted(discovery.ensure_exporters(host, port), key=lambda a: a["node_id"])
            if addresses != seen:
                if file_sd:
                    write_file_sd(file_sd, addresses)
                for a in addresses:
                    echo(f"exporter for node {a['node_id']} at {a['url']}")
                seen = addresses
            if stop.wait(refresh_s):
                return
    finally:
        ray.shutdown()
