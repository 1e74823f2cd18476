"""Deterministic per-step batches and row sharding."""

import pytest
import torch

from raytrain_eff import catalog
from raytrain_eff.tasks.base import (
    Task,
    epoch_batch_indices,
    micro_batch_position,
    shard_rows,
    take_rows,
)


def test_take_rows_cuts_every_tensor_of_a_batch_along_its_first_dimension():
    X, y = torch.arange(20.0).view(10, 2), torch.arange(10)
    part = take_rows({"x": X, "pair": (y, torch.tensor(3.0))}, shard_rows(10, 1, 3))
    assert torch.equal(part["x"], X[4:7]) and torch.equal(part["pair"][0], y[4:7])
    assert part["pair"][1].item() == 3.0  # a 0-dim tensor stays whole


def test_batches_are_pure_functions_of_position_and_stay_in_the_shard():
    a = epoch_batch_indices(100, 0, position=5, rank=1, world=2, batch_size=8)
    b = epoch_batch_indices(100, 0, position=5, rank=1, world=2, batch_size=8)
    assert torch.equal(a, b)
    assert ((a >= 50) & (a < 100)).all()
    epoch = torch.cat(
        [epoch_batch_indices(100, 0, position=p, rank=0, world=2, batch_size=10) for p in range(5)]
    )
    assert sorted(epoch.tolist()) == list(range(50))  # one epoch = each shard row once


def test_a_step_is_not_a_position():
    # the old signature (step, micro, ...) no longer binds: a bare step cannot slip in
    with pytest.raises(TypeError):
        epoch_batch_indices(100, 0, 5, 1, 0, 1, 8)
    assert [micro_batch_position(s, m, 3) for s in range(2) for m in range(3)] == list(range(6))
    for micro, accum in [(1, 1), (3, 3), (-1, 2)]:  # micro 1 of a 1-micro-batch step: the bug
        with pytest.raises(ValueError, match="0 <= micro < grad_accum"):
            micro_batch_position(4, micro, accum)


class RowsTask(Task):
    """A task whose batches are the row indices themselves."""

    def load(self):
        self.num_train = self.params

    def batch_at(self, position, rank, world, batch_size):
        return epoch_batch_indices(
            self.num_train,
            self.seed,
            position=position,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("grad_accum", [1, 2, 3])
def test_micro_batches_and_ranks_never_repeat_a_row_within_an_epoch(grad_accum, world):
    batch, per_epoch = 4, 6  # 6 micro-batches per rank and epoch
    n = world * (per_epoch * batch + 1)  # one row per shard left over each epoch
    task = RowsTask(n, None, seed=3, grad_accum=grad_accum)
    task.load()
    plain = RowsTask(n, None, seed=3)  # grad_accum = 1
    plain.load()
    steps = per_epoch // grad_accum  # optimizer steps in one epoch
    for epoch in range(2):
        drawn = []
        for rank in range(world):
            shard = set(shard_rows(n, rank, world))
            mine = [
                task.train_batch(epoch * steps + s, m, rank, world, batch)
                for s in range(steps)
                for m in range(grad_accum)
            ]
            # the same stream as grad_accum = 1, one micro-batch after the other
            assert all(
                torch.equal(b, plain.train_batch(epoch * per_epoch + i, 0, rank, world, batch))
                for i, b in enumerate(mine)
            )
            rows = torch.cat(mine).tolist()
            assert set(rows) <= shard
            assert len(set(rows)) == len(shard) - 1 == per_epoch * batch
            drawn += rows
        assert len(drawn) == len(set(drawn)) == world * per_epoch * batch  # disjoint ranks
    # every epoch reshuffles: the first micro-batch of epoch 1 differs from epoch 0's
    assert not torch.equal(
        task.train_batch(0, 0, 0, world, batch), task.train_batch(steps, 0, 0, world, batch)
    )
    with pytest.raises(ValueError):
        task.train_batch(0, grad_accum, 0, world, batch)


def test_every_task_maps_steps_to_positions_through_the_base():
    # tasks implement batch_at(position, ...); none may redefine train_batch(step, micro, ...)
    for entry in catalog.TASKS.values():
        cls = catalog.load_object(entry.impl)
        assert cls.train_batch is Task.train_batch, cls
        assert cls.batch_at is not Task.batch_at, cls
