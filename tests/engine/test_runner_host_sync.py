"""No host sync inside a step: per-step losses stay on the device and are reduced over ranks
and read on the host only at a report (``engine.pending``), with the same rows as before."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import pathlib

import pyarrow.parquet as pq
import torch

from raytrain_eff.engine.runner import Runner

# every way a tensor's value reaches the host (each waits for the device to finish)
HOST_READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")


class HostReads:
    """Counts host reads of tensor values (by kind) while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.calls: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def installed(self):
        originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}
        for name, fn in originals.items():
            setattr(torch.Tensor, name, self._counting(name, fn))
        try:
            yield self
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)

    def _counting(self, name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if self.active:
                self.calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    def total(self) -> int:
        return sum(self.calls.values())


def _runner(cfg, run_dir, **kw) -> Runner:
    return Runner(
        cfg,
        rank=0,
        world=1,
        group=None,
        device=torch.device("cpu"),
        run_dir=str(run_dir),
        run_name="r",
        **kw,
    )


def _phases(runner: Runner, reads: HostReads) -> list[tuple[int, int]]:
    """Per step: (host reads inside train_step, host reads in the rest of the iteration)."""
    marks: list[tuple[int, int]] = []
    step = runner.train_step

    def counted(*args):
        if marks:  # the rest of the previous iteration: sinks, reports
            marks[-1] = (marks[-1][0], reads.total() - marks[-1][1])
        start = reads.total()
        try:
            return step(*args)
        finally:
            marks.append((reads.total() - start, reads.total()))

    runner.train_step = counted  # type: ignore[method-assign]
    reads.active = True
    try:
        runner.run()
    finally:
        reads.active = False
    marks[-1] = (marks[-1][0], reads.total() - marks[-1][1])
    return marks


def test_a_step_reads_nothing_on_the_host_until_its_report(run_cfg, tmp_path):
    cfg = run_cfg(
        "digits-sgd",
        "scaling.num_workers=0",
        "run.steps=10",
        "run.report_interval=4",
        "run.checkpoint_interval=100",
        "run.eval_interval=0",
        "train.grad_accum=2",
        "train.grad_clip=1.0",
    )
    reads = HostReads()
    with reads.installed():
        phases = _phases(_runner(cfg, tmp_path / "run"), reads)
    inside = [n for n, _ in phases]
    assert inside == [0] * 10, f"host reads inside train_step: {inside} ({dict(reads.calls)})"
    reports = {3, 7, 9}  # every 4th step and the last
    after = [n for _, n in phases]
    assert [after[s] for s in range(10) if s not in reports] == [0] * 7, after
    # one copy of the stacked losses per report; the last one also evaluates
    assert [after[3], after[7]] == [1, 1], (after, dict(reads.calls))


def test_the_counter_sees_a_host_read_and_puts_torch_back():
    originals = [getattr(torch.Tensor, name) for name in HOST_READS]
    reads = HostReads()
    with reads.installed():
        reads.active = True
        x = torch.ones(2)
        float(x.sum()), x.sum().item(), bool(x.any())
    assert reads.calls == {"__float__": 1, "item": 1, "__bool__": 1}
    assert [getattr(torch.Tensor, name) for name in HOST_READS] == originals


def _table(run_dir) -> list[dict]:
    return pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").to_pylist()


TIMED = {"wall_s", "step_time_s", "data_wait_s", "rss_bytes", "peak_memory_bytes"}  # vary per run


def test_rows_are_the_same_whenever_they_are_reduced(run_cfg, tmp_path):
    rows = {}
    for interval in (1, 5):
        cfg = run_cfg(
            "digits-sgd",
            "scaling.num_workers=0",
            "run.steps=12",
            f"run.report_interval={interval}",
            "run.checkpoint_interval=100",
            "run.eval_interval=6",
            "train.grad_accum=3",
        )
        local: list[float] = []
        runner = _runner(cfg, tmp_path / f"every{interval}")
        step = runner.train_step

        def keep(*args, step=step, local=local):
            stats = step(*args)
            local.append(stats.loss.item())
            return stats

        runner.train_step = keep  # type: ignore[method-assign]
        runner.run()
        rows[interval] = _table(tmp_path / f"every{interval}")
        assert [r["loss"] for r in rows[interval]] == local  # one rank: its own mean loss
    every, burst = rows[1], rows[5]
    assert [list(r) for r in every] == [list(r) for r in burst]  # same columns, same order
    assert [r["step"] for r in burst] == list(range(12))
    for a, b in zip(every, burst, strict=True):
        assert {k: v for k, v in a.items() if k not in TIMED} == {
            k: v for k, v in b.items() if k not in TIMED
        }
    assert [r["val_loss"] is not None for r in burst] == [s in (5, 11) for s in range(12)]


def _train_on_ranks(rank, world, group, cfg, run_dir):
    import torch

    from raytrain_eff.engine.runner import Runner

    runner = Runner(
        cfg,
        rank=rank,
        world=world,
        group=group,
        device=torch.device("cpu"),
        run_dir=run_dir,
        run_name="r",
    )
    runner._report = lambda *a, **k: None  # no checkpoints: the table is flushed below
    local: list[float] = []
    step = runner.train_step

    def keep(*args):
        stats = step(*args)
        local.append(stats.loss.item())
        return stats

    runner.train_step = keep
    runner.run()
    if runner.table is not None:
        runner.table.flush()
    return local


def test_two_ranks_one_fused_reduction_gives_the_per_step_means(gloo, run_cfg, tmp_path):
    tables = {}
    for interval in (1, 4):
        cfg = run_cfg(
            "digits-sgd",
            "scaling.num_workers=2",
            "run.steps=8",
            f"run.report_interval={interval}",
            "run.eval_interval=0",
        )
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, steps=8))
        run_dir = str(tmp_path / f"ranks{interval}")
        l0, l1 = gloo.run(2, _train_on_ranks, cfg, run_dir)
        tables[interval] = [r["loss"] for r in _table(run_dir)]
        assert tables[interval] == [(a + b) / 2 for a, b in zip(l0, l1, strict=True)]
        assert l0 != l1  # the ranks saw different batches: the mean is not either one
    assert tables[1] == tables[4]
