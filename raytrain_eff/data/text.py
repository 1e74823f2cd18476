"""Text for the language model, behind one interface: in memory (the bundled corpora) or
streamed from Parquet row groups (any size: a worker holds a few row groups).

Both give ``batch(position, rank, world, batch_size)`` -> (x, y) windows of ``seq_len`` ids and
their next ids, ``val_batches``, ``checksum`` and ``vocab``; ids are stored in the smallest
integer type that holds the vocabulary (uint8 for bytes) and widened per batch only.

Streamed text uses the byte-level vocabulary (256 ids, UTF-8 bytes): it needs no pass over
the corpus to build. Each row (document) is one training sample per epoch, placed by
``data.plan``: its window starts at a seeded offset inside the row and runs on through the
following rows of the same row group (rows joined by newlines), ending at the group's end
when the row lies near it; a row group must hold at least ``seq_len + 1`` bytes.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from raytrain_eff.data.parquet import DataError
from raytrain_eff.data.plan import Plan, Rows, Segments, plan_generator, train_and_held_out
from raytrain_eff.data.seeds import step_generator
from raytrain_eff.data.stream import RowGroupReader
from raytrain_eff.ranks import shard_rows

NEWLINE = 10


def smallest_int_dtype(vocab_size: int) -> np.dtype:
    """The narrowest dtype torch can index with that holds ids 0..vocab_size-1."""
    for dtype in (np.uint8, np.int16, np.int32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


class ByteVocab:
    """UTF-8 bytes: 256 ids, fixed, so no pass over the corpus is needed to build it."""

    def __len__(self) -> int:
        return 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


def windows(ids: torch.Tensor, starts: torch.Tensor, T: int):
    """(x, y) int64 [len(starts), T]: the ids from each start and the ids one further."""
    chunk = ids[starts[:, None] + torch.arange(T + 1)].long()
    return chunk[:, :-1], chunk[:, 1:]


class InMemoryText:
    """The whole corpus as ids (bundled corpora of a few MB): the last ``val_fraction`` is held
    out (its last ``test_fraction`` as a test split); each rank draws i.i.d. windows from its
    contiguous shard of the rest."""

    def __init__(
        self,
        text: str,
        vocab,
        *,
        val_fraction: float,
        seq_len: int,
        seed: int,
        name: str,
        test_fraction: float = 0.0,
    ):
        self.vocab, self.T, self.seed = vocab, seq_len, seed
        ids = vocab.encode(text).astype(smallest_int_dtype(len(vocab)), copy=False)
        ids = torch.from_numpy(ids)
        split = int(len(ids) * (1 - val_fraction))
        test = split + int((len(ids) - split) * (1 - test_fraction))
        self.train_ids, self.val_ids, self.test_ids = ids[:split], ids[split:test], ids[test:]
        for which, held in (("held-out", self.val_ids), ("test", self.test_ids)):
            if len(held) <= seq_len + 1 and (which == "held-out" or test_fraction):
                raise ValueError(
                    f"data.dataset {name}: {which} split has {len(held)} "
                    f"characters, fewer than seq_len+1"
                )
        self.num_train = len(self.train_ids)

    def batch(self, position: int, rank: int, world: int, batch_size: int):
        # the 0 keeps grad_accum=1 streams as they were: (step, 0)
        span = shard_rows(len(self.train_ids), rank, world)
        gen = step_generator(self.seed, position, 0, rank, world)
        starts = torch.randint(0, len(span) - self.T - 1, (batch_size,), generator=gen)
        return windows(self.train_ids, starts + span.start, self.T)

    def val_batches(self, batch_size: int, num_batches: int, split: str = "val") -> Iterator:
        # fixed, evenly spaced windows: every evaluation scores the same text
        ids = self.test_ids if split == "test" else self.val_ids
        starts = torch.linspace(0, len(ids) - self.T - 2, batch_size * num_batches)
        for i in range(num_batches):
            yield windows(ids, starts[i * batch_size : (i + 1) * batch_size].long(), self.T)

    def checksum(self) -> str:
        h = hashlib.sha256()  # over int64 ids, chunk by chunk: the digest runs had before
        for ids in (self.train_ids, self.val_ids, self.test_ids):  # bytes as one held-out tail
            for chunk in ids.split(1 << 20):
                h.update(chunk.long().numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass(frozen=True)
class TextGroup:
    """One decoded row group: its rows' UTF-8 bytes, each read as followed by a newline.
    ``raw`` is a view of Arrow's buffer (no copy: the bytes stay in Arrow's memory pool, which
    reuses them group after group); the newlines are implied by the offsets."""

    raw: np.ndarray  # uint8 [bytes]: the rows' bytes back to back
    offsets: np.ndarray  # int64 [rows + 1]: row i is raw[offsets[i]:offsets[i + 1]]

    @property
    def size(self) -> int:
        """Bytes of the group's text with a newline after each row."""
        return len(self.raw) + len(self.offsets) - 1

    def starts(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where ``rows`` begin and end (their newline included) in the newline-joined text."""
        return self.offsets[rows] + rows, self.offsets[rows + 1] + rows + 1

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """uint8 [len(starts), length]: the newline-joined text from each start."""
        at = starts[:, None] + np.arange(length)  # positions in the joined text
        row = np.searchsorted(
            self.offsets[1:] + np.arange(1, len(self.offsets)), at, side="right"
        )  # row i ends at offsets[i+1]+i
        byte = at - row  # position in raw
        newline = byte == self.offsets[row + 1]
        out = (
            self.raw[np.minimum(byte, max(len(self.raw) - 1, 0))]
            if len(self.raw)
            else np.zeros(at.shape, np.uint8)
        )
        return np.where(newline, np.uint8(NEWLINE), out)


def decode_text(table: pa.Table, where: str, column: str) -> TextGroup:
    """A ``RowGroupReader`` decoder (with ``column`` bound): a row group's text column, null
    rows read as empty (as the in-memory path skips them)."""
    col = table.column(column)
    if col.null_count:
        col = pc.fill_null(col, "")
    arr = col.combine_chunks()
    wide = pa.types.is_large_string(arr.type)
    offsets = np.frombuffer(arr.buffers()[1], np.int64 if wide else np.int32).astype(np.int64)
    offsets = offsets[arr.offset : arr.offset + len(arr) + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return TextGroup(raw[offsets[0] : offsets[-1]], offsets - offsets[0])


def streamed_text(data, seq_len: int, seed: int) -> StreamedText:
    """``data`` (config.DataConfig) as streamed text: ``val_dataset``'s rows are scored, or
    else the last ``val_fraction`` of ``dataset``'s rows (in file order) are held out."""
    train, val = train_and_held_out(data)
    return StreamedText(
        train,
        val,
        column=data.text_column,
        seq_len=seq_len,
        seed=seed,
        shuffle_window=data.shuffle_window,
        cache_row_groups=data.cache_row_groups,
    )


class StreamedText:
    """Byte-level text streamed from Parquet: ``train`` rows placed by a ``Plan``,
    ``val`` rows scored at fixed, evenly spaced windows."""

    def __init__(
        self,
        train: Segments,
        val: Segments,
        *,
        column: str,
        seq_len: int,
        seed: int,
        shuffle_window: int,
        cache_row_groups: int,
    ):
        self.vocab, self.T, self.seed = ByteVocab(), seq_len, seed
        self.train, self.val = train, val
        self.plan = Plan(train, seed, shuffle_window)
        self.num_train = train.num_rows
        decode = functools.partial(decode_text, column=column)
        self.readers = {
            name: RowGroupReader(s.files, [column], decode, cache_row_groups)
            for name, s in (("train", train), ("val", val))
        }

    def batch(self, position: int, rank: int, world: int, batch_size: int):
        rows = self.plan.rows(position, rank, world, batch_size)
        upcoming = self.plan.rows(position + 1, rank, world, batch_size).groups()
        self.readers["train"].reserve(len(set(rows.groups()) | set(upcoming)))
        gen = plan_generator(self.seed, position, rank, world)
        jitter = torch.rand(batch_size, generator=gen, dtype=torch.float64).numpy()
        x, y = self._take("train", rows, jitter)
        self.readers["train"].prefetch(upcoming)  # the next micro-batch's, while this one steps
        return x, y

    def val_batches(self, batch_size: int, num_batches: int) -> Iterator:
        n = batch_size * num_batches
        index = np.linspace(0, self.val.num_rows - 1, n).astype(np.int64)
        for i in range(num_batches):
            part = index[i * batch_size : (i + 1) * batch_size]
            yield self._take("val", self.val.in_file_order(part), np.zeros(len(part)))

    def _take(self, which: str, rows: Rows, jitter: np.ndarray):
        """Windows for ``rows``: one row group at a time, so at most the reader's cache and
        one group are decoded at once."""
        T, reader = self.T, self.readers[which]
        out = np.empty((len(rows.row), T + 1), np.uint8)
        reader.prefetch(rows.groups())
        for file, group in rows.groups():
            g = reader.get((file, group))
            if g.size < T + 1:
                raise DataError(
                    f"{reader.paths[file]}: row group {group}: {g.size} bytes "
                    f"of text, fewer than task.seq_len+1 ({T + 1}); write larger "
                    f"row groups or lower task.seq_len"
                )
            mine = np.flatnonzero((rows.file == file) & (rows.group == group))
            a, b = g.starts(rows.row[mine])
            starts = np.minimum(a + (jitter[mine] * (b - a)).astype(np.int64), g.size - T - 1)
            out[mine] = g.windows(starts, T + 1)
        chunk = torch.from_numpy(out).long()
        return chunk[:, :-1], chunk[:, 1:]

    def checksum(self) -> str:
        return hashlib.sha256(
            (self.train.fingerprint() + self.val.fingerprint()).encode()
        ).hexdigest()[:16]

    def close(self) -> None:
        for r in self.readers.values():
            r.close()
