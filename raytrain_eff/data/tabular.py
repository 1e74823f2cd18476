"""Feature/label data: scikit-learn's bundled real sets or the user's Parquet files."""
from __future__ import annotations

import numpy as np

from raytrain_eff.data.parquet import DataError, read_table, require_columns

BUILTIN_TABULAR = ("digits",)


def load_features(dataset: str, label_column: str = "label",
                  feature_columns: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """(X float32 [n, d], y int64 [n], image shape or ()) in a fixed, shuffled order."""
    shape: tuple[int, ...]
    if dataset == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()  # 1,797 real 8x8 handwritten digits shipped with scikit-learn
        X, y, shape = d.data.astype(np.float32) / 16.0, d.target.astype(np.int64), (1, 8, 8)
    else:
        table = read_table(dataset)
        features = feature_columns or [c for c in table.column_names if c != label_column]
        require_columns(table, dataset, {label_column: "integer",
                                         **{c: "numeric" for c in features}})
        X = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], 1)
        y = table.column(label_column).to_numpy().astype(np.int64)
        X, shape = X.astype(np.float32), ()
        if np.isnan(X).any():
            raise DataError(f"{dataset}: feature columns contain nulls/NaN")
        if y.min() < 0:
            raise DataError(f"{dataset}: column '{label_column}' has negative labels")
    order = np.random.default_rng(12345).permutation(len(y))  # fixed: splits never move
    return X[order], y[order], shape
