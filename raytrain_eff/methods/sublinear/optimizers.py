"""The two updates of arXiv 2208.04508 on the active neurons only: first order
(``NeuronSGD``) and the paper's Gauss-Newton step (``GaussNewton``); each tells the layer's
index which neurons changed, so it re-keys only those."""

from __future__ import annotations

import math

import torch
from torch import nn

from raytrain_eff import collectives
from raytrain_eff.blocks.shifted_relu import wide_layers


class NeuronSGD(torch.optim.Optimizer):
    """w_r ← w_r − η·∂ℓ/∂w_r on the rows that got a gradient; the index re-keys only those."""

    def __init__(self, model: nn.Module, lr: float):
        self.layers = wide_layers(model)
        super().__init__([p for p in model.parameters() if p.requires_grad], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        lr = self.param_groups[0]["lr"]
        wide = {id(layer.weight): layer for layer in self.layers}
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            layer = wide.get(id(p))
            if layer is None:
                p.add_(p.grad, alpha=-lr)
            elif p.grad.is_sparse:
                g = p.grad.coalesce()  # one row per touched neuron
                U = g.indices()[0]
                p.index_copy_(0, U, p.index_select(0, U) - lr * g.values())
                layer.neurons_changed(U)
            else:
                p.add_(p.grad, alpha=-lr)  # the dense path's update
                layer.neurons_changed(torch.arange(len(p), device=p.device))


def gram(x: torch.Tensor, bi: torch.Tensor, r: torch.Tensor, a: torch.Tensor, m: int):
    """G = J Jᵀ over the active pairs, rows ordered (output c, input i); and U, r's slot in U."""
    U, slot = torch.unique(r, return_inverse=True)
    B, k = len(x), a.shape[1]
    A = torch.zeros(k * B, len(U), dtype=x.dtype, device=x.device)  # A_(c,i),u = a_uc·1[i u]
    rows = (torch.arange(k, device=x.device)[:, None] * B + bi).reshape(-1)
    A[rows, slot.repeat(k)] = a[r].T.reshape(-1)
    G = (A @ A.T) * (x @ x.T).repeat(k, k) / m
    return G, U, slot


class GaussNewton(torch.optim.Optimizer):
    """The paper's step: z = (JJᵀ + λI)⁻¹ e, W ← W − η Jᵀz on the active neurons only.

    Assumes ℓ = mean_i ½‖f_i − y_i‖², so e = B·∂ℓ/∂f; the Gram is summed over width shards.
    """

    def __init__(self, model: nn.Module, lr: float, damping: float):
        self.layers = wide_layers(model)
        self.damping = damping
        super().__init__([layer.weight for layer in self.layers], {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        lr = self.param_groups[0]["lr"]
        for layer in self.layers:
            if layer.grad_out is None:
                continue
            x, bi, r = layer.saved_pairs()
            e = layer.grad_out * len(x)  # (B, k) residuals f − y
            G, U, slot = gram(x, bi, r, layer.a, layer.m)
            if layer.group is not None:
                collectives.all_reduce(G, layer.group)
            eye = torch.eye(len(G), dtype=G.dtype, device=G.device)
            z = torch.linalg.solve(G + self.damping * eye, e.T.reshape(-1))
            z = z.view(e.shape[1], len(x)).T  # (B, k)
            coef = (layer.a[r] * z[bi]).sum(1) / math.sqrt(layer.m)
            delta = torch.zeros(len(U), x.shape[1], dtype=x.dtype, device=x.device)
            delta.index_add_(0, slot, coef[:, None] * x[bi])  # (Jᵀz)_r for r ∈ U
            layer.weight.index_add_(0, U, delta, alpha=-lr)
            kB, P, d = len(G), len(r), x.shape[1]
            layer.stats["flops"] += (
                2 * kB * kB * len(U) + 2 * len(x) ** 2 * d + kB**3 / 3 + 2 * P * (e.shape[1] + d)
            )
            layer.neurons_changed(U)
