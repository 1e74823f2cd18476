"""Checks of user Parquet data that name the file, column, row and value at fault.

The driver runs these before any Ray work. Column types come from each file's footer (no rows
read). Streamed class data (``check_classes``) is then checked without a scan: the first
``SAMPLE_ROWS`` rows, and the label column's min/max/null statistics of every row group (from
the footers), where a group whose statistics show a null, a negative or a label not yet seen
has its label column read to name the row. Tasks that hold all rows anyway (erm) scan them
(``check_tabular``) one record batch at a time. Workers run ``check_columns`` on every row
group they decode, so a run started without the driver's checks (a library call, a notebook)
still fails with the same messages, naming the row group.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raytrain_eff.data.parquet import DataError, files, locate, require_columns

SCAN_BATCH_ROWS = 1 << 16
SAMPLE_ROWS = 1 << 16  # rows the driver reads from the start of streamed data
FLOAT32_MAX = float(np.finfo(np.float32).max)  # features train as float32


def check_footers(uri: str, columns: dict[str, str]) -> None:
    """Every file has each of ``columns`` with its kind ('string', 'integer', 'numeric'),
    from the footers only (no rows read)."""
    for path in files(uri):
        require_columns(_schema(path), path, columns)


def check_tabular(uri: str, label: str, features: list[str] | None, *, classes: bool) -> int:
    """Types, finite features and valid labels in every file; returns the row count.

    ``classes`` (task classify): labels are class indices (an integer column), so they must
    be 0..K-1 with every class present: a stray 1000 among labels 0..2 is named, never
    turned into a 1001-way head; features train as float32. Otherwise (task erm) labels are
    any finite numbers (regression, ±1 targets) and features are float64.
    """
    first_row: dict[int, tuple[str, int]] = {}  # label value -> (file, row) where first seen
    rows = 0
    for path in files(uri):
        schema = _schema(path)
        columns = features or [c for c in schema.names if c != label]
        require_columns(
            schema,
            path,
            {label: "integer" if classes else "numeric", **{c: "numeric" for c in columns}},
        )
        fs, local = locate(path)
        with fs.open_input_file(local) as f:
            row = 0
            for batch in pq.ParquetFile(f).iter_batches(SCAN_BATCH_ROWS, columns=[label, *columns]):
                check_columns(batch, path, label, columns, row, classes=classes)
                if classes:
                    _first_rows(batch.column(label), path, row, first_row)
                row += batch.num_rows
        rows += row
    if rows == 0:
        raise DataError(f"{uri}: has no rows")
    if classes:
        check_class_labels(first_row, label)
    return rows


def check_classes(uri: str, label: str, features: list[str] | None) -> int:
    """Streamed class data on the driver (see the module docstring); returns K."""
    first_row, unread = _sample_and_statistics(uri, label, features)
    while True:  # a class missing from what was read: read the groups whose range covers it
        values = sorted(first_row)
        k = next((i for i, v in enumerate(values) if v != i), len(values))
        if k == len(values) and not any(hi >= k for *_, hi in unread):
            return k
        covering = [u for u in unread if u[3] <= k <= u[4]]
        if not covering:  # class k is absent: name the smallest label above it
            above = [u for u in unread if u[3] > k]
            if above:
                u = min(above, key=lambda u: u[3])
                _read_labels(u[0], u[1], u[2], label, first_row)
            return check_class_labels(first_row, label)
        for u in covering:
            unread.remove(u)
            _read_labels(u[0], u[1], u[2], label, first_row)


def check_held_out_classes(uri: str, label: str, features: list[str] | None, classes: int) -> None:
    """A separate held-out set (``data.val_dataset``): like ``check_classes``, but its labels
    need only lie below the ``classes`` of the training data (a class may be absent)."""
    first_row, unread = _sample_and_statistics(uri, label, features)
    for u in unread:
        if u[4] >= classes:
            _read_labels(u[0], u[1], u[2], label, first_row)
    beyond = [v for v in sorted(first_row) if v >= classes]
    if beyond:
        where, row = first_row[beyond[0]]
        raise DataError(
            f"{where}: row {row}: column '{label}' has label {beyond[0]}, beyond "
            f"the {classes} classes of the training data (labels 0..{classes - 1})"
        )


def _sample_and_statistics(uri: str, label: str, features: list[str] | None):
    """The first ``SAMPLE_ROWS`` rows checked, then each row group's label statistics:
    (label -> (file, row) where first seen, row groups whose extremes were not seen yet)."""
    first_row: dict[int, tuple[str, int]] = {}
    unread: list[tuple[str, int, int, int, int]] = []  # (file, group, first row, min, max)
    sampled = 0
    for path in files(uri):
        schema = _schema(path)
        columns = features or [c for c in schema.names if c != label]
        require_columns(schema, path, {label: "integer", **{c: "numeric" for c in columns}})
        with _open(path) as parquet:
            row = 0
            for batch in parquet.iter_batches(SCAN_BATCH_ROWS, columns=[label, *columns]):
                if sampled >= SAMPLE_ROWS:
                    break
                batch = batch.slice(0, SAMPLE_ROWS - sampled)
                check_columns(batch, path, label, columns, row)
                _first_rows(batch.column(label), path, row, first_row)
                row += batch.num_rows
                sampled += batch.num_rows
            unread += _label_statistics(parquet, path, label, first_row)
    if not first_row and not unread:
        raise DataError(f"{uri}: has no rows")
    return first_row, unread


def _label_statistics(
    parquet: pq.ParquetFile, path: str, label: str, first_row: dict[int, tuple[str, int]]
) -> list:
    """Each row group's label min/max/nulls from the footer. A group with a null, a negative
    or no statistics has its labels read now (naming the row); the others are returned as
    (file, group, first row, min, max) for ``check_classes`` to read only if it must."""
    meta, index = parquet.metadata, parquet.schema_arrow.get_field_index(label)
    unread, start = [], 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        known = stats is not None and stats.has_min_max and stats.has_null_count
        if not known or stats.null_count or stats.min < 0:
            _read_labels(path, g, start, label, first_row, parquet)
        elif stats.min not in first_row or stats.max not in first_row:
            unread.append((path, g, start, int(stats.min), int(stats.max)))
        start += meta.row_group(g).num_rows
    return unread


def _read_labels(
    path: str,
    group: int,
    start: int,
    label: str,
    first_row: dict[int, tuple[str, int]],
    parquet: pq.ParquetFile | None = None,
) -> None:
    if parquet is None:
        with _open(path) as opened:
            return _read_labels(path, group, start, label, first_row, opened)
    labels = parquet.read_row_group(group, columns=[label])
    check_columns(labels, path, label, [], start)
    _first_rows(labels.column(label), path, start, first_row)
    return None


def class_count(paths: tuple[str, ...], label: str) -> int:
    """K = 1 + the largest label, from the footers' statistics (a worker's view: the driver
    checked the labels); a row group without statistics has its labels read."""
    top = -1
    for path in paths:
        with _open(path) as parquet:
            meta, index = parquet.metadata, parquet.schema_arrow.get_field_index(label)
            for g in range(meta.num_row_groups):
                stats = meta.row_group(g).column(index).statistics
                if stats is not None and stats.has_min_max:
                    top = max(top, int(stats.max))
                elif meta.row_group(g).num_rows:
                    labels = parquet.read_row_group(g, columns=[label]).column(label)
                    top = max(top, int(pc.max(labels).as_py() or 0))
    return top + 1


def check_columns(
    data: pa.Table | pa.RecordBatch,
    where: str,
    label: str,
    features: list[str],
    first_row: int = 0,
    *,
    classes: bool = True,
) -> None:
    """Labels present (and >= 0 when ``classes``, else finite), features finite (and within
    float32 when ``classes``: see ``check_tabular``); rows counted from ``first_row``."""
    labels = data.column(label)
    null = _first(pc.is_null(labels))
    if null is not None:
        needed = "a class label 0..K-1" if classes else "a label"
        raise DataError(
            f"{where}: row {first_row + null}: column '{label}' is null (a missing "
            f"label); every row needs {needed}"
        )
    if classes:
        negative = _first(pc.less(labels, 0))
        if negative is not None:
            raise DataError(
                f"{where}: row {first_row + negative}: column '{label}' has the "
                f"negative label {labels[negative].as_py()}; labels are class "
                f"indices 0..K-1"
            )
    else:
        _check_finite(labels, where, label, "label", first_row, np.inf)
    limit = FLOAT32_MAX if classes else np.inf
    for name in features:
        _check_finite(data.column(name), where, name, "feature", first_row, limit)


def _check_finite(column, where: str, name: str, role: str, first_row: int, limit: float) -> None:
    bad = pc.is_null(column)
    if pa.types.is_floating(column.type):
        bad = pc.or_(pc.invert(pc.is_finite(column)), pc.greater(pc.abs(column), limit))
        bad = pc.fill_null(bad, True)
    i = _first(bad)
    if i is not None:
        value = column[i].as_py()
        what = (
            "null"
            if value is None
            else (f"{value}" if not np.isfinite(value) else f"{value} (beyond float32's range)")
        )
        raise DataError(
            f"{where}: row {first_row + i}: {role} column '{name}' is {what}; "
            f"{role}s must be finite numbers"
        )


def check_class_labels(first_row: dict[int, tuple[str, int]], label: str) -> int:
    """Labels {0..K-1}, every class present; returns K. ``first_row``: value -> (file, row)."""
    values = sorted(first_row)
    k = next((i for i, v in enumerate(values) if v != i), len(values))
    if k == len(values):
        return k
    stray = values[k]
    where, row = first_row[stray]
    hint = " (1-based labels? subtract 1)" if k == 0 and stray == 1 else ""
    absent = f"class {k}" if stray == k + 1 else f"classes {k}..{stray - 1}"
    raise DataError(
        f"{where}: row {row}: column '{label}' has label {stray}, out of range: labels must be "
        f"class indices 0..K-1 with every class present; the labels below it cover "
        f"{f'0..{k - 1}' if k else 'nothing'} ({k} classes) and {absent} never occur{hint}"
    )


def _first_rows(labels: pa.Array, where: str, offset: int, out: dict[int, tuple[str, int]]) -> None:
    values, index = np.unique(labels.to_numpy(zero_copy_only=False), return_index=True)
    for v, i in zip(values.tolist(), index.tolist(), strict=True):
        out.setdefault(int(v), (where, offset + i))


def _first(mask) -> int | None:
    i = pc.index(mask, True).as_py()
    return None if i is None or i < 0 else i


@contextlib.contextmanager
def _open(path: str):
    fs, local = locate(path)
    try:
        with fs.open_input_file(local) as f:
            yield pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a Parquet file ({err})") from None


def _schema(path: str) -> pa.Schema:
    fs, local = locate(path)
    try:
        with fs.open_input_file(local) as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a Parquet file ({err})") from None
