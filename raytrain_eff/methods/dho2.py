"""DHO2: FOSI with the Lanczos segments and the update sharded across P workers.

Gu et al., "DHO2: Distributed Hybrid-Order Optimization", arXiv 2505.00982, built on FOSI
(arXiv 2302.08484; the update rule is in ``fosi.py``). The flat parameter vector, zero-padded
to P·s, is split into P contiguous slices of s floats; rank p owns slice p of

* every Lanczos vector and eigenvector (curvature memory (m + k)·n/P per rank, not (m + k)·n),
* the gradient (a reduce-scatter / P replaces the data-parallel all-reduce),
* the base optimizer's and the Newton momentum's state (ZeRO-1 style).

Per step: ``a = Σ_p V_p g_p`` and ``[V m, V u] = Σ_p [V_p m_p, V_p u_p]`` are all-reduces of
k and 2k floats; rank p updates θ_p and the slices are all-gathered into the model. Per
Lanczos iteration: q is all-gathered once (n floats), every rank applies the Hessian of
*its own* batch, and a reduce-scatter / P leaves each rank its slice of the averaged H q;
the dot products are two all-reduces of about j floats (``lanczos._three_term_step``).
No rank holds the full eigenvector matrix. Every rank slices the same seeded full-length start
vector (``FOSIOptimizer._start``), so the sharded recursion is FOSI's on the concatenated batch.
Unlike the reference code, no rank repeats another's HVP and V is never re-assembled.

MR-DHO2 (``MRDHO2Optimizer``) runs the refresh on a parameter snapshot a few Lanczos
iterations per model update and swaps the eigenpairs in at a step boundary; the eigenpairs'
lag behind their snapshot is at most ceil(m / lanczos_per_step) steps and is reported.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from raytrain_eff.methods.base import MethodContext
from raytrain_eff.methods.fosi import FOSI, FOSIOptimizer, curvature_inputs
from raytrain_eff.methods.lanczos import HessianOperator, lanczos_steps, ritz_pairs


class Slices:
    """Equal contiguous slices of a zero-padded n-vector (last dim), one per rank."""

    def __init__(self, n: int, rank: int, world: int, group: Any):
        self.n, self.rank, self.world, self.group = n, rank, world, group
        self.size = -(-n // world)                    # s = ceil(n / P)
        self.lo = rank * self.size

    def _pad(self, full: torch.Tensor) -> torch.Tensor:
        extra = self.size * self.world - full.shape[-1]
        return torch.nn.functional.pad(full, (0, extra)) if extra else full

    def local(self, full: torch.Tensor) -> torch.Tensor:
        return self._pad(full)[..., self.lo:self.lo + self.size].clone()

    def psum(self, x: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return x
        x = x.clone()
        dist.all_reduce(x, group=self.group)
        return x

    def reduce_scatter_mean(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's slice of the mean over ranks of a full-length vector."""
        if self.world == 1:
            return self.local(full)
        out = full.new_empty(self.size)
        dist.reduce_scatter_tensor(out, self._pad(full).contiguous(), group=self.group)
        return out.div_(self.world)

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Full-length (unpadded) vector or rows from every rank's slice."""
        if self.world == 1 or local.numel() == 0:
            return local.new_zeros(*local.shape[:-1], self.n) if local.numel() == 0 \
                else local[..., : self.n]
        rows = local.reshape(-1, self.size).contiguous()                 # (r, s)
        out = rows.new_empty(self.world * rows.shape[0], self.size)      # (P·r, s)
        dist.all_gather_into_tensor(out, rows, group=self.group)
        full = out.view(self.world, -1, self.size).transpose(0, 1).reshape(rows.shape[0], -1)
        return full[:, : self.n].reshape(*local.shape[:-1], self.n)


class DHO2Optimizer(FOSIOptimizer):
    """FOSI's step on this rank's slice; only k-float sums and the parameter gather leave it."""

    def __init__(self, model: nn.Module, config: Any, loss_fn: Callable, next_batch: Callable,
                 group: Any = None, rank: int = 0, world_size: int = 1):
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.slices = Slices(n, rank, world_size if group is not None else 1, group)
        super().__init__(model, config, loss_fn, next_batch)

    def _local_slice(self, full: torch.Tensor) -> torch.Tensor:
        return self.slices.local(full)

    def _local_params(self) -> torch.Tensor:
        return self.slices.local(parameters_to_vector(self.param_groups[0]["params"]).detach())

    def _local_grad(self) -> torch.Tensor:
        # the engine skips its all-reduce for this method: average here, one slice per rank
        return self.slices.reduce_scatter_mean(super()._local_grad())

    def _psum(self, x: torch.Tensor) -> torch.Tensor:
        return self.slices.psum(x)

    def _write_params(self, theta_local: torch.Tensor) -> None:
        vector_to_parameters(self.slices.gather(theta_local), self.param_groups[0]["params"])

    def _matvec(self, H: HessianOperator) -> Callable[[torch.Tensor], torch.Tensor]:
        def matvec(q: torch.Tensor) -> torch.Tensor:     # q: (s,) fp64, this rank's slice
            Hq = self._hvp(H, self.slices.gather(q))      # own batch's Hessian, full length
            return self.slices.reduce_scatter_mean(Hq.to(torch.float64))
        return matvec

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return self.slices.gather(x)

    def transient_bytes(self) -> int:
        """Per-HVP buffers beside the basis: gathered q and padded fp64 H q (both full
        length), and H q in the model's dtype."""
        padded = self.slices.size * self.slices.world
        return 2 * padded * 8 + self.n * self._local_params().element_size()


class MRDHO2Optimizer(DHO2Optimizer):
    """DHO2 whose refresh runs on a snapshot, ``lanczos_per_step`` HVPs beside each update."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = None          # the running Lanczos recursion, if any
        self.snapshot_t = 0          # step whose parameters the running refresh sees
        self.lag = 0                 # steps the installed eigenpairs lagged their snapshot

    def _curvature_work(self) -> int:
        if self.pending is None and self._refresh_due():
            snapshot = {n: p.detach().clone() for n, p in self.model.named_parameters()
                        if p.requires_grad}
            H = self._operator(params=snapshot)
            m = min(self.cfg.order, self.n)
            self.pending = lanczos_steps(self._matvec(H), self._start(), m, self._psum)
            self.snapshot_t = self.t
        if self.pending is None:
            return 0
        for done in range(1, self.cfg.lanczos_per_step + 1):
            try:
                next(self.pending)
            except StopIteration as finished:
                c = self.cfg
                Q, alpha, beta, restarts = finished.value
                self._install(ritz_pairs(Q, alpha, beta, restarts, c.k, c.num_smallest,
                                         c.ritz_cutoff))
                self.pending, self.lag = None, self.t - self.snapshot_t
                return done
        return self.cfg.lanczos_per_step

    def _record(self, seconds: float, hvps: int) -> None:
        super()._record(seconds, hvps)
        self.last["curvature_lag_steps"] = float(self.lag)

    def state_dict(self) -> dict:
        # a refresh in flight is not saved: the resumed run restarts it at its next due step
        return {**super().state_dict(), "lag": self.lag}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.lag, self.pending = state["lag"], None


class DHO2(FOSI):
    """Registered as ``dho2``; averages gradients itself (reduce-scatter to slices)."""

    owns_gradient_sync = True
    optimizer_class = DHO2Optimizer

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        self.optimizer = self.optimizer_class(
            model, self.config, *curvature_inputs(ctx),
            group=ctx.group, rank=ctx.rank, world_size=ctx.world_size)
        return self.optimizer


class MRDHO2(DHO2):
    """Registered as ``mr-dho2``: DHO2 with the refresh spread over model updates."""

    optimizer_class = MRDHO2Optimizer
