"""Cheap checks on the driver before any worker starts: bad data or code fails in seconds.

The engine names no task and no method here: the task's ``preflight`` checks its data (the
Parquet footers of its ``required_columns``, then whatever scan it needs) and each method's
``preflight`` checks its own settings against the run's (a GPU-only kernel without a GPU).
"""

from __future__ import annotations

from raytrain_eff import catalog
from raytrain_eff.config import ExperimentConfig


def check(cfg: ExperimentConfig) -> None:
    task = catalog.load_object(catalog.lookup(catalog.TASKS, "task", cfg.task.name).impl)
    task.preflight(cfg)
    for name, params in cfg.methods.items():
        method = catalog.load_object(catalog.lookup(catalog.METHODS, "method", name).impl)
        method.preflight(params, cfg)
