"""The ``lowrank`` task: observed entries as rows, sharded by rank, same maths as its problems."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.lowdim import LowDimConfig
from raytrain_eff.hparams.tasks import LowRankConfig
from raytrain_eff.methods import lowdim as L
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.tasks import lowrank
from raytrain_eff.tasks.lowrank import LowRankTask
from raytrain_eff.typed import ConfigError

torch.set_num_threads(1)
FULL = 10**9  # a batch size above any shard: full-batch gradient descent


def make_task(**params) -> LowRankTask:
    task = LowRankTask(LowRankConfig(**params), DataConfig(), seed=7)
    task.load()
    return task


def problem_of(task: LowRankTask) -> lowrank.LowRankProblem:
    """The same problem built directly by lowdim.py from the task's seed."""
    p, gen = task.params, torch.Generator().manual_seed(task.seed)
    if p.problem == "sensing":
        return lowrank.sensing(p.d, p.rank, p.measurements, gen)
    return lowrank.completion(p.d, p.rank, p.observed if p.problem == "completion" else 1.0, gen)


@pytest.mark.parametrize("problem", ["factorization", "completion", "sensing"])
def test_full_batch_loss_gradient_and_evaluation_match_the_problem(problem):
    task = make_task(problem=problem, d=12, rank=2, observed=0.4, measurements=150)
    P = problem_of(task)
    model = task.build_model()
    assert [tuple(w.shape) for w in model.weights] == [(12, 12)] * 3
    loss = task.loss(model, task.train_batch(0, 0, 0, 1, FULL))
    torch.testing.assert_close(loss, P.loss(model.product()), rtol=1e-12, atol=0)
    expected_rows = {"factorization": 144, "completion": round(0.4 * 144), "sensing": 150}
    assert task.num_train == expected_rows[problem]
    metrics = task.evaluate(model, 64, 1)
    W = model.product().detach()
    assert metrics["recovery_error"] == pytest.approx(P.error(W), rel=1e-12)
    assert metrics["val_loss"] == pytest.approx(0.5 * float(((W - P.Phi) ** 2).sum()), rel=1e-12)
    base = (
        sum(float(task.loss(model, b).detach()) * len(b[0]) for b in task.val_batches(64, 1)) / 144
    )
    assert base == pytest.approx(metrics["val_loss"], rel=1e-12)  # entry loss over all of Φ


def test_shards_partition_the_observed_entries_and_minibatches_stay_in_shard():
    task = make_task(problem="completion", d=10, rank=2, observed=0.5)
    seen = []
    for rank in range(3):
        i, j, _ = task.train_batch(0, 0, rank, 3, FULL)
        seen += list(zip(i.tolist(), j.tolist(), strict=True))
        assert len(task.train_batch(4, 0, rank, 3, 5)[0]) == 5
    assert len(seen) == len(set(seen)) == task.num_train == 50
    i, j, y = task.train_batch(0, 0, 0, 1, FULL)
    torch.testing.assert_close(y, task.Phi[i, j])


def _sharded_step0(rank, world, group):
    """Per rank: the all-reduced full-batch gradient of the original net, and the lowdim net."""
    torch.set_num_threads(1)
    task = make_task(problem="completion", d=20, rank=2, observed=0.3)
    model = task.build_model()
    loss = task.loss(model, task.train_batch(0, 0, rank, world, FULL))
    grads = torch.autograd.grad(loss, list(model.weights))
    for g in grads:
        dist.all_reduce(g, group=group)
        g /= world
    ctx = MethodContext(
        rank=rank,
        world_size=world,
        group=group,
        loss_fn=task.loss,
        next_batch=lambda: task.train_batch(0, 0, rank, world, FULL),
    )
    net = L.LowDim(LowDimConfig(width=4)).prepare(task.build_model(), ctx)
    return [g.clone() for g in grads], [w.detach().clone() for w in net.weights]


def test_two_ranks_give_the_single_process_gradient_and_spectral_init(gloo):
    one, two = gloo.run(1, _sharded_step0), gloo.run(2, _sharded_step0)
    task = make_task(problem="completion", d=20, rank=2, observed=0.3)
    assert task.num_train % 2 == 0  # equal shards: the mean of shard means is the full mean
    for g1, g2a, g2b in zip(one[0][0], two[0][0], two[1][0], strict=True):
        torch.testing.assert_close(g2a, g1, rtol=1e-12, atol=1e-18)
        torch.testing.assert_close(g2b, g1, rtol=1e-12, atol=1e-18)
    expected = L.spectral_weights(problem_of(task).surrogate, 4, 1e-2)
    for ranks in (one, two):
        for _, weights in ranks:
            for w, e in zip(weights, expected, strict=True):
                torch.testing.assert_close(w, e, rtol=1e-9, atol=1e-15)


def test_lowdim_through_the_seam_recovers_the_target():
    task = make_task(problem="factorization", d=20, rank=2)
    method = L.LowDim(LowDimConfig(width=4, lr=0.4, alpha=1.5, optimizer="gd"))
    ctx = MethodContext(loss_fn=task.loss, next_batch=lambda: task.train_batch(0, 0, 0, 1, FULL))
    model = method.prepare(task.build_model(), ctx)
    opt = method.make_optimizer(model, ctx)
    start = task.evaluate(model, 64, 1)["recovery_error"]
    for step in range(500):
        opt.zero_grad()
        task.loss(model, task.train_batch(step, 0, 0, 1, FULL)).backward()
        opt.step()
    assert start > 0.99 and task.evaluate(model, 64, 1)["recovery_error"] < 1e-3
    merged = method.export(model)
    assert len(merged.weights) == 1
    torch.testing.assert_close(merged.product(), model.product().detach(), rtol=0, atol=0)


def test_config_validation_messages():
    with pytest.raises(ConfigError, match=r"rank: 30 is invalid; must be in 1..d \(20\)"):
        LowRankConfig(d=20, rank=30)
    with pytest.raises(ConfigError, match=r"observed: 0.0 is invalid; must be in \(0, 1\]"):
        LowRankConfig(observed=0.0)
    with pytest.raises(
        ConfigError,
        match="measurements: 100000 is invalid; must be at most 26843 "
        "at d=100: each sensing matrix is dense d×d",
    ):
        LowRankConfig(problem="sensing", measurements=100000)
