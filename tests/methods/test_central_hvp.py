"""Central-difference HVPs through FSDP2's own forward/backward: each rank's slice of H v
against the exact double-backward HVP of the whole batch, in float32 and float64, and the
model (parameters, gradients, buffers) exactly as it was after every HVP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytrain_eff.methods.central_hvp import CentralDifferenceHVP
from raytrain_eff.methods.lanczos import HessianOperator
from raytrain_eff.tasks.base import shard_rows

torch.set_num_threads(1)
ROWS = 12
# relative error ‖H_c v − H v‖ / ‖H v‖ measured on this model (P = 1, 2, 3): 2.0e-5 in
# float32 and 3.1e-11 in float64; the bounds leave a margin
BOUND = {torch.float32: 2e-4, torch.float64: 1e-9}


def model_of(dtype, norm=False):
    """BatchNorm's statistics are per rank (no SyncBatchNorm): the P-rank loss is another
    function, so only the restore test uses it."""
    torch.manual_seed(0)
    layers = [
        nn.Linear(5, 16),
        nn.Tanh(),
        *([nn.BatchNorm1d(16)] if norm else []),
        nn.Linear(16, 3),
    ]
    return nn.Sequential(*layers).to(dtype)


def ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def batch_of(dtype):
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(ROWS, 5, generator=gen, dtype=torch.float64)
    return X.to(dtype), (X[:, 0] > 0).long() + (X[:, 1] > 0).long()


def vectors(n):
    gen = torch.Generator().manual_seed(5)
    return [torch.randn(n, generator=gen, dtype=torch.float64) for _ in range(3)]


def _central(rank, world, group, dtype, norm=False):
    from raytrain_eff.blocks.dtensor import local
    from raytrain_eff.engine import sharding
    from raytrain_eff.methods.dho2 import ShardSlices

    model = model_of(dtype, norm)
    model = sharding.shard(model, [model[0]], sharding.mesh(group, torch.device("cpu")))
    params = list(model.parameters())
    slices = ShardSlices(params, rank, world, group)
    X, y = batch_of(dtype)
    rows = shard_rows(ROWS, rank, world)
    weight = (rows.stop - rows.start) * world / ROWS
    # a training gradient that the HVP must leave in place
    ce(model, (X, y)).backward()
    before = (
        [local(p).clone() for p in params],
        [local(p.grad).clone() for p in params],
        [b.clone() for b in model.buffers()],
    )
    H = CentralDifferenceHVP(
        model,
        ce,
        (X[rows], y[rows]),
        slices.local(_flat(model)),
        slices.psum,
        seed=1,
        weight=weight,
    )
    out = [slices.gather(H(slices.local(v)).double()) for v in vectors(slices.n)]
    after = ([local(p) for p in params], [local(p.grad) for p in params], list(model.buffers()))
    same = all(
        torch.equal(a, b)
        for xs, ys in zip(before, after, strict=True)
        for a, b in zip(xs, ys, strict=True)
    )
    return out, same


def _flat(model):
    return torch.cat([p.full_tensor().detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_central_differences_on_shards_match_the_exact_hvp(dtype, gloo):
    model = model_of(dtype)
    exact = HessianOperator(model, ce, batch_of(dtype))
    n = sum(p.numel() for p in model.parameters())
    reference = [exact(v).double() for v in vectors(n)]
    for world in (1, 2, 3):
        for rank, (out, same) in enumerate(gloo.run(world, _central, dtype)):
            assert same, f"P={world} rank {rank}: the HVP left the model changed"
            errors = [float((a - b).norm() / b.norm()) for a, b in zip(out, reference, strict=True)]
            print(f"{dtype} P={world}: relative error {max(errors):.2e}")
            assert max(errors) < BOUND[dtype]


def test_an_hvp_leaves_parameters_gradients_and_batchnorm_statistics_as_they_were(gloo):
    for _, same in gloo.run(2, _central, torch.float32, True):
        assert same
