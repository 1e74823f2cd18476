"""A rank's slice of flat optimizer vectors as one tensor ``torch.distributed.checkpoint`` saves
in shards and reshards on load.

FOSI/DHO2 keep every state vector (moments, Newton momentum, eigenvector rows) as this rank's
slice of a flat n-vector over the parameters. The slice is a list of *runs*, contiguous
pieces ``[start, start + length)`` of the flat vector: one run under ddp (``Slices``), one per
parameter under fsdp (each parameter's dim-0 FSDP chunk, ``ShardSlices``), the whole vector in
one process. A ``ShardedTensor`` takes several local pieces per rank, each at its global
offset; a ``DTensor`` with ``Shard(0)`` takes only one contiguous chunk, so it cannot say
FSDP's layout of the flat vector. DCP saves each rank's pieces (``(rows, length)`` blocks of
a ``(rows, n)`` tensor) and, on load, copies whatever overlaps the reader's own pieces, so a
checkpoint written on P ranks under either strategy loads on P' ranks or into plain tensors.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor import (
    Shard,
    ShardedTensor,
    ShardedTensorMetadata,
    TensorProperties,
)

Runs = Sequence[tuple[int, int]]  # (start, length) in the flat vector, in slice order


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ShardedTensor warns that DTensor replaces it; DTensor cannot express several pieces per
    rank (module docstring), so the warning has no action for us."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*deprecating ShardedTensor", category=FutureWarning
        )
        yield


def sharded(local: torch.Tensor, runs: Sequence[Runs], rank: int, group: Any) -> torch.Tensor:
    """``local`` (..., s): this rank's slice, its runs concatenated (any tail beyond them is
    padding) as a ``(..., n)`` tensor sharded by ``runs[r]`` for every rank r. Its pieces are
    copies of ``local``'s; ``pieces_into`` writes a loaded one back."""
    lead = list(local.shape[:-1])
    n = sum(length for every in runs for _, length in every)
    if len(runs) == 1:  # one process: the vector is whole
        return local[..., :n].clone()

    def meta(r: int, start: int, length: int) -> ShardMetadata:
        return ShardMetadata([0] * len(lead) + [start], lead + [length], f"rank:{r}/{local.device}")

    mine, at = [], 0
    for start, length in runs[rank]:
        if length:
            piece = local[..., at : at + length].clone()  # contiguous
            mine.append(Shard(piece, meta(rank, start, length)))
        at += length
    every = [
        meta(r, start, length)
        for r, pieces in enumerate(runs)
        for start, length in pieces
        if length
    ]
    props = TensorProperties(dtype=local.dtype, requires_grad=False)
    layout = ShardedTensorMetadata(every, torch.Size(lead + [n]), props)
    with quiet():
        return ShardedTensor._init_from_local_shards_and_global_metadata(
            mine, layout, process_group=group
        )


def pieces_into(loaded: torch.Tensor, local: torch.Tensor) -> None:
    """Copy a loaded ``sharded(...)`` tensor into ``local``, this rank's slice, in place."""
    if not isinstance(loaded, ShardedTensor):
        local[..., : loaded.shape[-1]].copy_(loaded)
        return
    at = 0
    with quiet():
        for shard in loaded.local_shards():  # in the order of this rank's runs
            length = shard.tensor.shape[-1]
            local[..., at : at + length].copy_(shard.tensor)
            at += length


def local_numel(t: torch.Tensor) -> int:
    """Values this rank holds of a ``sharded(...)`` tensor (all of a plain one)."""
    if not isinstance(t, ShardedTensor):
        return t.numel()
    with quiet():
        return sum(s.tensor.numel() for s in t.local_shards())
