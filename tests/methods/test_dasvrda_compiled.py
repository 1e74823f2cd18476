"""The compiled (numba) stage loops against the torch reference, and the data-aware step:
same iterates to 1e-12 on dense and CSR rows, every loss, uniform and importance sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raytrain_eff.blocks.erm_losses import LOSSES
from raytrain_eff.blocks.rows import as_rows
from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.dasvrda import DASVRDAConfig
from raytrain_eff.hparams.tasks import ERMConfig
from raytrain_eff.methods.vr.problem import ERMProblem
from raytrain_eff.methods.vr.solvers import SOLVERS, make_solver, solve
from raytrain_eff.tasks.erm import ERMTask
from raytrain_eff.typed import ConfigError, build

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data():
    task = ERMTask(ERMConfig(normalize=False), DataConfig(dataset="breast_cancer"))
    task.load()  # unequal row norms: importance weights vary
    return task.X_train, task.y_train


def problem(data, sparse=False, loss="logistic", **kw):
    X, y = data
    return ERMProblem(
        as_rows(X.to_sparse_csr() if sparse else X), y, loss=loss, l1=1e-3, l2=1e-4, **kw
    )


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("importance", [False, True], ids=["uniform", "importance"])
def test_compiled_follows_the_torch_iterates(data, sparse, name, importance):
    runs = {}
    for backend in ("torch", "compiled"):
        solver = make_solver(
            name, problem(data, sparse, importance=importance), seed=5, backend=backend
        )
        trace = solve(solver, max_passes=12)
        runs[backend] = (solver, trace)
    (a, ta), (b, tb) = runs["torch"], runs["compiled"]
    assert b.backend == "compiled" and a.backend == "torch"
    assert len(ta.objective) == len(tb.objective) > 4
    assert torch.allclose(a.output, b.output, rtol=0, atol=1e-12)
    assert np.allclose(ta.objective, tb.objective, rtol=1e-13, atol=0)
    assert (a.evals, a.flops) == (b.evals, b.flops)
    assert tb.objective[-1] < tb.objective[0]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_compiles_to_the_same_iterates(data, loss):
    outs = []
    for backend in ("torch", "compiled"):
        solver = make_solver("dasvrda", problem(data, True, loss=loss), seed=6, backend=backend)
        solve(solver, max_passes=8)
        outs.append(solver.output)
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-12)


def test_step_by_step_equals_whole_stages_and_resumes(data):
    """The method seam steps one inner iteration at a time; solve() runs whole stages."""
    whole = make_solver("katyusha", problem(data), seed=7)
    solve(whole, max_passes=6)  # 3 stages of 2 passes
    steps = make_solver("katyusha", problem(data), seed=7)
    for _ in range(steps.m + steps.m // 2):  # stop mid-stage, checkpoint, resume
        steps.step()
    resumed = make_solver("katyusha", problem(data), seed=7)
    resumed.load_state_dict(steps.state_dict())
    while resumed.stage < 3:
        resumed.step()
    assert torch.allclose(resumed.output, whole.output, rtol=0, atol=1e-14)
    assert resumed.evals == whole.evals


def test_batch_smoothness_matches_the_spectrum(data):
    X, y = data
    P = problem(data)
    A = X.numpy()
    exact = 0.25 * np.linalg.eigvalsh(A.T @ A / len(y))[-1]
    assert pytest.approx(exact, rel=1e-3) == P.L_F
    assert P.L_batch(1) == pytest.approx(P.L_bar)  # b = 1: the paper's L̄
    b = 23
    assert P.L_batch(b) == pytest.approx((1 - 1 / b) * P.L_F + P.L_bar / b)
    assert P.L_F < P.L_batch(b) < P.L_bar
    fast = make_solver("dasvrda", P)
    paper = make_solver("dasvrda", P, smoothness="max")
    assert fast.eta / paper.eta == pytest.approx(P.L_bar / P.L_batch(fast.b))


def test_backend_and_smoothness_errors(data):
    with pytest.raises(ValueError, match="unknown backend 'numba'; choose one of compiled"):
        make_solver("dasvrda", problem(data), backend="numba")
    with pytest.raises(ValueError, match="unknown smoothness 'mean'; choose one of batch"):
        make_solver("dasvrda", problem(data), smoothness="mean")
    with pytest.raises(ConfigError, match="dasvrda.backend: 'numba' is not allowed"):
        build(DASVRDAConfig, {"backend": "numba"}, "dasvrda")


# --- an unpenalised intercept, as scikit-learn fits it -------------------------------------------
def test_intercept_is_unpenalised_like_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    task = ERMTask(ERMConfig(l1=0.0, l2=1e-2), DataConfig(dataset="breast_cancer"))
    task.load()  # default: bias column, not penalised
    X, y = task.X_train, task.y_train
    P = ERMProblem(as_rows(X), y, l1=0.0, l2=1e-2, intercept=True)
    assert P.d_pen == X.shape[1] - 1
    assert P.R(torch.eye(X.shape[1], dtype=torch.float64)[-1]) == 0.0
    runs = []
    for backend in ("torch", "compiled"):
        solver = make_solver("dasvrda", P, seed=1, backend=backend)
        solve(solver, max_passes=300)
        runs.append(solver.output)
    assert torch.allclose(runs[0], runs[1], rtol=0, atol=1e-12)
    A = X[:, :-1].numpy()
    clf = LogisticRegression(C=1 / (len(y) * 1e-2), tol=1e-12, max_iter=10_000).fit(A, y.numpy())
    assert runs[1][-1].item() == pytest.approx(clf.intercept_[0], abs=1e-6)
    assert torch.allclose(runs[1][:-1], torch.from_numpy(clf.coef_[0]), rtol=0, atol=1e-6)
