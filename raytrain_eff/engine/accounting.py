"""Per-step accounting: dense reference FLOPs, memory, LR schedule factors.

Dense FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` on one forward+backward
per input shape (cached), plus what it cannot see: CPU scaled-dot-product attention counts
0, so the task adds attention analytically (forward once, backward twice). Methods then turn
the dense count into the effective count they really needed.
"""

from __future__ import annotations

import math
import resource

import torch
from torch.utils import _pytree as pytree
from torch.utils.flop_counter import FlopCounterMode

from raytrain_eff.blocks import dtensor
from raytrain_eff.methods import base
from raytrain_eff.monitor import keys


class DenseFlopCounter:
    def __init__(self, task) -> None:
        self.task = task
        self.cache: dict[tuple, float] = {}

    def count(self, model, batch) -> float:
        """FLOPs of one dense forward+backward on ``batch`` (gradients are left zeroed)."""
        key = tuple(
            tuple(t.shape)
            for t in pytree.tree_leaves(batch)  # tuple or dict
            if isinstance(t, torch.Tensor)
        )
        if key not in self.cache:
            with FlopCounterMode(display=False) as counter:
                self.task.loss(model, batch).backward()
            model.zero_grad(set_to_none=True)
            self.cache[key] = float(counter.get_total_flops()) + 3.0 * self.task.extra_flops(batch)
        return self.cache[key]


def peak_memory_bytes(device: torch.device, rss: int | None = None) -> int:
    """Peak GPU memory allocated on CUDA; the process's peak RSS on CPU.

    On CPU the kernel's high-water mark (``ru_maxrss``) and ``rss`` come from different
    counters, so the peak is taken as at least the RSS just measured: never below it.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return max(int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, rss or 0)


def _bytes(tensors) -> int:
    """Bytes of these tensors on this rank (a DTensor counts its local slice only)."""
    return sum(dtensor.local(t).numel() * t.element_size() for t in tensors)


def state_bytes(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, extra_grad_bytes: int = 0
) -> dict[str, int]:
    """Bytes this rank holds for parameters, gradients and optimizer state: the model's share
    of memory, which sharding divides by P. ``extra_grad_bytes``: gradient copies held
    outside ``.grad`` (the ddp all-reduce buckets)."""
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    # optimizers that keep flat state outside torch's per-parameter dict (FOSI, DHO2) list it
    state += base.state_tensors(optimizer)
    return {
        keys.PARAM_BYTES: _bytes(params),
        keys.GRAD_BYTES: _bytes(grads) + extra_grad_bytes,
        keys.OPTIMIZER_BYTES: _bytes(state),
    }


def gpu_memory(device: torch.device) -> dict[str, int]:
    """``{keys.GPU_ALLOCATED, keys.GPU_PEAK}`` of a CUDA device; empty elsewhere."""
    if device.type != "cuda":
        return {}
    return {
        keys.GPU_ALLOCATED: int(torch.cuda.memory_allocated(device)),
        keys.GPU_PEAK: int(torch.cuda.max_memory_allocated(device)),
    }


def lr_factor(step: int, total: int, warmup: int, decay: str, min_ratio: float) -> float:
    """Linear warm-up to 1, then constant, cosine or linear decay to ``min_ratio``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    if decay == "cosine":
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * (1 - progress)
