"""Can the cluster place the run's workers? Asked before training, so that a run that cannot
start says so with numbers instead of retrying Ray Train's worker-group start-up forever.

A demand larger than the cluster, with no autoscaler that could add nodes, is refused at once.
Otherwise a placement group of the workers' bundles is requested and waited for (it is also
what asks an autoscaler for nodes), in short slices so Ctrl-C stays responsive, up to
``RAYTRAIN_EFF_START_TIMEOUT_S`` seconds.
"""

from __future__ import annotations

import math
import os
import sys
import time

from raytrain_eff.config import ExperimentConfig
from raytrain_eff.typed import ConfigError

TIMEOUT_ENV = "RAYTRAIN_EFF_START_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0
DATA_CPUS = 1.0  # left free for Ray Data when a task streams a Ray Data dataset


class ResourcesUnavailable(ConfigError):
    """The requested workers cannot be placed; the message gives asked/available and a fix."""


def bundles(cfg: ExperimentConfig) -> list[dict[str, float]]:
    """One bundle per worker the run needs to start (``min_workers`` for an elastic group)."""
    sc = cfg.scaling
    bundle = {"CPU": float(sc.cpus_per_worker)}
    if sc.use_gpu:
        bundle["GPU"] = 1.0
    return [dict(bundle) for _ in range(sc.min_workers or sc.num_workers)]


def check(cfg: ExperimentConfig, *, timeout_s: float | None = None) -> None:
    """Return once the workers can be placed; raise ``ResourcesUnavailable`` otherwise."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    wanted = bundles(cfg)
    if not wanted:
        return
    total = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not _autoscaling() and not _fits(wanted, total, nodes):
        largest = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        why = (
            "and no autoscaler can add nodes"
            if largest >= cfg.scaling.cpus_per_worker
            else f"(the largest node has {largest:g} CPU) and no autoscaler can add nodes"
        )
        raise ResourcesUnavailable(
            describe(cfg, wanted, total, ray.available_resources(), why, largest_node_cpus=largest)
        )
    timeout_s = float(
        os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S) if timeout_s is None else timeout_s
    )
    pg = placement_group(wanted, strategy=cfg.scaling.placement)
    try:
        deadline = time.monotonic() + timeout_s
        waited, placed = False, pg.ready()
        while True:
            ready, _ = ray.wait([placed], timeout=min(1.0, timeout_s))
            if ready:
                return
            if not waited:
                waited = True
                print(
                    f"[{cfg.run.name}] waiting up to {timeout_s:g} s for {_sum(wanted)} "
                    f"({_free(wanted, ray.available_resources())}); Ctrl-C stops",
                    file=sys.stderr,
                    flush=True,
                )
            if time.monotonic() >= deadline:
                raise ResourcesUnavailable(
                    describe(
                        cfg,
                        wanted,
                        ray.cluster_resources(),
                        ray.available_resources(),
                        f"and they did not become free within {timeout_s:g} s ({TIMEOUT_ENV})",
                    )
                )
    finally:
        remove_placement_group(pg)


def check_data_cpus(cfg: ExperimentConfig) -> None:
    """A task whose data is a Ray Data dataset needs a CPU the workers do not hold: Ray Train
    limits Ray Data to the cluster less the workers' resources, so with none left its read
    and map_batches tasks never run and the run stalls at its first batch."""
    import ray

    if _autoscaling():
        return
    sc = cfg.scaling
    cpus = ray.cluster_resources().get("CPU", 0.0)
    n = sc.min_workers or sc.num_workers
    held = n * sc.cpus_per_worker
    if cpus - held >= DATA_CPUS - 1e-9:
        return
    share = math.floor((cpus - DATA_CPUS) / n * 100) / 100
    fixes = ([f"scaling.cpus_per_worker={share:g}"] if share > 0 else []) + (
        [f"scaling.num_workers={int((cpus - DATA_CPUS) // sc.cpus_per_worker)}"]
        if cpus - DATA_CPUS >= sc.cpus_per_worker
        else []
    )
    raise ResourcesUnavailable(
        f"the task's data is a Ray Data dataset, whose read and map_batches tasks need "
        f"{DATA_CPUS:g} CPU that the training workers do not hold, but {n} worker"
        f"{'s' * (n != 1)} x scaling.cpus_per_worker={sc.cpus_per_worker:g} = {held:g} CPU of "
        f"the cluster's {cpus:g} leave {max(cpus - held, 0.0):g}; "
        + (
            "fix it with " + " or ".join(fixes)
            if fixes
            else "start a cluster with more CPUs (--address)"
        )
    )


def _fits(wanted: list[dict[str, float]], total: dict, nodes: list[dict]) -> bool:
    """The cluster holds all bundles together, and some node holds one (they are equal)."""
    together = all(
        sum(b.get(k, 0.0) for b in wanted) <= total.get(k, 0.0) + 1e-9 for k in wanted[0]
    )
    return together and any(
        all(v <= node.get(k, 0.0) + 1e-9 for k, v in wanted[0].items()) for node in nodes
    )


def _autoscaling() -> bool:
    """Whether an autoscaler could add nodes: a node type that may grow (as Ray Data checks)."""
    try:
        import ray._private.state

        config = ray._private.state.state.get_cluster_config()
    except Exception:  # noqa: BLE001 - an old or unusual GCS: assume no autoscaler
        return False
    if not config or not config.node_group_configs:
        return False
    return any(
        g.max_count == -1 or g.max_count > g.min_count
        for g in config.node_group_configs
        if g.resources and g.max_count != 0
    )


def describe(
    cfg: ExperimentConfig,
    wanted: list[dict[str, float]],
    total: dict,
    available: dict,
    why: str,
    largest_node_cpus: float | None = None,
) -> str:
    """'scaling asks for ...; the cluster has ...; fix: ...' in one line."""
    sc = cfg.scaling
    n = len(wanted)
    asked = f"{n} worker{'s' * (n != 1)} x {sc.cpus_per_worker:g} CPU" + (
        " + 1 GPU" if sc.use_gpu else ""
    )
    have = ", ".join(
        f"{total.get(k, 0.0):g} {k} ({available.get(k, 0.0):g} free)" for k in wanted[0]
    )
    return (
        f"scaling asks for {asked} = {_sum(wanted)}, but the cluster has {have} {why}; "
        f"{_fixes(cfg, n, total, largest_node_cpus)}"
    )


def _free(wanted: list[dict[str, float]], available: dict) -> str:
    return ", ".join(f"{available.get(k, 0.0):g} {k} free" for k in wanted[0])


def _sum(wanted: list[dict[str, float]]) -> str:
    return " + ".join(f"{sum(b.get(k, 0.0) for b in wanted):g} {k}" for k in wanted[0])


def _fixes(cfg: ExperimentConfig, n: int, total: dict, largest_node_cpus: float | None) -> str:
    sc = cfg.scaling
    key = "scaling.min_workers" if sc.min_workers else "scaling.num_workers"
    cpus = total.get("CPU", 0.0)
    largest = cpus if largest_node_cpus is None else largest_node_cpus
    fit = int(cpus // sc.cpus_per_worker) if sc.cpus_per_worker <= largest else 0
    if sc.use_gpu:
        fit = min(fit, int(total.get("GPU", 0.0)))
    fixes = [f"{key}={fit}"] if fit >= 1 else []
    share = math.floor(min(cpus / n, largest) * 100) / 100
    if not sc.use_gpu and share > 0:
        fixes.append(f"scaling.cpus_per_worker={share:g}")
    if sc.use_gpu and not fit:
        fixes.append("scaling.use_gpu=false")
    return (
        "fix it with " + " or ".join(fixes)
        if fixes
        else "start a cluster with more resources (--address)"
    )
