"""Hyper-parameters of the built-in tasks (model shape and task-specific data handling)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class LMConfig:
    """Character-level GPT (nanoGPT-shaped: pre-LN blocks, tied embedding and head)."""

    seq_len: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # auto: chars of the corpus for the bundled ones (kjv, pydoc: the presets' checkpoints),
    # UTF-8 bytes streamed from a Parquet dataset; char on Parquet loads the whole corpus
    vocab: Literal["auto", "char", "bytes"] = "auto"

    def __post_init__(self):
        for name in ("seq_len", "n_layer", "n_head", "n_embd"):
            check(getattr(self, name) > 0, name, getattr(self, name), "an integer > 0")
        check(
            self.n_embd % self.n_head == 0,
            "n_embd",
            self.n_embd,
            f"a multiple of n_head ({self.n_head})",
        )
        check(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")


@dataclass(kw_only=True)
class ClassifyConfig:
    model: Literal["mlp", "cnn"] = "mlp"
    hidden: int = 128  # MLP width / CNN channels of the first block
    depth: int = 2  # hidden layers (MLP) or conv blocks (CNN)

    def __post_init__(self):
        check(self.hidden > 0, "hidden", self.hidden, "an integer > 0")
        check(self.depth > 0, "depth", self.depth, "an integer > 0")


@dataclass(kw_only=True)
class CustomTaskConfig:
    """A user task: ``factory`` returns a raytrain_eff.tasks.custom.UserTask (see README)."""

    factory: str  # "package.module:function"
    options: dict | None = None  # keyword arguments passed to the factory

    def __post_init__(self):
        check(
            bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.factory or "")),
            "factory",
            self.factory,
            "of the form 'package.module:function'",
        )
        if self.options is None:
            self.options = {}


@dataclass(kw_only=True)
class WideConfig:
    """The paper's two-layer net f(x) = (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0)."""

    dataset: Literal["synthetic", "digits"] = "synthetic"  # unit-norm regression or digits
    width: int = 4096  # m: neurons in the hidden layer
    shift: float | None = None  # b; None: √(0.4·ln m), so about m^0.8 neurons fire per input
    dim: int = 64  # d for synthetic data (digits has 64 pixels)
    num_train: int = 256  # n for synthetic data (the index holds one tree per row)
    num_val: int = 256  # held-out synthetic rows
    loss: Literal["mse", "ce"] = "mse"  # mse: the paper's regression loss (Gauss-Newton needs it)
    shard_width: bool = False  # neurons split over ranks: every rank then sees the same batch

    def __post_init__(self):
        check(self.width > 0, "width", self.width, "an integer > 0")
        check(self.shift is None or self.shift >= 0, "shift", self.shift, ">= 0 or null")
        check(self.dim > 0, "dim", self.dim, "an integer > 0")
        check(self.num_train > 0, "num_train", self.num_train, "an integer > 0")
        check(self.num_val > 0, "num_val", self.num_val, "an integer > 0")


@dataclass(kw_only=True)
class LowRankConfig:
    problem: Literal["factorization", "completion", "sensing"] = "completion"
    d: int = 100  # Φ is d×d
    rank: int = 5  # r: rank of the target Φ
    observed: float = 0.3  # p: fraction of entries observed (completion)
    measurements: int = 2000  # m: Gaussian sensing matrices (sensing; each is d×d)
    depth: int = 3  # L: layers of the original network
    width: int | None = None  # width of the original network; None means d
    init_scale: float = 1e-2  # ε: orthogonal initialisation scale of the original network
    dtype: Literal["float64", "float32"] = "float64"  # recovery to 1e-8 needs float64

    def __post_init__(self):
        check(self.d >= 2, "d", self.d, "an integer >= 2")
        check(1 <= self.rank <= self.d, "rank", self.rank, f"in 1..d ({self.d})")
        check(0 < self.observed <= 1, "observed", self.observed, "in (0, 1]")
        check(self.measurements >= 1, "measurements", self.measurements, "an integer >= 1")
        check(self.depth >= 2, "depth", self.depth, "an integer >= 2")
        check(
            self.width is None or self.width >= 1,
            "width",
            self.width,
            "an integer >= 1 or null (null: d)",
        )
        check(0 < self.init_scale <= 1, "init_scale", self.init_scale, "in (0, 1]")
        check(
            self.problem != "sensing" or self.measurements * self.d**2 <= 2**28,
            "measurements",
            self.measurements,
            f"at most {2**28 // self.d**2} at d={self.d}: each sensing matrix is dense d×d",
        )


@dataclass(kw_only=True)
class ERMConfig:
    """Linear model on features; labels ±1 for the classification losses (two label values,
    mapped to ±1), real for squared. ``bias_feature`` and ``penalise_bias``: off, a plain
    elastic net; on, an intercept that R leaves alone, as scikit-learn fits it; on and
    penalised, a constant-1 column regularised like every weight (this task's earlier
    default)."""

    loss: Literal["logistic", "squared", "smoothed_hinge", "squared_hinge"] = "logistic"
    l1: float = 1e-4  # λ₁: sparsity of the weights
    l2: float = 1e-6  # λ₂: strong convexity of the objective (0: non-strongly convex)
    features: Literal["tfidf", "binary", "counts"] = "tfidf"  # bag-of-words weighting (kjv)
    normalize: bool = True  # unit-norm rows: equal L_i, so uniform sampling is already optimal
    min_df: int = 2  # words in fewer verses are dropped (kjv vocabulary size)
    bias_feature: bool = True  # append a constant-1 column: the intercept
    penalise_bias: bool = False  # false: unpenalised intercept (scikit-learn); true: in R
    max_rows: int | None = None  # use only the first rows of the shuffled data (quick runs)

    def __post_init__(self):
        check(self.l1 >= 0, "l1", self.l1, ">= 0")
        check(self.l2 >= 0, "l2", self.l2, ">= 0")
        check(self.min_df >= 1, "min_df", self.min_df, "an integer >= 1")
        check(
            self.max_rows is None or self.max_rows >= 2,
            "max_rows",
            self.max_rows,
            "an integer >= 2 or null",
        )
        check(
            self.bias_feature or not self.penalise_bias,
            "penalise_bias",
            self.penalise_bias,
            "false when bias_feature is false (there is no bias)",
        )
