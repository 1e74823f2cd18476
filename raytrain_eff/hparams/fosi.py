"""Hyper-parameters of FOSI (arXiv 2302.08484), DHO2 (arXiv 2505.00982) and MR-DHO2.

Torch-free, so a config validates before torch loads; every field here is what a Tune space
may search (``tune_spaces/dho2.yaml``).

The four options that decide *which* algorithm runs default to the reference code, hsivan/fosi
(``fosi/jax_optim/fosi_optimizer.py``, ``extreme_spectrum_estimation.py``,
``lanczos_algorithm.py``); the other value of each is a named departure:

* ``learning_rate_clip``: None, the base's reference value: ``fosi_adam`` passes 1.0 (Adam's
  step is never scaled), ``fosi_momentum``/``fosi_sgd`` default to 3.0. Departure: a float.
* ``warmup``: W, counted as the reference counts ``warmup_w``: the first estimate runs before
  update W (1-based), then before W + T, W + 2T, ...; None means W = T, the reference default.
* ``ritz_filter``: ``"none"`` keeps all k (+ℓ) Ritz pairs, as the reference does.
  Departure: ``"converged"``.
* ``start_vector``: ``"fixed"``, one seeded vector reused by every refresh (the JAX reference,
  which the paper's experiments ran, draws it from one ``PRNGKey(0)`` each time; its PyTorch
  port draws from the global RNG instead). Departure: ``"fresh"``.

The sizes default to the reference functions' values too (``approx_k`` 5, ``approx_l`` 0,
``alpha`` 0.1, ``num_iters_to_approx_eigs`` 100); the paper's experiments vary them per task,
and the packaged presets set their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check

# How HVPs are formed (raytrain_eff.methods.lanczos.HessianOperator)
HvpMode = Literal["double_backward", "forward_over_reverse"]
# The reference's learning_rate_clip per base: fosi_adam fixes 1.0, fosi_momentum defaults 3.0
REFERENCE_CLIP = {"adamw": 1.0, "heavy_ball": 3.0}


@dataclass(kw_only=True)
class FOSIConfig:
    base: Literal["adamw", "heavy_ball"] = "adamw"  # optimizer on the complement of span(V)
    lr: float = 1e-3  # base optimizer learning rate
    momentum: float = 0.9  # β1 (Adam) or μ (heavy-ball); also the Newton-part momentum
    beta2: float = 0.999  # Adam second-moment decay
    eps: float = 1e-8  # Adam denominator floor
    weight_decay: float = 0.0  # decoupled: θ ← θ(1 − lr·wd), never seen by the curvature split
    k: int = 5  # top Hessian eigenpairs (reference approx_k)
    num_smallest: int = 0  # ℓ bottom eigenpairs (reference approx_l)
    alpha: float = 0.1  # Newton step size α (reference alpha of the JAX fosi_adam)
    refresh_interval: int = 100  # T: steps between Lanczos refreshes (num_iters_to_approx_eigs)
    # W: the first refresh runs before update W (1-based), then before W + T, W + 2T, ... (the
    # reference's count + 1 >= W, (count + 1 − W) % T == 0); None: W = T (reference default)
    warmup: int | None = None
    lanczos_order: int = 0  # Lanczos iterations; 0 means the paper's 4(k + ℓ)
    # upper clip of c = |λ_max / λ_k|; None: the reference's value for the base (REFERENCE_CLIP:
    # 1.0 for adamw, 3.0 for heavy_ball). A float is a departure for adamw: it scales Adam's step
    learning_rate_clip: float | None = None
    eig_floor: float = 1e-4  # |λ| floor: tiny λ never explode ρ = 1/|λ| (reference: none)
    # "none" keeps all k (+ℓ) Ritz pairs, as the reference does; "converged" (a departure) keeps
    # only pairs with residual β_m|s_mi| <= ritz_tol·|θ|_max, so an unconverged pair, whose ρ
    # is a poor Newton step, gets no Newton step (its direction stays with the base optimizer)
    ritz_filter: Literal["none", "converged"] = "none"
    ritz_tol: float = 1e-2  # residual tolerance of ritz_filter="converged"
    # "fixed": every refresh starts Lanczos from the same seeded vector (the reference's
    # PRNGKey(0) draw); "fresh" (a departure): a new seeded vector per refresh
    start_vector: Literal["fixed", "fresh"] = "fixed"
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
        check(
            self.refresh_interval >= 1, "refresh_interval", self.refresh_interval, "an integer >= 1"
        )
        check(
            self.warmup is None or self.warmup >= 1,
            "warmup",
            self.warmup,
            "None (W = refresh_interval) or an integer >= 1 (the update, counted from 1, "
            "before which the first refresh runs; the reference's W = 0 acts as W = T)",
        )
        check(
            self.lanczos_order == 0 or self.lanczos_order >= self.k + self.num_smallest,
            "lanczos_order",
            self.lanczos_order,
            f"0 (auto) or >= k + num_smallest ({self.k + self.num_smallest})",
        )
        check(
            self.learning_rate_clip is None or self.learning_rate_clip >= 1,
            "learning_rate_clip",
            self.learning_rate_clip,
            "None (the base's reference value) or >= 1",
        )
        check(self.eig_floor > 0, "eig_floor", self.eig_floor, "> 0")
        check(self.ritz_tol > 0, "ritz_tol", self.ritz_tol, "> 0")

    @property
    def order(self) -> int:
        """Lanczos iterations m actually run."""
        return self.lanczos_order or 4 * (self.k + self.num_smallest)

    @property
    def first_refresh(self) -> int:
        """W actually used: the 1-based update before which the first refresh runs."""
        return self.refresh_interval if self.warmup is None else self.warmup

    @property
    def clip(self) -> float:
        """Upper clip of c actually used (resolved here, so ``replace(base=...)`` follows)."""
        if self.learning_rate_clip is None:
            return REFERENCE_CLIP[self.base]
        return self.learning_rate_clip

    @property
    def ritz_cutoff(self) -> float | None:
        """Residual tolerance handed to Lanczos; None keeps every extreme pair."""
        return self.ritz_tol if self.ritz_filter == "converged" else None


@dataclass(kw_only=True)
class DHO2Config(FOSIConfig):
    """FOSI with parameters, Lanczos vectors and eigenvectors split into P slices."""

    # "global" (the paper's distributed calculation): one curvature batch of data.batch_size
    # rows, the same on every rank, each rank's HVPs on its 1/P of the rows, so curvature time
    # falls with P. "per_rank": every rank its own full batch, P times the rows (more accurate
    # curvature at FOSI's per-process cost)
    curvature_split: Literal["global", "per_rank"] = "global"
    # HVPs. "exact" (the reference): double backward; under fsdp on the whole parameters,
    # gathered on every rank for the refresh. "central" (fsdp only, a departure):
    # H v ≈ (∇L(θ+εv) − ∇L(θ−εv))/2ε, two passes through FSDP's own forward/backward with each
    # rank perturbing its own shard, so no rank holds more than its slices and FSDP's per-unit
    # gather (methods/central_hvp.py). Its error: 3e-11 relative per HVP in float64 (DHO2
    # within 1.3e-11 of exact FOSI over 12 steps), but 1-2% in float32 on a ReLU CNN (kinks
    # and rounding), which is why it is not the default
    hvp: Literal["exact", "central"] = "exact"
    # Where the step runs. "sharded" (the paper): base state, Newton momentum and eigenvectors
    # in P slices; per step the gradient is reduce-scattered, a = V g and [V m, V u] are
    # all-reduced, and the updated slices all-gathered: four dependent collectives.
    # The refresh's Lanczos vectors are in P slices too: four collectives an iteration.
    # "replicated" (ddp only, a departure): every rank keeps them all whole and takes FOSI's
    # step on the engine's all-reduced gradient, as DDP AdamW does: one collective a step,
    # overlapped with backward, and one all-reduce of H q per Lanczos iteration (each rank's
    # HVP still covers its 1/P of the curvature rows), for (m + k + 3)·n floats per rank
    # instead of (m + k + 3)·n / P
    update: Literal["sharded", "replicated"] = "sharded"


@dataclass(kw_only=True)
class MRDHO2Config(DHO2Config):
    lanczos_per_step: int = 4  # Lanczos iterations per update; staleness <= ceil(m / this)

    def __post_init__(self):
        super().__post_init__()
        check(
            self.lanczos_per_step >= 1, "lanczos_per_step", self.lanczos_per_step, "an integer >= 1"
        )
        need = -(-self.order // self.lanczos_per_step)  # the staleness bound, in steps
        check(
            self.refresh_interval >= need,
            "refresh_interval",
            self.refresh_interval,
            f">= ceil(lanczos order / lanczos_per_step) = {need} (one refresh at a time)",
        )
