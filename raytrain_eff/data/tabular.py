"""Feature/label data: scikit-learn's bundled real sets (in memory) or the user's Parquet
files, streamed a few row groups at a time for task classify (``StreamedFeatures``) or read
whole for task erm, whose variance-reduced solvers hold every row."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from raytrain_eff.data.parquet import DataError, read_schema, read_table, require_columns
from raytrain_eff.data.plan import Plan, Rows, Segments, train_and_held_out
from raytrain_eff.data.stream import RowGroupReader
from raytrain_eff.data.validate import check_columns, class_count

BUILTIN_TABULAR = ("digits",)


def load_features(dataset: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """A bundled set in memory: (X float32 [n, d], y int64 [n], image shape) in a fixed,
    shuffled order. Parquet features stream instead (``streamed_features``)."""
    if dataset not in BUILTIN_TABULAR:
        raise ValueError(
            f"data.dataset: {dataset} is not bundled ({', '.join(BUILTIN_TABULAR)})"
            f"; Parquet features stream through streamed_features"
        )
    from sklearn.datasets import load_digits

    d = load_digits()  # 1,797 real 8x8 handwritten digits shipped with scikit-learn
    X, y = d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)
    order = np.random.default_rng(12345).permutation(len(y))  # fixed: splits never move
    return X[order], y[order], (1, 8, 8)


def load_erm_table(
    dataset: str, label_column: str = "label", feature_columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(X float64 [n, d], y float64 [n]) from a Parquet file, in file order, for task erm:
    any numeric label (two values for classification, real values for regression)."""
    table = read_table(dataset)
    features = feature_columns or [c for c in table.column_names if c != label_column]
    require_columns(table, dataset, {c: "numeric" for c in [label_column, *features]})
    X = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], 1)
    y = table.column(label_column).to_numpy(zero_copy_only=False)
    X, y = X.astype(np.float64), y.astype(np.float64)  # nulls read as NaN
    for name, values in [(label_column, y), *zip(features, X.T, strict=True)]:
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(
                f"{dataset}: row {bad[0]}: column '{name}' is {values[bad[0]]} "
                f"(null or not finite); task erm needs finite numbers"
            )
    return X, y


@dataclass(frozen=True)
class FeatureGroup:
    """One decoded row group: features float32 [rows, d] and class labels int64 [rows]."""

    X: np.ndarray
    y: np.ndarray


def decode_features(
    table: pa.Table, where: str, label: str, features: list[str], classes: int
) -> FeatureGroup:
    """A ``RowGroupReader`` decoder: checks every row it decodes (``check_columns``, and labels
    below ``classes``), naming ``where`` (file and row group), the row and the value."""
    check_columns(table, where, label, features)
    y = table.column(label).to_numpy().astype(np.int64)
    beyond = np.flatnonzero(y >= classes)
    if len(beyond):
        raise DataError(
            f"{where}: row {beyond[0]}: column '{label}' has label {y[beyond[0]]}, "
            f"beyond the {classes} classes of the training data"
        )
    X = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in features], 1)
    return FeatureGroup(X.astype(np.float32), y)


class StreamedFeatures:
    """Feature/label rows streamed from Parquet row groups: training rows placed by a ``Plan``
    (``data.plan``), held-out rows read whole, in file order, a batch at a time."""

    def __init__(
        self,
        train: Segments,
        val: Segments,
        *,
        label: str,
        features: list[str],
        seed: int,
        shuffle_window: int,
        cache_row_groups: int,
    ):
        self.train, self.val, self.features = train, val, features
        self.num_train, self.num_val = train.num_rows, val.num_rows
        self.classes = class_count(train.files, label)  # held-out labels are checked below it
        self.plan = Plan(train, seed, shuffle_window)
        decode = functools.partial(
            decode_features, label=label, features=features, classes=self.classes
        )
        self.readers = {
            name: RowGroupReader(s.files, [label, *features], decode, cache_row_groups)
            for name, s in (("train", train), ("val", val))
        }

    def batch(self, position: int, rank: int, world: int, batch_size: int):
        rows = self.plan.rows(position, rank, world, batch_size)
        upcoming = self.plan.rows(position + 1, rank, world, batch_size).groups()
        self.readers["train"].reserve(len(set(rows.groups()) | set(upcoming)))
        batch = self._take("train", rows)
        self.readers["train"].prefetch(upcoming)  # the next micro-batch's, while this one steps
        return batch

    def in_order(self, which: str, span: range, batch_size: int) -> Iterator:
        """Rows ``span`` of the train or val segments in file order, ``batch_size`` at a time."""
        segments = self.train if which == "train" else self.val
        for start in range(span.start, span.stop, batch_size):
            index = np.arange(start, min(start + batch_size, span.stop))
            yield self._take(which, segments.in_file_order(index))

    def _take(self, which: str, rows: Rows):
        reader = self.readers[which]
        X = np.empty((len(rows.row), len(self.features)), np.float32)
        y = np.empty(len(rows.row), np.int64)
        reader.prefetch(rows.groups())
        for file, group in rows.groups():
            g = reader.get((file, group))
            mine = np.flatnonzero((rows.file == file) & (rows.group == group))
            X[mine], y[mine] = g.X[rows.row[mine]], g.y[rows.row[mine]]
        return torch.from_numpy(X), torch.from_numpy(y)

    def checksum(self) -> str:
        return hashlib.sha256(
            (self.train.fingerprint() + self.val.fingerprint()).encode()
        ).hexdigest()[:16]

    def close(self) -> None:
        for r in self.readers.values():
            r.close()


def streamed_features(data, seed: int) -> StreamedFeatures:
    """``data`` (config.DataConfig) as streamed features: ``val_dataset`` is held out, or else
    the last ``val_fraction`` of ``dataset``'s rows in file order."""
    train, val = train_and_held_out(data)
    schema = read_schema(data.dataset)
    features = data.feature_columns or [c for c in schema.names if c != data.label_column]
    require_columns(
        schema, data.dataset, {data.label_column: "integer", **{c: "numeric" for c in features}}
    )
    return StreamedFeatures(
        train,
        val,
        label=data.label_column,
        features=features,
        seed=seed,
        shuffle_window=data.shuffle_window,
        cache_row_groups=data.cache_row_groups,
    )
