"""Compressed deep linear networks (arXiv 2311.05061): init, recovery, speed-up, head export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff.blocks import deep_linear
from raytrain_eff.hparams.lowdim import LowDimConfig
from raytrain_eff.methods import lowdim as L
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.tasks import lowrank
from raytrain_eff.typed import ConfigError

torch.set_num_threads(1)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def problems():
    return {
        "factorization": lowrank.factorization(30, 3, gen(0)),
        "completion": lowrank.completion(50, 2, 0.3, gen(0)),
        "sensing": lowrank.sensing(20, 2, 300, gen(0)),
    }


def test_surrogates_match_their_closed_forms():
    P = problems()
    mf, mc, ms = P["factorization"], P["completion"], P["sensing"]
    torch.testing.assert_close(mf.surrogate, mf.Phi, rtol=0, atol=1e-15)
    p = float(mc.M.sum()) / mc.M.numel()
    assert abs(p - 0.3) < 1e-3 and set(mc.M.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(mc.surrogate, mc.M * mc.Phi / p, rtol=0, atol=1e-14)
    A = ms.A.view(-1, 20, 20)
    torch.testing.assert_close(ms.surrogate, (ms.y[:, None, None] * A).mean(0), rtol=0, atol=1e-13)
    assert torch.linalg.matrix_rank(mf.Phi).item() == 3
    assert abs(torch.linalg.matrix_norm(mf.Phi, 2).item() - 1) < 1e-12


@pytest.mark.parametrize("kind", ["factorization", "completion", "sensing"])
def test_compressed_product_at_init_is_eps_cubed_top_2r_of_surrogate(kind):
    P, eps = problems()[kind], 1e-2
    r = 3 if kind == "factorization" else 2
    net = L.compressed(P.surrogate, 2 * r, eps)
    assert [tuple(w.shape) for w in net.weights] == [
        (2 * r, P.Phi.shape[1]),
        (2 * r, 2 * r),
        (P.Phi.shape[0], 2 * r),
    ]
    W = net.product().detach().numpy()
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False)[: 2 * r], eps**3, rtol=1e-12)
    U, s, Vh = np.linalg.svd(P.surrogate.numpy())  # an independent SVD
    if s[2 * r - 1] > 1e-6 * s[0]:  # the top-2r subspaces are unique: compare whole products
        np.testing.assert_allclose(W, eps**3 * U[:, : 2 * r] @ Vh[: 2 * r], rtol=0, atol=1e-18)
    else:  # factorisation: Φ̂ = Φ has rank r, only its top-r pairs are unique
        Ur, Vr = U[:, :r], Vh[:r].T
        np.testing.assert_allclose(
            Ur @ Ur.T @ W @ Vr @ Vr.T, eps**3 * Ur @ Vr.T, rtol=0, atol=1e-18
        )
    torch.testing.assert_close(net.weights[1].detach(), eps * torch.eye(2 * r, dtype=torch.float64))


def test_original_init_is_scaled_orthogonal():
    net = deep_linear.original(12, 4, 0.1, gen(3), width=20)
    W1, W2, W4 = (w.detach() for w in (net.weights[0], net.weights[1], net.weights[3]))
    torch.testing.assert_close(W1.T @ W1, 0.01 * torch.eye(12, dtype=torch.float64))
    torch.testing.assert_close(W2 @ W2.T, 0.01 * torch.eye(20, dtype=torch.float64))
    torch.testing.assert_close(W4 @ W4.T, 0.01 * torch.eye(12, dtype=torch.float64))


def fit(net, problem, opt, steps: int, tol: float = 0.0) -> list[float]:
    """Full-batch gradient steps on f(W_L⋯W_1): the recovery error before each step (the
    first: the init's), stopping at the first at or below ``tol``, after ``steps``, or at NaN."""
    errors = []
    for k in range(steps + 1):
        W = net.product()  # formed once: the error reads it, the loss backpropagates through it
        errors.append(problem.error(W.detach()))
        if errors[-1] <= tol or k == steps or errors[-1] != errors[-1]:
            break
        opt.zero_grad(set_to_none=True)
        problem.loss(W).backward()
        opt.step()
    return errors


def first_below(errors: list[float], tol: float) -> int:
    return next(k for k, e in enumerate(errors) if e <= tol)


def test_compressed_recovers_a_small_factorisation_below_1e_8():
    P = lowrank.factorization(20, 2, gen(0))
    # the width-2r net keeps ε³ in its r unneeded directions: the floor is √r·ε³/‖Φ‖_F ≈ 4e-9
    net = L.compressed(P.surrogate, 4, 1.5e-3)
    traj = fit(net, P, L.make_optimizer(L.param_groups(net, [net], 0.5, 1.5), "gd"), 6000, tol=1e-8)
    assert traj[-1] < 1e-8, traj[-1]
    assert first_below(traj, 1e-3) < first_below(traj, 1e-8) == len(traj) - 1


@pytest.mark.parametrize(
    "kind,eta,alpha,steps",
    [("factorization", 0.4, 1.5, 700), ("completion", 0.3, 1.0, 800), ("sensing", 0.4, 1.5, 900)],
)
def test_compressed_never_worse_than_original_at_equal_iterations(kind, eta, alpha, steps):
    P = problems()[kind]
    d, r = P.Phi.shape[0], 3 if kind == "factorization" else 2
    orig = deep_linear.original(d, 3, 1e-2, gen(1))
    comp = L.compressed(P.surrogate, 2 * r, 1e-2)
    e_orig = fit(orig, P, L.make_optimizer(L.param_groups(orig, [orig], eta, 1.0), "gd"), steps)
    e_comp = fit(comp, P, L.make_optimizer(L.param_groups(comp, [comp], eta, alpha), "gd"), steps)
    assert len(e_orig) == len(e_comp) == steps + 1
    worse = [k for k in range(steps + 1) if e_comp[k] > e_orig[k]]
    assert not worse, f"compressed worse at iterations {worse[:5]}"
    assert e_comp[-1] < 0.5 * e_orig[-1] or e_comp[-1] < 1e-4  # and clearly ahead at the end


def test_discrepant_learning_rate_is_one_gd_step_by_hand():
    P = lowrank.factorization(10, 2, gen(0))
    net = L.compressed(P.surrogate, 4, 0.5)
    before = [w.detach().clone() for w in net.weights]
    opt = L.make_optimizer(L.param_groups(net, [net], 0.1, 3.0), "gd")
    P.loss(net.product()).backward()
    grads = [w.grad.clone() for w in net.weights]
    opt.step()
    for W, W0, G, lr in zip(net.weights, before, grads, (0.3, 0.1, 0.3), strict=True):
        torch.testing.assert_close(W.detach(), W0 - lr * G, rtol=0, atol=1e-15)


def test_adam_and_random_init_also_train():
    P = lowrank.factorization(20, 2, gen(0))
    for init, kind, lr in (("spectral", "adam", 1e-2), ("random", "gd", 0.4)):
        net = L.compressed(P.surrogate, 4, 1e-2, init, gen(5))
        traj = fit(net, P, L.make_optimizer(L.param_groups(net, [net], lr, 2.0), kind), 600)
        goal = 0.05 if init == "spectral" else 0.5  # a random subspace must rotate first
        assert traj[-1] < goal * traj[0], (init, kind, traj[-1])


# -- the method on a nonlinear classifier -----------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.head = nn.Linear(16, 6)

    def forward(self, x):
        return self.head(self.body(x))


def ce(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def head_setup(**overrides):
    torch.manual_seed(0)
    model = Net().double()
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 6, (64,))
    ctx = MethodContext(loss_fn=ce, next_batch=lambda: (x, y))
    method = L.LowDim(LowDimConfig(**{"width": 4, "init_scale": 0.5, "lr": 0.05, **overrides}))
    return model, method, ctx, (x, y)


def test_head_spectral_init_from_the_step0_gradient():
    model, method, ctx, (x, y) = head_setup()
    h, b = model.body(x).detach(), model.head.bias.detach().clone()
    model = method.prepare(model, ctx)
    assert isinstance(model.head, deep_linear.DeepLinear) and len(model.head.weights) == 3
    # cross-entropy at W = 0: −∇_W = (1/n) Σ (onehot(y) − softmax(b)) hᵀ
    Phi_hat = ((F.one_hot(y, 6) - torch.softmax(b, 0)).T @ h / len(y)).numpy()
    U, _, Vh = np.linalg.svd(Phi_hat)
    np.testing.assert_allclose(
        model.head.product().detach().numpy(), 0.125 * U[:, :4] @ Vh[:4], rtol=0, atol=1e-14
    )
    torch.testing.assert_close(model.head.bias.detach(), b)


def test_head_trains_and_exports_into_one_linear_exactly():
    model, method, ctx, (x, y) = head_setup()
    model = method.prepare(model, ctx)
    opt = method.make_optimizer(model, ctx)
    lrs = sorted(g["lr"] for g in opt.param_groups)
    assert lrs == [0.05, 0.05 * 5.0]
    first = float(ce(model, (x, y)).detach())
    for _ in range(30):
        opt.zero_grad()
        ce(model, (x, y)).backward()
        opt.step()
    assert float(ce(model, (x, y)).detach()) < first
    with torch.no_grad():
        logits = model(x)
    exported = method.export(model)
    assert type(exported.head) is nn.Linear
    assert exported.head.weight.shape == (6, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), logits, rtol=0, atol=1e-13)


def test_head_error_paths_name_the_problem():
    model, method, ctx, _ = head_setup(layer="body.1")
    with pytest.raises(TypeError, match="lowdim.layer 'body.1' is a ReLU; it must be an nn.Linear"):
        method.prepare(model, ctx)
    model, method, ctx, _ = head_setup(layer="classifier")
    with pytest.raises(
        ValueError,
        match="lowdim.layer 'classifier' is not a module of Net; "
        "modules: body, body.0, body.1, head",
    ):
        method.prepare(model, ctx)
    model, method, ctx, _ = head_setup(width=7)
    with pytest.raises(ValueError, match=r"width 7 exceeds min\(d_out, d_in\) = 6"):
        method.prepare(model, ctx)
    model, method, _, _ = head_setup()
    with pytest.raises(ValueError, match="needs ctx.loss_fn and ctx.next_batch"):
        method.prepare(model, MethodContext())
    with pytest.raises(ValueError, match="optimizer 'sgd': choose 'gd' or 'adam'"):
        L.make_optimizer([{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}], "sgd")


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="width: 0 is invalid; must be an integer >= 1"):
        LowDimConfig(width=0)
    with pytest.raises(ConfigError, match=r"init_scale: 2.0 is invalid; must be in \(0, 1\]"):
        LowDimConfig(init_scale=2.0)
    with pytest.raises(ConfigError, match="alpha: -1.0 is invalid; must be > 0"):
        LowDimConfig(alpha=-1.0)
