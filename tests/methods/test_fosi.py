"""FOSI: base optimizers equal torch's, the split step equals its closed form, a Newton step
solves a quadratic in span(V), the eigenvalue floor holds, checkpoints resume exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raytrain_eff.hparams.fosi import FOSIConfig, MRDHO2Config
from raytrain_eff.methods.base import MethodContext, weight_decay_groups
from raytrain_eff.methods.baselines import DecoupledSGD
from raytrain_eff.methods.fosi import FOSI, FOSIOptimizer
from raytrain_eff.methods.lanczos import RitzPairs
from raytrain_eff.typed import ConfigError

torch.set_num_threads(1)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


class Batches:
    """Batch i is a pure function of i, so two runs (or a resumed run) see the same data."""

    def __init__(self, offset=0):
        self.i = offset

    def __call__(self):
        gen = torch.Generator().manual_seed(self.i)
        self.i += 1
        X = torch.randn(16, 5, generator=gen, dtype=torch.float64)
        return X, (X[:, 0] > 0).long() + (X[:, 1] > 0).long()


def train(model, opt, steps, batches):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ce(model, batches())
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("base", ["adamw", "heavy_ball"])
def test_before_the_first_refresh_fosi_is_its_base_optimizer(base):
    cfg = FOSIConfig(base=base, lr=0.05, weight_decay=0.1, warmup=1000)
    a, b = mlp(), mlp()
    fosi = FOSIOptimizer(a, cfg, ce, Batches(10_000))
    if base == "adamw":
        ref = torch.optim.AdamW(weight_decay_groups(b, 0.1), lr=0.05)
    else:
        ref = DecoupledSGD(weight_decay_groups(b, 0.1), lr=0.05, momentum=0.9, nesterov=False)
    train(a, fosi, 6, Batches())
    train(b, ref, 6, Batches())
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_split_step_equals_its_closed_form():
    # heavy-ball with μ = 0: m = g1, u = −lr·g2, so Δθ = −c·lr·(I − VᵀV) g − α Vᵀ(ρ ⊙ V g)
    cfg = FOSIConfig(
        base="heavy_ball", momentum=0.0, lr=0.1, alpha=0.3, k=4, refresh_interval=1000, warmup=1
    )
    model = mlp()
    opt = FOSIOptimizer(model, cfg, ce, Batches(500))
    batch = Batches()()
    ce(model, batch).backward()
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    opt.step()  # W = 1: refreshes first, then steps
    V, rho, c = opt.V, opt.rho, opt.c
    assert V.shape[0] >= 1 and c >= 1.0
    expected = theta - c * 0.1 * (g - V.T @ (V @ g)) - 0.3 * V.T @ (rho * (V @ g))
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(after, expected, rtol=0, atol=1e-12)


class Quadratic(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.theta = nn.Parameter(torch.ones(n, dtype=torch.float64))


def test_newton_part_solves_a_quadratic_inside_span_v():
    # L = ½ θᵀAθ, A = diag(100, 50, 1, ...): with α = 1 and μ = 0 the top-2 components of θ
    # vanish in one step, the rest move by the base optimizer only
    n = 12
    a = torch.tensor([100.0, 50.0] + [1.0] * (n - 2), dtype=torch.float64)
    model = Quadratic(n)

    def loss(m, _batch):
        return 0.5 * (a * m.theta**2).sum()

    cfg = FOSIConfig(
        base="heavy_ball",
        momentum=0.0,
        lr=0.01,
        alpha=1.0,
        k=2,
        warmup=1,
        lanczos_order=8,
        learning_rate_clip=1.0,
    )
    opt = FOSIOptimizer(model, cfg, loss, lambda: None)
    loss(model, None).backward()
    opt.step()
    torch.testing.assert_close(
        opt.eig.eigvals, torch.tensor([100.0, 50.0], dtype=torch.float64), rtol=0, atol=1e-9
    )
    expected = torch.tensor([0.0, 0.0] + [1.0 - 0.01] * (n - 2), dtype=torch.float64)
    torch.testing.assert_close(model.theta.detach(), expected, rtol=0, atol=1e-9)


def _install_diagonal(opt, eigvals, num_top):
    V = torch.zeros(len(eigvals), opt.n, dtype=torch.float64)
    V[range(len(eigvals)), range(len(eigvals))] = 1.0
    opt._install(
        RitzPairs(
            torch.tensor(eigvals, dtype=torch.float64),
            V,
            torch.zeros(len(eigvals)),
            0,
            0,
            0,
            num_top,
        )
    )


def test_eigenvalue_floor_bounds_rho_and_negative_curvature_is_descent():
    opt = FOSIOptimizer(mlp(), FOSIConfig(base="heavy_ball", eig_floor=0.5), ce, Batches())
    _install_diagonal(opt, [2.0, 1e-9, -4.0], 2)
    torch.testing.assert_close(opt.rho, torch.tensor([0.5, 2.0, 0.25], dtype=torch.float64))
    assert opt.c == 3.0  # λ_k ≈ 0: the clip value, never infinite


@pytest.mark.parametrize(
    "base, clip, eigvals, c",
    [
        ("heavy_ball", None, [4.0, 2.0], 2.0),  # reference fosi_momentum: clip 3
        ("heavy_ball", None, [8.0, 2.0], 3.0),
        ("heavy_ball", None, [1.0, -0.8], 1.25),  # |λ_max / λ_k|, as the reference
        ("adamw", None, [8.0, 2.0], 1.0),  # reference fosi_adam: Adam never scaled
        ("adamw", 3.0, [8.0, 2.0], 3.0),  # the named departure
    ],
)
def test_lr_scale_is_the_reference_clip_of_rho_k_over_rho_max(base, clip, eigvals, c):
    cfg = FOSIConfig(base=base, learning_rate_clip=clip)
    opt = FOSIOptimizer(mlp(), cfg, ce, Batches())
    _install_diagonal(opt, eigvals, len(eigvals))
    assert opt.c == pytest.approx(c, rel=1e-15)


def test_refreshes_fall_on_the_reference_updates():
    # reference: refresh before update τ = count + 1 when τ >= W and (τ − W) % T == 0
    def refresh_updates(**kw):
        opt = FOSIOptimizer(mlp(), FOSIConfig(k=1, **kw), ce, Batches(900))
        model, batches, hits = opt.model, Batches(), []
        for update in range(1, 13):
            train(model, opt, 1, batches)
            if opt.last["lanczos_iterations"]:
                hits.append(update)
        return hits

    assert refresh_updates(refresh_interval=4, warmup=3) == [3, 7, 11]
    assert refresh_updates(refresh_interval=4, warmup=1) == [1, 5, 9]
    assert refresh_updates(refresh_interval=5) == [5, 10]  # W = None: W = T


def test_trains_and_reports_metrics():
    model = mlp()
    cfg = FOSIConfig(lr=0.02, k=3, refresh_interval=10, warmup=2)
    method = FOSI(cfg)
    opt = method.make_optimizer(model, MethodContext(loss_fn=ce, next_batch=Batches(900)))
    batches = Batches()
    ctx = MethodContext()
    first, refreshes = None, 0
    for step in range(30):
        loss = train(model, opt, 1, batches)[0]
        first = first if first is not None else loss
        stats = method.after_step(step, ctx)
        if stats["lanczos_iterations"]:
            refreshes += 1
            assert stats["curvature_seconds"] > 0 and stats["lambda_max"] > 0
            assert stats["lanczos_iterations"] == 12
            # twelve HVPs through one gradient graph, whose build is counted once
            assert opt.hvp_flops > 0 and opt.operator_flops > 0
            assert method.step_flops(1.0, ctx) == 1.0 + 12 * opt.hvp_flops + opt.operator_flops
        else:
            assert stats["curvature_seconds"] == 0 and method.step_flops(1.0, ctx) == 1.0
    assert refreshes == 3  # before updates 2, 12, 22 (1-based)
    assert stats["curvature_bytes"] == 12 * opt.n * 8 + opt.V.numel() * 8
    assert loss < 0.8 * first


def test_state_dict_resumes_exactly():
    cfg = FOSIConfig(lr=0.02, k=3, refresh_interval=4, warmup=1, weight_decay=0.05)
    a = mlp()
    opt_a = FOSIOptimizer(a, cfg, ce, Batches(700))
    train(a, opt_a, 6, Batches())
    state = opt_a.state_dict()
    b = mlp(seed=1)
    b.load_state_dict(a.state_dict())
    opt_b = FOSIOptimizer(b, cfg, ce, Batches(opt_a.next_batch.i))
    opt_b.load_state_dict(state)
    train(a, opt_a, 7, Batches(6))
    train(b, opt_b, 7, Batches(6))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_fosi_refuses_several_workers_and_configs_validate():
    ctx = MethodContext(rank=0, world_size=2, group=object())
    with pytest.raises(ValueError, match="use dho2"):
        FOSI(FOSIConfig()).make_optimizer(mlp(), ctx)
    with pytest.raises(ConfigError, match="alpha: 0.0 is invalid; must be > 0"):
        FOSIConfig(alpha=0.0)
    with pytest.raises(ConfigError, match=r"lanczos_order: 3 is invalid; must be 0 \(auto\)"):
        FOSIConfig(k=4, lanczos_order=3)
    with pytest.raises(ConfigError, match="refresh_interval"):
        MRDHO2Config(k=4, lanczos_per_step=2, refresh_interval=5)
    assert FOSIConfig(k=2, num_smallest=1).order == 12
    with pytest.raises(ConfigError, match=r"warmup: 0 is invalid; must be None"):
        FOSIConfig(warmup=0)
    with pytest.raises(ConfigError, match="learning_rate_clip: 0.5 is invalid"):
        FOSIConfig(learning_rate_clip=0.5)


def test_defaults_are_the_reference_semantics():
    cfg = FOSIConfig()
    assert (cfg.learning_rate_clip, cfg.warmup) == (None, None)
    assert (cfg.clip, FOSIConfig(base="heavy_ball").clip) == (1.0, 3.0)
    assert cfg.first_refresh == cfg.refresh_interval
    assert (cfg.ritz_filter, cfg.ritz_cutoff) == ("none", None)
    assert FOSIConfig(ritz_filter="converged", ritz_tol=1e-3).ritz_cutoff == 1e-3
    assert cfg.start_vector == "fixed"
