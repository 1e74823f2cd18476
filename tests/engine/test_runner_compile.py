"""``train.compile``: the Runner compiles the task's loss in its training step (torch.compile),
and the compiled run follows the eager one step for step."""

from __future__ import annotations

import torch
from torch._dynamo.utils import counters

from raytrain_eff import config
from raytrain_eff.engine import local_ranks, records

OVERRIDES = [
    "task.problem=factorization",
    "task.d=8",
    "task.rank=2",
    "scaling.num_workers=1",
    "run.steps=4",
    "run.eval_interval=0",
    "run.report_interval=4",
    "run.checkpoint_interval=4",
    "monitor.enabled=false",
    "monitor.progress=false",
]


def _losses(run_dir, compile_: bool) -> tuple[list[float], float]:
    cfg = config.load(
        preset="lowrank-original", overrides=[*OVERRIDES, f"train.compile={compile_}"]
    )
    runner = local_ranks.runner(cfg, 0, 1, str(run_dir), log=lambda event: None)
    runner.run()
    rows = records.read_table(str(run_dir)).to_pylist()
    return [r["loss"] for r in rows], runner.last_eval["recovery_error"]


def test_the_compiled_loss_follows_the_eager_one(tmp_path):
    torch._dynamo.reset()
    counters.clear()
    try:
        eager, eager_error = _losses(tmp_path / "eager", False)
        assert not counters["stats"]  # nothing compiled when the option is off
        compiled, compiled_error = _losses(tmp_path / "compiled", True)
        assert counters["stats"]["unique_graphs"] == 1  # one graph, no recompilation
    finally:
        torch._dynamo.reset()
    assert len(compiled) == len(eager) == 4
    assert max(abs(a - b) for a, b in zip(eager, compiled, strict=True)) < 1e-9
    assert abs(compiled_error - eager_error) < 1e-9


def test_compile_is_off_by_default():
    assert config.load(preset="lowrank-original").train.compile is False
