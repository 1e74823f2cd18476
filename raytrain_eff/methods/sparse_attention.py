"""Hybrid sparse attention for Mixed Sparsity Training (arXiv 2408.11746).

MST trains with Sparse-Transformer attention patterns (Child et al., arXiv 1904.10509) inside
a window of training steps and dense causal attention elsewhere. Query i may attend key j
(j ≤ i always) when, for window/stride/block length w::

    local:          i − j < w
    strided:        (i − j) mod w = 0
    local_strided:  local ∪ strided
    block:          ⌊i/w⌋ = ⌊j/w⌋

A real kernel computes whole tiles of the (T, T) score matrix, so attention cost is counted
at tile granularity: every tile with at least one allowed pair costs all its pairs.
``block_sparse_attention`` is such a kernel in plain PyTorch: it visits only touched tiles,
so on CPU the skipped work is really skipped. ``flex_block_attention`` hands the same tiles to
FlexAttention as a ``BlockMask`` (compiled on CUDA, where it skips untouched blocks in a fused
kernel; FlexAttention has no CPU backward, so on CPU it serves evaluation only).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PATTERNS = ("dense", "local", "strided", "local_strided", "block")


def pattern(name: str, T: int, w: int) -> torch.Tensor:
    """Bool (T, T) 'may attend' mask, causality included."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    causal = j <= i
    masks = {
        "dense": causal,
        "local": causal & (i - j < w),
        "strided": causal & ((i - j) % w == 0),
        "block": causal & (i // w == j // w),
    }
    masks["local_strided"] = masks["local"] | masks["strided"]
    if name not in masks:
        raise ValueError(f"unknown attention pattern '{name}'; choose one of {', '.join(PATTERNS)}")
    return masks[name]


def touched_tiles(mask: torch.Tensor, tile: int) -> torch.Tensor:
    """Bool (nb, nb): which tile × tile tiles of ``mask`` hold an allowed pair."""
    T = mask.shape[0]
    nb = -(-T // tile)
    padded = F.pad(mask, (0, nb * tile - T, 0, nb * tile - T))
    return padded.view(nb, tile, nb, tile).any(dim=3).any(dim=1)


def tile_pairs(mask: torch.Tensor, tile: int) -> int:
    """(query, key) pairs a tiled kernel computes: all pairs of every touched tile."""
    T = mask.shape[0]
    sizes = torch.full((-(-T // tile),), tile)
    sizes[-1] = T - tile * (len(sizes) - 1)
    return int((touched_tiles(mask, tile) * sizes[:, None] * sizes[None, :]).sum())


@dataclasses.dataclass
class AttentionSchedule:
    """``pattern`` with length ``w`` on steps [t0, t1); dense causal attention elsewhere."""

    name: str
    w: int
    t0: int
    t1: int

    def active(self, t: int) -> bool:
        return self.name != "dense" and self.t0 <= t < self.t1

    def mask(self, t: int, T: int) -> torch.Tensor | None:
        return pattern(self.name, T, self.w) if self.active(t) else None


class HybridAttention:
    """Sets ``pattern_mask`` on every attention module (one with that attribute) before its
    forward, from the schedule at the current ``step``."""

    def __init__(self, schedule: AttentionSchedule, kernel: str = "masked", tile: int = 16):
        if kernel not in KERNELS:
            raise ValueError(f"attention kernel '{kernel}': choose one of {', '.join(KERNELS)}")
        self.schedule = schedule
        self.kernel, self.tile = kernel, tile  # tiles / flex: attention over touched tiles only
        self.step = 0
        self._cache: dict = {}

    def attach(self, model: nn.Module) -> int:
        """Hooks modules that have a ``pattern_mask`` attribute; returns how many."""
        mods: list[Any] = [m for m in model.modules() if hasattr(m, "pattern_mask")]
        kernel = KERNELS[self.kernel]  # None: "masked", the module's own masked attention
        for m in mods:
            m.register_forward_pre_hook(self._before_forward)
            if kernel is not None:
                m.attention_fn = functools.partial(kernel, tile=self.tile)
        return len(mods)

    def _mask(self, T: int, device) -> torch.Tensor | None:
        if not self.schedule.active(self.step):
            return None
        key = (self.schedule.name, self.schedule.w, T, str(device))
        if key not in self._cache:
            self._cache[key] = pattern(self.schedule.name, T, self.schedule.w).to(device)
        return self._cache[key]

    def _before_forward(self, module, args):
        module.pattern_mask = self._mask(args[0].shape[1], args[0].device)


def block_sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, tile: int
) -> torch.Tensor:
    """softmax(QKᵀ/√d + mask)·V over touched tiles only; q, k, v: (B, nh, T, hs).

    Each query tile gathers just the key tiles it touches, so the work is the tile pairs of
    ``mask`` rather than T². Equal to dense SDPA with ``attn_mask=mask``.
    """
    B, nh, T, hs = q.shape
    tiles = _per_mask(mask, "tiles", tile, lambda m: touched_tiles(m.cpu(), tile))
    out = torch.empty_like(q)
    for a in range(tiles.shape[0]):
        rows = slice(a * tile, min((a + 1) * tile, T))
        cols = torch.cat(
            [
                torch.arange(b * tile, min((b + 1) * tile, T))
                for b in tiles[a].nonzero().flatten().tolist()
            ]
        )
        out[:, :, rows] = F.scaled_dot_product_attention(
            q[:, :, rows], k[:, :, cols], v[:, :, cols], attn_mask=mask[rows][:, cols]
        )
    return out


def flex_block_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, tile: int
) -> torch.Tensor:
    """FlexAttention over the touched ``tile``-blocks of ``mask``; equal to masked SDPA.

    A caller that limits SDPA to its math backend (lanczos.HessianOperator: HVPs need a
    forward that is differentiable twice, which FlexAttention's is not) gets masked SDPA,
    same values, on that twice-differentiable path."""
    if not (
        torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()
    ):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    T = q.shape[-2]
    block_mask = _per_mask(
        mask,
        "flex",
        tile,
        lambda m: create_block_mask(
            lambda b, h, q_idx, kv_idx: m[q_idx, kv_idx],
            None,
            None,
            T,
            T,
            device=m.device,
            BLOCK_SIZE=tile,
        ),
    )
    fn = _compiled_flex() if q.is_cuda else flex_attention  # eager: the reference path
    return fn(q, k, v, block_mask=block_mask)


_DERIVED: dict[tuple, tuple] = {}


def _per_mask(mask: torch.Tensor, kind: str, tile: int, build):
    """``build(mask)`` once per mask tensor, not per forward: the attention module keeps its
    mask while the pattern holds, so identity is the key (the entry keeps the mask alive, so
    its id is not reused while cached)."""
    key = (id(mask), kind, tile)
    hit = _DERIVED.get(key)
    if hit is None or hit[0] is not mask:
        if len(_DERIVED) >= 64:
            _DERIVED.clear()
        hit = _DERIVED[key] = (mask, build(mask))
    return hit[1]


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


KERNELS = {"masked": None, "tiles": block_sparse_attention, "flex": flex_block_attention}
