"""The per-node Prometheus exporter: one HTTP ``/metrics`` endpoint per Ray node.

Workers on the node push windows of step statistics (``monitor.push``); the exporter keeps the
running state -- counters, last gauge values, the step-time histogram -- so values persist
between pushes and between scrapes. Node memory (total, used, available) is read from
``/proc/meminfo`` at scrape time (sysconf elsewhere), so the dashboard works where Ray's own
metrics export is off. When a run finishes its series stay for a grace period, long enough for
Prometheus to scrape the final values, and are then dropped so finished runs do not pile up.

The class is plain Python: the Ray glue (``monitor.discovery``) runs it as a per-node actor, and
``raytrain-eff exporter`` or a Ray-less process runs it in-process. The HTTP server is
prometheus_client's, bound to the configured host; a port in use moves to the next free one.
"""

from __future__ import annotations

import bisect
import dataclasses
import errno
import os
import socket
import threading
import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import start_http_server

from raytrain_eff.monitor import metrics as M

WorkerKey = tuple[str, str, str]  # (run, trial, rank); node_id is the exporter's own
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def node_memory() -> dict[str, float]:
    """Total, used and available physical memory of this node, in bytes."""
    try:
        with open("/proc/meminfo") as f:
            kib = {line.split(":")[0]: float(line.split()[1]) for line in f}
        total, available = kib["MemTotal"] * 1024, kib["MemAvailable"] * 1024
    except (OSError, KeyError, IndexError, ValueError):  # not Linux: free pages stand in
        page = os.sysconf("SC_PAGE_SIZE")
        total = float(os.sysconf("SC_PHYS_PAGES") * page)
        available = float(os.sysconf("SC_AVPHYS_PAGES") * page)
    return {"total": total, "used": total - available, "available": available}


@dataclasses.dataclass
class _WorkerSeries:
    counters: dict[str, float] = dataclasses.field(default_factory=dict)  # stat -> running total
    rates: dict[str, float] = dataclasses.field(default_factory=dict)
    gauges: dict[str, float] = dataclasses.field(default_factory=dict)
    method: dict[str, float] = dataclasses.field(default_factory=dict)
    # non-cumulative counts per bucket of STEP_TIME_BUCKETS, the last one for +Inf
    buckets: list[int] = dataclasses.field(
        default_factory=lambda: [0] * (len(M.STEP_TIME_BUCKETS) + 1)
    )
    time_sum: float = 0.0
    last_push: float = 0.0  # unix seconds
    expires_at: float | None = None  # monotonic seconds; None while the run is live
    generation: str = ""  # the training attempt that pushes this series

    def apply(self, delta: dict) -> None:
        self.counters[M.STEPS_KEY] = self.counters.get(M.STEPS_KEY, 0.0) + delta["steps"]
        for key, amount in delta["sums"].items():
            self.counters[key] = self.counters.get(key, 0.0) + amount
        # absolute values (run totals restored from a checkpoint) override the summed deltas
        self.counters.update(delta.get("totals", {}))
        for t in delta["step_times"]:
            self.buckets[bisect.bisect_left(M.STEP_TIME_BUCKETS, t)] += 1
            self.time_sum += t
        self.rates.update(delta["rates"])
        for key, value in delta["last"].items():
            (self.gauges if key in M.GAUGES else self.method)[key] = value
        self.last_push = delta["time"]
        self.expires_at = None  # a pushing run is live again


@dataclasses.dataclass
class _TuneSeries:
    values: dict[str, float] = dataclasses.field(default_factory=dict)
    expires_at: float | None = None


def _serve(registry: CollectorRegistry, host: str, port: int, tries: int):
    """Start the HTTP server on ``port`` or the next free port after it."""
    for candidate in range(port, port + tries) if port else [0]:
        try:
            return start_http_server(candidate, addr=host, registry=registry)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
    raise OSError(errno.EADDRINUSE, f"no free port in {port}..{port + tries - 1} on {host}")


class NodeExporter:
    """Holds this node's metric state and serves it at ``http://host:port/metrics``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9464,
        node_id: str | None = None,
        advertise_host: str | None = None,
        port_tries: int = 100,
    ):
        self.node_id = node_id or socket.gethostname()
        self._lock = threading.Lock()  # the HTTP thread reads while pushes write
        self._workers: dict[WorkerKey, _WorkerSeries] = {}
        self._tune: dict[str, _TuneSeries] = {}
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        self._server, self._thread = _serve(registry, host, port, port_tries)
        self._registry = registry
        self.port = self._server.server_address[1]
        # a wildcard bind is reached through the node's address; scrapers need a concrete host
        self.host = advertise_host or (socket.gethostname() if host in WILDCARD_HOSTS else host)

    # -- what pushers call -------------------------------------------------------------------
    def push(self, run: str, trial: str, rank: str, delta: dict) -> None:
        generation = delta.get("generation", "")
        with self._lock:
            series = self._workers.get((run, trial, rank))
            if series is None or series.generation != generation:  # a new attempt starts over
                series = self._workers[(run, trial, rank)] = _WorkerSeries(generation=generation)
            series.apply(delta)

    def retire(self, run: str, trial: str, keep_generation: str) -> int:
        """Drop the series of ``(run, trial)`` pushed by any other attempt than
        ``keep_generation``: after a failover the new attempt's totals supersede them, and a
        killed worker never says it finished. Returns how many were dropped."""
        with self._lock:
            stale = [
                k
                for k, s in self._workers.items()
                if k[:2] == (run, trial) and s.generation != keep_generation
            ]
            for key in stale:
                del self._workers[key]
        return len(stale)

    def finish(self, run: str, trial: str, rank: str, grace_period_s: float) -> None:
        """Mark a worker's run finished: its series are dropped ``grace_period_s`` from now."""
        with self._lock:
            series = self._workers.get((run, trial, rank))
            if series is not None:
                series.expires_at = time.monotonic() + grace_period_s

    def update_tune(self, run: str, values: dict[str, float]) -> None:
        with self._lock:
            series = self._tune.setdefault(run, _TuneSeries())
            series.values.update(values)
            series.expires_at = None

    def finish_tune(self, run: str, grace_period_s: float) -> None:
        with self._lock:
            if run in self._tune:
                self._tune[run].expires_at = time.monotonic() + grace_period_s

    # -- what scrapers and the discovery see --------------------------------------------------
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def address(self) -> dict[str, str]:
        return {"target": f"{self.host}:{self.port}", "node_id": self.node_id, "url": self.url()}

    def render(self) -> bytes:
        """The text exposition a scrape returns."""
        return generate_latest(self._registry)

    def series_keys(self) -> list[WorkerKey]:
        with self._lock:
            self._expire()
            return sorted(self._workers)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- prometheus_client collector ----------------------------------------------------------
    def _expire(self) -> None:
        now = time.monotonic()
        tables: tuple[dict[Any, Any], ...] = (self._workers, self._tune)
        for table in tables:
            for key in [
                k for k, s in table.items() if s.expires_at is not None and s.expires_at <= now
            ]:
                del table[key]

    def collect(self):
        with self._lock:
            self._expire()
            families = self._worker_families() + self._tune_families()
        return families + self._node_families()

    def _node_families(self) -> list:
        families = []
        for part, value in node_memory().items():
            spec = M.NODE_MEMORY[part]
            fam = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            fam.add_metric([self.node_id], value)
            families.append(fam)
        return families

    def _worker_families(self) -> list:
        fams = {spec.name: _family(spec) for spec in M.ALL if spec.labels[:4] == M.WORKER_LABELS}
        for (run, trial, rank), s in self._workers.items():
            labels = [run, trial, self.node_id, rank]
            fams[M.STEPS.name].add_metric(labels, s.counters[M.STEPS_KEY])
            fams[M.LAST_PUSH.name].add_metric(labels, s.last_push)
            for key, total in s.counters.items():
                if key in M.COUNTERS:
                    fams[M.COUNTERS[key].name].add_metric(labels, total)
            for key, value in s.rates.items():
                fams[M.RATES[key].name].add_metric(labels, value)
            for key, value in s.gauges.items():
                fams[M.GAUGES[key].name].add_metric(labels, value)
            for key, value in s.method.items():
                fams[M.METHOD_STAT.name].add_metric(labels + [key], value)
            cumulative, buckets = 0, []
            for bound, count in zip(M.STEP_TIME_BUCKETS + (float("inf"),), s.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            fams[M.STEP_TIME.name].add_metric(labels, buckets, s.time_sum)
        return [f for f in fams.values() if f.samples]

    def _tune_families(self) -> list:
        trials = _family(M.TUNE_TRIALS)
        expected, best = _family(M.TUNE_TRIALS_EXPECTED), _family(M.TUNE_BEST)
        for run, s in self._tune.items():
            for state in M.TUNE_TRIAL_STATES:
                if state in s.values:
                    trials.add_metric([run, self.node_id, state], s.values[state])
            if "expected" in s.values:
                expected.add_metric([run, self.node_id], s.values["expected"])
            if "best" in s.values:
                best.add_metric([run, self.node_id], s.values["best"])
        return [f for f in (trials, expected, best) if f.samples]


def _family(spec: M.Metric):
    cls = {
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily,
    }[spec.kind]
    return cls(spec.name, spec.help, labels=spec.labels)


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
