"""Hyper-parameters of FOSI (arXiv 2302.08484), DHO2 (arXiv 2505.00982) and MR-DHO2.

Torch-free, so a config validates before torch loads; every field here is what a Tune space
may search (``tune_spaces/dho2.yaml``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check

# How HVPs are formed (raytrain_eff.methods.lanczos.HessianOperator)
HvpMode = Literal["double_backward", "forward_over_reverse"]


@dataclass(kw_only=True)
class FOSIConfig:
    base: Literal["adamw", "heavy_ball"] = "adamw"  # optimizer on the complement of span(V)
    lr: float = 1e-3              # base optimizer learning rate
    momentum: float = 0.9         # β1 (Adam) or μ (heavy-ball); also the Newton-part momentum
    beta2: float = 0.999          # Adam second-moment decay
    eps: float = 1e-8             # Adam denominator floor
    weight_decay: float = 0.0     # decoupled: θ ← θ(1 − lr·wd), never seen by the curvature split
    k: int = 10                   # top Hessian eigenpairs (paper default)
    num_smallest: int = 0         # ℓ bottom eigenpairs (paper default 0)
    alpha: float = 0.01           # Newton step size α (paper default)
    refresh_interval: int = 800   # T: steps between Lanczos refreshes (paper default)
    warmup: int = 0               # W: base-optimizer-only steps before the first refresh
    lanczos_order: int = 0        # Lanczos iterations; 0 means the paper's 4(k + ℓ)
    learning_rate_clip: float = 3.0  # upper clip of c = λ_max / λ_k (reference code default)
    eig_floor: float = 1e-4       # |λ| floor so tiny or negative λ never explode ρ = 1/|λ|
    ritz_tol: float = 1e-2        # keep Ritz pairs with β|s| <= ritz_tol·|λ_max| (converged ones)
    # HVPs: double backward through one kept gradient graph per refresh, or forward-over-reverse
    hvp_mode: HvpMode = "double_backward"

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(0 <= self.momentum < 1, "momentum", self.momentum, "in [0, 1)")
        check(0 <= self.beta2 < 1, "beta2", self.beta2, "in [0, 1)")
        check(self.eps > 0, "eps", self.eps, "> 0")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        check(self.k >= 1, "k", self.k, "an integer >= 1")
        check(self.num_smallest >= 0, "num_smallest", self.num_smallest, "an integer >= 0")
        check(self.alpha > 0, "alpha", self.alpha, "> 0")
        check(self.refresh_interval >= 1, "refresh_interval", self.refresh_interval,
              "an integer >= 1")
        check(self.warmup >= 0, "warmup", self.warmup, "an integer >= 0")
        check(self.lanczos_order == 0 or self.lanczos_order >= self.k + self.num_smallest,
              "lanczos_order", self.lanczos_order,
              f"0 (auto) or >= k + num_smallest ({self.k + self.num_smallest})")
        check(self.learning_rate_clip >= 1, "learning_rate_clip", self.learning_rate_clip,
              ">= 1")
        check(self.eig_floor > 0, "eig_floor", self.eig_floor, "> 0")
        check(self.ritz_tol > 0, "ritz_tol", self.ritz_tol, "> 0")

    @property
    def order(self) -> int:
        """Lanczos iterations m actually run."""
        return self.lanczos_order or 4 * (self.k + self.num_smallest)


@dataclass(kw_only=True)
class DHO2Config(FOSIConfig):
    """FOSI with parameters, Lanczos vectors and eigenvectors split into P slices."""


@dataclass(kw_only=True)
class MRDHO2Config(DHO2Config):
    lanczos_per_step: int = 4     # Lanczos iterations per update; staleness <= ceil(m / this)

    def __post_init__(self):
        super().__post_init__()
        check(self.lanczos_per_step >= 1, "lanczos_per_step", self.lanczos_per_step,
              "an integer >= 1")
        need = -(-self.order // self.lanczos_per_step)  # the staleness bound, in steps
        check(self.refresh_interval >= need, "refresh_interval", self.refresh_interval,
              f">= ceil(lanczos order / lanczos_per_step) = {need} (one refresh at a time)")
