"""What a trial reports to Tune, so a space's ``metric`` and ``time_attr`` are checked before
Ray starts rather than failing (or, for ASHA, silently never pruning) a minute into a sweep.

Every report of the engine (``engine.runner.Runner._report``) carries ``ENGINE_METRICS`` and the
task's latest evaluation (``val_loss`` and whatever else the task's ``evaluate`` returns); Tune
adds its own counters. ``tests/tune/test_sweep.py`` checks a real trial against these names.
"""

from __future__ import annotations

from raytrain_eff.typed import ConfigError, nearest

# counters that only grow within a trial: usable as a scheduler's time_attr
ENGINE_COUNTERS = ("samples_seen", "step", "effective_flops_total", "wall_s")
TUNE_COUNTERS = ("training_iteration", "time_total_s")
COUNTERS = ENGINE_COUNTERS + TUNE_COUNTERS
# counters whose full-run value follows from the config (a budget known before the sweep)
BUDGETED = ("samples_seen", "step", "training_iteration")
ENGINE_METRICS = ENGINE_COUNTERS + ("loss",)


def check_time_attr(time_attr: str) -> None:
    if time_attr not in COUNTERS:
        raise ConfigError(
            f"scheduler.time_attr: '{time_attr}' is not a counter trials report"
            f"{nearest(time_attr, COUNTERS)}; use one of {', '.join(COUNTERS)}"
        )


def eval_metrics(base: dict) -> tuple[set[str], str | None]:
    """(the keys the task's evaluation returns, why only ``val_loss`` is known, else None).

    The task is built and evaluated once, untrained, on one batch: its keys can depend on its
    parameters (a loss without accuracy) or on user code, so no static list is exact. A task
    on a Ray Data dataset is read by the workers only (``get_dataset_shard``): it reports
    ``val_loss`` when it has a 'val' dataset, and nothing else."""
    from raytrain_eff import config as config_mod
    from raytrain_eff.engine.launch import ray_datasets
    from raytrain_eff.engine.runner import build_task

    cfg = config_mod.from_dict(base)
    try:
        datasets = ray_datasets(cfg)
        if datasets:
            return ({"val_loss"} if "val" in datasets else set()), None
        task = build_task(cfg)
        task.load()
        return set(task.evaluate(task.build_model(), cfg.data.batch_size, 1)), None
    except Exception as err:  # noqa: BLE001 - data only the workers can read: say so below
        return {"val_loss"}, f"{type(err).__name__}: {err}"


def check_metric(path: str, metric: str, base: dict) -> None:
    """ConfigError naming the file, the key, the value and the names a trial reports."""
    if metric in ENGINE_METRICS:
        return
    evals, unknown = eval_metrics(base)
    if metric in evals or (unknown and metric.startswith("val_")):
        return
    allowed = sorted(evals) + list(ENGINE_METRICS)
    why = f" (the task could not be evaluated here to list more: {unknown})" if unknown else ""
    raise ConfigError(
        f"{path}: metric: '{metric}' is not reported by trials of this space"
        f"{nearest(metric, allowed)}; reported: {', '.join(allowed)}{why}"
    )
