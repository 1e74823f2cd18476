"""DHO2's gradient reduce-scatter overlapped with backward, and its parameter all-gather
left in flight past the step (``scaling.strategy: ddp``, the layout of ``dho2.Slices``).

View the zero-padded flat vector as (P, s), row r being rank r's slice. Bucket j is the
column range [o_j, o_j + b_j) of every row, staged as a (P, b_j) buffer; its reduce-scatter
hands rank r the sum of row r, which *is* columns [o_j, o_j + b_j) of its own slice, so the
result is written straight into a view of the slice gradient (no copy out, no second
layout). A bucket of contiguous gradient, as ``engine.grad_sync`` uses, would complete
sooner but reduce-scatter into chunks that belong to other ranks. The price of columns:
every bucket holds a piece of slice 0, the flat vector's first 1/P, whose gradients backward
produces last, so the reduce-scatters overlap the last 1/P of backward. Buckets launch in
descending column order (the order slice 0's gradients complete), the same on every rank;
backward's leftovers (unused parameters send zeros) launch in ``finish``.

The updated slices are all-gathered straight into the parameters: after the first step every
parameter is a view of one (P·s) buffer, the all-gather's output, so no copy follows it.
``gather_params`` launches it at the end of the step and returns; ``settle`` waits for it.
Nothing may read the parameters in between: the engine settles before the next micro-batch
(``arm``), before other methods' hooks, eval and checkpoints (``GradientSync.settle``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from raytrain_eff import collectives

BUCKET_ELEMENTS = 1 << 20  # values per bucket over all ranks, as engine.grad_sync's buckets


class _Column:
    """Columns [lo, lo + width) of every rank's slice: a (P, width) staging buffer."""

    def __init__(self, lo: int, width: int, world: int, like: torch.Tensor):
        self.lo, self.width = lo, width
        self.staging = like.new_zeros(world * width)  # row r: slice r's columns
        self.params: set[int] = set()  # parameters with values in it
        self.ready: set[int] = set()
        self.work: collectives.Pending | None = None


class SliceSync:
    """Averages gradients into this rank's slice during backward (``grad``, after
    ``finish``); all-gathers updated slices into the parameters (``gather_params``)."""

    def __init__(
        self, params: list[nn.Parameter], slices: Any, bucket_elements: int = BUCKET_ELEMENTS
    ):
        self.params, self.slices = params, slices
        self.group, self.world, s = slices.group, slices.world, slices.size
        like = params[0].detach()
        width = max(1, bucket_elements // self.world)
        self.columns = [
            _Column(lo, min(width, s - lo), self.world, like) for lo in range(0, s, width)
        ]
        # per parameter: (column, offset in its staging, offset in the parameter, length)
        self.pieces: list[list[tuple[int, int, int, int]]] = []
        start = 0
        for i, p in enumerate(params):
            self.pieces.append(self._pieces(i, start, start + p.numel(), width))
            start += p.numel()
        self._index = {id(p): i for i, p in enumerate(params)}
        self.grad = like.new_zeros(s)  # this rank's averaged slice, after finish
        self.full = like.new_zeros(self.world * s)  # gathered parameters (padded)
        self.armed = self.synced = False
        self._next = len(self.columns) - 1  # next column to launch (descending)
        self._gathering: collectives.Pending | None = None
        for p in params:
            p.register_post_accumulate_grad_hook(self._on_grad)

    def _pieces(self, i: int, a: int, b: int, width: int) -> list[tuple[int, int, int, int]]:
        """Where flat range [a, b) of parameter i lands in the columns' staging buffers."""
        s, out = self.slices.size, list[tuple[int, int, int, int]]()
        if a == b:
            return out
        for r in range(a // s, min((b - 1) // s, self.world - 1) + 1):
            u, v = max(a, r * s) - r * s, min(b, (r + 1) * s) - r * s  # within slice r
            for c in range(u // width, (v - 1) // width + 1):
                lo, hi = max(u, c * width), min(v, (c + 1) * width)
                column = self.columns[c]
                column.params.add(i)
                out.append((c, r * column.width + lo - c * width, r * s + lo - a, hi - lo))
        return out

    # -- gradients ---------------------------------------------------------------------------
    def arm(self, armed: bool) -> None:
        """Before each micro-batch: the parameters must be current; sync on the last one."""
        self.settle()
        self.armed = armed

    def _copy_in(self, i: int, grad: torch.Tensor | None) -> None:
        flat = grad.reshape(-1) if grad is not None else None
        for c, dst, src, length in self.pieces[i]:
            target = self.columns[c].staging[dst : dst + length]
            if flat is None:
                target.zero_()
            else:
                target.copy_(flat[src : src + length])
            self.columns[c].ready.add(i)

    def _on_grad(self, p: nn.Parameter) -> None:
        if not self.armed:
            return
        self._copy_in(self._index[id(p)], p.grad)
        while self._next >= 0 and self.columns[self._next].ready >= self.columns[self._next].params:
            self._launch()

    def _launch(self) -> None:
        column = self.columns[self._next]
        out = self.grad[column.lo : column.lo + column.width]  # this rank's columns, in place
        column.work = collectives.reduce_scatter_tensor_async(out, column.staging, self.group)
        self._next -= 1

    def finish(self) -> None:
        """Launch what backward left (unused parameters send zeros), wait, average."""
        while self._next >= 0:
            column = self.columns[self._next]
            for i in column.params - column.ready:
                self._copy_in(i, self.params[i].grad)
            self._launch()
        for column in self.columns:
            assert column.work is not None  # every column was launched above
            column.work.wait()
            column.work = None
            column.ready.clear()
        self.grad.div_(self.world)
        self._next = len(self.columns) - 1
        self.armed, self.synced = False, True

    def take(self) -> torch.Tensor | None:
        """The averaged slice gradient of the last ``finish`` (valid until the next), once."""
        if not self.synced:
            return None
        self.synced = False
        return self.grad

    # -- parameters --------------------------------------------------------------------------
    def gather_params(self, theta_local: torch.Tensor) -> None:
        """Launch the all-gather of every rank's updated slice into the parameters."""
        self.settle()
        self._gathering = collectives.all_gather_into_tensor_async(
            self.full, theta_local.contiguous(), self.group
        )

    def settle(self) -> None:
        """Wait for a parameter all-gather in flight; the parameters are current after it."""
        if self._gathering is None:
            return
        self._gathering.wait()
        self._gathering = None
        if not self._aliased():  # first step (or .data replaced since): views of ``full``
            vector_to_parameters(self.full[: self.slices.n], self.params)

    def local_params(self) -> torch.Tensor | None:
        """This rank's slice of the current parameters as a view of ``full`` (no flatten, no
        copy), once the parameters are views of it; None before the first gather."""
        self.settle()
        if not self._aliased():
            return None
        lo = self.slices.lo
        return self.full[lo : lo + self.slices.size]

    def _aliased(self) -> bool:
        at, base, size = 0, self.full.data_ptr(), self.full.element_size()
        for p in self.params:
            if p.data_ptr() != base + at * size or not p.is_contiguous():
                return False
            at += p.numel()
        return True

    def buffer_bytes(self) -> int:
        """Staging (a second copy of the padded gradient) and the slice gradient; ``full``
        is the parameters' own storage."""
        staged = sum(c.staging.numel() for c in self.columns) + self.grad.numel()
        return staged * self.grad.element_size()
