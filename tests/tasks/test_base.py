"""Deterministic per-step batches and row sharding."""
import torch

from raytrain_eff.tasks.base import epoch_batch_indices, shard_rows


def test_shards_cover_every_row_once():
    for n, world in [(10, 3), (7, 7), (1000, 4)]:
        rows = [r for rank in range(world) for r in shard_rows(n, rank, world)]
        assert rows == list(range(n))


def test_batches_are_pure_functions_of_step_and_stay_in_the_shard():
    a = epoch_batch_indices(100, 0, step=5, micro=0, rank=1, world=2, batch_size=8)
    b = epoch_batch_indices(100, 0, step=5, micro=0, rank=1, world=2, batch_size=8)
    assert torch.equal(a, b)
    assert ((a >= 50) & (a < 100)).all()
    epoch = torch.cat([epoch_batch_indices(100, 0, s, 0, 0, 2, 10) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(50))  # one epoch = each shard row once
