"""Hyper-parameters of low-dimensional learning-dynamics compression (arXiv 2311.05061).

Torch-free, so a config validates before torch loads. ``LowDimConfig`` is the ``lowdim``
method (what ``tune_spaces/lowdim.yaml`` searches: width, α, ε). The ``lowrank`` task's
(deep matrix factorisation, completion and sensing) live in ``hparams/tasks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class LowDimConfig:
    width: int = 10  # 2r: the compressed width, twice the rank being learned
    init_scale: float = 1e-2  # ε: the paper's small-initialisation scale
    alpha: float = 5.0  # α: outer layers learn at α·η (reference MC setting)
    lr: float = 1e-3  # η: learning rate of every other parameter
    optimizer: Literal["gd", "adam"] = "adam"  # full-batch GD is the paper's theory; Adam its nets
    init: Literal["spectral", "random"] = "spectral"  # random orthogonal: the ablation
    layer: str = "head"  # dotted path of the nn.Linear to compress (ignored when the
    #                               whole model is a deep linear network: then it is compressed)

    def __post_init__(self):
        check(self.width >= 1, "width", self.width, "an integer >= 1")
        check(0 < self.init_scale <= 1, "init_scale", self.init_scale, "in (0, 1]")
        check(self.alpha > 0, "alpha", self.alpha, "> 0")
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(bool(self.layer), "layer", self.layer, "a dotted module path such as 'head'")
