"""The driver's console: one line (or a bar) per progress report, Ray's own logs in a file.

Rank 0 sends progress events (``{"text", "step", "steps"}``) to a small actor; a thread on the
driver drains it and prints each event once: a tqdm bar on a terminal, plain lines otherwise.
Workers' output then need not reach the console (``ray.init(log_to_driver=False)``), so Ray's
per-rank lines stay out of it; the driver's Ray loggers write to ``<run_dir>/logs/driver.log``
and each worker's to ``logs/worker-<rank>.log``. ``--verbose`` keeps Ray's logs on the console.
A sweep shares one sink among its trials (each event names its run) and keeps Tune's own
trial table on the console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from raytrain_eff.engine import storage

LOG_DIR = "logs"
DRIVER_LOG = "driver.log"
POLL_S = 0.5
REDIRECT = "raytrain-eff-ray-log"  # the name of the handler that sends Ray's logs to a file

Event = dict  # {"text": str, "step": int | None, "steps": int | None, "run": str}


def log_dir(run_dir: str, name: str) -> str:
    """A local directory for the run's logs: ``<run_dir>/logs``, or a temporary one when the
    run directory is a URI (logs are appended line by line; object stores cannot)."""
    if "://" in run_dir:
        return os.path.join(tempfile.gettempdir(), "raytrain_eff-logs", name)
    return storage.join(run_dir, LOG_DIR)


def driver_log(run_dir: str, name: str) -> str:
    return os.path.join(log_dir(run_dir, name), DRIVER_LOG)


def logs_off_console(path: str, label: str, where: str) -> None:
    """Ray's loggers in this process write to ``path``; one line tells the user ``where``
    the logs are. Import the Ray modules whose loggers matter first (``ray.train``...)."""
    ray_logs_to_file(path)
    print(f"[{label}] Ray's logs: {where} (--verbose shows them here)", flush=True)


def ray_logs_to_file(path: str) -> None:
    """Point every ``ray`` logger that prints to the console at ``path`` instead."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.set_name(REDIRECT)
    loggers = [logging.getLogger("ray")] + [
        lg
        for name, lg in logging.root.manager.loggerDict.items()
        if name.startswith("ray.") and isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        # the console's handlers, and an earlier run's file in this process
        gone = [h for h in logger.handlers if _is_console(h) or h.get_name() == REDIRECT]
        for h in gone:
            logger.removeHandler(h)
        if gone or logger.name == "ray":
            logger.addHandler(handler)


def _is_console(handler: logging.Handler) -> bool:
    return (
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None)
        in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    )


def worker_logs_to_file(run_dir: str, name: str, rank: int) -> None:
    """On a worker: Train's and the user's log records (prints included, through Train's
    print patch) also go to ``logs/worker-<rank>.log``."""
    path = os.path.join(log_dir(run_dir, name), f"worker-{rank}.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger in (logging.getLogger(), logging.getLogger("ray.train")):
        logger.addHandler(handler)


class ProgressSink:
    """Made a Ray actor by ``Console``: holds rank 0's events until the driver drains them.
    It lives on the driver's node, so it outlives any worker node: a restarted worker group
    reports to the same sink (``Console.start``)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def put(self, event: Event) -> None:
        self.events.append(event)

    def drain(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def remote_log(sink) -> Callable[[Event], None]:
    """What rank 0 calls to show an event on the driver (fire and forget)."""
    return lambda event: sink.put.remote(event)


def failure_notice(sink, run: str):
    """A Ray Train callback (it runs on Train's controller) that sends the reason run
    ``run``'s worker group failed to the sink; the console shows it with that run's restart
    (a sweep's trials share one sink)."""
    from ray.train import UserCallback

    from raytrain_eff.engine.failures import summary

    class FailureNotice(UserCallback):
        def after_exception(self, run_context, worker_exceptions: dict) -> None:
            rank = min(worker_exceptions)
            sink.put.remote(
                {"run": run, "failure": f"rank {rank} failed: {summary(worker_exceptions[rank])}"}
            )

    return FailureNotice()


class Console:
    """Shows events on the driver: a tqdm bar on a terminal, one plain line each otherwise."""

    def __init__(self, stream: Any = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.bar: Any = None  # tqdm, on a terminal
        self.sink: Any = None  # the ProgressSink actor's handle
        self.failures: dict[str, str] = {}  # run -> why its workers failed, until they restart
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def show(self, event: Event) -> None:
        run = event.get("run", "")
        if "failure" in event:  # held until the restart it caused is shown
            self.failures[run] = event["failure"]
            return
        if event.get("resumed") and run in self.failures:  # one line: attempt, step, and why
            event = {**event, "text": f"{event['text']}, after {self.failures.pop(run)}"}
        step, steps = event.get("step"), event.get("steps")
        if not self.tty or step is None:
            self._line(event["text"])
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps, initial=0, file=self.stream, unit="step", dynamic_ncols=True
            )
        self.bar.update(step - self.bar.n)
        self.bar.set_description_str(event["text"].split(" | ", 1)[0])
        self.bar.set_postfix_str(event["text"].split(" | ", 1)[-1])

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start(self):
        """Start the sink actor and the thread that drains it; returns the actor handle."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # on the driver's node: a lost worker node must not take the console's messages along
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.sink = ray.remote(num_cpus=0)(ProgressSink).options(scheduling_strategy=here).remote()
        self._thread = threading.Thread(target=self._poll, name="raytrain-eff-console", daemon=True)
        self._thread.start()
        return self.sink

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            if not self._drain():
                return

    def _drain(self) -> bool:
        import ray

        try:
            events = ray.get(self.sink.drain.remote(), timeout=30)
        except Exception:  # noqa: BLE001 - Ray shutting down: nothing more to show
            return False
        for event in events:
            self.show(event)
        return True

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._drain()
            import ray

            with contextlib.suppress(Exception):  # Ray already gone (an interrupted run)
                ray.kill(self.sink)
            self._thread = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
