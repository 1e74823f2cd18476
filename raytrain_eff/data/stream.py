"""Decoded Parquet row groups, a few at a time: an LRU cache filled by one background thread.

A worker asks for the row groups of its current batch (``get``) and announces those of the
next one (``prefetch``); one reader thread decodes them in order while the model steps.
At most ``capacity`` decoded groups stay cached (plus the one being used), so memory is a
few row groups whatever the data's size. The capacity grows (``reserve``) to the groups that
one batch and the next touch together: an LRU smaller than its working set evicts every group
before its turn comes, and each batch would then wait for groups decoded again. The cache
changes only when data arrive, never what arrives: batches stay a pure function of their
position (``data.plan``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from raytrain_eff.data.parquet import DataError, locate

Key = tuple[int, int]  # (file index, row group)
# (one row group's table, "FILE: row group G" for messages) -> the decoded group
Decode = Callable[[pa.Table, str], Any]


class RowGroupReader:
    def __init__(
        self, paths: tuple[str, ...], columns: list[str], decode: Decode, capacity: int = 4
    ):
        if capacity < 1:
            raise ValueError(f"data.cache_row_groups: {capacity}; expected an integer >= 1")
        self.paths, self.columns, self.decode, self.capacity = paths, columns, decode, capacity
        self._cache: OrderedDict[Key, Future] = OrderedDict()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()  # reader thread only

    def get(self, key: Key) -> Any:
        """The decoded row group, waiting for the reader thread if it is not cached yet;
        a bad row raises here (``DataError`` naming file, row group, row and value)."""
        return self._submit(key).result()

    def reserve(self, groups: int) -> None:
        """Keep at least ``groups`` decoded groups (bounded by a batch's rows, never the data)."""
        self.capacity = max(self.capacity, groups)

    def prefetch(self, keys: Iterable[Key]) -> None:
        """Start decoding ``keys`` in the background (only as many as the cache holds)."""
        for key in list(keys)[: self.capacity]:
            self._submit(key)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._cache.clear()
        while self._files:
            self._files.popitem()[1].close()

    def __getstate__(self):  # a task may be pickled before load(): threads never travel
        return {
            **self.__dict__,
            "_cache": OrderedDict(),
            "_lock": None,
            "_pool": None,
            "_files": OrderedDict(),
        }

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def _submit(self, key: Key) -> Future:
        with self._lock:
            future = self._cache.get(key)
            if future is not None:
                self._cache.move_to_end(key)
                return future
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="raytrain-eff-data")
            future = self._pool.submit(self._load, key)
            self._cache[key] = future
            while len(self._cache) > self.capacity:
                _, old = self._cache.popitem(last=False)
                old.cancel()  # a prefetch nobody waited for yet
            return future

    def _load(self, key: Key) -> Any:
        file, group = key
        path = self.paths[file]
        table = self._file(file).read_row_group(group, columns=self.columns)
        decoded = self.decode(table, f"{path}: row group {group}")
        del table
        # the reader's scratch (pages, decompression) goes back now: allocators keep freed
        # memory for reuse, and without this their high-water mark grows with the groups read
        pa.default_memory_pool().release_unused()
        return decoded

    def _file(self, file: int) -> pq.ParquetFile:
        handle = self._files.pop(file, None)
        if handle is None:
            fs, local = locate(self.paths[file])
            try:
                handle = pq.ParquetFile(fs.open_input_file(local))
            except (pa.ArrowInvalid, OSError) as err:
                raise DataError(f"{self.paths[file]}: not a Parquet file ({err})") from None
        self._files[file] = handle
        if len(self._files) > self.capacity:  # open handles stay as few as cached groups
            self._files.popitem(last=False)[1].close()
        return handle
