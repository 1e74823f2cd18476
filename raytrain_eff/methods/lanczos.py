"""Lanczos with Hessian-vector products: the top-k (and bottom-ℓ) eigenpairs FOSI needs.

FOSI (Sivan, Gabel, Schuster, ICLR 2024, arXiv 2302.08484) and DHO2 (Gu et al.,
arXiv 2505.00982) estimate extreme Hessian eigenpairs by Lanczos on HVPs::

    q_1 = v_0 / ||v_0||, β_0 = 0
    for j = 1..m:
        w   = H q_j
        α_j = q_jᵀ w
        w  -= α_j q_j + β_{j-1} q_{j-1};  w -= Q (Qᵀ w)  (twice: full re-orthogonalisation)
        β_j = ||w||;  q_{j+1} = w / β_j   (β_j ≈ 0: restart with a fresh vector ⟂ Q)
    T = tridiag(β, α, β) = S diag(θ) Sᵀ;  Ritz vectors V = Sᵀ Qᵀ,  residual_i = β_m |S_{m,i}|

The recursion is written over *slices*: every vector is the caller's contiguous slice of the
full n-vector, and ``psum`` sums small tensors over the slices (identity in one process, an
all-reduce of a few floats in DHO2). So one code path serves FOSI and sharded DHO2, and the
basis Q is held as an (m × n/P) fp64 slice per rank.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generator, Optional

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

Psum = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class RitzPairs:
    """Kept Ritz pairs: the top ones (descending), then the bottom ones (ascending)."""
    eigvals: torch.Tensor     # (r,) fp64
    V: torch.Tensor           # (r, n_local) fp64, orthonormal rows (over all slices)
    residuals: torch.Tensor   # (r,) β_m |S_{m,i}|: distance bound to a true eigenvalue
    iterations: int           # HVPs computed
    restarts: int             # breakdowns recovered from
    basis_bytes: int          # bytes of this caller's slice of the Lanczos basis Q
    num_top: int              # how many of the rows are top eigenpairs


def lanczos_steps(matvec: Callable[[torch.Tensor], torch.Tensor],
                  draw: Callable[[int], torch.Tensor], m: int, psum: Psum,
                  ) -> Generator[int, None, tuple]:
    """The recursion as a generator: yields after each HVP but the last, then returns
    (Q, α, β, restarts).

    ``draw(i)`` gives the local slice of the i-th random start vector (fp64); ``matvec`` maps
    a local fp64 slice to the local slice of H q. A generator lets MR-DHO2 interleave the
    iterations with model updates.
    """
    q = draw(0)
    n_local = q.numel()
    Q = torch.zeros(m, n_local, dtype=torch.float64, device=q.device)  # (m, n/P)
    alpha = torch.zeros(m, dtype=torch.float64)
    beta = torch.zeros(m, dtype=torch.float64)
    Q[0] = q / psum((q * q).sum()).sqrt()
    restarts = 0
    for j in range(m):
        w = matvec(Q[j])
        alpha[j] = psum(torch.dot(Q[j], w))
        w = w - alpha[j] * Q[j] - (beta[j - 1] * Q[j - 1] if j else 0.0)
        w = _orthogonalise(w, Q[: j + 1], psum)
        beta[j] = psum(torch.dot(w, w)).sqrt()
        if j + 1 == m:
            break
        yield j + 1
        scale = alpha[: j + 1].abs().max().clamp_min(1e-300)
        if beta[j] <= 1e-10 * scale:  # invariant subspace found: restart, keep T block-diagonal
            restarts += 1
            beta[j] = 0.0
            w = _orthogonalise(draw(restarts), Q[: j + 1], psum)
            Q[j + 1] = w / psum(torch.dot(w, w)).sqrt()
        else:
            Q[j + 1] = w / beta[j]
    return Q, alpha, beta, restarts


def _orthogonalise(w: torch.Tensor, Q: torch.Tensor, psum: Psum) -> torch.Tensor:
    """Classical Gram-Schmidt twice (one all-reduce of j floats each): fp64-orthogonal."""
    for _ in range(2):
        w = w - Q.T @ psum(Q @ w)
    return w


def ritz_pairs(Q: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, restarts: int,
               k: int, num_smallest: int, ritz_tol: float) -> RitzPairs:
    """Top-k and bottom-ℓ Ritz pairs of T, only those whose residual says they converged."""
    m = alpha.numel()
    T = torch.diag(alpha) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    theta, S = torch.linalg.eigh(T)                       # ascending
    residuals = beta[m - 1].abs() * S[m - 1].abs()        # ||H v_i − θ_i v_i||
    top = list(range(m - 1, max(m - 1 - k, -1), -1))
    bottom = [i for i in range(min(num_smallest, m)) if i not in top]
    scale = theta.abs().max().clamp_min(1e-300)
    converged = [i for i in top + bottom if residuals[i] <= ritz_tol * scale]
    idx = torch.tensor(converged, dtype=torch.long)
    V = S[:, idx].T.to(Q.device) @ Q                      # (r, n/P)
    return RitzPairs(theta[idx], V, residuals[idx], m, restarts,
                     Q.numel() * Q.element_size(), sum(i in top for i in converged))


def lanczos(matvec, draw, m: int, k: int, num_smallest: int = 0, ritz_tol: float = 1e-2,
            psum: Optional[Psum] = None) -> RitzPairs:
    """Run the recursion to the end and keep the converged extreme Ritz pairs."""
    steps = lanczos_steps(matvec, draw, m, psum or (lambda x: x))
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return ritz_pairs(*done.value, k, num_smallest, ritz_tol)


# --------------------------------------------------------------------------------------------
# Hessian-vector products
# --------------------------------------------------------------------------------------------

class _LossOf(nn.Module):
    """Wraps (model, loss_fn) so ``functional_call`` can swap the model's parameters."""

    def __init__(self, model: nn.Module, loss_fn):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


class HessianOperator:
    """v ↦ ∇²L(θ; batch) v at fixed θ, for flat vectors over ``model``'s trainable parameters.

    Forward-over-reverse (``jvp`` of ``grad``) via ``torch.func``, with a double-backward
    fallback for ops without forward-mode AD. The operator is kept symmetric: buffers
    (BatchNorm statistics) are passed as copies, so no HVP changes them, and every call
    replays the same RNG state, so dropout masks are identical from one HVP to the next.
    """

    def __init__(self, model: nn.Module, loss_fn, batch: Any,
                 params: Optional[dict[str, torch.Tensor]] = None, seed: int = 0):
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        named = dict(model.named_parameters())
        # θ: the model's current parameters, or a snapshot (MR-DHO2)
        self.params = {n: (params[n] if params else named[n]).detach() for n in self.names}
        self.shapes = [self.params[n].shape for n in self.names]
        self.buffers = {f"model.{n}": b for n, b in model.named_buffers()}
        self.wrapper = _LossOf(model, loss_fn)
        self.batch = batch
        self.seed = seed
        self.dtype = next(iter(self.params.values())).dtype
        self.forward_mode = True

    def _loss(self, params: dict) -> torch.Tensor:
        state = {f"model.{n}": p for n, p in params.items()}
        state.update({n: b.clone() for n, b in self.buffers.items()})
        device = next(iter(params.values())).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            return functional_call(self.wrapper, state, (self.batch,))

    def _unflatten(self, v: torch.Tensor) -> dict:
        out, i = {}, 0
        for n, shape in zip(self.names, self.shapes):
            size = shape.numel()
            out[n] = v[i:i + size].view(shape)
            i += size
        return out

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        tangents = self._unflatten(v.to(self.dtype))
        if self.forward_mode:
            try:
                _, hv = jvp(grad(self._loss), (self.params,), (tangents,))
                return torch.cat([hv[n].reshape(-1) for n in self.names])
            except (RuntimeError, NotImplementedError):
                self.forward_mode = False   # an op without forward AD: fall back for good
        return self._double_backward(tangents)

    def _double_backward(self, tangents: dict) -> torch.Tensor:
        leaves = {n: p.clone().requires_grad_(True) for n, p in self.params.items()}
        with torch.enable_grad():
            g = torch.autograd.grad(self._loss(leaves), list(leaves.values()), create_graph=True)
            hv = torch.autograd.grad(g, list(leaves.values()),
                                     grad_outputs=[tangents[n] for n in self.names])
        return torch.cat([h.reshape(-1) for h in hv])
