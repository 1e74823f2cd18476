"""Runner's stopping rule on evaluations (``stop_when``) and its set-up time (``setup_s``), on
spawned gloo ranks: every rank stops at rank 0's first evaluation that meets the rule."""

from __future__ import annotations

from raytrain_eff import config
from raytrain_eff.engine import local_ranks, records

OVERRIDES = [
    "run.steps=12",
    "run.eval_interval=3",
    "run.report_interval=3",
    "run.checkpoint_interval=12",
    "task.hidden=16",
    "monitor.enabled=false",
    "monitor.progress=false",
]


def _train(rank, world, run_dir, target):
    cfg = config.load(preset="digits-dense-head", overrides=OVERRIDES)
    runner = local_ranks.runner(
        cfg,
        rank,
        world,
        run_dir,
        log=lambda event: None,
        stop_when=lambda scores: scores["val_accuracy"] >= target,
    )
    row = runner.run()
    steps = [r["step"] for r in records.read_table(run_dir).to_pylist()] if rank == 0 else []
    return row["step"], runner.setup_s, steps


def test_every_rank_stops_at_the_first_evaluation_that_meets_the_rule(tmp_path):
    results = local_ranks.spawn(_train, 2, str(tmp_path / "stop"), 0.0)
    assert [step for step, _, _ in results] == [2, 2]  # the first evaluation: after step 3
    assert results[0][2] == [0, 1, 2] and all(setup > 0 for _, setup, _ in results)


def test_a_rule_never_met_runs_every_step(tmp_path):
    ((step, _, steps),) = local_ranks.spawn(_train, 1, str(tmp_path / "all"), 2.0)
    assert step == 11 and steps == list(range(12))
