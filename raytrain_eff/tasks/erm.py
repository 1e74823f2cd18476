"""Regularised ERM: a linear model x on features a_i, objective (1/n)Σφ(a_iᵀx; y_i) + R(x).

Built-in data (``data.dataset``):

* ``kjv``: bag-of-words of the 31,102 King James Bible verses, labelled Old (−1) or New (+1)
  Testament; sparse CSR, tf-idf / binary / count weights, words in >= ``min_df`` verses.
* scikit-learn's bundled real sets (no download), standardised columns: ``breast_cancer``
  (malignant vs benign), ``digits`` (0–4 vs 5–9), ``iris`` (virginica vs the rest),
  ``wine`` (cultivar 0 vs the rest); ``diabetes`` is regression (squared loss).
* a Parquet path or URI: numeric feature columns and a label column (two values for the
  classification losses, real values for squared).

Rows are shuffled once with a fixed seed (the Bible is ordered by book, so a plain tail
would hold out only Revelation) and the last ``val_fraction`` is held out (0: none, all rows
train, ``evaluate`` reports nothing). Everything is float64: the solvers certify 1e-6
relative suboptimality, beyond float32's reach.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from raytrain_eff.blocks.erm_losses import LOSSES
from raytrain_eff.blocks.rows import CSRRows
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum

NEW_TESTAMENT_FIRST_BOOK = "Matthew"
# scikit-learn's bundled sets: loader and the binary question asked of its labels (None: as is)
BUNDLED = {
    "breast_cancer": ("load_breast_cancer", None),
    "digits": ("load_digits", lambda y: y >= 5),
    "iris": ("load_iris", lambda y: y == 2),
    "wine": ("load_wine", lambda y: y == 0),
    "diabetes": ("load_diabetes", None),
}


class LinearModel(nn.Module):
    """a ↦ aᵀx for dense or sparse-CSR rows; one weight vector, no separate bias."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d, dtype=torch.float64))

    def reset_parameters(self) -> None:  # the solvers start from x = 0
        nn.init.zeros_(self.weight)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X @ self.weight


class ERMTask(Task):
    builtin_datasets = ("kjv", *BUNDLED)
    label_kind = "numeric"

    def load(self) -> None:
        X, y = self._read()
        if self.params.loss != "squared":
            y = _to_signs(y, self.data.dataset)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(12345))
        if self.params.max_rows is not None:
            order = order[: self.params.max_rows]
        X, y = _take(X, order), y[order]
        if self.params.normalize:
            X = _unit_rows(X)
        if self.params.bias_feature:
            X = _append_ones(X)
        n_val = max(1, int(len(y) * self.data.val_fraction)) if self.data.val_fraction else 0
        self.num_train = len(y) - n_val
        self.X_train, self.y_train = _take(X, torch.arange(self.num_train)), y[: self.num_train]
        self.X_val, self.y_val = _take(X, torch.arange(self.num_train, len(y))), y[self.num_train :]
        self.d = X.shape[1]

    def _read(self) -> tuple[torch.Tensor, torch.Tensor]:
        name = self.data.dataset
        if name == "kjv":
            return _bible_bag_of_words(self.params.features, self.params.min_df)
        if name in BUNDLED:
            import sklearn.datasets

            loader, binary = BUNDLED[name]
            X, y = getattr(sklearn.datasets, loader)(return_X_y=True)
            if binary is not None:
                y = binary(y).astype(np.float64)
        else:
            from raytrain_eff.data.tabular import load_erm_table

            X, y = load_erm_table(name, self.data.label_column, self.data.feature_columns)
        X = (X - X.mean(0)) / np.maximum(X.std(0), 1e-12)
        return torch.tensor(X, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)

    def build_model(self) -> nn.Module:
        return LinearModel(self.d)

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The objective's estimate on a batch: mean φ plus R (what the solvers minimise)."""
        X, y = batch
        x = cast(torch.Tensor, model.weight)  # LinearModel's weight vector
        p = self.params
        return LOSSES[p.loss][0](model(X), y).mean() + p.l1 * x.abs().sum() + 0.5 * p.l2 * x.dot(x)

    def batch_at(self, position: int, rank: int, world: int, batch_size: int) -> Any:
        rows = epoch_batch_indices(
            self.num_train,
            self.seed,
            position=position,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )
        return _take(self.X_train, rows), self.y_train[rows]

    def val_batches(self, batch_size: int, num_batches: int) -> Iterator[Any]:
        for start in range(0, min(len(self.y_val), batch_size * num_batches), batch_size):
            rows = torch.arange(start, min(start + batch_size, len(self.y_val)))
            yield _take(self.X_val, rows), self.y_val[rows]

    def shard_iterator(self, rank: int, world: int, batch_size: int) -> Iterator[Any]:
        rows = shard_rows(self.num_train, rank, world)
        for start in range(rows.start, rows.stop, batch_size):
            idx = torch.arange(start, min(start + batch_size, rows.stop))
            yield _take(self.X_train, idx), self.y_train[idx]

    def counts(self, batch: Any) -> tuple[int, int]:
        return len(batch[1]), len(batch[1])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int, num_batches: int) -> dict[str, float]:
        if len(self.y_val) == 0:
            return {}  # val_fraction 0: nothing held out
        out = super().evaluate(model, batch_size, num_batches)
        if self.params.loss != "squared":
            right = sum(
                int((torch.sign(model(X)) == y).sum())
                for X, y in self.val_batches(batch_size, num_batches)
            )
            out["val_accuracy"] = right / min(len(self.y_val), batch_size * num_batches)
        return out

    def checksum(self) -> str:
        X = self.X_train
        parts = (X.crow_indices(), X.col_indices(), X.values()) if _is_csr(X) else (X,)
        return tensor_checksum(*parts, self.y_train)


# --- data helpers -----------------------------------------------------------------------------
def _bible_bag_of_words(weighting: str, min_df: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer

    from raytrain_eff.data.corpus import kjv_verses

    verses = kjv_verses()
    books = [v["book"] for v in verses]
    first_nt = books.index(NEW_TESTAMENT_FIRST_BOOK)
    y = np.where(np.arange(len(verses)) >= first_nt, 1.0, -1.0)
    counts = CountVectorizer(
        token_pattern=r"[a-z]+", min_df=min_df, binary=weighting == "binary"
    ).fit_transform([v["text"].lower() for v in verses])
    if weighting == "tfidf":
        counts = TfidfTransformer(norm=None).fit_transform(counts)
    S = counts.tocsr().astype(np.float64)
    S.sort_indices()
    X = torch.sparse_csr_tensor(
        torch.from_numpy(S.indptr).long(),
        torch.from_numpy(S.indices).long(),
        torch.from_numpy(S.data),
        S.shape,
        check_invariants=False,
    )
    return X, torch.from_numpy(y)


def _to_signs(y: torch.Tensor, dataset: str) -> torch.Tensor:
    classes = torch.unique(y)
    if len(classes) != 2:
        raise ValueError(
            f"{dataset}: logistic and smoothed-hinge losses need exactly two label "
            f"values, found {len(classes)}; use loss: squared for regression"
        )
    return torch.where(y == classes[1], 1.0, -1.0).double()


def _is_csr(X: torch.Tensor) -> bool:
    return X.layout == torch.sparse_csr


def _take(X: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    if not _is_csr(X):
        return X.index_select(0, rows)
    return CSRRows.from_torch(X).take(rows).S


def _unit_rows(X: torch.Tensor) -> torch.Tensor:
    if not _is_csr(X):
        return X / X.norm(dim=1, keepdim=True).clamp_min(1e-300)
    R = CSRRows.from_torch(X)
    norms = R.sq_norms().sqrt().clamp_min(1e-300)
    return CSRRows(R.crow, R.col, R.val / norms.repeat_interleave(R.crow.diff()), R.d).S


def _append_ones(X: torch.Tensor) -> torch.Tensor:
    if not _is_csr(X):
        return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
    R = CSRRows.from_torch(X)
    n, lens = R.n, R.crow.diff() + 1
    crow = torch.zeros(n + 1, dtype=R.crow.dtype)
    torch.cumsum(lens, 0, out=crow[1:])
    last = crow[1:] - 1  # the new entry ends each row
    keep = torch.ones(int(crow[-1]), dtype=torch.bool)
    keep[last] = False
    col = torch.empty(int(crow[-1]), dtype=R.col.dtype)
    val = torch.empty(int(crow[-1]), dtype=R.val.dtype)
    col[keep], val[keep] = R.col, R.val
    col[last], val[last] = R.d, 1.0
    return CSRRows(crow, col, val, R.d + 1).S
