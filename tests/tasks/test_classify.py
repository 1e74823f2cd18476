"""The classification task's training stream, built the way the runner builds it."""
import torch

from raytrain_eff import config
from raytrain_eff.engine.runner import build_task
from raytrain_eff.tasks.base import shard_rows


def test_grad_accum_micro_batches_walk_through_the_epoch():
    cfg = config.load(preset="digits-adamw", overrides=["train.grad_accum=2",
                                                        "data.batch_size=32"])
    task = build_task(cfg)                        # the runner's constructor: knows grad_accum
    task.load()
    assert task.grad_accum == 2
    task.X = torch.arange(len(task.y))            # a batch's x are then its row indices
    world, batch = 2, cfg.data.batch_size
    per_epoch = len(shard_rows(task.num_train, 0, world)) // batch
    steps = per_epoch // 2
    seen = []
    for rank in range(world):
        for step in range(steps):
            for micro in range(cfg.train.grad_accum):
                x, y = task.train_batch(step, micro, rank, world, batch)
                assert torch.equal(y, task.y[x])
                seen += x.tolist()
    assert len(seen) == len(set(seen)) == world * steps * 2 * batch
    assert max(seen) < task.num_train             # never a held-out row
    # (step s, micro 1) is not (step s + 1, micro 0): the bug of issue 17, item 9
    assert not torch.equal(task.train_batch(0, 1, 0, world, batch)[0],
                           task.train_batch(1, 0, 0, world, batch)[0])
