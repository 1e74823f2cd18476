"""The report's numbers on hand-built step tables whose answers are known in closed form."""

import math

import numpy as np
import pandas as pd
import pytest

from raytrain_eff.report import analysis

MIB = 2**20


def steps_table(
    n=10,
    wall_per_step=1.0,
    flops=1e9,
    val=None,
    eval_every=5,
    attempts=None,
    peak_mib=100.0,
    samples=64,
):
    """A metrics.parquet-shaped frame: ``val(step)`` gives val_loss at eval steps."""
    step = np.arange(n)
    attempt = np.zeros(n, dtype=int) if attempts is None else np.asarray(attempts)
    wall = np.empty(n)
    for a in np.unique(attempt):  # wall_s restarts with every attempt, as the engine's does
        idx = np.flatnonzero(attempt == a)
        wall[idx] = wall_per_step * (np.arange(len(idx)) + 1)
    val = val or (lambda s: 2.0 - 0.1 * s)
    val_loss = [val(s) if (s + 1) % eval_every == 0 else np.nan for s in step]
    return pd.DataFrame(
        {
            "step": step,
            "attempt": attempt,
            "wall_s": wall,
            "loss": 2.0 - 0.05 * step,
            "val_loss": val_loss,
            "samples": samples,
            "tokens": 0,
            "step_time_s": wall_per_step,
            "dense_flops": flops,
            "effective_flops": flops,
            "rss_bytes": 50 * MIB,
            "peak_memory_bytes": peak_mib * MIB,
        }
    )


def run(side, seed, isolated=True, world=1, **kw):
    return analysis.Run(
        name=f"{side}-{seed}",
        side=side,
        seed=seed,
        steps=steps_table(**kw),
        world_size=world,
        isolated=isolated,
    )


def test_elapsed_time_adds_up_over_attempts():
    frame = steps_table(n=5, attempts=[0, 0, 0, 1, 1], wall_per_step=2.0)
    # attempt 0 ran 6 s; attempt 1's clock restarts at 0
    assert analysis.elapsed_s(frame).tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_time_and_flops_to_target_are_taken_at_the_first_eval_that_meets_it():
    r = run("A", 0, n=20, wall_per_step=0.5, flops=3e9, eval_every=5)  # val 2.0 - 0.1 s
    curve = analysis.run_curve(r, "val_loss")
    # eval steps (0-based) 4, 9, 14, 19 -> val 1.6, 1.1, 0.6, 0.1; first <= 1.0 is step 14
    hit = analysis.to_target(curve, "val_loss", 1.0, "min")
    assert hit == {"steps_to_target": 15.0, "time_to_target_s": 7.5, "flops_to_target": 45e9}
    never = analysis.to_target(curve, "val_loss", -1.0, "min")
    assert all(math.isinf(v) for v in never.values())
    up = analysis.to_target(curve, "val_loss", 1.5, "max")  # mode max: first value >= target
    assert up["steps_to_target"] == 5.0


def test_cost_counts_nodes_from_world_size_and_workers_per_node():
    r = run("A", 0, n=4, wall_per_step=1800.0, world=3)  # 2 hours of wall time
    table = analysis.per_run(
        [r], "val_loss", "min", 0.0, price_per_node_hour=2.5, workers_per_node=2
    )
    row = table.iloc[0]
    assert row.nodes == 2 and row.wall_s == 7200.0
    assert row.node_hours == pytest.approx(4.0) and row.cost == pytest.approx(10.0)
    assert row.samples_per_s == pytest.approx(4 * 64 / 7200.0)
    assert row.peak_memory_mib == pytest.approx(100.0)


def test_target_is_the_baselines_median_final_unless_given():
    runs = [run("B", s, val=lambda st, s=s: 1.0 + s) for s in range(3)]  # finals 1, 2, 3
    table = analysis.per_run(runs, "val_loss", "min", 0.0, 1.0)
    assert analysis.baseline_target(table, "val_loss", "B") == (2.0, "baseline median final")
    assert analysis.baseline_target(table, "val_loss", "B", 0.5) == (0.5, "given")
    with pytest.raises(ValueError, match="never evaluated 'val_loss'"):
        analysis.baseline_target(table.assign(final_val_loss=np.nan), "val_loss", "B")


def _comparison(a_walls, b_walls, isolated=True):
    runs = [run("A", i, wall_per_step=w, isolated=isolated) for i, w in enumerate(a_walls)] + [
        run("B", i, wall_per_step=w, isolated=isolated, peak_mib=200.0)
        for i, w in enumerate(b_walls)
    ]
    table = analysis.per_run(runs, "val_loss", "min", 1.5, 1.0)
    return analysis.compare_sides(table, "A", "B", "val_loss", "min").set_index("column")


def test_a_difference_is_called_only_when_seed_ranges_do_not_overlap():
    apart = _comparison([1.0, 1.1, 1.2], [2.0, 2.1, 2.2]).loc["wall_s"]
    assert apart.winner == "A" and apart.exceeds_spread and apart.call == "beyond seed spread"
    assert apart.median_a == pytest.approx(11.0) and apart.max_b == pytest.approx(22.0)
    assert apart.ratio_a_over_b == pytest.approx(0.5238, rel=1e-3)
    overlap = _comparison([1.0, 1.1, 2.5], [1.05, 2.0, 2.2]).loc["wall_s"]
    assert overlap.winner == "A" and not overlap.exceeds_spread
    assert overlap.call == "within seed noise"
    same = _comparison([1.0, 1.0], [1.0, 1.0]).loc["final_val_loss"]
    assert same.winner == "" and same.call == "no difference"
    higher = _comparison([1.0, 1.1], [2.0, 2.1]).loc["samples_per_s"]
    assert higher.better == "higher" and higher.winner == "A"


def test_peak_memory_of_a_shared_process_is_not_compared():
    isolated = _comparison([1.0], [1.0]).loc["peak_memory_mib"]
    assert isolated.winner == "A" and isolated.call == "beyond seed spread"
    shared = _comparison([1.0], [1.0], isolated=False).loc["peak_memory_mib"]
    assert shared.winner == "" and shared.call == "not comparable"


def test_a_side_that_never_reaches_the_target_loses_on_time_to_target():
    runs = [run("A", 0), run("A", 1), run("B", 0, val=lambda s: 5.0), run("B", 1)]
    table = analysis.per_run(runs, "val_loss", "min", 1.5, 1.0)
    row = (
        analysis.compare_sides(table, "A", "B", "val_loss", "min")
        .set_index("column")
        .loc["time_to_target_s"]
    )
    # B's first seed never gets there: its median is "never", its range reaches infinity
    assert math.isinf(row.median_b) and row.min_b == row.median_a
    assert row.winner == "A" and not row.exceeds_spread and math.isnan(row.ratio_a_over_b)
