"""Deep linear networks x ↦ W_L⋯W_1 x and their random orthogonal initialisation.

The ``lowrank`` task builds the original (uncompressed) network from these; the ``lowdim``
method (arXiv 2311.05061) compresses a head or a whole network into a width-2r one.
"""

from __future__ import annotations

import torch
from torch import nn


class DeepLinear(nn.Module):
    """x ↦ W_L⋯W_1 x (+ b). ``product()`` is the end-to-end matrix (d_out, d_in)."""

    def __init__(self, weights: list[torch.Tensor], bias: torch.Tensor | None = None):
        super().__init__()
        self.weights = nn.ParameterList(nn.Parameter(w.detach().clone()) for w in weights)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[1]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[0]

    def product(self) -> torch.Tensor:
        # iterate, never slice: a slice of a ParameterList re-wraps the tensors as new
        # Parameters, which cuts them out of the graph when functional_call swapped them in
        # (the HVPs of fosi/dho2)
        W = None
        for Wl in self.weights:
            W = Wl if W is None else Wl @ W
        assert W is not None  # a DeepLinear has at least one layer
        return W

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for Wl in self.weights:  # (B, width): never forms the d_out×d_in product
            x = x @ Wl.T
        return x if self.bias is None else x + self.bias

    def outer(self) -> list[nn.Parameter]:
        """W_1 and W_L: the layers that learn at α·η."""
        return [self.weights[0], self.weights[-1]]


def orthogonal(rows: int, cols: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A slice of a Haar-random orthogonal max(rows, cols) matrix (orthonormal rows or cols)."""
    n = max(rows, cols)
    Q, R = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=dtype))
    Q = Q * torch.sign(torch.diagonal(R))  # sign fix makes Q Haar-distributed
    return Q[:rows, :cols]


def orthogonal_weights(
    d_in: int,
    d_out: int,
    width: int,
    depth: int,
    eps: float,
    gen: torch.Generator,
    dtype=torch.float64,
) -> list[torch.Tensor]:
    """The original network's initialisation: Wₗ = ε·Qₗ, Qₗ random (semi-)orthogonal."""
    shapes = [(width, d_in)] + [(width, width)] * (depth - 2) + [(d_out, width)]
    return [eps * orthogonal(r, c, gen, dtype) for r, c in shapes]


def original(
    d: int,
    depth: int,
    eps: float,
    gen: torch.Generator,
    width: int | None = None,
    dtype=torch.float64,
) -> DeepLinear:
    """The width-d (or ``width``) depth-``depth`` network at Wₗ = ε·Qₗ, d_in = d_out = d."""
    return DeepLinear(orthogonal_weights(d, d, width or d, depth, eps, gen, dtype))
