"""A certified reference optimum: the subgradient bound on P(x⁺) − P* and FISTA."""

from __future__ import annotations

import math

import torch

from raytrain_eff.methods.vr.problem import ERMProblem


def certify(problem: ERMProblem, x: torch.Tensor, L: float | None = None):
    """(x⁺, P(x⁺), bound): P(x⁺) − P* ≤ bound, from a subgradient of P at x⁺.

    x⁺ = prox_{R/L}(x − ∇F(x)/L) gives s = L(x − x⁺) + ∇F(x⁺) − ∇F(x) ∈ ∂P(x⁺), and
    λ₂-strong convexity of P gives P(x⁺) − P* ≤ ‖s‖²/(2λ₂); valid for any L > 0. ‖s‖ is
    padded by a float64 rounding allowance (ε√n times the terms' scale), so a computed
    fixed point x⁺ = x never certifies a gap of exactly 0.
    """
    L = L or problem.L_bar
    _, grad, _ = problem.full(x)
    x_plus = problem.prox(x - grad / L, 1 / L)
    F_plus, grad_plus, _ = problem.full(x_plus)
    s = L * (x - x_plus) + grad_plus - grad
    scale = L * float(x.norm()) + float(grad.norm()) + problem.l1 * math.sqrt(problem.d)
    s_norm = float(s.norm()) + torch.finfo(torch.float64).eps * math.sqrt(problem.n) * scale
    strongly_convex = problem.l2 > 0 and not problem.intercept
    bound = s_norm**2 / (2 * problem.l2) if strongly_convex else math.inf
    return x_plus, F_plus + problem.R(x_plus), bound


def fista(
    problem: ERMProblem,
    x0=None,
    *,
    iters: int = 1000,
    L: float | None = None,
    tol: float = 0.0,
    check_every: int = 100,
) -> torch.Tensor:
    """Beck & Teboulle's FISTA with backtracking and function-value restarts (reference)."""
    x = torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0.clone()
    L = L or problem.L_bar / 8
    y, t, P_x = x.clone(), 1.0, problem.objective(x)
    for it in range(1, iters + 1):
        F_y, grad, _ = problem.full(y)
        while True:
            x_new = problem.prox(y - grad / L, 1 / L)
            diff = x_new - y
            F_new = problem.full(x_new)[0]
            if F_new <= F_y + grad.dot(diff) + 0.5 * L * diff.dot(diff) + 1e-15 * abs(F_y):
                break
            L *= 2
        P_new = F_new + problem.R(x_new)
        if P_new > P_x and t > 1:  # restart: drop the momentum (a plain step from
            y, t = x.clone(), 1.0  # x, taken next, is a descent step)
            continue
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t, P_x = x_new, t_new, P_new
        if tol and it % check_every == 0 and certify(problem, x, L)[2] <= tol * abs(P_x):
            break
    return x
