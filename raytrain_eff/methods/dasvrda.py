"""DASVRDA, Prox-SVRG and Katyusha on the method seam: one inner iteration per engine step.

Murata & Suzuki, "Doubly Accelerated Stochastic Variance Reduced Dual Averaging Method for
Regularized Empirical Risk Minimization", NeurIPS 2017, arXiv 1703.00439; Prox-SVRG (Xiao &
Zhang 2014, arXiv 1403.4699); Katyusha (Allen-Zhu, JMLR 2018, arXiv 1603.05953). The update
rules, step sizes and backends are in ``methods/vr/solvers.py``; the package ``methods/vr``
holds the maths (problem, solvers, certificate, compiled kernels) on the losses and rows of
``blocks/`` (the ``erm`` task uses them too), and this module the seam adapters.

The optimizer does its own gradient evaluations (one inner iteration per ``step()``) on the
shard it read once through ``ctx.iterate_shard``, for the objective named by the ``erm``
task's parameters (loss, l1, l2, an unpenalised intercept); the engine's gradient is not
used, hence ``owns_gradient_sync``. Data-parallel runs use the torch path (see solvers).
"""

from __future__ import annotations

import torch

from raytrain_eff.blocks.rows import as_rows, cat_rows
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.methods.vr.problem import ERMProblem
from raytrain_eff.methods.vr.solvers import VRSolver, make_solver


def problem_from_shard(ctx: MethodContext, objective, importance: bool) -> ERMProblem:
    """Read this rank's whole shard once (ctx.iterate_shard) into an ERMProblem."""
    for name in ("loss", "l1", "l2"):
        if not hasattr(objective, name):
            raise ValueError(
                f"this method solves regularised ERM: the task's parameters need "
                f"'{name}' (use task 'erm'); got {type(objective).__name__}"
            )
    if ctx.iterate_shard is None:
        raise ValueError("this method needs ctx.iterate_shard (full passes over the shard)")
    batches = list(ctx.iterate_shard(4096))
    rows = cat_rows([as_rows(X) for X, _ in batches])
    y = torch.cat([t for _, t in batches])
    intercept = getattr(objective, "bias_feature", False) and not getattr(
        objective, "penalise_bias", True
    )
    return ERMProblem(
        rows,
        y,
        loss=objective.loss,
        l1=objective.l1,
        l2=objective.l2,
        group=ctx.group if ctx.distributed else None,
        importance=importance,
        intercept=intercept,
    )


class SolverOptimizer(torch.optim.Optimizer):
    """The engine's optimizer slot: ``step()`` runs one inner iteration and writes x̃ to the
    model (the stage output, whose objective is known). The LR in param_groups is unused."""

    def __init__(self, param: torch.nn.Parameter, solver: VRSolver):
        super().__init__([param], {"lr": solver.eta})
        self.solver, self.param = solver, param

    @torch.no_grad()
    def step(self, closure=None):
        self.solver.step()
        self.param.copy_(self.solver.output.view_as(self.param))

    def state_dict(self) -> dict:
        return {"solver": self.solver.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.solver.load_state_dict(state["solver"])
        self.param.copy_(self.solver.output.view_as(self.param))


class _VRMethod(Method):
    solver_name = ""
    owns_gradient_sync = True  # gradients are evaluated and all-reduced by the solver

    def make_optimizer(self, model, ctx: MethodContext):
        params = [p for p in model.parameters() if p.requires_grad]
        if len(params) != 1:
            raise ValueError(
                f"{self.solver_name} needs a linear model with one weight vector; "
                f"got {len(params)} parameters"
            )
        c = self.config
        if ctx.task is None:
            raise ValueError(
                f"{self.solver_name} reads its objective from the task: "
                f"ctx.task is None (use task 'erm')"
            )
        problem = problem_from_shard(ctx, ctx.task.params, c.importance)
        extra = {"gamma": c.gamma, "restart": c.restart} if self.solver_name == "dasvrda" else {}
        self.solver = make_solver(
            self.solver_name,
            problem,
            params[0].detach().flatten(),
            b=c.b,
            m=c.m,
            eta_scale=c.eta_scale,
            seed=getattr(ctx.task, "seed", 0),
            backend=c.backend,
            smoothness=c.smoothness,
            **extra,
        )
        self._flops_seen = 0.0
        return SolverOptimizer(params[0], self.solver)

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        s = self.solver
        return {"objective": s.objective, "stage": float(s.stage), "data_passes": s.passes}

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        done, self._flops_seen = self.solver.flops - self._flops_seen, self.solver.flops
        return done


class DASVRDAMethod(_VRMethod):
    solver_name = "dasvrda"


class ProxSVRGMethod(_VRMethod):
    solver_name = "prox-svrg"


class KatyushaMethod(_VRMethod):
    solver_name = "katyusha"
