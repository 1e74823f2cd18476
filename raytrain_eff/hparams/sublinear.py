"""Hyper-parameters of sublinear-time wide-network training (arXiv 2208.04508); the `wide`
task's own live in ``hparams/tasks.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class SublinearConfig:
    """How active neurons are found and how the wide layer is updated."""

    index: Literal["exact", "lsh", "dense"] = "exact"  # exact max-trees, LSH, or GEMM + mask
    update: Literal["sgd", "gauss_newton"] = "sgd"  # first order, or the paper's Gram solve
    lr: float = 1.0  # step size η (GN: 1.0 is the full Gauss-Newton step)
    damping: float = 1e-4  # λ in (G + λI)⁻¹: keeps the Gram solve stable when G is singular
    fanout: int = 8  # children per max-tree node: fewer levels vs more reads per level
    slack: float = 0.0  # ε: keys may lag a neuron by ‖Δw‖ ≤ ε (0: refresh every change)
    lsh_tables: int = 8  # L: more tables raise recall and query cost
    lsh_bits: int = 6  # K hyperplanes per table: more bits, smaller buckets, lower recall
    recall_interval: int = 10  # steps between recall checks against the dense active set

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(self.damping >= 0, "damping", self.damping, ">= 0")
        check(self.fanout >= 2, "fanout", self.fanout, "an integer >= 2")
        check(self.slack >= 0, "slack", self.slack, ">= 0")
        check(self.lsh_tables >= 1, "lsh_tables", self.lsh_tables, "an integer >= 1")
        check(1 <= self.lsh_bits <= 20, "lsh_bits", self.lsh_bits, "an integer in 1..20")
        check(self.recall_interval >= 1, "recall_interval", self.recall_interval, "an integer >= 1")
        check(
            self.update != "gauss_newton" or self.index != "lsh",
            "update",
            self.update,
            "sgd when index is lsh (the Gram needs every active pair, LSH misses some)",
        )
