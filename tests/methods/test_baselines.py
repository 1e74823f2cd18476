"""The baselines run torch's fused kernels, and those equal the plain per-tensor loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytrain_eff.hparams.baselines import AdamWConfig, SGDConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.baselines import SGD, AdamW, fusable

pytestmark = pytest.mark.unit


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def trajectory(method, fused: bool) -> list[torch.Tensor]:
    net = model()
    opt = method.make_optimizer(net, MethodContext())
    for group in opt.param_groups:  # the plain loop: torch's single-tensor path
        group["fused"], group["foreach"] = (True, None) if fused else (None, False)
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
        y = torch.randn(16, 3, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize(
    "method",
    [
        AdamW(AdamWConfig(lr=1e-2, weight_decay=0.1)),
        SGD(SGDConfig(lr=5e-2, momentum=0.9, weight_decay=0.1)),
        SGD(SGDConfig(lr=5e-2, momentum=0.9, nesterov=True)),
    ],
    ids=["adamw", "sgd", "nesterov"],
)
def test_fused_baseline_equals_the_plain_loop_in_float64(method):
    opt = method.make_optimizer(model(), MethodContext())
    assert all(g["fused"] for g in opt.param_groups)  # the default is the fast path
    for fast, plain in zip(trajectory(method, True), trajectory(method, False), strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_integer_parameters_fall_back_to_the_unfused_path():
    net = nn.Linear(2, 2)
    net.register_parameter(
        "count", nn.Parameter(torch.zeros(1, dtype=torch.long), requires_grad=False)
    )
    assert fusable(model()) and not fusable(net)
