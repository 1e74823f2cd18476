"""Data-parallel gradient averaging overlapped with the backward pass.

Parameters are grouped into buckets in reverse registration order (roughly the order backward
produces their gradients). A post-accumulate-grad hook copies each finished gradient into its
bucket; once a bucket is full it is all-reduced asynchronously while backward goes on with the
layers below, as DistributedDataParallel does. Unlike a DDP wrapper this needs no change to the
model's call path, so tasks whose loss reads parameters directly (a factorised product, a
linear model's weight) and methods that hook forward keep working unchanged.

Buckets are launched strictly in index order on every rank, so the sequence of collectives is
the same everywhere even when a parameter gets no gradient on some step (it is sent as zeros
when the step is finished). Hooks are registered after the methods' own (MST masks gradients
in its hook), so a bucket always receives the gradient the method left.

This is the ``ddp`` strategy's sync; under ``fsdp`` (``engine.sharding``) the engine creates
none, since FSDP reduce-scatters each gradient into its shard itself.
"""

from __future__ import annotations

import torch

from raytrain_eff import collectives

BUCKET_ELEMENTS = 1 << 20  # 4 MiB of fp32: small enough to overlap, large enough to amortise


class _Bucket:
    def __init__(self, params: list[torch.nn.Parameter]):
        self.params = params
        self.offsets, total = [], 0
        for p in params:
            self.offsets.append(total)
            total += p.numel()
        self.flat = torch.zeros(total, dtype=params[0].dtype, device=params[0].device)
        self.ready: set[int] = set()
        self.work: collectives.Pending | None = None  # its all-reduce once launched

    def copy_in(self, i: int, grad: torch.Tensor) -> None:
        o = self.offsets[i]
        self.flat[o : o + grad.numel()].copy_(grad.reshape(-1))
        self.ready.add(i)

    def fill_missing(self) -> None:
        for i, p in enumerate(self.params):
            if i not in self.ready:
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                self.copy_in(i, g)


class OverlappedGradientSync:
    """Averages ``.grad`` over ``group`` during backward; ``finish()`` before the optimizer."""

    def __init__(
        self, model: torch.nn.Module, group, world_size: int, bucket_elements: int = BUCKET_ELEMENTS
    ):
        self.group, self.world = group, world_size
        self.armed = False  # only the last micro-batch of an accumulation syncs
        params = [p for p in model.parameters() if p.requires_grad][::-1]
        self.buckets: list[_Bucket] = []
        self._where: dict[int, tuple[int, int]] = {}
        chunk: list[torch.nn.Parameter] = []
        size = 0
        for p in params:
            if chunk and (size + p.numel() > bucket_elements or p.dtype != chunk[0].dtype):
                self._add_bucket(chunk)
                chunk, size = [], 0
            chunk.append(p)
            size += p.numel()
        if chunk:
            self._add_bucket(chunk)
        self._next = 0  # the first bucket not yet launched
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    def _add_bucket(self, params: list[torch.nn.Parameter]) -> None:
        for i, p in enumerate(params):
            self._where[id(p)] = (len(self.buckets), i)
        self.buckets.append(_Bucket(params))

    def arm(self, armed: bool) -> None:
        """Sync on the coming backward (True) or only accumulate locally (False)."""
        self.armed = armed

    def _on_grad(self, p: torch.nn.Parameter) -> None:
        if not self.armed:
            return
        b, i = self._where[id(p)]
        assert p.grad is not None  # a post-accumulate-grad hook runs with .grad set
        self.buckets[b].copy_in(i, p.grad)
        self._launch_ready()

    def _launch_ready(self) -> None:
        while self._next < len(self.buckets) and len(self.buckets[self._next].ready) == len(
            self.buckets[self._next].params
        ):
            self._launch(self.buckets[self._next])

    def _launch(self, bucket: _Bucket) -> None:
        bucket.work = collectives.all_reduce_async(bucket.flat, self.group)
        self._next += 1

    def finish(self) -> None:
        """Launch what backward left (unused parameters send zeros), wait, write averages."""
        for bucket in self.buckets[self._next :]:
            bucket.fill_missing()
            self._launch(bucket)
        for bucket in self.buckets:
            assert bucket.work is not None  # every bucket was launched above
            bucket.work.wait()
            bucket.flat.div_(self.world)
            for p, o in zip(bucket.params, bucket.offsets, strict=True):
                view = bucket.flat[o : o + p.numel()].view_as(p)
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)
            bucket.ready.clear()
            bucket.work = None
        self._next = 0
        self.armed = False

    def settle(self) -> None:
        """Nothing is left in flight past ``finish``: parameters are the optimizer's."""

    def buffer_bytes(self) -> int:
        """Bytes of the flat all-reduce buffers: a second copy of every gradient."""
        return sum(b.flat.numel() * b.flat.element_size() for b in self.buckets)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
