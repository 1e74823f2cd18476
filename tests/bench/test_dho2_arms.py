"""bench/dho2_arms.py: FOSI-broadcast on 2 gloo ranks equals 1-process FOSI; the live-tensor
tracker counts what is allocated, once, and forgets what is freed."""

import pathlib
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from bench.dho2_arms import FOSIBroadcast, LiveTensorBytes  # noqa: E402
from raytrain_eff.engine.grad_sync import OverlappedGradientSync  # noqa: E402
from raytrain_eff.hparams.fosi import FOSIConfig  # noqa: E402
from raytrain_eff.methods.base import MethodContext  # noqa: E402
from raytrain_eff.methods.fosi import FOSI  # noqa: E402

STEPS, ROWS = 6, 8
CONFIG = dict(lr=0.05, k=2, refresh_interval=3, warmup=2)  # refreshes before updates 2 and 5


def data():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(STEPS, ROWS, 5, generator=gen, dtype=torch.float64)
    y = torch.randn(STEPS, ROWS, 1, generator=gen, dtype=torch.float64)
    curv = (
        torch.randn(ROWS, 5, generator=gen, dtype=torch.float64),
        torch.randn(ROWS, 1, generator=gen, dtype=torch.float64),
    )
    return X, y, curv


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1)).double()


def loss(m, batch):
    return nn.functional.mse_loss(m(batch[0]), batch[1])


def train(method, ctx, rows):
    X, y, _ = data()
    m = model()
    opt = method.make_optimizer(m, ctx)
    sync = OverlappedGradientSync(m, ctx.group, ctx.world_size) if ctx.distributed else None
    for step in range(STEPS):
        opt.zero_grad()
        if sync:
            sync.arm(True)
        loss(m, (X[step][rows], y[step][rows])).backward()
        if sync:
            sync.finish()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()]), opt.V.shape[0]


def curvature_batch(share=None):
    _, _, (Xc, yc) = data()
    return Xc, yc  # the whole global batch (share (0, 1) or one process)


def _on_ranks(rank, world, group):
    ctx = MethodContext(
        rank=rank, world_size=world, group=group, loss_fn=loss, next_batch=curvature_batch
    )
    half = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
    return train(FOSIBroadcast(FOSIConfig(**CONFIG)), ctx, half)


def test_fosi_broadcast_equals_single_process_fosi(gloo):
    ranks = gloo.run(2, _on_ranks)
    single, pairs = train(
        FOSI(FOSIConfig(**CONFIG)),
        MethodContext(loss_fn=loss, next_batch=curvature_batch),
        slice(0, ROWS),
    )
    assert pairs == ranks[0][1] == ranks[1][1] == 2  # rank 1 installed the broadcast
    assert torch.equal(ranks[0][0], ranks[1][0])  # both ranks take the same step
    torch.testing.assert_close(ranks[0][0], single, rtol=1e-10, atol=1e-12)


def test_live_tensor_bytes_counts_storages_once_and_forgets_freed_ones():
    with LiveTensorBytes() as live:
        a = torch.empty(1000, dtype=torch.uint8)
        view = a[10:20]  # a view shares the storage
        assert live.now == 1000
        del a
        assert live.now == 1000  # the view keeps it alive
        del view
        assert live.now == 0 and live.peak == 1000
        b = torch.empty(250, dtype=torch.float32)
        b.untyped_storage().resize_(0)  # how FSDP2 frees a parameter
        assert live.now == 0
        b.untyped_storage().resize_(400)
        assert live.now == 400 and live.peak == 1000
