"""MST's topology (arXiv 2408.11746): which weights are sparse, each layer's density at a
target sparsity (ER / ERK / uniform), and one layer's prune-and-grow update."""

from __future__ import annotations

import dataclasses
import fnmatch

import torch
from torch import nn


@dataclasses.dataclass
class SparseParam:
    name: str  # parameter name in the model
    weight: torch.Tensor  # the module's nn.Parameter
    owner: nn.Module  # holds the mask buffer ``mst_mask``
    index: int  # position in the sparse-parameter list (seeds random growth)

    @property
    def mask(self) -> torch.Tensor:
        return self.owner.get_buffer("mst_mask")


def discover(model: nn.Module, include: list[str], exclude: list[str]) -> list[SparseParam]:
    """Weights of nn.Linear / nn.Embedding modules selected by name; tied weights once."""
    seen: dict[int, SparseParam] = {}
    names = {id(p): n for n, p in model.named_parameters()}  # first name of a tied weight
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or id(mod.weight) in seen:
            continue
        chosen = any(fnmatch.fnmatch(mod_name, pat) for pat in include) and not any(
            fnmatch.fnmatch(mod_name, pat) for pat in exclude
        )
        if chosen and mod.weight.requires_grad:
            seen[id(mod.weight)] = SparseParam(names[id(mod.weight)], mod.weight, mod, len(seen))
    return list(seen.values())


def layer_densities(shapes: list[tuple], density: float, distribution: str) -> list[float]:
    """Per-layer densities with Σ d_l n_l = density·Σ n_l; d_l ∝ Σ dims / Π dims (ERK) or
    (n_in + n_out)/(n_in n_out) (ER; equal to ERK for matrices), capped at 1."""
    n = [float(torch.Size(s).numel()) for s in shapes]
    if distribution == "uniform":
        return [density] * len(n)
    raw = [
        sum(s) / nl if distribution == "erk" else (s[0] + s[1]) / (s[0] * s[1])
        for s, nl in zip(shapes, n, strict=True)
    ]
    dense: set[int] = set()
    while True:  # layers whose density would exceed 1 become dense; redistribute the rest
        budget = density * sum(n) - sum(n[i] for i in dense)
        eps = budget / max(sum(raw[i] * n[i] for i in range(len(n)) if i not in dense), 1e-30)
        over = {i for i in range(len(n)) if i not in dense and eps * raw[i] > 1}
        if not over:
            return [1.0 if i in dense else min(eps * raw[i], 1.0) for i in range(len(n))]
        dense |= over


def prune_and_grow(
    w_abs: torch.Tensor,
    mask: torch.Tensor,
    grad: torch.Tensor | None,
    k: int,
    zeta: float,
    n_grad: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """One layer's topology update (flattened); returns the new mask. ``n_grad``: share of
    regrowth chosen by |grad| (rest random)."""
    m = mask.flatten().clone()
    a, n = int(m.sum()), m.numel()
    k = min(max(k, 0), n)
    D = min(a, max(round(zeta * a), a - k))
    drop = torch.topk(torch.where(m, w_abs.flatten(), torch.inf), D, largest=False).indices
    m[drop] = False
    G = k - (a - D)
    if G <= 0:
        return m.view_as(mask)
    candidates = ~m
    candidates[drop] = False  # prefer weights that were not just dropped...
    if int(candidates.sum()) < G:
        candidates = ~m  # ...unless restoration needs them back
    G_grad = round(n_grad * G) if grad is not None else 0
    by_grad = [] if grad is None else [(G_grad, grad.flatten().abs())]
    for count, score in by_grad + [(G - G_grad, torch.rand(n, generator=gen).to(m.device))]:
        if count:
            idx = torch.topk(torch.where(candidates, score, -1.0), count).indices
            m[idx] = True
            candidates[idx] = False
    return m.view_as(mask)
