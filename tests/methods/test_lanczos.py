"""Lanczos on HVPs: exact on a dense Hessian, orthonormal, restartable, symmetric operator,
and the sharded recursion equals the single-process one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian
from torch.nn.attention import SDPBackend, sdpa_kernel

from raytrain_eff.hparams.fosi import DHO2Config, FOSIConfig
from raytrain_eff.methods.dho2 import DHO2Optimizer, Slices
from raytrain_eff.methods.fosi import FOSIOptimizer
from raytrain_eff.methods.lanczos import (
    HVP_MODES,
    START_CHUNK,
    HessianOperator,
    lanczos,
    start_vector_pieces,
)

torch.set_num_threads(1)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()  # n = 51


def data(seed: int, rows: int = 32):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(rows, 4, generator=gen, dtype=torch.float64)
    return X, torch.randint(0, 3, (rows,), generator=gen)


def ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def dense_hessian(model, batch) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes, strict=True):
            params[n] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        return ce(lambda x: functional_call(model, params, (x,)), batch)

    return hessian(f)(flat)


def draw(n):
    return lambda i: torch.randn(
        n, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64
    )


@pytest.mark.parametrize("mode", HVP_MODES)
def test_hvp_equals_dense_hessian_in_every_mode(mode):
    model, batch = mlp(), data(1)
    H = dense_hessian(model, batch)
    op = HessianOperator(model, ce, batch, mode=mode)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    torch.testing.assert_close(op(v), H @ v, rtol=0, atol=1e-12)


class Attention(nn.Module):
    """One causal self-attention through F.scaled_dot_product_attention, as tasks/lm.py."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 3)

    def forward(self, x):  # (B, T, 8)
        q, k, v = self.qkv(x).view(*x.shape[:2], 3, 2, 4).permute(2, 0, 3, 1, 4)  # (B, 2, T, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(x.shape)).mean(1)  # (B, 3)


@pytest.mark.parametrize("mode", HVP_MODES)
def test_hvp_through_sdpa_in_every_mode(mode):
    """SDPA's fused CPU kernel has no double backward and no forward AD; the operator takes
    the math backend, so both modes give the true H v (and forward mode does not fall back)."""
    model, gen = Attention(), torch.Generator().manual_seed(1)
    batch = torch.randn(4, 6, 8, generator=gen), torch.randint(0, 3, (4,), generator=gen)
    with sdpa_kernel(SDPBackend.MATH):
        H = dense_hessian(model, batch)
    op = HessianOperator(model, ce, batch, mode=mode)
    v = torch.randn(H.shape[0], generator=gen)
    torch.testing.assert_close(op(v), H @ v, rtol=1e-4, atol=1e-5)
    assert op.forward_mode == (mode == "forward_over_reverse")


def test_double_backward_reuses_one_gradient_graph_for_every_hvp():
    model, batch = mlp(), data(1)
    H = dense_hessian(model, batch)
    op = HessianOperator(model, ce, batch)
    op.prepare()
    graph = op._graph
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(H.shape[0], dtype=torch.float64, generator=gen)
        torch.testing.assert_close(op(v), H @ v, rtol=0, atol=1e-12)
    assert op._graph is graph
    with pytest.raises(ValueError, match="hvp mode 'reverse'.*forward_over_reverse"):
        HessianOperator(model, ce, batch, mode="reverse")


def test_full_order_lanczos_recovers_the_spectrum_and_v_is_orthonormal():
    model, batch = mlp(), data(1)
    H = dense_hessian(model, batch)
    n = H.shape[0]
    lam = torch.linalg.eigvalsh(H)  # ascending
    eig = lanczos(
        HessianOperator(model, ce, batch), draw(n), m=n, k=5, num_smallest=2, ritz_tol=1e-6
    )
    assert eig.num_top == 5 and len(eig.eigvals) == 7
    torch.testing.assert_close(eig.eigvals[:5], lam.flip(0)[:5], rtol=0, atol=1e-10)
    torch.testing.assert_close(eig.eigvals[5:], lam[:2], rtol=0, atol=1e-10)
    torch.testing.assert_close(
        eig.V @ eig.V.T, torch.eye(7, dtype=torch.float64), rtol=0, atol=1e-10
    )
    # each Ritz vector is an eigenvector: ||H v − λ v|| equals the reported residual bound
    for lam_i, v, r in zip(eig.eigvals, eig.V, eig.residuals, strict=True):
        assert float((H @ v - lam_i * v).norm()) <= float(r) + 1e-9


def test_short_lanczos_top_k_within_the_ritz_residual_of_eigvalsh():
    model, batch = mlp(), data(2)
    H = dense_hessian(model, batch)
    lam = torch.linalg.eigvalsh(H).flip(0)
    k = 3
    eig = lanczos(HessianOperator(model, ce, batch), draw(H.shape[0]), m=4 * k, k=k)
    assert eig.num_top >= 1
    torch.testing.assert_close(eig.eigvals[0], lam[0], rtol=1e-6, atol=0)
    for i, (lam_i, r) in enumerate(zip(eig.eigvals, eig.residuals, strict=True)):
        # Ritz values bound true ones from inside; each lies within r of an eigenvalue
        assert lam_i <= lam[i] + 1e-12
        assert (lam - lam_i).abs().min() <= r + 1e-12
    torch.testing.assert_close(
        eig.V @ eig.V.T, torch.eye(len(eig.V), dtype=torch.float64), rtol=0, atol=1e-10
    )


def test_breakdown_restarts_and_still_finds_the_eigenvalues():
    # 3 distinct eigenvalues: the Krylov space is exhausted after 3 steps
    d = torch.tensor([5.0, 5.0, 2.0, 2.0, 2.0, -1.0, -1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    eig = lanczos(lambda q: d * q, draw(10), m=8, k=2, num_smallest=1, ritz_tol=1e-8)
    assert eig.restarts >= 1
    torch.testing.assert_close(
        eig.eigvals, torch.tensor([5.0, 5.0, -1.0], dtype=torch.float64), rtol=0, atol=1e-10
    )
    torch.testing.assert_close(
        eig.V @ eig.V.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-10
    )


def test_all_k_ritz_pairs_are_kept_by_default_and_the_filter_drops_unconverged_ones():
    model, batch = mlp(), data(3)
    every = lanczos(HessianOperator(model, ce, batch), draw(51), m=6, k=6)  # reference: all k
    tight = lanczos(HessianOperator(model, ce, batch), draw(51), m=6, k=6, ritz_tol=1e-3)
    assert len(every.eigvals) == every.num_top == 6
    assert len(tight.eigvals) < 6
    assert bool((tight.residuals <= 1e-3 * every.eigvals.abs().max()).all())
    assert bool((every.residuals > 1e-3 * every.eigvals.abs().max()).any())


class BNDropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.drop = nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.3)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("mode", HVP_MODES)
def test_operator_is_symmetric_with_batchnorm_and_dropout_and_keeps_buffers(mode):
    torch.manual_seed(0)
    model = BNDropNet().double().train()
    before = {n: b.clone() for n, b in model.named_buffers()}
    op = HessianOperator(model, ce, data(4), seed=7, mode=mode)
    n = sum(p.numel() for p in model.parameters())
    u, v = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    assert abs(float(u @ op(v) - v @ op(u))) < 1e-10 * float(u.norm() * v.norm())
    for name, b in model.named_buffers():
        assert torch.equal(b, before[name]), name


# -- sharded == single process ------------------------------------------------------------------
CFG = dict(k=3, refresh_interval=100, warmup=1)


def _rank_batches(rank, world, step):
    X, y = data(1000 + step, rows=12)  # 12 rows: splits evenly over 1, 2, 3, 4 ranks
    per = 12 // world
    return X[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per]


def _sharded_refresh(rank, world, group, start_vector):
    model = mlp()
    opt = DHO2Optimizer(
        model,
        DHO2Config(**CFG, start_vector=start_vector),
        ce,
        lambda share: _rank_batches(*share, 0),
        group=group,
        rank=rank,
        world_size=world,
    )
    opt.t = 7  # a later refresh: "fresh" must not be seed 0
    opt.refresh()
    eig = opt.eig
    return eig.eigvals, opt.slices.gather(eig.V), tuple(eig.V.shape), eig.basis_bytes


@pytest.mark.parametrize("start_vector", ["fixed", "fresh"])
def test_sharded_lanczos_equals_single_process(gloo, start_vector):
    single = FOSIOptimizer(
        mlp(), FOSIConfig(**CFG, start_vector=start_vector), ce, lambda: _rank_batches(0, 1, 0)
    )
    single.t = 7
    single.refresh()
    for world in (2, 3):
        results = gloo.run(world, _sharded_refresh, start_vector)
        for eigvals, V, shape, basis_bytes in results:
            torch.testing.assert_close(eigvals, single.eig.eigvals, rtol=0, atol=1e-10)
            torch.testing.assert_close(V, single.eig.V, rtol=0, atol=1e-10)
            # each rank holds only its slice: ceil(51 / P) columns of basis and eigenvectors
            assert shape[1] == -(-51 // world)
            assert basis_bytes == 12 * shape[1] * 8


def test_fixed_start_vector_is_one_seeded_vector_and_fresh_changes_per_refresh():
    model = mlp()
    n = sum(p.numel() for p in model.parameters())
    v0 = start_vector_pieces(0, n, [(0, n)])  # seed 0's vector, whole
    starts = {}
    for kind in ("fixed", "fresh"):
        opt = FOSIOptimizer(model, FOSIConfig(start_vector=kind), ce, lambda: data(1))
        starts[kind] = []
        for t in (0, 5):
            opt.t = t
            starts[kind].append(opt._start()(0))
    assert all(torch.equal(v, v0) for v in starts["fixed"])  # the reference: reused
    assert not torch.equal(starts["fresh"][0], starts["fresh"][1])
    assert not torch.equal(starts["fresh"][0], v0)
    # rank 1 of 3 starts from its slice of the same full vector (the gloo test runs it)
    rank1 = DHO2Optimizer(model, DHO2Config(), ce, lambda: data(1))
    rank1.slices = Slices(n, rank=1, world=3, group=None)  # s = ceil(51 / 3) = 17
    assert torch.equal(rank1._start()(0), v0[17:34])


def test_start_vector_pieces_across_chunk_edges_equal_the_whole_vectors_slices():
    n = 2 * START_CHUNK + 77  # three chunks, the last one short
    whole = start_vector_pieces(3, n, [(0, n)])
    assert whole.shape == (n,) and whole.dtype == torch.float64
    runs = [(5, 3), (START_CHUNK - 2, 4), (START_CHUNK + 9, START_CHUNK + 60), (n - 1, 1)]
    expected = torch.cat([whole[a : a + length] for a, length in runs])
    assert torch.equal(start_vector_pieces(3, n, runs), expected)
    assert not torch.equal(start_vector_pieces(4, n, [(0, 8)]), whole[:8])  # seeds differ
    assert 0.98 < whole.std().item() < 1.02  # standard normal, chunk after chunk
