"""DASVRDA, Prox-SVRG and Katyusha on regularised ERM: prox, certificate, convergence to a
certified optimum, checkpoint round trip, and 2-rank runs equal to single-process runs."""

from __future__ import annotations

import math

import pytest
import torch

from raytrain_eff.blocks.erm_losses import LOSSES, prox_elastic_net
from raytrain_eff.blocks.rows import DenseRows, as_rows
from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.dasvrda import DASVRDAConfig, KatyushaConfig, ProxSVRGConfig
from raytrain_eff.hparams.tasks import ERMConfig
from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.dasvrda import DASVRDAMethod, KatyushaMethod, ProxSVRGMethod
from raytrain_eff.methods.vr.certificate import certify, fista
from raytrain_eff.methods.vr.problem import ERMProblem
from raytrain_eff.methods.vr.solvers import dasvrda, make_solver, solve
from raytrain_eff.tasks.erm import ERMTask
from raytrain_eff.typed import ConfigError

torch.set_num_threads(1)


def cancer(**objective):
    task = ERMTask(ERMConfig(**objective), DataConfig(dataset="breast_cancer"))
    task.load()
    return task


@pytest.fixture(scope="module")
def data():
    task = cancer()
    return task.X_train, task.y_train


def problem(data, loss="logistic", l1=1e-3, l2=1e-4, sparse=False, **kw):
    X, y = data
    rows = as_rows(X.to_sparse_csr() if sparse else X)
    return ERMProblem(rows, y, loss=loss, l1=l1, l2=l2, **kw)


def reference(P):
    """FISTA to a certified 1e-11 relative gap: (P_ref, bound on P_ref − P*)."""
    x = fista(P, iters=20000, tol=1e-11)
    _, P_ref, bound = certify(P, x)
    assert bound <= 1e-11 * P_ref
    return P_ref


# --- prox, losses, certificate -----------------------------------------------------------------
def test_prox_is_the_minimiser_of_its_definition():
    v = torch.linspace(-2, 2, 41, dtype=torch.float64)
    t, l1, l2 = 0.7, 0.5, 0.3
    x = prox_elastic_net(v, t, l1, l2)

    def h(u):
        return 0.5 * (u - v) ** 2 + t * (l1 * u.abs() + 0.5 * l2 * u * u)

    for delta in (1e-3, -1e-3, 0.1, -0.1):  # separable: each coordinate is its own minimum
        assert torch.all(h(x) <= h(x + delta) + 1e-15)
    assert torch.all(x[v.abs() <= t * l1] == 0)
    assert torch.allclose(x[-1], torch.tensor((2 - t * l1) / (1 + t * l2), dtype=torch.float64))
    assert torch.equal(prox_elastic_net(v, t, 0.0, l2), v / (1 + t * l2))


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_loss_derivative_and_smoothness(loss):
    phi, dphi, c = LOSSES[loss]
    t = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    for sign in (1.0, -1.0):
        y = torch.full_like(t, sign)
        (grad,) = torch.autograd.grad(phi(t, y).sum(), t)
        assert torch.allclose(grad, dphi(t, y), atol=1e-12)
        slopes = dphi(t, y).diff() / t.detach().diff()  # φ'' ≤ c everywhere
        assert slopes.max() <= c + 1e-9 and slopes.min() >= -1e-12


def test_certificate_bounds_the_true_gap_on_ridge():
    task = cancer()
    X, y = task.X_train, task.y_train
    P = ERMProblem(DenseRows(X), y, loss="squared", l1=0.0, l2=1e-2)
    n = len(y)
    x_star = torch.linalg.solve(
        X.T @ X / n + 1e-2 * torch.eye(X.shape[1], dtype=X.dtype), X.T @ y / n
    )
    P_star = P.objective(x_star)
    g = torch.Generator().manual_seed(0)
    x = x_star + 1e-3 * torch.randn(X.shape[1], dtype=X.dtype, generator=g)
    _, P_plus, bound = certify(P, x)
    assert 0 <= P_plus - P_star <= bound
    assert bound < 1e-4


# --- convergence --------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_dasvrda_reaches_certified_optimum(data, loss):
    P = problem(data, loss=loss, sparse=loss == "logistic")
    P_ref = reference(P)
    x, trace = dasvrda(P, max_passes=400, target=P_ref * (1 + 1e-6), seed=1)
    assert (P.objective(x) - P_ref) / P_ref <= 1e-6, trace.objective[-3:]
    assert trace.objective[-1] < trace.objective[len(trace.objective) // 2] < trace.objective[0]


@pytest.mark.parametrize("name,eta_scale", [("prox-svrg", 4.0), ("katyusha", 1.0)])
def test_baselines_reach_certified_optimum(data, name, eta_scale):
    P = problem(data, l1=1e-3, l2=5e-2)  # better conditioned: the baselines are slower
    P_ref = reference(P)
    solver = make_solver(name, P, eta_scale=eta_scale, seed=2)
    trace = solve(solver, max_passes=100, target=P_ref * (1 + 1e-6))
    assert (trace.objective[-1] - P_ref) / P_ref <= 1e-6, trace.objective[-3:]


def test_l1_only_converges_to_long_fista(data):
    P = problem(data, l1=1e-2, l2=0.0)  # not strongly convex: no certificate, long FISTA
    x_ref = fista(P, iters=2000)
    P_ref = P.objective(x_ref)
    x, _ = dasvrda(P, max_passes=300, target=P_ref * (1 + 1e-6))
    assert (P.objective(x) - P_ref) / P_ref <= 1e-6
    assert int((x == 0).sum()) > 0  # L1 gives exact zeros through the prox


@pytest.mark.parametrize("restart", ["fixed", "none"])
def test_restart_variants_converge(data, restart):
    P = problem(data)
    P_ref = reference(P)
    x, _ = dasvrda(P, max_passes=1000, target=P_ref * (1 + 1e-6), restart=restart)
    assert (P.objective(x) - P_ref) / P_ref <= 1e-6


def test_importance_sampling_on_unequal_rows():
    task = cancer(normalize=False)  # standardised columns: row norms vary ~5x
    P = ERMProblem(DenseRows(task.X_train), task.y_train, l1=1e-3, l2=1e-3, importance=True)
    assert P.q is not None and P.q.max() > 3 * P.q.min()
    P_ref = reference(P)
    x, _ = dasvrda(P, max_passes=400, target=P_ref * (1 + 1e-6))
    assert (P.objective(x) - P_ref) / P_ref <= 1e-6


def test_dense_and_csr_give_the_same_iterates(data):
    runs = [make_solver("dasvrda", problem(data, sparse=s), seed=3) for s in (False, True)]
    for solver in runs:
        solve(solver, max_passes=6)
    assert torch.allclose(runs[0].output, runs[1].output, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["dasvrda", "prox-svrg", "katyusha"])
def test_state_dict_round_trip_resumes_exactly(data, name):
    P = problem(data)
    a = make_solver(name, P, seed=4)
    for _ in range(a.m + a.m // 2):  # stop mid-stage
        a.step()
    b = make_solver(name, P, seed=4)
    b.load_state_dict(a.state_dict())
    for _ in range(a.m):
        a.step()
        b.step()
    assert torch.equal(a.output, b.output) and a.evals == b.evals


# --- the method seam, single process and 2 gloo ranks ---------------------------------------------
def seam_run(rank, world, group, task, method_name, steps):
    torch.set_num_threads(1)
    ctx = MethodContext(
        rank=rank,
        world_size=world,
        group=group,
        task=task,
        iterate_shard=lambda bs: task.shard_iterator(rank, world, bs),
        shard_size=task.shard_size(rank, world),
    )
    cls, cfg = {
        "dasvrda": (DASVRDAMethod, DASVRDAConfig(importance=True)),
        "prox-svrg": (ProxSVRGMethod, ProxSVRGConfig()),
        "katyusha": (KatyushaMethod, KatyushaConfig()),
    }[method_name]
    method = cls(cfg)
    model = task.build_model()
    opt = method.make_optimizer(model, ctx)
    objectives, flops = [], 0.0
    for step in range(steps):  # the engine's loop, minus Ray
        opt.zero_grad()
        task.loss(model, task.train_batch(step, 0, rank, world, 16)).backward()
        opt.step()
        objectives.append(method.after_step(step, ctx)["objective"])
        flops += method.step_flops(0.0, ctx)
    return model.weight.detach().clone(), objectives, flops


@pytest.mark.parametrize("name", ["dasvrda", "prox-svrg", "katyusha"])
def test_two_ranks_equal_one(gloo, name):
    steps = 3 * 23 + 5  # n = 541 rows, b = 23: three stages and a bit
    task = ERMTask(ERMConfig(l1=1e-3, l2=1e-4), DataConfig(dataset="breast_cancer"), seed=7)
    task.load()  # loaded once here; the ranks get it pickled
    (single,) = gloo.run(1, seam_run, task, name, steps)
    r0, r1 = gloo.run(2, seam_run, task, name, steps)
    assert torch.equal(r0[0], r1[0]), "ranks disagree"
    assert torch.allclose(r0[0], single[0], rtol=0, atol=1e-11)
    assert r0[1][-1] == pytest.approx(single[1][-1], rel=1e-12)
    assert single[1][-1] < single[1][0]  # the objective went down
    assert 0 < r0[2] < single[2]  # each rank did part of the work


# --- errors a user can act on -----------------------------------------------------------------
def test_errors_name_the_problem(data):
    with pytest.raises(ValueError, match="unknown loss 'hinge'; choose one of"):
        problem(data, loss="hinge")
    with pytest.raises(ValueError, match="restart='fixed' needs l2 > 0"):
        make_solver("dasvrda", problem(data, l2=0.0), restart="fixed")
    with pytest.raises(ValueError, match=r"katyusha \(.*\) needs l2 > 0"):
        make_solver("katyusha", problem(data, l2=0.0))
    with pytest.raises(ValueError, match="unknown solver 'saga'"):
        make_solver("saga", problem(data))
    with pytest.raises(ConfigError, match="gamma: 1.0 is invalid; must be > 1"):
        DASVRDAConfig(gamma=1.0)
    ctx = MethodContext(
        task=type("T", (), {"params": DataConfig()})(), iterate_shard=lambda bs: iter(())
    )
    with pytest.raises(ValueError, match="need 'loss' \\(use task 'erm'\\)"):
        DASVRDAMethod(DASVRDAConfig()).make_optimizer(torch.nn.Linear(3, 1, bias=False), ctx)
    assert math.isfinite(problem(data).L_bar)
