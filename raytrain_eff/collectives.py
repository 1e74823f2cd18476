"""One rule for collectives: every tensor on the process group's device.

NCCL takes only CUDA tensors (the current device) and gloo, as used here, CPU ones, so a
collective on a tensor from the wrong place either fails (a CPU scalar under NCCL) or, worse,
works on one backend and not the other. Every collective in the package goes through this
module (``tests/test_collectives.py`` checks the source): it hands ``torch.distributed`` the
caller's tensor itself when it already sits on the group's device (the common gloo/CPU case
costs nothing extra), else a contiguous copy there, and writes the result back into the
caller's tensor, so in-place semantics hold either way.

The documented exception is FSDP's own communication (``fully_shard``, DTensor
redistribution, ``torch.distributed.checkpoint`` state dicts): it places its tensors itself.

Methods import this module (it needs torch only), never ray or the engine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

ReduceOp = dist.ReduceOp


def device_of(group: Any = None) -> torch.device:
    """Where ``group``'s collectives want their tensors: the current CUDA device under NCCL,
    the CPU otherwise."""
    if dist.get_backend(group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _staged(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` itself when a collective can take it as it is; else a contiguous copy on
    ``device`` (the result is copied back by ``_back``)."""
    if t.device == device and t.is_contiguous():
        return t
    return t.to(device=device, memory_format=torch.contiguous_format, copy=True)


def _staged_out(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An output buffer: like ``_staged`` but nothing to copy in."""
    if t.device == device and t.is_contiguous():
        return t
    return torch.empty(t.shape, dtype=t.dtype, device=device)


def _back(staged: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if staged is not t:
        t.copy_(staged)
    return t


def all_reduce(t: torch.Tensor, group: Any = None, op=ReduceOp.SUM) -> torch.Tensor:
    """``t`` reduced over ``group``, in place; returns ``t``."""
    staged = _staged(t, device_of(group))
    dist.all_reduce(staged, op=op, group=group)
    return _back(staged, t)


class Pending:
    """A collective in flight; ``wait()`` leaves its result in the caller's output tensor."""

    def __init__(
        self,
        out: torch.Tensor,
        staged_out: torch.Tensor,
        work: Any,
        staged_in: torch.Tensor | None = None,
    ) -> None:
        self.tensor, self._staged, self._work = out, staged_out, work
        self._input = staged_in  # a staged copy of the input lives until the wait

    def wait(self) -> torch.Tensor:
        self._work.wait()
        return _back(self._staged, self.tensor)


def all_reduce_async(t: torch.Tensor, group: Any = None, op=ReduceOp.SUM) -> Pending:
    """Launch an in-place all-reduce of ``t``; compute may go on until ``.wait()``."""
    staged = _staged(t, device_of(group))
    return Pending(t, staged, dist.all_reduce(staged, op=op, group=group, async_op=True))


def broadcast(t: torch.Tensor, group_src: int = 0, group: Any = None) -> torch.Tensor:
    """``t`` of rank ``group_src`` (a rank within ``group``) on every rank, in place."""
    staged = _staged(t, device_of(group))
    dist.broadcast(staged, group_src=group_src, group=group)
    return _back(staged, t)


def all_gather_into_tensor_async(out: torch.Tensor, t: torch.Tensor, group: Any = None) -> Pending:
    """Launch the gather of every rank's ``t`` along dim 0 into ``out``; ``t`` must stay
    unchanged until ``.wait()``, which leaves the result in ``out``."""
    device = device_of(group)
    staged_out = _staged_out(out, device)
    staged = _staged(t, device)
    work = dist.all_gather_into_tensor(staged_out, staged, group=group, async_op=True)
    return Pending(out, staged_out, work, staged)


def all_gather_into_tensor(out: torch.Tensor, t: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Every rank's ``t`` concatenated along dim 0 into ``out``; returns ``out``."""
    return all_gather_into_tensor_async(out, t, group).wait()


def reduce_scatter_tensor_async(
    out: torch.Tensor, t: torch.Tensor, group: Any = None, op=ReduceOp.SUM
) -> Pending:
    """Launch the reduction of ``t`` over ranks, this rank's dim-0 chunk into ``out``; ``t``
    must stay unchanged until ``.wait()``, which leaves the result in ``out``."""
    device = device_of(group)
    staged_out = _staged_out(out, device)
    staged = _staged(t, device)
    work = dist.reduce_scatter_tensor(staged_out, staged, op=op, group=group, async_op=True)
    return Pending(out, staged_out, work, staged)


def reduce_scatter_tensor(
    out: torch.Tensor, t: torch.Tensor, group: Any = None, op=ReduceOp.SUM
) -> torch.Tensor:
    """This rank's dim-0 chunk of ``t`` reduced over ranks, into ``out``; returns ``out``."""
    return reduce_scatter_tensor_async(out, t, group, op).wait()


def all_gather(outs: list[torch.Tensor], t: torch.Tensor, group: Any = None) -> list:
    """Every rank's ``t`` into ``outs`` (one tensor per rank, filled in place)."""
    device = device_of(group)
    staged = [_staged_out(o, device) for o in outs]
    dist.all_gather(staged, _staged(t, device), group=group)
    for s, o in zip(staged, outs, strict=True):
        _back(s, o)
    return outs


# Object collectives pickle into tensors that torch itself puts on the group's device.
def gather_object(obj: Any, out: list | None, group: Any = None, group_dst: int = 0) -> None:
    """[obj of every rank] into ``out`` on rank ``group_dst`` (``out`` None elsewhere)."""
    dist.gather_object(obj, out, group=group, group_dst=group_dst)


def all_gather_object(out: list, obj: Any, group: Any = None) -> None:
    dist.all_gather_object(out, obj, group=group)


def barrier(group: Any = None) -> None:
    device = device_of(group)
    dist.barrier(group=group, device_ids=[device.index] if device.type == "cuda" else None)
