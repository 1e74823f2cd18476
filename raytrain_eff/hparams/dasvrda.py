"""Hyper-parameters of regularised ERM: the objective (task ``erm``) and its three solvers.

The objective P(x) = (1/n) Σ_i φ(a_iᵀx; y_i) + λ₁‖x‖₁ + (λ₂/2)‖x‖² belongs to the task, so
DASVRDA, Prox-SVRG and Katyusha solve the very same problem. ``b = 0`` and ``m = 0`` mean
"the paper's default": b = ⌊√n⌋ and m = ⌊n/b⌋ (⌈n/b⌉ for Katyusha), resolved once n is known.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


def _common_checks(cfg) -> None:
    check(cfg.b >= 0, "b", cfg.b, "an integer >= 0 (0: floor(sqrt(n)))")
    check(cfg.m >= 0, "m", cfg.m, "an integer >= 0 (0: the paper's default)")
    check(cfg.eta_scale > 0, "eta_scale", cfg.eta_scale, "> 0")


@dataclass(kw_only=True)
class DASVRDAConfig:
    b: int = 0                 # mini-batch size; 0: ⌊√n⌋, the size the paper shows suffices
    m: int = 0                 # inner iterations per stage; 0: ⌊n/b⌋ (one data pass)
    gamma: float = 3.0         # outer-momentum damping γ > 1; the paper's experiments use 3
    eta_scale: float = 1.0     # multiplies η = 1/((1 + γ(m+1)/b)·L̄); > 1 is beyond the theory
    restart: Literal["none", "fixed", "adaptive"] = "adaptive"  # fixed needs λ₂ > 0
    importance: bool = False   # sample rows ∝ L_i (pays off when row norms vary a lot)

    def __post_init__(self):
        _common_checks(self)
        check(self.gamma > 1, "gamma", self.gamma, "> 1 (θ̃_s = (1 - 1/γ)(s+2)/2 must grow)")


@dataclass(kw_only=True)
class ProxSVRGConfig:
    b: int = 0                 # mini-batch size; 0: ⌊√n⌋, same as DASVRDA for a fair comparison
    m: int = 0                 # inner iterations per stage; 0: ⌊n/b⌋
    eta_scale: float = 0.5     # η = eta_scale / L̄; mini-batches tolerate more than 1/(4L̄)
    importance: bool = False   # sample rows ∝ L_i

    def __post_init__(self):
        _common_checks(self)


@dataclass(kw_only=True)
class KatyushaConfig:
    b: int = 0                 # mini-batch size; 0: ⌊√n⌋
    m: int = 0                 # inner iterations per epoch; 0: ⌈n/b⌉ (the paper's mini-batch m)
    eta_scale: float = 1.0     # L̄ is divided by this (α = 1/(3τ₁L̄), prox step 1/(3L̄))
    importance: bool = False   # sample rows ∝ L_i

    def __post_init__(self):
        _common_checks(self)


@dataclass(kw_only=True)
class ERMConfig:
    """Linear model on features; labels ±1 for logistic / smoothed hinge, real for squared."""
    loss: Literal["logistic", "squared", "smoothed_hinge"] = "logistic"
    l1: float = 1e-4           # λ₁: sparsity of the weights
    l2: float = 1e-6           # λ₂: strong convexity of the objective (0: non-strongly convex)
    features: Literal["tfidf", "binary", "counts"] = "tfidf"  # bag-of-words weighting (kjv)
    normalize: bool = True     # unit-norm rows: equal L_i, so uniform sampling is already optimal
    min_df: int = 2            # words in fewer verses are dropped (kjv vocabulary size)
    bias_feature: bool = True  # append a constant-1 column (regularised like every weight)
    max_rows: int | None = None  # use only the first rows of the shuffled data (quick runs)

    def __post_init__(self):
        check(self.l1 >= 0, "l1", self.l1, ">= 0")
        check(self.l2 >= 0, "l2", self.l2, ">= 0")
        check(self.min_df >= 1, "min_df", self.min_df, "an integer >= 1")
        check(self.max_rows is None or self.max_rows >= 2, "max_rows", self.max_rows,
              "an integer >= 2 or null")
