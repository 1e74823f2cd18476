"""A seeded plan over Parquet row groups: every micro-batch position -> (file, row group, row).

The plan is built from the files' footers alone (rows per row group); building it reads no
rows, and its size grows with the number of row groups, never with the data's bytes.

Design, per epoch ``e``:

* The rows are **segments**: runs of rows inside one row group (a held-out tail cuts at most
  one group in two).
* The segments are ordered by a permutation seeded by ``(seed, e)``, the same on every rank,
  and their rows laid end to end: one stream of N rows.
* Rank ``r`` of ``W`` takes the contiguous slice ``shard_rows(N, r, W)`` of that stream, so the
  slices are disjoint (no row is read twice in an epoch, across ranks) and each rank reads only
  the row groups its slice crosses.
* Inside its slice a rank permutes windows of ``shuffle_window`` consecutive rows (seeded by
  ``(seed, e, r, W, window)``) and cuts them into micro-batches: position ``p`` is batch
  ``p mod k`` of epoch ``p // k``, with ``k = len(slice) // batch_size``.

Why this shape: a full row permutation would need random single-row reads across every file
(or the whole table in memory). Permuting row groups gives global mixing between epochs,
the window gives local mixing, reads stay sequential, and a batch touches only the one or two
windows it falls in (a few row groups), so a worker's memory is bounded by the window and the
cache (``data.stream``), not by the data. Every row's place is a pure function of
(seed, position, rank, world size), so a resumed run at any world size or ``grad_accum`` reads
exactly the batches a straight run would, with no loader state to checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from raytrain_eff.data.parquet import DataError, files, locate
from raytrain_eff.data.seeds import step_generator
from raytrain_eff.ranks import shard_rows

_PLAN_KEY = 0x504C414E  # keeps the plan's random streams apart from the tasks' own


def plan_generator(seed: int, *keys: int) -> torch.Generator:
    return step_generator(seed, _PLAN_KEY, *keys)


@dataclass(frozen=True)
class Rows:
    """Where rows live: parallel arrays of file index, row group and row within the group."""

    file: np.ndarray
    group: np.ndarray
    row: np.ndarray

    def groups(self) -> list[tuple[int, int]]:
        """The distinct (file, row group) pairs, in first-use order."""
        return list(dict.fromkeys(zip(self.file.tolist(), self.group.tolist(), strict=True)))


@dataclass(frozen=True)
class Segments:
    """Runs of rows [start, stop) of row group ``group`` of ``files[file]``, in file order."""

    files: tuple[str, ...]
    file: np.ndarray
    group: np.ndarray
    start: np.ndarray
    stop: np.ndarray

    @classmethod
    def from_footers(cls, uri: str) -> Segments:
        paths = files(uri)
        file_ix, group, rows = [], [], []
        for i, path in enumerate(paths):
            for g, n in enumerate(row_group_rows(path)):
                if n:
                    file_ix.append(i)
                    group.append(g)
                    rows.append(n)
        if not rows:
            raise DataError(f"{uri}: has no rows")
        zeros = np.zeros(len(rows), np.int64)
        return cls(
            tuple(paths),
            np.array(file_ix, np.int64),
            np.array(group, np.int64),
            zeros,
            np.array(rows, np.int64),
        )

    @property
    def lengths(self) -> np.ndarray:
        return self.stop - self.start

    @property
    def num_rows(self) -> int:
        return int(self.lengths.sum())

    def split(self, at: int) -> tuple[Segments, Segments]:
        """(rows before ``at``, rows from ``at`` on), in file order."""
        ends = np.cumsum(self.lengths)
        cut = self.start + np.clip(at - (ends - self.lengths), 0, self.lengths)
        return self._keep(self.start, cut), self._keep(cut, self.stop)

    def _keep(self, start: np.ndarray, stop: np.ndarray) -> Segments:
        keep = stop > start
        return Segments(self.files, self.file[keep], self.group[keep], start[keep], stop[keep])

    def locate(self, order: np.ndarray, ends: np.ndarray, index: np.ndarray) -> Rows:
        """Rows at stream positions ``index`` when the segments are laid out in ``order``
        (``ends``: cumulative row counts in that order)."""
        k = np.searchsorted(ends, index, side="right")
        seg = order[k]
        offset = index - (ends[k] - self.lengths[seg])
        return Rows(self.file[seg], self.group[seg], self.start[seg] + offset)

    def in_file_order(self, index: np.ndarray) -> Rows:
        order = np.arange(len(self.file))
        return self.locate(order, np.cumsum(self.lengths), index)

    def fingerprint(self) -> str:
        """Identifies the rows (files, row groups, ranges) from metadata alone."""
        h = hashlib.sha256(repr(self.files).encode())
        for a in (self.file, self.group, self.start, self.stop):
            h.update(a.tobytes())
        return h.hexdigest()[:16]


def train_and_held_out(data) -> tuple[Segments, Segments]:
    """``data`` (config.DataConfig) as (training rows, held-out rows): ``val_dataset``'s rows,
    or else the last ``val_fraction`` of ``dataset``'s rows in file order."""
    train = Segments.from_footers(data.dataset)
    if data.val_dataset is not None:
        return train, Segments.from_footers(data.val_dataset)
    train, val = train.split(int(train.num_rows * (1 - data.val_fraction)))
    if val.num_rows == 0 or train.num_rows == 0:
        raise DataError(
            f"{data.dataset}: {train.num_rows + val.num_rows} rows cannot be "
            f"split with data.val_fraction={data.val_fraction}"
        )
    return train, val


def row_group_rows(path: str) -> list[int]:
    """Rows in each row group of one Parquet file (its footer only)."""
    fs, local = locate(path)
    try:
        with fs.open_input_file(local) as f:
            meta = pq.ParquetFile(f).metadata
            return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    except (pa.ArrowInvalid, OSError) as err:
        raise DataError(f"{path}: not a Parquet file ({err})") from None


class Plan:
    """Position -> rows for the training segments (see the module docstring)."""

    def __init__(self, segments: Segments, seed: int, shuffle_window: int):
        if shuffle_window < 1:
            raise ValueError(f"data.shuffle_window: {shuffle_window}; expected an integer >= 1")
        self.segments, self.seed, self.window = segments, seed, shuffle_window
        self.num_rows = segments.num_rows

    def rows(self, position: int, rank: int, world: int, batch_size: int) -> Rows:
        """The rows of micro-batch ``position`` on ``rank`` of ``world``."""
        if position < 0:
            raise ValueError(f"micro-batch position {position} < 0")
        span = shard_rows(self.num_rows, rank, world)
        if len(span) == 0:
            raise ValueError(
                f"rank {rank} of {world} has an empty data shard ({self.num_rows} rows)"
            )
        epoch, within = divmod(position, max(len(span) // batch_size, 1))
        # offsets in the rank's slice; a slice shorter than a batch wraps around
        offsets = (within * batch_size + np.arange(batch_size)) % len(span)
        window = offsets // self.window
        shuffled = np.empty_like(offsets)
        for w in np.unique(window):
            mine = window == w
            perm = self._window_perm(epoch, rank, world, int(w), len(span))
            shuffled[mine] = w * self.window + perm[offsets[mine] - w * self.window]
        order, ends = self._epoch(epoch)
        return self.segments.locate(order, ends, span.start + shuffled)

    @functools.lru_cache(maxsize=4)  # noqa: B019 (a plan lives as long as its task)
    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.segments.file)
        order = torch.randperm(n, generator=plan_generator(self.seed, epoch)).numpy()
        return order, np.cumsum(self.segments.lengths[order])

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def _window_perm(self, epoch: int, rank: int, world: int, w: int, span: int) -> np.ndarray:
        size = min(self.window, span - w * self.window)
        gen = plan_generator(self.seed, epoch, rank, world, w)
        return torch.randperm(size, generator=gen).numpy()
