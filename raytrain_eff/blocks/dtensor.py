"""Tensors that FSDP2 shards as DTensors, seen from one rank: its local slice, the whole
tensor gathered from the slices, and a rank's slice of a whole tensor. On a plain tensor
each is the identity, so the same code runs under ddp, under fsdp and in one process."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a sharded tensor; the tensor itself otherwise."""
    return t.to_local() if isinstance(t, DTensor) else t


def full(like: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """The whole tensor whose local slice is ``part``, sharded as ``like`` is (collective)."""
    if not isinstance(like, DTensor):
        return part
    dtype = part.dtype
    part = part.to(torch.uint8) if dtype == torch.bool else part  # gloo gathers no bools
    whole = DTensor.from_local(
        part, like.device_mesh, like.placements, shape=like.shape, stride=like.stride()
    ).full_tensor()
    return whole.to(dtype)


def slice_like(like: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``whole`` (identical on every rank), sharded as ``like`` is."""
    if not isinstance(like, DTensor):
        return whole
    return distribute_tensor(
        whole, like.device_mesh, like.placements, src_data_rank=None
    ).to_local()
