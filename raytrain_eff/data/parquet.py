"""User data as Parquet (local path or any pyarrow.fs URI), validated before training starts."""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from raytrain_eff.typed import ConfigError


class DataError(ConfigError):
    """Data that cannot be used; the message names the file and column (and the row and
    value when a scan found it). A ValueError, and one line on the command line."""


def read_table(uri: str) -> pa.Table:
    files(uri)  # an empty directory is named as such, not as a table without columns
    fs, path = locate(uri)
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{uri}: not a Parquet file ({err})") from None
    if table.num_rows == 0:
        raise DataError(f"{uri}: has no rows")
    return table


def read_schema(uri: str) -> pa.Schema:
    """The schema alone (footer only): cheap enough for checks on the driver."""
    fs, path = locate(uri)
    try:
        if fs.get_file_info(path).type == pyarrow.fs.FileType.Directory:
            files(uri)
            return pq.ParquetDataset(path, filesystem=fs).schema
        with fs.open_input_file(path) as f:
            return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{uri}: not a Parquet file ({err})") from None


def files(uri: str) -> list[str]:
    """The data files behind ``uri``: the file itself, or a directory's files (recursively,
    sorted, skipping names that start with '_' or '.' as Arrow datasets do)."""
    fs, path = locate(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return [uri]
    found = fs.get_file_info(pyarrow.fs.FileSelector(path, recursive=True))
    names = sorted(
        posixpath.relpath(f.path, path) for f in found if f.type == pyarrow.fs.FileType.File
    )
    data = [n for n in names if not any(p[:1] in "_." for p in n.split("/"))]
    if not data:
        what = f"only {', '.join(names[:5])}" if names else "nothing"
        raise DataError(f"{uri}: empty directory: no Parquet files in it (found {what})")
    sep = "/" if "://" in uri else os.sep
    return [uri.rstrip("/" + os.sep) + sep + n.replace("/", sep) for n in data]


def locate(uri: str):
    try:
        fs, path = (
            pyarrow.fs.FileSystem.from_uri(uri)
            if "://" in uri
            else (pyarrow.fs.LocalFileSystem(), uri)
        )
    except (pa.ArrowInvalid, ValueError) as err:
        raise DataError(f"{uri}: not a readable path or pyarrow.fs URI ({err})") from None
    info = fs.get_file_info(path)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise DataError(
            f"{uri}: no such file or directory (built-in data sets: kjv, pydoc, digits)"
        )
    return fs, path


def require_columns(table: pa.Table | pa.Schema, uri: str, columns: dict[str, str]) -> None:
    """columns: name -> 'string' | 'numeric' | 'integer'; checks a table or a file's schema."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    for name, kind in columns.items():
        if name not in schema.names:
            raise DataError(
                f"{uri}: missing column '{name}'; columns present: {', '.join(schema.names)}"
            )
        tp = schema.field(name).type
        ok = {
            "string": pa.types.is_string(tp) or pa.types.is_large_string(tp),
            "numeric": pa.types.is_integer(tp) or pa.types.is_floating(tp),
            "integer": pa.types.is_integer(tp),
        }[kind]
        if not ok:
            raise DataError(f"{uri}: column '{name}' has type {tp}; expected {kind}")
