"""Hyper-parameters of low-dimensional learning-dynamics compression (arXiv 2311.05061).

Torch-free, so a config validates before torch loads. ``LowDimConfig`` is the ``lowdim``
method (what ``tune_spaces/lowdim.yaml`` searches: width, α, ε); ``LowRankConfig`` is the
``lowrank`` task (deep matrix factorisation, completion and sensing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class LowDimConfig:
    width: int = 10               # 2r: the compressed width, twice the rank being learned
    init_scale: float = 1e-2      # ε: the paper's small-initialisation scale
    alpha: float = 5.0            # α: outer layers learn at α·η (reference MC setting)
    lr: float = 1e-3              # η: learning rate of every other parameter
    optimizer: Literal["gd", "adam"] = "adam"  # full-batch GD is the paper's theory; Adam its nets
    init: Literal["spectral", "random"] = "spectral"  # random orthogonal: the ablation
    layer: str = "head"           # dotted path of the nn.Linear to compress (ignored when the
    #                               whole model is a deep linear network: then it is compressed)

    def __post_init__(self):
        check(self.width >= 1, "width", self.width, "an integer >= 1")
        check(0 < self.init_scale <= 1, "init_scale", self.init_scale, "in (0, 1]")
        check(self.alpha > 0, "alpha", self.alpha, "> 0")
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(bool(self.layer), "layer", self.layer, "a dotted module path such as 'head'")


@dataclass(kw_only=True)
class LowRankConfig:
    problem: Literal["factorization", "completion", "sensing"] = "completion"
    d: int = 100                  # Φ is d×d
    rank: int = 5                 # r: rank of the target Φ
    observed: float = 0.3         # p: fraction of entries observed (completion)
    measurements: int = 2000      # m: Gaussian sensing matrices (sensing; each is d×d)
    depth: int = 3                # L: layers of the original network
    width: int | None = None   # width of the original network; None means d
    init_scale: float = 1e-2      # ε: orthogonal initialisation scale of the original network
    dtype: Literal["float64", "float32"] = "float64"  # recovery to 1e-8 needs float64

    def __post_init__(self):
        check(self.d >= 2, "d", self.d, "an integer >= 2")
        check(1 <= self.rank <= self.d, "rank", self.rank, f"in 1..d ({self.d})")
        check(0 < self.observed <= 1, "observed", self.observed, "in (0, 1]")
        check(self.measurements >= 1, "measurements", self.measurements, "an integer >= 1")
        check(self.depth >= 2, "depth", self.depth, "an integer >= 2")
        check(self.width is None or self.width >= 1, "width", self.width,
              "an integer >= 1 or null (null: d)")
        check(0 < self.init_scale <= 1, "init_scale", self.init_scale, "in (0, 1]")
        check(self.problem != "sensing" or self.measurements * self.d ** 2 <= 2 ** 28,
              "measurements", self.measurements,
              f"at most {2 ** 28 // self.d ** 2} at d={self.d}: each sensing matrix is dense d×d")
