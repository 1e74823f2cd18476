"""Overlapped bucketed gradient averaging equals a plain all-reduce of the whole gradient."""

import torch

from raytrain_eff.engine.grad_sync import OverlappedGradientSync


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)
        )
        self.unused = torch.nn.Linear(2, 2)  # never in the graph: arrives as an average of zeros

    def forward(self, x):
        return self.body(x)


def _model():
    torch.manual_seed(0)
    return _Net()


def _rank_grads(rank, world, group, accum, bucket_elements):
    import torch.distributed as dist

    net, ref = _model(), _model()
    sync = OverlappedGradientSync(net, group, world, bucket_elements=bucket_elements)
    for micro in range(accum):
        torch.manual_seed(100 * rank + micro)
        x, y = torch.randn(5, 6), torch.randn(5, 3)
        sync.arm(micro + 1 == accum)
        torch.nn.functional.mse_loss(net(x), y).div(accum).backward()
        torch.nn.functional.mse_loss(ref(x), y).div(accum).backward()
    sync.finish()
    expected = []
    for p in ref.parameters():
        g = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
        dist.all_reduce(g, group=group)
        expected.append(g / world)
    return [p.grad for p in net.parameters()], expected, len(sync.buckets)


def test_bucketed_overlap_equals_full_allreduce_with_accumulation(gloo):
    for accum, bucket in ((1, 1 << 20), (3, 20)):  # 20 elements: several buckets
        results = gloo.run(2, _rank_grads, accum, bucket)
        (g0, e0, n0), (g1, e1, _) = results
        assert n0 > (1 if bucket == 20 else 0)
        for a, b, c in zip(g0, g1, e0, strict=True):
            torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(a, b, rtol=0, atol=0)  # identical on both ranks
        assert not g0[-1].any()  # the unused layer's averaged gradient is zero


def test_disarmed_backward_accumulates_locally_only():
    net = _model()
    sync = OverlappedGradientSync(net, None, 1)
    net(torch.randn(2, 6)).sum().backward()
    assert all(not b.ready for b in sync.buckets)  # nothing copied: no collective pending
