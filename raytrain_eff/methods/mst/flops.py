"""Analytic matmul FLOPs of MST's training forwards: dense, and effective at each layer's
density and the attention tiles touched (the accounting in ``methods/mst``'s docstring)."""

from __future__ import annotations

import torch
from torch import nn

from raytrain_eff.methods.sparse_attention import pattern, tile_pairs


class FlopCounter:
    """Analytic matmul FLOPs of the training forwards since ``reset`` (see module docstring)."""

    def __init__(self, model: nn.Module, density: dict[int, float], tile: int):
        self.density = density  # id(weight) -> current density; missing: dense
        self.tile = tile
        self.records: list[tuple] = []
        # id(module) -> id(its weight) now: under FSDP a forward sees a gathered stand-in
        self.weight_id = {
            id(m): id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))
        }
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.register_forward_pre_hook(self._matmul)
            if hasattr(mod, "pattern_mask"):
                mod.register_forward_hook(self._attention)  # after the pattern is set

    def reset(self) -> None:
        self.records = []

    def _matmul(self, mod, args):
        if not (torch.is_grad_enabled() and mod.training):
            return
        x = args[0]
        linear = isinstance(mod, nn.Linear)
        rows = x.numel() // mod.in_features if linear else x.numel()
        self.records.append(
            (
                "linear" if linear else "embedding",
                rows,
                mod.weight.numel(),
                mod.weight.shape[1],
                self.density.get(self.weight_id.get(id(mod), id(mod.weight)), 1.0),
                linear and x.requires_grad,
                mod.weight.requires_grad,
                self.weight_id.get(id(mod), id(mod.weight)),
            )
        )

    def _attention(self, mod, args, out):
        if torch.is_grad_enabled() and mod.training:
            B, T, C = args[0].shape
            mask = mod.pattern_mask
            P = tile_pairs(
                pattern("dense", T, 1) if mask is None else mask[:T, :T].cpu(), self.tile
            )
            P_dense = tile_pairs(pattern("dense", T, 1), self.tile)
            self.records.append(("attention", B, C, P, P_dense))

    def attention_density(self) -> float:
        """Attention pairs computed this step relative to dense causal attention (tiles)."""
        calls = [r for r in self.records if r[0] == "attention"]
        return sum(r[3] for r in calls) / sum(r[4] for r in calls) if calls else 1.0

    def totals(self, dense_dw: frozenset = frozenset()) -> tuple[float, float]:
        """(dense, effective) FLOPs; ``dense_dw``: ids of weights whose dW was dense."""
        dense = eff = 0.0
        for r in self.records:
            if r[0] == "attention":
                _, B, C, P, P_dense = r
                dense, eff = dense + 12.0 * B * C * P_dense, eff + 12.0 * B * C * P
                continue
            kind, rows, n, d, rho, dx, dw, key = r
            rho_dw = 1.0 if key in dense_dw else rho
            if kind == "linear":
                f = 2.0 * rows * n
                dense += f * (1 + dx + dw)
                eff += f * rho * (1 + dx) + f * rho_dw * dw
            else:  # gather forward (no FLOPs), scatter-add backward
                dense += rows * d * dw
                eff += rows * d * rho_dw * dw
        return dense, eff
