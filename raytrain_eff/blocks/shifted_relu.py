"""The wide shifted-ReLU layer of arXiv 2208.04508 (Deng, Hu, Song, Weinstein, Zhuo):
f(x) = (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0), b = √(0.4·ln m), a_r ∈ {±1} fixed, W trained.

The ``wide`` task builds its model from it; the ``sublinear`` method gives it an index
(``NeuronIndex``) that finds the few neurons an input fires, so a step touches those only.
Without one the layer runs the dense GEMM + mask. Width sharding: each rank hosts a
contiguous slice of the neurons and the partial outputs are all-reduced.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

import torch
from torch import nn

from raytrain_eff import collectives
from raytrain_eff.ranks import shard_rows


def default_shift(m: int) -> float:
    """b = √(0.4·ln m): P(N(0,1) > b) ≈ m^-0.2/(b√(2π)), so about m^0.8 neurons (up to a log
    factor) fire per unit-norm input."""
    return math.sqrt(0.4 * math.log(m))


class _PairDots(torch.autograd.Function):
    """h_p = ⟨w_{r_p}, x_{i_p}⟩ (already computed by the query's verification) as a function
    of W; ∂ℓ/∂W is a coalesced sparse tensor with one summed row per distinct neuron."""

    @staticmethod
    def forward(ctx, W, h, x_pairs, r):
        U, slot = torch.unique(r, return_inverse=True)  # sorted distinct neurons
        ctx.save_for_backward(x_pairs, U, slot)
        ctx.shape = W.shape
        return h.clone()

    @staticmethod
    def backward(ctx, grad_h):
        x_pairs, U, slot = ctx.saved_tensors
        rows = torch.zeros(len(U), x_pairs.shape[1], dtype=grad_h.dtype, device=grad_h.device)
        rows.index_add_(0, slot, grad_h[:, None] * x_pairs)  # Σ_{i: r∈S_i} ∂ℓ/∂h_ir · x_i
        g = torch.sparse_coo_tensor(
            U[None], rows, ctx.shape, is_coalesced=True, check_invariants=False
        )
        return g, None, None, None


class _SumOverShards(torch.autograd.Function):
    """f = Σ_p f_p across width shards; ∂ℓ/∂f_p = ∂ℓ/∂f, so the backward is the identity."""

    @staticmethod
    def forward(ctx, f_p, group):
        return collectives.all_reduce(f_p.clone(), group)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class NeuronIndex(Protocol):
    """What the layer asks of an active-neuron index (``methods/sublinear/index.py``)."""

    def answers(self, rows: torch.Tensor | None) -> bool:
        """Whether it can find the active sets of these inputs (an exact index: indexed rows)."""
        ...

    def candidates(
        self, x: torch.Tensor, rows: torch.Tensor | None, b: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, float]:
        """(batch position, neuron) pairs that may fire, their exact pre-activations (None:
        the layer verifies them with dots), keys read and the FLOPs the query took."""
        ...

    def rekey(self, W: torch.Tensor, U: torch.Tensor) -> tuple[int, float]:
        """Follow the rows U (sorted, unique) of W that changed; (re-keyed, FLOPs)."""
        ...


STAT_KEYS = (
    "batch",
    "pairs",
    "candidates",
    "reads",
    "updated",
    "rekeyed",
    "flops",
    "query_s",
    "update_s",
    "recall_hits",
    "recall_true",
)


class ShiftedReLU(nn.Module):
    """The wide layer x ↦ (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0); a ∈ {±1}^{m×k} fixed, W trained.

    ``forward(x, rows)``: ``rows`` are the positions of x in the indexed inputs (an exact
    index needs them; without an index, or one that cannot answer for x, the GEMM + mask
    path runs). W's gradient is sparse (one row per active pair) on the index paths, dense
    on the GEMM path.
    """

    a: torch.Tensor  # (m, k) buffer of ±1 output weights

    def __init__(
        self,
        d: int,
        m: int,
        k: int = 1,
        b: float | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.m, self.b, self.offset = m, default_shift(m) if b is None else float(b), 0
        self.weight = nn.Parameter(torch.randn(m, d, generator=gen, dtype=dtype))  # w_r ~ N(0, I)
        self.register_buffer("a", (torch.randint(0, 2, (m, k), generator=gen) * 2 - 1).to(dtype))
        self.group = None
        self.index: NeuronIndex | None = None  # None: the dense GEMM + mask path
        self.check_recall = False
        self.count_active = True  # dense path: count z > 0 (one extra pass)
        self.grad_out: torch.Tensor | None = None  # ∂ℓ/∂f of the last training forward
        self._saved: tuple | None = None  # (x, bi, r) of that forward
        self.reset_stats()

    def reset_stats(self) -> None:
        self.stats = dict.fromkeys(STAT_KEYS, 0.0)

    def shard(self, rank: int, world: int, group) -> None:
        """Keep this rank's contiguous slice of the neurons; outputs are summed over ranks."""
        mine = shard_rows(self.m, rank, world)
        start, stop = mine.start, mine.stop
        self.weight = nn.Parameter(self.weight.data[start:stop].clone())
        self.a = self.a[start:stop].clone()
        self.offset, self.group = start, group

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        sparse = self.index is not None and self.index.answers(rows)
        f_p = self._sparse(x, rows) if sparse else self._dense(x)  # (B, k), this shard's part
        if f_p.requires_grad:
            f_p.register_hook(self._keep_grad_out)
        return _SumOverShards.apply(f_p, self.group) if self.group is not None else f_p

    def _keep_grad_out(self, grad: torch.Tensor) -> None:
        self.grad_out = grad.detach()

    def _dense(self, x: torch.Tensor) -> torch.Tensor:
        m_p, d = self.weight.shape
        z = torch.addmm(self.weight.new_full((1,), -self.b), x, self.weight.t())  # (B, m_p)
        act = torch.relu(z)  # the mask: z > 0
        self._saved = (x.detach(), z.detach())
        B, k = len(x), self.a.shape[1]
        self.stats["batch"] += B
        if self.count_active:
            self.stats["pairs"] += float((z > 0).sum())
        self.stats["flops"] += 4 * B * m_p * (d + k)  # addmm, output; their grads
        return act @ self.a / math.sqrt(self.m)

    def active_pairs(self, x: torch.Tensor, rows: torch.Tensor | None):
        """(bi, r, h): the pairs with h = ⟨w_r, x_bi⟩ > b among the index's candidates."""
        if self.index is None:
            raise RuntimeError("a sparse forward needs an index: set ShiftedReLU.index")
        with torch.no_grad():
            bi, r, h, reads, flops = self.index.candidates(x, rows, self.b)
            if h is None:  # verify with exact dots
                h = (self.weight.index_select(0, r) * x.index_select(0, bi)).sum(1)
                self.stats["flops"] += 2 * len(r) * x.shape[1]
            keep = h > self.b
        self.stats["candidates"] += len(r)
        self.stats["reads"] += reads
        self.stats["flops"] += flops
        return bi[keep], r[keep], h[keep]

    def _sparse(self, x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        t0 = time.perf_counter()
        bi, r, h = self.active_pairs(x, rows)
        self.stats["query_s"] += time.perf_counter() - t0
        if self.check_recall:
            self._measure_recall(x, bi, r)
        h = _PairDots.apply(self.weight, h, x.detach().index_select(0, bi), r)  # grad in W
        contrib = (h - self.b)[:, None] * self.a.index_select(0, r)  # (P, k)
        f_p = torch.zeros(len(x), self.a.shape[1], dtype=x.dtype, device=x.device)
        self._saved = (x.detach(), bi, r)
        P, d, k = len(r), x.shape[1], self.a.shape[1]
        self.stats["batch"] += len(x)
        self.stats["pairs"] += P
        self.stats["flops"] += 2 * P * (d + 2 * k)  # output; grads of it and W
        return f_p.index_add(0, bi, contrib) / math.sqrt(self.m)

    @torch.no_grad()
    def _measure_recall(self, x: torch.Tensor, bi: torch.Tensor, r: torch.Tensor) -> None:
        truth = x @ self.weight.T > self.b  # the dense active set
        self.stats["recall_true"] += float(truth.sum())
        self.stats["recall_hits"] += float(truth[bi, r].sum())

    def saved_pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, bi, r) of the last training forward (dense mode: read off the mask)."""
        if self._saved is None:
            raise RuntimeError("no training forward since the last update")
        if len(self._saved) == 3:
            return self._saved
        x, z = self._saved
        bi, r = (z > 0).nonzero(as_tuple=True)
        return x, bi, r

    # -- after an update -----------------------------------------------------------------------
    @torch.no_grad()
    def neurons_changed(self, U: torch.Tensor) -> None:
        """Tell the index that rows U (sorted, unique) of W changed."""
        t0 = time.perf_counter()
        d = self.weight.shape[1]
        self.stats["updated"] += len(U)
        self.stats["flops"] += 2 * len(U) * d
        if self.index is not None:
            rekeyed, flops = self.index.rekey(self.weight.detach(), U)
            self.stats["rekeyed"] += rekeyed
            self.stats["flops"] += flops
        self._saved, self.grad_out = None, None
        self.stats["update_s"] += time.perf_counter() - t0

    def dense_reference_flops(self, batch: int) -> float:
        m_p, d = self.weight.shape
        return 4 * batch * m_p * (d + self.a.shape[1]) + 2 * m_p * d


def wide_layers(model: nn.Module) -> list[ShiftedReLU]:
    return [mod for mod in model.modules() if isinstance(mod, ShiftedReLU)]
