"""The numbers of a comparison report: pure pandas over finished runs' per-step tables.

Two sides, A (usually the method) and B (its baseline), each a list of runs of one config
with different seeds. For every run: the quality metric against steps, wall time and
effective FLOPs; steps, time and FLOPs to a target (the baseline's median final metric unless
the user gives one); peak memory of rank 0's worker; throughput; a cost estimate

    node-hours = wall time (h) x nodes,  nodes = ceil(world size / workers per node),
    cost       = node-hours x price per node-hour.

Each quantity is then summarised per side as median and seed range [min, max]. A difference is
called only when the two seed ranges do not overlap; otherwise it is within seed noise. With
few seeds this is deliberately conservative: it never calls a difference that one unlucky seed
could have made.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from raytrain_eff.typed import ConfigError

MIB = 2.0**20


@dataclasses.dataclass
class Run:
    """One finished run: its per-step table and what its config and summary say."""

    name: str
    side: str  # the side's label, e.g. the preset name
    seed: int
    steps: pd.DataFrame  # metrics.parquet (one row per step, rank 0's view)
    world_size: int  # Ray Train workers (local mode: 1)
    isolated: bool  # each worker its own fresh process, so its peak memory is its own


def elapsed_s(steps: pd.DataFrame) -> pd.Series:
    """Wall seconds since the run began, summed over attempts (``wall_s`` restarts on resume)."""
    offset, out = 0.0, []
    for _, part in steps.groupby("attempt", sort=True):
        out.append(part["wall_s"] + offset)
        offset += float(part["wall_s"].max())
    return pd.concat(out).reindex(steps.index)


def run_curve(run: Run, metric: str) -> pd.DataFrame:
    """Rows where ``metric`` was measured: step, elapsed seconds, cumulative effective FLOPs."""
    s = run.steps.sort_values("step")
    frame = pd.DataFrame(
        {
            "side": run.side,
            "run": run.name,
            "seed": run.seed,
            "step": s["step"] + 1,
            "elapsed_s": elapsed_s(s),
            "effective_flops": s["effective_flops"].cumsum(),
            "samples": s["samples"].cumsum(),
            "loss": s["loss"],
            metric: s.get(metric, np.nan),
        }
    )
    return frame.reset_index(drop=True)


def curves(runs: list[Run], metric: str) -> pd.DataFrame:
    return pd.concat([run_curve(r, metric) for r in runs], ignore_index=True)


def reached(values: pd.Series, target: float, mode: str) -> pd.Series:
    return values <= target if mode == "min" else values >= target


def to_target(curve: pd.DataFrame, metric: str, target: float, mode: str) -> dict:
    """Steps, seconds and effective FLOPs at the first evaluation that meets the target."""
    evals = curve[curve[metric].notna()]
    hit = evals[reached(evals[metric], target, mode)]
    if hit.empty:  # never reached: infinitely far, which orders correctly and medians honestly
        return {
            "steps_to_target": math.inf,
            "time_to_target_s": math.inf,
            "flops_to_target": math.inf,
        }
    first = hit.iloc[0]
    return {
        "steps_to_target": float(first["step"]),
        "time_to_target_s": float(first["elapsed_s"]),
        "flops_to_target": float(first["effective_flops"]),
    }


def per_run(
    runs: list[Run],
    metric: str,
    mode: str,
    target: float,
    price_per_node_hour: float,
    workers_per_node: int = 1,
) -> pd.DataFrame:
    """One row per run: final quality, totals, memory, throughput, cost and target figures."""
    rows = []
    for run in runs:
        curve = run_curve(run, metric)
        last = curve.iloc[-1]
        evals = curve[metric].dropna()
        wall = float(last["elapsed_s"])
        nodes = math.ceil(run.world_size / workers_per_node)
        node_hours = wall / 3600.0 * nodes
        rows.append(
            {
                "side": run.side,
                "run": run.name,
                "seed": run.seed,
                "world_size": run.world_size,
                "nodes": nodes,
                "steps": int(last["step"]),
                f"final_{metric}": float(evals.iloc[-1]) if len(evals) else math.nan,
                "final_loss": float(last["loss"]),
                "wall_s": wall,
                "effective_flops": float(last["effective_flops"]),
                "dense_flops": float(run.steps["dense_flops"].sum()),
                "samples": float(last["samples"]),
                "samples_per_s": float(last["samples"]) / wall,
                "effective_flops_per_s": float(last["effective_flops"]) / wall,
                "peak_memory_mib": float(run.steps["peak_memory_bytes"].max()) / MIB,
                "rss_mib": float(run.steps["rss_bytes"].max()) / MIB,
                "memory_isolated": run.isolated,
                "node_hours": node_hours,
                "cost": node_hours * price_per_node_hour,
                **to_target(curve, metric, target, mode),
            }
        )
    return pd.DataFrame(rows)


def baseline_target(
    runs_table: pd.DataFrame, metric: str, baseline: str, value: float | None = None
) -> tuple[float, str]:
    """The user's target, else the baseline side's median final metric."""
    if value is not None:
        return float(value), "given"
    finals = runs_table.loc[runs_table.side == baseline, f"final_{metric}"].dropna()
    if finals.empty:
        raise ConfigError(
            f"the baseline runs never evaluated '{metric}', so there is no target; "
            f"pick a metric they report or give a target value"
        )
    return float(finals.median()), "baseline median final"


@dataclasses.dataclass(frozen=True)
class Quantity:
    column: str
    title: str
    unit: str
    better: str  # "lower" or "higher"


def quantities(metric: str, mode: str) -> list[Quantity]:
    lower = "lower"
    return [
        Quantity(
            f"final_{metric}", f"final {metric}", metric, "lower" if mode == "min" else "higher"
        ),
        Quantity("time_to_target_s", "wall time to target", "s", lower),
        Quantity("flops_to_target", "effective FLOPs to target", "FLOPs", lower),
        Quantity("steps_to_target", "steps to target", "steps", lower),
        Quantity("wall_s", "wall time of the whole run", "s", lower),
        Quantity("effective_flops", "effective FLOPs of the whole run", "FLOPs", lower),
        Quantity("peak_memory_mib", "peak memory per worker", "MiB", lower),
        Quantity("samples_per_s", "throughput", "samples/s", "higher"),
        Quantity("cost", "cost of the whole run", "per price unit", lower),
    ]


def compare_sides(
    runs_table: pd.DataFrame, label_a: str, label_b: str, metric: str, mode: str
) -> pd.DataFrame:
    """Per quantity: median and seed range of each side, ratio A/B, winner, whether the
    difference exceeds the seed spread (the two ranges do not overlap) and the call.

    Peak memory is comparable only when every worker had a process of its own: in Train's
    local mode all runs share the driver process and its high-water mark."""
    a, b = runs_table[runs_table.side == label_a], runs_table[runs_table.side == label_b]
    rows = []
    for q in quantities(metric, mode):
        va, vb = a[q.column].astype(float), b[q.column].astype(float)
        row = {
            "quantity": q.title,
            "column": q.column,
            "unit": q.unit,
            "better": q.better,
            "n_a": len(va),
            "median_a": va.median(),
            "min_a": va.min(),
            "max_a": va.max(),
            "n_b": len(vb),
            "median_b": vb.median(),
            "min_b": vb.min(),
            "max_b": vb.max(),
        }
        row["ratio_a_over_b"] = _ratio(row["median_a"], row["median_b"])
        row["comparable"] = q.column != "peak_memory_mib" or bool(
            a["memory_isolated"].all() and b["memory_isolated"].all()
        )
        row["winner"] = (
            _winner(row["median_a"], row["median_b"], q.better, label_a, label_b)
            if row["comparable"]
            else ""
        )
        row["exceeds_spread"] = bool(row["max_a"] < row["min_b"] or row["max_b"] < row["min_a"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["call"] = frame.apply(_call, axis=1)
    return frame


def _call(row) -> str:
    """The plain-language verdict on one quantity."""
    if not row.comparable:
        return "not comparable"
    if not row.winner:
        return "no difference"
    return "beyond seed spread" if row.exceeds_spread else "within seed noise"


def _ratio(x: float, y: float) -> float:
    if not (math.isfinite(x) and math.isfinite(y)) or y == 0:
        return math.nan
    return x / y


def _winner(ma: float, mb: float, better: str, label_a: str, label_b: str) -> str:
    if math.isnan(ma) or math.isnan(mb) or ma == mb:
        return ""
    a_lower = ma < mb
    return label_a if a_lower == (better == "lower") else label_b
