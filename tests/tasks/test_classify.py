"""The classification task's training stream, built the way the runner builds it: digits in
memory, or Parquet features streamed (disjoint epochs across ranks, exact resume)."""

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raytrain_eff import config
from raytrain_eff.engine import launch
from raytrain_eff.engine.runner import build_task
from raytrain_eff.tasks.base import shard_rows
from raytrain_eff.typed import ConfigError


def test_grad_accum_micro_batches_walk_through_the_epoch():
    cfg = config.load(preset="digits-adamw", overrides=["train.grad_accum=2", "data.batch_size=32"])
    task = build_task(cfg)  # the runner's constructor: knows grad_accum
    task.load()
    assert task.grad_accum == 2
    rows = task.rows
    rows.X = torch.arange(len(rows.y))  # a batch's x are then its row indices
    world, batch = 2, cfg.data.batch_size
    per_epoch = len(shard_rows(task.num_train, 0, world)) // batch
    steps = per_epoch // 2
    seen = []
    for rank in range(world):
        for step in range(steps):
            for micro in range(cfg.train.grad_accum):
                x, y = task.train_batch(step, micro, rank, world, batch)
                assert torch.equal(y, rows.y[x])
                seen += x.tolist()
    assert len(seen) == len(set(seen)) == world * steps * 2 * batch
    assert max(seen) < task.num_train  # never a held-out row
    # (step s, micro 1) is not (step s + 1, micro 0): the bug of issue 17, item 9
    assert not torch.equal(
        task.train_batch(0, 1, 0, world, batch)[0], task.train_batch(1, 0, 0, world, batch)[0]
    )


@pytest.fixture
def digits_parquet(tmp_path):
    """scikit-learn's digits as Parquet (an ``id`` feature numbers the rows), row groups of 97."""
    from sklearn.datasets import load_digits

    d = load_digits()
    columns = {f"p{i}": d.data[:, i] / 16.0 for i in range(64)}
    table = pa.table(
        {"id": np.arange(len(d.target), dtype=np.float64), **columns, "label": d.target}
    )
    pq.write_table(table, tmp_path / "digits.parquet", row_group_size=97)
    return str(tmp_path / "digits.parquet")


def test_streamed_parquet_micro_batches_walk_through_the_epoch(digits_parquet):
    cfg = config.load(
        preset="digits-adamw",
        overrides=[
            f"data.dataset={digits_parquet}",
            "task.model=mlp",
            "train.grad_accum=2",
            "data.batch_size=32",
            "data.shuffle_window=200",
        ],
    )
    task = build_task(cfg)
    task.load()
    assert task.classes == 10 and task.shape == (65,)
    world, batch = 3, cfg.data.batch_size
    steps = len(shard_rows(task.num_train, 0, world)) // batch // 2
    seen = []
    for rank in range(world):
        for step in range(steps):
            for micro in range(2):
                x, _ = task.train_batch(step, micro, rank, world, batch)
                seen += x[:, 0].long().tolist()
    assert len(seen) == len(set(seen)) == world * steps * 2 * batch
    assert max(seen) < task.num_train  # never a held-out row
    val = torch.cat([x[:, 0] for x, _ in task.val_batches(100, 1)]).long()
    assert val.tolist() == list(range(task.num_train, 1797))


def _losses(run_dir):
    return torch.tensor(
        pq.read_table(pathlib.Path(run_dir) / "metrics.parquet").column("loss").to_pylist()
    )


def test_streamed_parquet_run_resumes_exactly(digits_parquet, tmp_path):
    common = [
        f"data.dataset={digits_parquet}",
        "task.model=mlp",
        "scaling.num_workers=0",
        "run.steps=8",
        "run.report_interval=1",
        "run.checkpoint_interval=1",
        "run.eval_interval=4",
        "monitor.enabled=false",
        "monitor.progress=false",
        f"run.storage_path={tmp_path}",
        "data.shuffle_window=64",
        "train.grad_accum=2",
    ]
    straight = launch.fit(config.load(preset="digits-adamw", overrides=common + ["run.name=a"]))
    paused = launch.fit(
        config.load(preset="digits-adamw", overrides=common + ["run.name=b", "run.stop_after=3"])
    )
    resumed = config.apply_resume_overrides(
        launch.load_run_config(paused.run_dir), ["run.stop_after=null"]
    )
    launch.fit(resumed, resume=True)
    a, b = _losses(straight.run_dir), _losses(paused.run_dir)
    assert len(a) == len(b) == 8 and torch.isfinite(a).all()
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_test_fraction_holds_out_test_rows_that_validation_never_scores():
    plain = build_task(config.load(preset="digits-adamw"))
    plain.load()
    cfg = config.load(preset="digits-adamw", overrides=["data.test_fraction=0.5"])
    task = build_task(cfg)
    task.load()
    rows = task.rows
    assert task.num_train == plain.num_train  # the training rows do not change
    assert rows.num_val + rows.num_test == plain.rows.num_val and rows.num_test > 0
    val_y = torch.cat([y for _, y in task.val_batches(64, 1)])
    test_y = torch.cat([y for _, y in task.test_batches(64, 1)])
    held = torch.cat([y for _, y in plain.val_batches(64, 1)])
    assert torch.equal(torch.cat([val_y, test_y]), held)  # validation first, test the tail
    torch.manual_seed(0)
    model = task.build_model()
    scores = task.evaluate_test(model, 64, 1)
    assert set(scores) == {"test_loss", "test_accuracy"}
    assert scores != {k.replace("val", "test"): v for k, v in task.evaluate(model, 64, 1).items()}
    with pytest.raises(ConfigError, match="data.test_fraction"):
        plain.test_batches(64, 1)  # no test split without the option


def test_a_task_without_a_test_split_refuses_test_fraction_before_launch():
    cfg = config.load(preset="erm-digits", overrides=["data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match="data.test_fraction: 0.5: task erm"):
        type(build_task(cfg)).preflight(cfg)
