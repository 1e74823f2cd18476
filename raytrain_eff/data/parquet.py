"""User data as Parquet (local path or any pyarrow.fs URI), validated before training starts."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq


class DataError(ValueError):
    """Data that cannot be used; the message names the file and column."""


def read_table(uri: str) -> pa.Table:
    fs, path = _locate(uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{uri}: not a Parquet file ({err})") from None
    if table.num_rows == 0:
        raise DataError(f"{uri}: has no rows")
    return table


def read_schema(uri: str) -> pa.Schema:
    """The schema alone (footer only): cheap enough for checks on the driver."""
    fs, path = _locate(uri)
    try:
        if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            return pq.ParquetDataset(path, filesystem=fs).schema
        with fs.open_input_file(path) as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{uri}: not a Parquet file ({err})") from None


def _locate(uri: str):
    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (
            pyarrow.fs.LocalFileSystem(), uri)
    except (pa.ArrowInvalid, ValueError) as err:
        raise DataError(f"{uri}: not a readable path or pyarrow.fs URI ({err})") from None
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(f"{uri}: no such file or directory (built-in data sets: kjv, pydoc, "
                        f"digits)")
    return fs, path


def require_columns(table: pa.Table, uri: str, columns: dict[str, str]) -> None:
    """columns: name -> 'string' | 'numeric' | 'integer'."""
    for name, kind in columns.items():
        if name not in table.column_names:
            raise DataError(f"{uri}: missing column '{name}'; columns present: "
                            f"{', '.join(table.column_names)}")
        tp = table.schema.field(name).type
        ok = {"string": pa.types.is_string(tp) or pa.types.is_large_string(tp),
              "numeric": pa.types.is_integer(tp) or pa.types.is_floating(tp),
              "integer": pa.types.is_integer(tp)}[kind]
        if not ok:
            raise DataError(f"{uri}: column '{name}' has type {tp}; expected {kind}")
