"""Feature/label data: scikit-learn's bundled real sets or the user's Parquet files."""
from __future__ import annotations

import numpy as np

from raytrain_eff.data.parquet import DataError, read_table, require_columns
from raytrain_eff.data.validate import check_columns

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
        check_columns(table, dataset, label_column, features)  # names the row and value
        X = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], 1)
        y = table.column(label_column).to_numpy().astype(np.int64)
        X, shape = X.astype(np.float32), ()
    order = np.random.default_rng(12345).permutation(len(y))  # fixed: splits never move
    return X[order], y[order], shape


def load_erm_table(dataset: str, label_column: str = "label",
                   feature_columns: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(X float64 [n, d], y float64 [n]) from a Parquet file, in file order, for task erm:
    any numeric label (two values for classification, real values for regression)."""
    table = read_table(dataset)
    features = feature_columns or [c for c in table.column_names if c != label_column]
    require_columns(table, dataset, {c: "numeric" for c in [label_column, *features]})
    X = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], 1)
    y = table.column(label_column).to_numpy(zero_copy_only=False)
    X, y = X.astype(np.float64), y.astype(np.float64)    # nulls read as NaN
    for name, values in [(label_column, y), *zip(features, X.T, strict=True)]:
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{dataset}: row {bad[0]}: column '{name}' is {values[bad[0]]} "
                            f"(null or not finite); task erm needs finite numbers")
    return X, y
