"""Hessian-vector products on FSDP2 shards by central differences of the model's own gradient.

    H v ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε,   ε = ε_mach^(1/3) · max(1, ‖θ‖) / ‖v‖

Each rank adds ε times its slice of v to its own parameter shards, runs forward and backward
through the sharded model (FSDP all-gathers one unit at a time and reduce-scatters the
gradients, averaged over ranks), and reads its slice of ∇L from its local gradient shards.
So an HVP is two training passes, and no rank ever holds more than FSDP's per-unit gather
beyond its 1/P slices: the exact double backward (``lanczos.HessianOperator``) needs the whole
parameters and the graph of their gradient in one process.

Accuracy: truncation O(ε² ‖∇³L‖) plus rounding O(ε_mach ‖∇L‖ / ε); ε ∝ ε_mach^(1/3) balances
them, scaled by ‖θ‖ / ‖v‖ so the step is a fixed *relative* change of θ whatever v's norm.
Measured against the exact HVP (``tests/methods/test_central_hvp.py``, a Tanh MLP, P = 1-3):
a relative error of 2.0e-5 in float32 and 3.1e-11 in float64.

Every HVP restores the parameters it perturbed from a copy of the rank's shard (never by
subtracting εv again, which would drift by rounding), restores the buffers (BatchNorm's
running statistics move in a training forward) and the training gradients, and replays one
RNG seed, so dropout masks are the same in both passes and in every HVP of a refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raytrain_eff.blocks import dtensor

Psum = Callable[[torch.Tensor], torch.Tensor]


class CentralDifferenceHVP:
    """v ↦ H(θ₀) v on this rank's slices; ``theta`` is θ₀'s local slice (kept as a copy, so
    MR-DHO2's snapshot costs 1/P), ``weight`` scales this rank's loss (rows × P / all rows)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable,
        batch: Any,
        theta: torch.Tensor,
        psum: Psum,
        seed: int = 0,
        weight: float = 1.0,
    ):
        self.model, self.loss_fn, self.batch = model, loss_fn, batch
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.theta = theta.detach().clone()  # (s,) this rank's θ₀
        self.psum, self.seed, self.weight = psum, seed, weight
        self.dtype = self.theta.dtype
        cube_root_eps = torch.finfo(self.dtype).eps ** (1 / 3)
        norm = float(self.psum((self.theta.double() ** 2).sum()).sqrt())
        self.scale = cube_root_eps * max(1.0, norm)  # ε · ‖v‖

    def prepare(self) -> None:
        """Nothing to build: every HVP is two fresh passes (FLOP counting calls it)."""

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        v = v.to(self.dtype)
        norm = float(self.psum((v.double() ** 2).sum()).sqrt())
        if norm == 0.0:
            return torch.zeros_like(v)
        eps = self.scale / norm
        live = self._read()  # θ now (MR-DHO2 has moved on)
        grads = [p.grad for p in self.params]  # the training step's, kept
        buffers = [b.detach().clone() for b in self.model.buffers()]
        try:
            plus = self._grad_at(torch.add(self.theta, v, alpha=eps))
            minus = self._grad_at(torch.add(self.theta, v, alpha=-eps))
        finally:
            self._write(live)
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers, strict=True):
                    b.copy_(saved)
        return plus.sub_(minus).div_(2 * eps)

    def _shards(self) -> list[torch.Tensor]:
        return [dtensor.local(p) for p in self.params]

    def _read(self) -> torch.Tensor:
        return torch.cat([s.detach().reshape(-1) for s in self._shards()])

    @torch.no_grad()
    def _write(self, theta: torch.Tensor) -> None:
        at = 0
        for shard in self._shards():  # FSDP all-gathers them at the next forward
            shard.copy_(theta[at : at + shard.numel()].view_as(shard))
            at += shard.numel()

    def _grad_at(self, theta: torch.Tensor) -> torch.Tensor:
        """This rank's slice of ∇L(θ), averaged over ranks by FSDP's reduce-scatter."""
        self._write(theta)
        for p in self.params:
            p.grad = None
        device = self.theta.device
        with (
            torch.enable_grad(),
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            torch.manual_seed(self.seed)
            loss = self.loss_fn(self.model, self.batch)
            (loss * self.weight if self.weight != 1.0 else loss).backward()
        return torch.cat(
            [
                (
                    dtensor.local(p.grad)
                    if p.grad is not None
                    else torch.zeros_like(dtensor.local(p))
                ).reshape(-1)
                for p in self.params
            ]
        )
