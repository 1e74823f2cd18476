"""Hyper-parameters of the three regularised-ERM solvers.

The objective P(x) = (1/n) Σ_i φ(a_iᵀx; y_i) + λ₁‖x‖₁ + (λ₂/2)‖x‖² belongs to the task
(``ERMConfig`` in ``hparams/tasks.py``), so DASVRDA, Prox-SVRG and Katyusha solve the very same
problem. ``b = 0`` and ``m = 0`` mean
"the paper's default": b = ⌊√n⌋ and m = ⌊n/b⌋ (⌈n/b⌉ for Katyusha), resolved once n is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check

# options every solver shares: how the stage loop runs and which smoothness sets the step
Backend = Literal["compiled", "torch"]  # compiled: numba stage loop, same iterates (1e-12)
Smoothness = Literal["batch", "max"]  # batch: L_b = (1-1/b)L_F + L̄/b; max: the paper's L̄


def _common_checks(cfg) -> None:
    check(cfg.b >= 0, "b", cfg.b, "an integer >= 0 (0: floor(sqrt(n)))")
    check(cfg.m >= 0, "m", cfg.m, "an integer >= 0 (0: the paper's default)")
    check(cfg.eta_scale > 0, "eta_scale", cfg.eta_scale, "> 0")


@dataclass(kw_only=True)
class DASVRDAConfig:
    b: int = 0  # mini-batch size; 0: ⌊√n⌋, the size the paper shows suffices
    m: int = 0  # inner iterations per stage; 0: ⌊n/b⌋ (one data pass)
    gamma: float = 3.0  # outer-momentum damping γ > 1; the paper's experiments use 3
    eta_scale: float = 1.0  # multiplies η = 1/((1 + γ(m+1)/b)·L), L per ``smoothness``
    restart: Literal["none", "fixed", "adaptive"] = "adaptive"  # fixed needs λ₂ > 0
    importance: bool = False  # sample rows ∝ L_i (pays off when row norms vary a lot)
    backend: Backend = "compiled"  # torch: the readable reference; data-parallel runs use it
    smoothness: Smoothness = "batch"  # the step's L: the mini-batch's L_b (default) or max L_i

    def __post_init__(self):
        _common_checks(self)
        check(self.gamma > 1, "gamma", self.gamma, "> 1 (θ̃_s = (1 - 1/γ)(s+2)/2 must grow)")


@dataclass(kw_only=True)
class ProxSVRGConfig:
    b: int = 0  # mini-batch size; 0: ⌊√n⌋, same as DASVRDA for a fair comparison
    m: int = 0  # inner iterations per stage; 0: ⌊n/b⌋
    eta_scale: float = 1.0  # η = eta_scale / L, L per ``smoothness`` (was 0.5 with L = L̄)
    importance: bool = False  # sample rows ∝ L_i
    backend: Backend = "compiled"  # torch: the readable reference; data-parallel runs use it
    smoothness: Smoothness = "batch"  # the step's L: the mini-batch's L_b (default) or max L_i

    def __post_init__(self):
        _common_checks(self)


@dataclass(kw_only=True)
class KatyushaConfig:
    b: int = 0  # mini-batch size; 0: ⌊√n⌋
    m: int = 0  # inner iterations per epoch; 0: ⌈n/b⌉ (the paper's mini-batch m)
    eta_scale: float = 1.0  # L is divided by this (α = 1/(3τ₁L), prox step 1/(3L))
    importance: bool = False  # sample rows ∝ L_i
    backend: Backend = "compiled"  # torch: the readable reference; data-parallel runs use it
    smoothness: Smoothness = "batch"  # the step's L: the mini-batch's L_b (default) or max L_i

    def __post_init__(self):
        _common_checks(self)
