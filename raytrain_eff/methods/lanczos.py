"""Lanczos with Hessian-vector products: the top-k (and bottom-ℓ) eigenpairs FOSI needs.

FOSI (Sivan, Gabel, Schuster, ICLR 2024, arXiv 2302.08484) and DHO2 (Gu et al.,
arXiv 2505.00982) estimate extreme Hessian eigenpairs by Lanczos on HVPs::

    q_1 = v_0 / ||v_0||, β_0 = 0
    for j = 1..m:
        w   = H q_j
        w  -= Q (Qᵀ w)  twice (full re-orthogonalisation; the first pass's q_j
                              coefficient is α_j = q_jᵀ w, and it removes β_{j-1} q_{j-1})
        β_j = ||w||;  q_{j+1} = w / β_j   (β_j ≈ 0: restart with a fresh vector ⟂ Q)
    T = tridiag(β, α, β) = S diag(θ) Sᵀ;  Ritz vectors V = Sᵀ Qᵀ,  residual_i = β_m |S_{m,i}|
    keep the k largest and ℓ smallest θ (all of them: the reference keeps every one)

This is the reference's ``lanczos_alg`` (hsivan/fosi ``fosi/jax_optim/lanczos_algorithm.py``:
fp64, two full Gram-Schmidt passes, m = 4(k + ℓ), start vector from one fixed ``PRNGKey(0)``,
top-k/bottom-ℓ by ``eigh`` of T) with two optional or defensive additions: ``ritz_tol`` may
drop pairs whose residual says they have not converged (off by default), and a breakdown
(β_j ≈ 0, where the reference would divide by zero) restarts with a fresh orthogonal vector.

The recursion is written over *slices*: every vector is the caller's contiguous slice of the
full n-vector, and ``psum`` sums small tensors over the slices (identity in one process, an
all-reduce of a few floats in DHO2). So one code path serves FOSI and sharded DHO2, and the
basis Q is held as an (m × n/P) fp64 slice per rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from typing import Any, Protocol, get_args

import torch
from torch import nn
from torch.func import functional_call, grad, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from raytrain_eff.hparams.fosi import HvpMode

Psum = Callable[[torch.Tensor], torch.Tensor]
START_CHUNK = 1 << 16  # elements of a start vector drawn from one seed


def start_vector_pieces(seed: int, n: int, runs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """The elements at ``runs`` ((start, length), in order) of one seeded standard-normal
    n-vector (fp64). Chunk c of the vector is ``randn`` from its own seed (``seed``, c), so a
    rank draws only the chunks its runs touch: every slicing sees the same vector, and no rank
    holds the whole of it (FOSI's one run is the whole vector)."""
    pieces, cached = [], (-1, torch.empty(0, dtype=torch.float64))
    for start, length in runs:
        at, end = start, start + length
        while at < end:
            c, first = at // START_CHUNK, (at // START_CHUNK) * START_CHUNK
            if cached[0] != c:
                gen = torch.Generator().manual_seed((seed << 24) ^ c)  # CPU: same on any device
                size = min(START_CHUNK, n - first)
                cached = (c, torch.randn(size, generator=gen, dtype=torch.float64))
            take = min(end, first + START_CHUNK) - at
            pieces.append(cached[1][at - first : at - first + take])
            at += take
    return torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.float64)


@dataclasses.dataclass
class RitzPairs:
    """Kept Ritz pairs: the top ones (descending), then the bottom ones (ascending)."""

    eigvals: torch.Tensor  # (r,) fp64
    V: torch.Tensor  # (r, n_local) fp64, orthonormal rows (over all slices)
    residuals: torch.Tensor  # (r,) β_m |S_{m,i}|: distance bound to a true eigenvalue
    iterations: int  # HVPs computed
    restarts: int  # breakdowns recovered from
    basis_bytes: int  # bytes of this caller's slice of the Lanczos basis Q
    num_top: int  # how many of the rows are top eigenpairs


def lanczos_steps(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    draw: Callable[[int], torch.Tensor],
    m: int,
    psum: Psum,
) -> Generator[int, None, tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]]:
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
        alpha[j], w, beta[j] = _three_term_step(w, Q[: j + 1], psum)
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


def _three_term_step(w: torch.Tensor, Q: torch.Tensor, psum: Psum):
    """α_j, the next unnormalised vector and β_j from w = H q_j, in two all-reduces.

    Full re-orthogonalisation subtracts α_j q_j and β_{j-1} q_{j-1} with every other
    direction: the first Gram-Schmidt pass's coefficient on q_j *is* α_j. The second pass's
    coefficients c travel with wᵀw, and ||w − Qᵀc||² = wᵀw − ||c||² for orthonormal Q.
    """
    coeffs = psum(Q @ w)  # (j+1,): [..., β_{j-1}, α_j]
    w = w - Q.T @ coeffs
    both = psum(torch.cat([Q @ w, torch.dot(w, w).view(1)]))
    c, ww = both[:-1], both[-1]
    w = w - Q.T @ c
    return coeffs[-1], w, (ww - torch.dot(c, c)).clamp_min(0.0).sqrt()


def _orthogonalise(w: torch.Tensor, Q: torch.Tensor, psum: Psum) -> torch.Tensor:
    """Classical Gram-Schmidt twice (one all-reduce of j floats each): fp64-orthogonal."""
    for _ in range(2):
        w = w - Q.T @ psum(Q @ w)
    return w


def ritz_pairs(
    Q: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    restarts: int,
    k: int,
    num_smallest: int,
    ritz_tol: float | None = None,
) -> RitzPairs:
    """Top-k and bottom-ℓ Ritz pairs of T; all of them (``ritz_tol=None``, the reference), or
    only those with residual <= ritz_tol·|θ|_max, i.e. those that have converged."""
    m = alpha.numel()
    T = torch.diag(alpha) + torch.diag(beta[: m - 1], 1) + torch.diag(beta[: m - 1], -1)
    theta, S = torch.linalg.eigh(T)  # ascending
    residuals = beta[m - 1].abs() * S[m - 1].abs()  # ||H v_i − θ_i v_i||
    top = list(range(m - 1, max(m - 1 - k, -1), -1))
    bottom = [i for i in range(min(num_smallest, m)) if i not in top]
    cut = None if ritz_tol is None else ritz_tol * theta.abs().max().clamp_min(1e-300)
    kept = [i for i in top + bottom if cut is None or residuals[i] <= cut]
    idx = torch.tensor(kept, dtype=torch.long)
    V = S[:, idx].T.to(Q.device) @ Q  # (r, n/P)
    return RitzPairs(
        theta[idx],
        V,
        residuals[idx],
        m,
        restarts,
        Q.numel() * Q.element_size(),
        sum(i in top for i in kept),
    )


def lanczos(
    matvec,
    draw,
    m: int,
    k: int,
    num_smallest: int = 0,
    ritz_tol: float | None = None,
    psum: Psum | None = None,
) -> RitzPairs:
    """Run the recursion to the end and keep the extreme Ritz pairs (see ``ritz_pairs``)."""
    steps = lanczos_steps(matvec, draw, m, psum or (lambda x: x))
    while True:
        try:
            next(steps)
        except StopIteration as done:
            Q, alpha, beta, restarts = done.value
            return ritz_pairs(Q, alpha, beta, restarts, k, num_smallest, ritz_tol)


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


HVP_MODES = get_args(HvpMode)


class Hvp(Protocol):
    """What Lanczos's caller needs of an HVP: v ↦ H v, and an optional set-up step."""

    dtype: torch.dtype  # what v is cast to first (the parameters'), so a caller may cast it

    def prepare(self) -> None: ...

    def __call__(self, v: torch.Tensor) -> torch.Tensor: ...


class HessianOperator:
    """v ↦ ∇²L(θ; batch) v at fixed θ, for flat vectors over ``model``'s trainable parameters.

    ``double_backward`` (the default) differentiates the gradient once with ``create_graph``
    and keeps that graph for the whole refresh, so each HVP is one backward pass through it
    (``autograd.grad(g, θ, v)``) instead of a forward and two backwards; the graph is freed
    with the operator. ``forward_over_reverse`` (``jvp`` of ``grad`` via ``torch.func``) keeps
    nothing between HVPs but recomputes everything each time; it falls back to double
    backward for good on an op without forward-mode AD. On bench/dho2.py's CNN the cached
    double backward is ~2x faster per HVP (``hvp_modes`` in bench/results/dho2.json).
    The operator is kept symmetric: buffers (BatchNorm statistics) are passed as copies, so
    no HVP changes them, and the loss runs under a fixed RNG seed, so dropout masks are the
    same for every HVP of a refresh (one graph, or the same seed replayed).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn,
        batch: Any,
        params: dict[str, torch.Tensor] | None = None,
        seed: int = 0,
        mode: str = "double_backward",
        buffers: dict[str, torch.Tensor] | None = None,
    ):
        if mode not in HVP_MODES:
            raise ValueError(f"hvp mode {mode!r} is invalid; must be one of {HVP_MODES}")
        named = dict(model.named_parameters())
        # θ: the model's current trainable parameters, or the given ones (an MR-DHO2 snapshot;
        # full tensors gathered from shards, with ``model`` then only the structure)
        self.names = list(params) if params else [n for n, p in named.items() if p.requires_grad]
        self.params = {n: (params[n] if params else named[n]).detach() for n in self.names}
        self.shapes = [self.params[n].shape for n in self.names]
        # everything else functional_call needs: buffers (and frozen parameters, if given)
        fixed = dict(model.named_buffers()) if buffers is None else buffers
        self.buffers = {f"model.{n}": b for n, b in fixed.items()}
        self.wrapper = _LossOf(model, loss_fn)
        self.batch = batch
        self.seed = seed
        self.dtype = next(iter(self.params.values())).dtype
        self.forward_mode = mode == "forward_over_reverse"
        self._graph: tuple[list, tuple] | None = None  # (leaves, ∇L with its graph)

    def _loss(self, params: dict) -> torch.Tensor:
        state = {f"model.{n}": p for n, p in params.items()}
        state.update({n: b.clone() for n, b in self.buffers.items()})
        device = next(iter(params.values())).device
        # SDPA's fused kernels (CPU flash; CUDA flash and memory-efficient) have neither a
        # double backward nor forward-mode AD, so both HVP modes fail on them (tried on torch
        # 2.13). The math backend is composite (matmul, softmax), differentiable to any order
        # on every device; only the HVP's forward takes it, training keeps the fast kernels.
        with (
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
            sdpa_kernel(SDPBackend.MATH),
        ):
            torch.manual_seed(self.seed)
            return functional_call(self.wrapper, state, (self.batch,))

    def _unflatten(self, v: torch.Tensor) -> dict:
        out, i = {}, 0
        for n, shape in zip(self.names, self.shapes, strict=True):
            size = shape.numel()
            out[n] = v[i : i + size].view(shape)
            i += size
        return out

    def prepare(self) -> None:
        """Build the gradient graph the double-backward HVPs reuse (no-op for forward mode)."""
        if self.forward_mode or self._graph is not None:
            return
        leaves = {n: p.clone().requires_grad_(True) for n, p in self.params.items()}
        with torch.enable_grad():
            g = torch.autograd.grad(self._loss(leaves), list(leaves.values()), create_graph=True)
        self._graph = (list(leaves.values()), g)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        tangents = self._unflatten(v.to(self.dtype))
        if self.forward_mode:
            try:
                hv = jvp(grad(self._loss), (self.params,), (tangents,))[1]  # (value, jvp)
                return torch.cat([hv[n].reshape(-1) for n in self.names])
            except (RuntimeError, NotImplementedError):
                self.forward_mode = False  # an op without forward AD: fall back for good
        self.prepare()
        assert self._graph is not None  # prepare() built it: forward mode is off
        leaves, g = self._graph
        with torch.enable_grad():
            hv = torch.autograd.grad(
                g, leaves, grad_outputs=[tangents[n] for n in self.names], retain_graph=True
            )
        return torch.cat([h.reshape(-1) for h in hv])
