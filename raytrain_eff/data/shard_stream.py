"""A worker's Ray Data shard served as micro-batch positions, strictly in order.

Ray Train splits a ``ray.data.Dataset`` between workers with a streaming split that hands out
blocks as workers ask for them: a row's worker is not a function of its position, and the
split cannot resume mid-pass (ray-project/ray#48224). So positions here are sequential, not
random access: the first position asked starts a pass over the shard from its first row, each
later ask must be the next position (or the last again, served from memory), and a pass that
runs out starts the next one. Every attempt of a run (a restart after a failure, ``train
--resume``) therefore begins a fresh pass at its first step: rows already read in the
interrupted pass are read again, and its unread rows wait for a later pass.

Never imports ray: the shard is the ``DataIterator`` that the engine hands over.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class SequentialShard:
    def __init__(self, shard: Any, what: str = "the task's Ray Data dataset"):
        self.shard = shard  # ray.data.DataIterator (this worker's split)
        self.what = what  # named in errors
        self.batch_size = 0
        self.position: int | None = None  # of the batch last served
        self.batch: Any = None
        self.passes = 0  # passes begun (1 after the first batch)
        self._rows: Iterator[Any] | None = None

    def at(self, position: int, batch_size: int) -> Any:
        """The micro-batch at ``position``: the first ask, or the last position + 0 or 1."""
        if self.position is not None and position == self.position:
            return self.batch
        if self.position is not None and position != self.position + 1:
            raise ValueError(
                f"{self.what} is read in order, but micro-batch position {position} was asked "
                f"after {self.position}: batches from a separate stream (the curvature batches "
                f"of fosi or dho2) or full passes need in-memory tensors or Parquet data"
            )
        if self.position is None:
            self.batch_size = batch_size
        elif batch_size != self.batch_size:
            raise ValueError(
                f"{self.what}: batch size {batch_size} asked, but its pass reads "
                f"batches of {self.batch_size}"
            )
        self.batch, self.position = self._next(), position
        return self.batch

    def _next(self) -> Any:
        if self._rows is not None:
            batch = next(self._rows, None)
            if batch is not None:
                return batch
        self._rows = self._pass()
        batch = next(self._rows, None)
        if batch is None:
            raise ValueError(
                f"{self.what}: this worker's shard holds fewer than data.batch_size"
                f"={self.batch_size} rows; use fewer workers or a smaller batch"
            )
        return batch

    def _pass(self) -> Iterator[Any]:
        # drop_last: the split is equal, so every worker takes the same number of batches a
        # pass (none waits for another's pass); tensors stay on the CPU: the runner moves them
        self.passes += 1
        return iter(
            self.shard.iter_torch_batches(batch_size=self.batch_size, drop_last=True, device="cpu")
        )
