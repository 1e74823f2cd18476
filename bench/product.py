"""A benchmark's arm as the product runs it: a preset and overrides through ``config.load``,
the engine's ``Runner`` on this rank, and what the Runner recorded (its ``metrics.parquet``
rows, its last evaluation, its set-up seconds).

A benchmark calls :func:`train` inside ``raytrain_eff.engine.local_ranks.spawn``: every arm
is then the code a user's ``raytrain-eff train --preset ...`` runs, on a gloo group instead
of Ray Train's (whose worker start-up would dominate the timings). One process serves every
run of a benchmark: the first run in a process pays one-time imports and lazy set-up, so
:func:`warm_up` runs each arm once, untimed, before any timed run.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable

from raytrain_eff import config
from raytrain_eff.engine import local_ranks, records
from raytrain_eff.monitor import keys as K

QUIET = ("monitor.enabled=false", "monitor.progress=false")  # no exporter, no progress lines


@dataclasses.dataclass
class Run:
    cfg: config.ExperimentConfig
    scores: dict[str, float]  # the last evaluation (val_*) and, if asked, the test split's
    rows: list[dict]  # metrics.parquet: one row per step (rank 0)
    setup_s: float  # Runner.setup: task, model, methods' prepare, optimizer

    @property
    def loop_s(self) -> float:
        """Seconds of the training loop up to the last step (its evaluation excluded)."""
        return self.rows[-1][K.WALL]

    def total(self, key: str) -> float:
        return float(sum(r[key] for r in self.rows))

    def score(self, key: str) -> float:
        """A score, +inf when it is not finite (a diverged run)."""
        value = self.scores[key]
        return value if math.isfinite(value) else math.inf


def train(
    preset: str,
    overrides: list[str],
    *,
    rank: int = 0,
    world: int = 1,
    test: bool = False,
    stop_when: Callable[[dict], bool] | None = None,
) -> Run:
    """One run of ``preset`` with ``overrides`` on this rank; ``test`` also scores the task's
    test split (``data.test_fraction``) once the run has ended."""
    cfg = config.load(preset=preset, overrides=[*QUIET, *overrides])
    with tempfile.TemporaryDirectory(prefix="bench_run_") as run_dir:
        runner = local_ranks.runner(
            cfg, rank, world, run_dir, log=lambda event: None, stop_when=stop_when
        )
        runner.run()
        table = records.read_table(run_dir) if rank == 0 else None
        scores = dict(runner.last_eval)
        if test:
            batch, batches = cfg.data.batch_size, cfg.run.eval_batches
            scores |= runner.task.evaluate_test(runner.model, batch, batches)
    rows = table.to_pylist() if table is not None else []
    return Run(cfg=cfg, scores=scores, rows=rows, setup_s=runner.setup_s)


def warm_up(arms: list[tuple[str, list[str]]]) -> None:
    """Each (preset, overrides) once for one step, untimed: imports and lazy initialisation
    fall on no timed run of any arm."""
    for preset, overrides in arms:
        train(preset, [*overrides, "run.steps=1", "run.eval_interval=0", *one_report(1)])


def one_report(steps: int) -> list[str]:
    """One report (and its checkpoint) at the last of ``steps`` steps."""
    return [f"run.report_interval={steps}", f"run.checkpoint_interval={steps}"]
