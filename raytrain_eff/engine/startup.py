"""Where a run's start-up goes: wall-clock marks on the driver and on rank 0.

The driver marks its command's start, Ray's start and the call to ``fit``; rank 0 marks its
process's start, its entry into the training function and the end of each set-up phase;
the driver marks ``fit``'s return. ``summary.json`` keeps the marks (seconds after the
command started) and the phases between consecutive marks, so a slow start names its part.
Marks taken on another node rely on the nodes' clocks agreeing (NTP). A mark that a run
lacks (local mode has no Ray to start; Tune trials have no command of their own) leaves its
phases out.
"""

from __future__ import annotations

import os
import time

# (phase, from mark, to mark), in the order a run passes them
PHASES = (
    ("imports", "command", "ray_init"),  # the interpreter, the CLI, the config, the checks
    ("ray_init", "ray_init", "ray_ready"),  # a local Ray's processes, or joining a cluster
    ("driver_setup", "ray_ready", "fit"),  # resources, storage, datasets, the console actor
    ("controller", "fit", "worker_process"),  # Train's controller and the placement group
    ("worker_start", "worker_process", "train_fn"),  # Ray worker imports, process group
    ("task_load", "train_fn", "task_loaded"),  # the package's imports on the worker, data
    ("model_build", "task_loaded", "model_ready"),  # model, methods, optimizer, restore
    ("first_step", "model_ready", "first_step"),  # FLOP count and the first step
    ("training", "first_step", "last_step"),  # the other steps, evaluations, checkpoints
    ("finish", "last_step", "fit_returned"),  # the last report and the worker group's end
)
KEY = "startup"


def process_started() -> float | None:
    """This process's start as ``time.time()`` (Linux's /proc; None elsewhere): a Ray worker
    may have started before its actor was asked for, a command before Python ran."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def mark(marks: dict[str, float], name: str, at: float | None = None) -> None:
    """Record ``name`` now (or ``at``) unless it is already marked: the first time counts."""
    if name not in marks:
        marks[name] = time.time() if at is None else at


def account(marks: dict[str, float]) -> dict:
    """summary.json's ``startup``: the first mark's time (``origin``), each mark in seconds
    after it, and each phase whose two marks were taken."""
    origin = marks.get("command", min(marks.values(), default=0.0))
    phases = {
        name: round(marks[end] - marks[begin], 3)
        for name, begin, end in PHASES
        if begin in marks and end in marks
    }
    return {
        "origin": origin,
        "marks_s": {k: round(v - origin, 3) for k, v in sorted(marks.items(), key=lambda i: i[1])},
        "phases_s": phases,
    }


def recorded_marks(summary: dict) -> dict[str, float]:
    """The marks that ``account`` wrote into ``summary``, as times again."""
    recorded = summary.get(KEY) or {}
    origin = recorded.get("origin", 0.0)
    return {k: origin + v for k, v in recorded.get("marks_s", {}).items()}
