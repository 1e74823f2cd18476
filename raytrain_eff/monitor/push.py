"""What a training worker (and the Tune driver) calls to publish metrics to its node's exporter.

``MetricsPusher.push(stats)`` takes one step's statistics. Amounts per step (samples, tokens,
dense and effective FLOPs, curvature seconds) are summed; the step time goes to a histogram;
everything else is a gauge whose last value wins (a method statistic unless it is one of
``monitor.keys``'s named gauges); the engine's bookkeeping (``keys.is_bookkeeping``) is dropped.
To keep the cost per step at a few dict updates, a pusher sends a *window* to the exporter at
most every ``flush_interval_s`` (the first step at once): the window's sums, its step times,
its last gauge values and its rates

    rate_x = Σ_window x / wall time of the window

(the first window, which has no previous flush, divides by its summed step times instead).

Inside Ray the exporter is this node's actor (``monitor.discovery``) and a flush is one
fire-and-forget actor call; outside Ray it is an in-process ``NodeExporter`` shared by every
pusher of the process, so single-process runs and tests export the same metrics.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

from raytrain_eff.monitor import keys as K
from raytrain_eff.monitor import metrics as M
from raytrain_eff.monitor.exporter import NodeExporter

_local_lock = threading.Lock()
_local: dict[tuple[str, int], NodeExporter] = {}


def local_exporter(host: str = "127.0.0.1", port: int = 9464) -> NodeExporter:
    """This process's exporter for the requested (host, port), started on first use."""
    with _local_lock:
        if (host, port) not in _local:
            _local[(host, port)] = NodeExporter(host, port)
        return _local[(host, port)]


def _in_ray() -> bool:
    ray = sys.modules.get("ray")  # never import Ray just to learn that it is not running
    return ray is not None and ray.is_initialized()


class _Sink:
    """One exporter, in-process or this node's Ray actor, behind one ``call``."""

    def __init__(self, host: str, port: int, exporter: NodeExporter | None):
        if exporter is not None:
            self._actor, self._local = None, exporter
            self.address = exporter.address()
        elif _in_ray():
            import ray

            from raytrain_eff.monitor.discovery import node_exporter

            self._actor = node_exporter(host, port)
            self.address = ray.get(self._actor.address.remote())
        else:
            self._actor, self._local = None, local_exporter(host, port)
            self.address = self._local.address()

    @property
    def is_local(self) -> bool:
        return self._actor is None

    @property
    def local(self) -> NodeExporter:
        return self._local

    def call(self, method: str, *args, wait: bool = False) -> None:
        if self._actor is None:
            getattr(self._local, method)(*args)
            return
        ref = getattr(self._actor, method).remote(*args)
        if wait:  # at close: the last window must land before the caller moves on
            import ray

            ray.get(ref)


def rss_bytes() -> int:
    """Resident set size of this process (its peak where /proc is missing); the engine's
    accounting reads memory through this one function too."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class MetricsPusher:
    """Publishes one worker's step statistics under labels run, trial, node_id, rank."""

    def __init__(
        self,
        run: str,
        trial: str = "",
        rank: int = 0,
        host: str = "127.0.0.1",
        port: int = 9464,
        grace_period_s: float = 300.0,
        flush_interval_s: float = 1.0,
        exporter: NodeExporter | None = None,
        generation: str = "",
    ):
        """``exporter``: push to this in-process exporter instead of the node's (single-process
        tools and tests, which must not depend on whether Ray happens to be initialised).
        ``generation``: the training attempt, the same on every rank; an exporter starts a
        series over when it changes, and ``retire_others`` drops other attempts' series."""
        self._key = (str(run), str(trial), str(rank))
        self.generation = str(generation)
        self._totals: dict[str, float] = {}
        self.grace_period_s = float(grace_period_s)
        self.flush_interval_s = float(flush_interval_s)
        self._sink = _Sink(host, port, exporter)
        self.url = self._sink.address["url"]
        self.node_id = self._sink.address["node_id"]
        self._peak_rss = 0.0
        self._last_flush: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._steps = 0
        self._sums: dict[str, float] = {}
        self._times: list[float] = []
        self._last: dict[str, float] = {}

    def push(self, stats: dict, totals: dict[str, float] | None = None) -> None:
        """Add one step's statistics; flushes to the exporter when the window is due.

        ``totals``: absolute values of counters (this rank's share of the run totals, restored
        from the checkpoint): they replace the sums of the per-step amounts on the exporter.
        """
        self._steps += 1
        if totals:
            self._totals.update(totals)
        for key, value in stats.items():
            if value is None or isinstance(value, (str, bool)) or K.is_bookkeeping(key):
                continue
            value = float(value)
            if key in M.COUNTERS:
                self._sums[key] = self._sums.get(key, 0.0) + value
            elif key == M.STEP_TIME_STAT:
                self._times.append(value)
            else:
                self._last[key] = value
        now = time.monotonic()
        if self._last_flush is None or now - self._last_flush >= self.flush_interval_s:
            self.flush(now)

    def flush(self, now: float | None = None, wait: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if self._steps:
            self._fill_memory()
            wall = sum(self._times) if self._last_flush is None else now - self._last_flush
            self._sink.call("push", *self._key, self._window(wall), wait=wait)
            self._reset()
        self._last_flush = now

    def _fill_memory(self) -> None:
        """RSS and its peak where the caller did not measure them (once per window)."""
        if K.RSS not in self._last:
            self._last[K.RSS] = rss_bytes()
        self._peak_rss = max(self._peak_rss, self._last[K.RSS])
        self._last.setdefault(K.PEAK_MEMORY, self._peak_rss)

    def _window(self, wall: float) -> dict:
        per_s = 1.0 / wall if wall > 0 else math.nan
        rates = {key: total * per_s for key, total in self._sums.items() if key in M.RATES}
        rates[M.STEPS_KEY] = self._steps * per_s
        return {
            "steps": self._steps,
            "sums": dict(self._sums),
            "step_times": list(self._times),
            "last": dict(self._last),
            "rates": rates,
            "time": time.time(),
            "totals": dict(self._totals),
            "generation": self.generation,
        }

    def start_attempt(self) -> None:
        """A new training attempt's rank 0: retire the failed attempts' series and have the
        cluster's file_sd writers rewrite their files now (nodes may have come or gone)."""
        self.retire_others()
        if not self._sink.is_local:
            from raytrain_eff.monitor.discovery import refresh_file_sd

            refresh_file_sd()

    def retire_others(self) -> int:
        """Drop this run's series of other attempts on every exporter of the cluster (a new
        attempt's rank 0 calls it once); returns how many were dropped."""
        run, trial, _ = self._key
        if self._sink.is_local:
            return self._sink.local.retire(run, trial, self.generation)
        import ray

        from raytrain_eff.monitor.discovery import exporter_handles

        refs = [h.retire.remote(run, trial, self.generation) for h in exporter_handles()]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=30)
        dropped = 0
        for ref in done:
            try:
                dropped += ray.get(ref)
            except ray.exceptions.RayActorError:  # its node died since the listing
                continue
        return dropped

    def close(self) -> None:
        """Flush the last window and mark the run finished (series expire after the grace)."""
        self.flush(wait=True)
        self._sink.call("finish", *self._key, self.grace_period_s, wait=True)


class TuneProgress:
    """The Tune driver's trial counts and best metric, on the driver node's exporter. Inside Ray
    it also starts the cluster's file_sd writer on the driver node, as a training run's driver
    does (``monitor.discovery.start_file_sd``)."""

    def __init__(
        self,
        run: str,
        host: str = "127.0.0.1",
        port: int = 9464,
        grace_period_s: float = 300.0,
        exporter: NodeExporter | None = None,
    ):
        self.run = str(run)
        self.grace_period_s = float(grace_period_s)
        self._sink = _Sink(host, port, exporter)
        self.url = self._sink.address["url"]
        self.file_sd = None
        if not self._sink.is_local:  # the sweep's driver node keeps the cluster's file_sd
            from raytrain_eff.monitor.discovery import start_file_sd

            self.file_sd = start_file_sd(host, port)

    def update(
        self,
        *,
        trials_total: int,
        trials_running: int,
        trials_terminated: int,
        trials_errored: int,
        best_metric: float | None = None,
    ) -> None:
        values = {
            "expected": float(trials_total),
            "running": float(trials_running),
            "terminated": float(trials_terminated),
            "errored": float(trials_errored),
        }
        if best_metric is not None:
            values["best"] = float(best_metric)
        self._sink.call("update_tune", self.run, values)

    def close(self) -> None:
        self._sink.call("finish_tune", self.run, self.grace_period_s, wait=True)
