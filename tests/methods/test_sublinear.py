"""Sublinear-time wide layers (arXiv 2208.04508): exact index, LSH upkeep, training, sharding."""

from __future__ import annotations

import math

import pytest
import torch

from raytrain_eff.blocks.shifted_relu import ShiftedReLU, default_shift
from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.sublinear import SublinearConfig
from raytrain_eff.hparams.tasks import WideConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.sublinear.index import HyperplaneLSH, use_index
from raytrain_eff.methods.sublinear.method import Sublinear
from raytrain_eff.methods.sublinear.optimizers import GaussNewton, NeuronSGD, gram
from raytrain_eff.tasks.wide import WideTask, unit_rows
from raytrain_eff.typed import ConfigError

F64 = torch.float64


def unit_data(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    X = unit_rows(torch.randn(n, d, generator=gen, dtype=F64))
    return X, torch.sin(3 * X[:, :1])


class Net(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.hidden = layer

    def forward(self, x, rows=None):
        return self.hidden(x, rows)


def dense_active(layer: ShiftedReLU, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.detach().T > layer.b


@pytest.mark.parametrize("slack", [0.0, 0.3])
def test_exact_index_equals_dense_active_set_under_random_updates(slack):
    n, d, m = 40, 16, 3001  # m not a power of the fan-out: padded leaves
    X, _ = unit_data(n, d, 0)
    layer = ShiftedReLU(d, m, 1, seed=1, dtype=F64)
    use_index(layer, "exact", X, fanout=4, slack=slack)
    gen = torch.Generator().manual_seed(2)
    rekeyed = updated = 0
    for it in range(12):
        size = [1, 7, 300, m][it % 4]  # single neuron .. every neuron
        U = torch.unique(torch.randint(0, m, (size,), generator=gen))
        scale = [0.05, 0.5, 2.0][it % 3]  # small drifts and threshold crossings
        with torch.no_grad():
            layer.weight[U] += scale * torch.randn(len(U), d, generator=gen, dtype=F64)
        layer.reset_stats()
        layer.neurons_changed(U)
        rekeyed += layer.stats["rekeyed"]
        updated += layer.stats["updated"]
        rows = torch.randint(0, n, (9,), generator=gen)
        bi, r, h = layer.active_pairs(X[rows], rows)
        got = torch.zeros(9, m, dtype=torch.bool)
        got[bi, r] = True
        assert torch.equal(got, dense_active(layer, X[rows])), f"step {it}"
        assert torch.allclose(h, (layer.weight[r] * X[rows][bi]).sum(1).detach())
    assert (rekeyed < updated) if slack else (rekeyed == updated)


def test_exact_query_reads_scale_with_active_set_not_width():
    d = 64
    X, _ = unit_data(8, d, 3)
    reads = {}
    for m in (2**12, 2**16):
        layer = ShiftedReLU(d, m, 1, b=2.5, seed=0, dtype=F64)  # same b: same active fraction
        use_index(layer, "exact", X, fanout=8)
        rows = torch.arange(8)
        layer.active_pairs(X, rows)
        reads[m] = layer.stats["reads"] / max(float(dense_active(layer, X).sum()), 1)
    # keys read per active neuron grow with tree depth (log m), not with m (16x here)
    assert reads[2**16] < 2 * reads[2**12]


def test_lsh_rehash_of_touched_neurons_equals_fresh_build_and_recall_is_measured():
    d, m = 16, 2000
    X, _ = unit_data(30, d, 4)
    layer = ShiftedReLU(d, m, 1, seed=5, dtype=F64)
    use_index(layer, "lsh", tables=4, bits=3, seed=7)
    gen = torch.Generator().manual_seed(8)
    for _ in range(5):
        U = torch.unique(torch.randint(0, m, (400,), generator=gen))
        with torch.no_grad():
            layer.weight[U] += torch.randn(len(U), d, generator=gen, dtype=F64)
        layer.neurons_changed(U)
    fresh = HyperplaneLSH(layer.weight.detach(), 4, 3, seed=7)
    fresh.M = layer.index.M  # same lift: the structures must agree exactly
    fresh.codes = fresh._hash(fresh._lift(layer.weight.detach()))
    fresh._rebuild_all()
    assert torch.equal(fresh.codes, layer.index.codes)
    for t in range(4):
        for code in range(8):
            a, b = layer.index.slots[t, code], fresh.slots[t, code]
            assert set(a[a >= 0].tolist()) == set(b[b >= 0].tolist())
    bi, r, _ = layer.active_pairs(X, None)
    truth = dense_active(layer, X)
    assert bool(truth[bi, r].all())  # every reported neuron is truly active
    recall = float(truth[bi, r].sum() / truth.sum())
    assert 0 < recall < 1  # approximate, and the metric sees it
    layer.check_recall = True
    layer.reset_stats()
    layer(X)
    assert layer.stats["recall_hits"] / layer.stats["recall_true"] == pytest.approx(recall)


def test_gram_equals_explicit_jacobian_product():
    d, m, k, B = 5, 200, 3, 6
    X, _ = unit_data(B, d, 9)
    layer = ShiftedReLU(d, m, k, b=0.3, seed=3, dtype=F64)

    def f(W):
        return (torch.relu(X @ W.T - layer.b) @ layer.a / math.sqrt(m)).T.reshape(-1)

    J = torch.autograd.functional.jacobian(f, layer.weight.detach()).reshape(k * B, -1)
    bi, r = (layer.b < X @ layer.weight.detach().T).nonzero(as_tuple=True)
    G, U, _ = gram(X, bi, r, layer.a, m)
    assert torch.allclose(G, J @ J.T, atol=1e-12)


def train(layer, update: str, steps: int, X, Y, B: int, lr: float):
    net = Net(layer)
    opt = NeuronSGD(net, lr) if update == "sgd" else GaussNewton(net, lr, 1e-6)
    gen, losses = torch.Generator().manual_seed(11), []
    for _ in range(steps):
        rows = torch.randperm(len(X), generator=gen)[:B]
        f = net(X[rows], rows)
        loss = 0.5 * ((f - Y[rows]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return torch.tensor(losses), layer.weight.detach()


@pytest.mark.parametrize("update,lr", [("sgd", 20.0), ("gauss_newton", 0.5)])
def test_sparse_path_follows_dense_loss_trajectory(update, lr):
    n, d, m = 48, 8, 1500
    X, Y = unit_data(n, d, 12)
    runs = {}
    for mode in ("dense", "exact"):
        layer = ShiftedReLU(d, m, 1, seed=13, dtype=F64)
        use_index(layer, mode, X, fanout=4)
        runs[mode] = train(layer, update, 25, X, Y, 16, lr)
    (l_dense, w_dense), (l_exact, w_exact) = runs["dense"], runs["exact"]
    assert l_dense[-1] < 0.7 * l_dense[0]  # the reference actually learns
    assert torch.allclose(l_exact, l_dense, rtol=1e-9, atol=1e-12)
    assert torch.allclose(w_exact, w_dense, rtol=1e-9, atol=1e-12)


def _sharded_training(rank, world, group, update, lr):
    torch.set_num_threads(1)
    X, Y = unit_data(32, 8, 14)
    layer = ShiftedReLU(8, 1001, 2, seed=15, dtype=F64)
    layer.shard(rank, world, group)
    use_index(layer, "exact", X, fanout=4)
    Y2 = torch.cat([Y, -Y], 1)
    losses, W = train(layer, update, 10, X, Y2, 12, lr)
    return losses, W


@pytest.mark.parametrize("update,lr", [("sgd", 20.0), ("gauss_newton", 0.5)])
def test_sharded_width_equals_unsharded(gloo, update, lr):
    (l0, w0), (l1, w1) = gloo.run(2, _sharded_training, update, lr)
    X, Y = unit_data(32, 8, 14)
    layer = ShiftedReLU(8, 1001, 2, seed=15, dtype=F64)
    use_index(layer, "exact", X, fanout=4)
    losses, W = train(layer, update, 10, X, torch.cat([Y, -Y], 1), 12, lr)
    assert len(w0) + len(w1) == 1001 and abs(len(w0) - len(w1)) <= 1
    assert torch.allclose(l0, losses, rtol=1e-9) and torch.equal(l0, l1)
    assert torch.allclose(torch.cat([w0, w1]), W, rtol=1e-9, atol=1e-12)


def wide_task(**kw) -> WideTask:
    # n = B: full-batch steps, the regime where the index saves work (each re-keyed neuron
    # costs n·d, one key per indexed input)
    task = WideTask(
        WideConfig(width=2048, num_train=16, num_val=32, **kw), DataConfig(batch_size=16), seed=0
    )
    task.load()
    return task


@pytest.mark.parametrize("index", ["exact", "lsh", "dense"])
def test_method_seam_reports_metrics_and_counted_flops(index):
    task = wide_task()
    method = Sublinear(SublinearConfig(index=index, lr=20.0, lsh_bits=2, recall_interval=1))
    ctx = MethodContext(task=task)
    model = method.prepare(task.build_model(), ctx)
    opt = method.make_optimizer(model, ctx)
    for step in range(3):
        method.before_step(step, ctx)
        loss = task.loss(model, task.train_batch(step, 0, 0, 1, 16))
        opt.zero_grad()
        loss.backward()
        opt.step()
        stats = method.after_step(step, ctx)
    layer = model.hidden
    ref = layer.dense_reference_flops(16)
    assert 0 < stats["active_fraction"] < 0.3
    assert stats["query_seconds"] >= 0 and stats["update_seconds"] >= 0
    if index == "dense":
        assert stats["neurons_updated"] == 2048 and method.step_flops(ref, ctx) == ref
        return
    assert 0 < stats["neurons_updated"] < 2048
    # LSH with 2-bit tables verifies most neurons: cheaper than dense, far from sublinear
    assert method.step_flops(ref, ctx) < (0.6 if index == "exact" else 1.0) * ref
    assert stats["index_recall"] == 1.0 if index == "exact" else 0 < stats["index_recall"] < 1
    method.load_state_dict(method.state_dict())  # index is rebuilt from the restored weights
    method.before_step(3, ctx)
    rows = torch.arange(8)
    bi, r, _ = layer.active_pairs(task.index_inputs()[rows], rows)
    assert len(r) > 0


def test_errors_name_the_fix():
    task = wide_task()
    with pytest.raises(ValueError, match="no ShiftedReLU layer"):
        Sublinear(SublinearConfig()).prepare(torch.nn.Linear(2, 2), MethodContext(task=task))
    ctx = MethodContext(task=task, world_size=2, group=object())
    with pytest.raises(ValueError, match="task.shard_width: true"):
        Sublinear(SublinearConfig()).prepare(task.build_model(), ctx)
    with pytest.raises(ConfigError, match="update: 'gauss_newton' is invalid; must be sgd when"):
        SublinearConfig(index="lsh", update="gauss_newton")
    with pytest.raises(ConfigError, match="fanout: 1 is invalid"):
        SublinearConfig(fanout=1)


def test_default_shift_gives_about_m_to_the_0_8_active():
    d, m = 64, 2**14
    X, _ = unit_data(64, d, 16)
    layer = ShiftedReLU(d, m, 1, seed=0, dtype=F64)
    assert layer.b == pytest.approx(default_shift(m)) == pytest.approx(math.sqrt(0.4 * math.log(m)))
    per_input = float(dense_active(layer, X).sum()) / 64
    expected = m * 0.5 * math.erfc(layer.b / math.sqrt(2))  # ⟨w_r, x⟩ ~ N(0, 1) for unit x
    assert 0.8 * expected < per_input < 1.2 * expected
    # m·P(z > b) ≈ m^0.8 / (b·√(2π)): m^0.8 up to a log factor
    assert expected == pytest.approx(m**0.8 / (layer.b * math.sqrt(2 * math.pi)), rel=0.25)
