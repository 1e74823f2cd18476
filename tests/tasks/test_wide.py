"""The `wide` task: the two-layer shifted-ReLU net of arXiv 2208.04508 on unit-norm data."""

from __future__ import annotations

import math

import pytest
import torch

from raytrain_eff.blocks.shifted_relu import ShiftedReLU
from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.sublinear import SublinearConfig
from raytrain_eff.hparams.tasks import WideConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.sublinear.method import Sublinear
from raytrain_eff.tasks.wide import WideTask
from raytrain_eff.typed import ConfigError


def make(**kw) -> WideTask:
    task = WideTask(
        WideConfig(**{"width": 1024, "num_train": 64, "num_val": 32, **kw}),
        DataConfig(batch_size=16, val_fraction=0.2),
        seed=3,
    )
    task.load()
    return task


def test_synthetic_inputs_are_unit_norm_and_batches_index_the_trees():
    task = make()
    X = task.index_inputs()
    assert X.shape == (64, 64) and torch.allclose(X.norm(dim=1), torch.ones(64))
    x, y, rows = task.train_batch(5, 0, 0, 1, 16)
    assert torch.equal(x, X[rows]) and y.shape == (16, 1)
    again = task.train_batch(5, 0, 0, 1, 16)
    assert torch.equal(again[2], rows)  # a pure function of the step
    model = task.build_model()
    assert isinstance(model.hidden, ShiftedReLU)
    assert model.hidden.b == pytest.approx(math.sqrt(0.4 * math.log(1024)))
    assert make(shift=1.5).build_model().hidden.b == 1.5


def test_shard_width_gives_every_rank_the_same_batch():
    plain, sharded = make(), make(shard_width=True)
    r0, r1 = (plain.train_batch(2, 0, rank, 2, 8)[2] for rank in (0, 1))
    assert not set(r0.tolist()) & set(r1.tolist())  # data-parallel: disjoint shards
    s0, s1 = (sharded.train_batch(2, 0, rank, 2, 8)[2] for rank in (0, 1))
    assert torch.equal(s0, s1)


def test_digits_trains_through_the_sublinear_method_above_chance():
    task = make(dataset="digits", width=512)
    X = task.index_inputs()
    assert task.num_train == round(1797 * 0.8) and X.shape[1] == 64
    assert torch.allclose(X.norm(dim=1), torch.ones(len(X)), atol=1e-5)
    method = Sublinear(SublinearConfig(index="exact", lr=100.0))
    ctx = MethodContext(task=task)
    model = method.prepare(task.build_model(), ctx)
    opt = method.make_optimizer(model, ctx)
    before = task.evaluate(model, 256, 2)
    for step in range(40):
        method.before_step(step, ctx)
        loss = task.loss(model, task.train_batch(step, 0, 0, 1, 32))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = task.evaluate(model, 256, 2)
    assert after["val_loss"] < before["val_loss"]
    assert after["val_accuracy"] > 0.5  # chance is 0.1


def test_cross_entropy_loss_and_shard_iterator_cover_every_row():
    task = make(dataset="digits", loss="ce")
    model = task.build_model()
    batch = task.train_batch(0, 0, 0, 1, 8)
    assert float(task.loss(model, batch).detach()) == pytest.approx(math.log(10), rel=0.1)
    rows = torch.cat([b[2] for b in task.shard_iterator(1, 2, 100)])
    assert torch.equal(rows, torch.arange(task.num_train // 2 + task.num_train % 2, task.num_train))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="width: 0 is invalid; must be an integer > 0"):
        WideConfig(width=0)
    with pytest.raises(ConfigError, match="shift: -1.0 is invalid"):
        WideConfig(shift=-1.0)
