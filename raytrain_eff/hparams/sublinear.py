"""Hyper-parameters of sublinear-time wide-network training (arXiv 2208.04508), `wide` task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class SublinearConfig:
    """How active neurons are found and how the wide layer is updated."""
    index: Literal["exact", "lsh", "dense"] = "exact"  # exact max-trees, LSH, or GEMM + mask
    update: Literal["sgd", "gauss_newton"] = "sgd"     # first order, or the paper's Gram solve
    lr: float = 1.0             # step size η (GN: 1.0 is the full Gauss-Newton step)
    damping: float = 1e-4       # λ in (G + λI)⁻¹: keeps the Gram solve stable when G is singular
    fanout: int = 8             # children per max-tree node: fewer levels vs more reads per level
    slack: float = 0.0          # ε: keys may lag a neuron by ‖Δw‖ ≤ ε (0: refresh every change)
    lsh_tables: int = 8         # L: more tables raise recall and query cost
    lsh_bits: int = 6           # K hyperplanes per table: more bits, smaller buckets, lower recall
    recall_interval: int = 10   # steps between recall checks against the dense active set

    def __post_init__(self):
        check(self.lr > 0, "lr", self.lr, "> 0")
        check(self.damping >= 0, "damping", self.damping, ">= 0")
        check(self.fanout >= 2, "fanout", self.fanout, "an integer >= 2")
        check(self.slack >= 0, "slack", self.slack, ">= 0")
        check(self.lsh_tables >= 1, "lsh_tables", self.lsh_tables, "an integer >= 1")
        check(1 <= self.lsh_bits <= 20, "lsh_bits", self.lsh_bits, "an integer in 1..20")
        check(self.recall_interval >= 1, "recall_interval", self.recall_interval,
              "an integer >= 1")
        check(self.update != "gauss_newton" or self.index != "lsh", "update", self.update,
              "sgd when index is lsh (the Gram needs every active pair, LSH misses some)")


@dataclass(kw_only=True)
class WideConfig:
    """The paper's two-layer net f(x) = (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0)."""
    dataset: Literal["synthetic", "digits"] = "synthetic"  # unit-norm regression or digits
    width: int = 4096           # m: neurons in the hidden layer
    shift: float | None = None  # b; None: √(0.4·ln m), so about m^0.8 neurons fire per input
    dim: int = 64               # d for synthetic data (digits has 64 pixels)
    num_train: int = 256        # n for synthetic data (the index holds one tree per row)
    num_val: int = 256          # held-out synthetic rows
    loss: Literal["mse", "ce"] = "mse"  # mse: the paper's regression loss (Gauss-Newton needs it)
    shard_width: bool = False   # neurons split over ranks: every rank then sees the same batch

    def __post_init__(self):
        check(self.width > 0, "width", self.width, "an integer > 0")
        check(self.shift is None or self.shift >= 0, "shift", self.shift, ">= 0 or null")
        check(self.dim > 0, "dim", self.dim, "an integer > 0")
        check(self.num_train > 0, "num_train", self.num_train, "an integer > 0")
        check(self.num_val > 0, "num_val", self.num_val, "an integer > 0")
