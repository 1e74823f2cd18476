"""DASVRDA: doubly accelerated stochastic variance-reduced dual averaging for regularised ERM.

Murata & Suzuki, "Doubly Accelerated Stochastic Variance Reduced Dual Averaging Method for
Regularized Empirical Risk Minimization", NeurIPS 2017, arXiv 1703.00439. Baselines in the
same code path: Prox-SVRG (Xiao & Zhang 2014, arXiv 1403.4699) and Katyusha (Allen-Zhu,
JMLR 2018, arXiv 1603.05953).

Problem: P(x) = F(x) + R(x), F(x) = (1/n) Σ_i φ(a_iᵀx; y_i), R(x) = λ₁‖x‖₁ + (λ₂/2)‖x‖²,
prox_{tR}(v) = sign(v)·max(|v| − tλ₁, 0)/(1 + tλ₂).

DASVRDA, stage s (outer acceleration; x̃₋₁ = z̃₀ = x̃₀)::

    θ̃_s = (1 − 1/γ)(s+2)/2
    ỹ_s = x̃_{s−1} + ((θ̃_{s−1} − 1)/θ̃_s)(x̃_{s−1} − x̃_{s−2})
                  + (θ̃_{s−1}/θ̃_s)(z̃_{s−1} − x̃_{s−1})
    ṽ = ∇F(x̃_{s−1});  x₀ = z₀ = ỹ_s, ḡ₀ = 0, θ₀ = 1/2
    for k = 1..m (inner acceleration, dual averaging):
        θ_k = (k+1)/2;  y_k = (1 − 1/θ_k)x_{k−1} + (1/θ_k)z_{k−1}
        g_k = (1/b) Σ_{i∈I_k} (∇f_i(y_k) − ∇f_i(x̃_{s−1}))/(n q_i) + ṽ     # |I_k| = b, i ~ q
        ḡ_k = (1 − 1/θ_k)ḡ_{k−1} + (1/θ_k)g_k
        z_k = prox_{ηθ_kθ_{k−1}R}(z₀ − ηθ_kθ_{k−1}ḡ_k)
        x_k = (1 − 1/θ_k)x_{k−1} + (1/θ_k)z_k
    (x̃_s, z̃_s) = (x_m, z_m)

Defaults b = ⌊√n⌋, m = ⌊n/b⌋, γ = 3, η = 1/((1 + γ(m+1)/b)·L̄) with L̄ = max_i L_i (uniform
q) or mean_i L_i (q_i ∝ L_i). Restarts reset the outer momentum (θ̃ counter, z̃ = x̃):
``fixed`` every S = ⌈(2/(1 − 1/γ))·√(1 + 1/(λ₂ηm²))⌉ stages, the period at which the
O(1/S²) non-strongly convex bound has halved a λ₂-strongly convex error (our constant; the
paper gives the order); ``adaptive`` when P(x̃_{s−1}) > P(x̃_{s−2}) or
⟨ỹ_{s−1} − x̃_{s−1}, x̃_{s−1} − x̃_{s−2}⟩ > 0 (O'Donoghue & Candès' function and gradient
schemes applied to stages; P comes free with the snapshot pass).

Linear models make two things cheap: ∇f_i(x) = φ'(a_iᵀx)a_i, so the snapshot pass stores
the n scalars φ'(a_iᵀx̃) and an inner step evaluates only b new rows; and F(x̃) comes with
∇F(x̃). One data pass = n component gradients; a stage of m = n/b steps costs two.

Distributed design (rows sharded over ranks, any contiguous split): every rank draws the
same global indices I_k from a generator seeded by (seed, stage), evaluates the rows it
owns, and all-reduces the d-vector Σ_{i∈I_k∩shard}; the snapshot sums are all-reduced the
same way. Every rank then applies identical dense updates to identical inputs, so the
iterates are bitwise equal on all ranks and equal (to rounding of the sums) to the
single-process run with the same seed: the paper's algorithm, run exactly. On the method
seam the optimizer does its own gradient evaluations (one inner iteration per ``step()``)
on the shard it read once through ``ctx.iterate_shard``, for the objective named by the
``erm`` task's parameters (loss, l1, l2); the engine's gradient is not used, hence
``owns_gradient_sync``. ``eta_scale`` multiplies every solver's theoretical step size.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F_

from raytrain_eff.methods.base import Method, MethodContext


# --- losses: value φ(t; y), derivative φ'(t; y) in t, smoothness factor c (L_i = c‖a_i‖²) ----
def _logistic(t, y):
    return F_.softplus(-y * t)


def _logistic_d(t, y):
    return -y * torch.sigmoid(-y * t)


def _hinge(t, y):
    z = y * t  # smoothed hinge: 0 (z ≥ 1), ½(1 − z)² (0 < z < 1), ½ − z (z ≤ 0)
    return torch.where(z >= 1, 0.0, torch.where(z <= 0, 0.5 - z, 0.5 * (1 - z) ** 2))


def _hinge_d(t, y):
    return y * torch.clamp(y * t - 1, -1.0, 0.0)


LOSSES = {
    "logistic": (_logistic, _logistic_d, 0.25),
    "squared": (lambda t, y: 0.5 * (t - y) ** 2, lambda t, y: t - y, 1.0),
    "smoothed_hinge": (_hinge, _hinge_d, 1.0),
}


def prox_elastic_net(v: torch.Tensor, t: float, l1: float, l2: float) -> torch.Tensor:
    """argmin_x ½‖x − v‖² + t(λ₁‖x‖₁ + (λ₂/2)‖x‖²) = soft(v, tλ₁)/(1 + tλ₂)."""
    return F_.softshrink(v, t * l1).div_(1 + t * l2) if l1 > 0 else v / (1 + t * l2)


# --- rows a_i of one rank: dense or CSR, the few products the solvers need --------------------
class DenseRows:
    def __init__(self, A: torch.Tensor):
        self.A = A                                     # (n_local, d)
        self.n, self.d = A.shape
        self.nnz = A.numel()

    def matvec(self, x):
        return self.A @ x

    def rmatvec(self, c):
        return c @ self.A

    def sq_norms(self):
        return (self.A * self.A).sum(1)

    def take(self, rows):
        return DenseRows(self.A.index_select(0, rows))

    def split(self, counts):
        return [DenseRows(part) for part in self.A.split(counts)]


class CSRRows:
    """Compressed sparse rows; torch's CSR kernel for Ax, a column-sorted copy for Aᵀc on big
    blocks (``keep_transpose``) and a scatter over the entries on small ones (batches)."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, d: int,
                 rowid: torch.Tensor | None = None):
        self.crow, self.col, self.val, self.d = crow, col, val, d
        self.n, self.nnz = crow.shape[0] - 1, val.shape[0]
        self.S = torch.sparse_csr_tensor(crow, col, val, (self.n, d), check_invariants=False)
        # row of each stored entry: Aᵀc = Σ_e val_e·c[rowid_e]·e_{col_e}
        self.rowid = (torch.arange(self.n).repeat_interleave(crow.diff())
                      if rowid is None else rowid)
        self.T: torch.Tensor | None = None  # Aᵀ in CSR form, once keep_transpose() ran

    @staticmethod
    def from_torch(S: torch.Tensor) -> CSRRows:
        return CSRRows(S.crow_indices(), S.col_indices(), S.values(), S.shape[1])

    def keep_transpose(self) -> CSRRows:
        """Store Aᵀ in CSR form (2x memory) so full passes use the CSR kernel both ways."""
        order = torch.argsort(self.col, stable=True)
        crow = torch.zeros(self.d + 1, dtype=self.crow.dtype)
        torch.cumsum(torch.bincount(self.col, minlength=self.d), 0, out=crow[1:])
        self.T = torch.sparse_csr_tensor(crow, self.rowid[order], self.val[order],
                                         (self.d, self.n), check_invariants=False)
        return self

    def matvec(self, x):
        return self.S @ x

    def rmatvec(self, c):
        if self.T is not None:
            return self.T @ c
        return torch.zeros(self.d, dtype=c.dtype).index_add_(
            0, self.col, self.val * c.index_select(0, self.rowid))

    def sq_norms(self):
        return torch.zeros(self.n, dtype=self.val.dtype).index_add_(0, self.rowid,
                                                                    self.val * self.val)

    def take(self, rows):
        # index_select, not advanced indexing: an order of magnitude faster on CPU
        starts = self.crow.index_select(0, rows)
        lens = self.crow.index_select(0, rows + 1) - starts
        crow = torch.zeros(rows.shape[0] + 1, dtype=self.crow.dtype)
        torch.cumsum(lens, 0, out=crow[1:])
        rowid = torch.arange(rows.shape[0]).repeat_interleave(lens)
        # position of each kept entry in the source: its row's start + offset within the row
        pos = torch.arange(int(crow[-1])) + (starts - crow[:-1]).index_select(0, rowid)
        return CSRRows(crow, self.col.index_select(0, pos), self.val.index_select(0, pos),
                       self.d, rowid)

    def split(self, counts):
        bounds = torch.tensor([0] + counts).cumsum(0).tolist()
        edges = self.crow[bounds].tolist()
        return [CSRRows(self.crow[a:e + 1] - ea, self.col[ea:ee], self.val[ea:ee], self.d,
                        self.rowid[ea:ee] - a)
                for a, e, ea, ee in zip(bounds[:-1], bounds[1:], edges[:-1], edges[1:],
                                        strict=False)]


def as_rows(X: torch.Tensor):
    """Dense or sparse-CSR features -> float64 rows."""
    if X.layout == torch.sparse_csr:
        return CSRRows(X.crow_indices(), X.col_indices(), X.values().double(), X.shape[1])
    return DenseRows(X.double())


def cat_rows(parts: list):
    """Concatenate row blocks (the batches of one shard pass)."""
    if isinstance(parts[0], DenseRows):
        return DenseRows(torch.cat([p.A for p in parts]))
    offsets = torch.tensor([0] + [p.nnz for p in parts[:-1]]).cumsum(0)
    crow = torch.cat([parts[0].crow[:1]]
                     + [p.crow[1:] + o for p, o in zip(parts, offsets, strict=False)])
    return CSRRows(crow, torch.cat([p.col for p in parts]), torch.cat([p.val for p in parts]),
                   parts[0].d)


# --- the problem: this rank's rows, global sampling, all-reduced sums --------------------------
class ERMProblem:
    """P(x) on rows sharded over ``group`` (None: one process holds all rows)."""

    def __init__(self, rows, y: torch.Tensor, *, loss: str = "logistic", l1: float = 0.0,
                 l2: float = 0.0, group=None, importance: bool = False):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
        if isinstance(rows, CSRRows) and rows.T is None:
            rows.keep_transpose()
        self.rows, self.y, self.l1, self.l2, self.group = rows, y.double(), l1, l2, group
        self.phi, self.dphi, c = LOSSES[loss]
        self.d = rows.d
        sizes = self._gather_int(rows.n)
        self.n, self.offset = sum(sizes), sum(sizes[:self.rank])
        L_local = c * rows.sq_norms()
        L = torch.zeros(self.n, dtype=torch.float64)
        L[self.offset:self.offset + rows.n] = L_local
        L = self.allreduce(L)                                 # every rank knows every L_i
        self.q = L / L.sum() if importance else None          # sampling distribution Q
        self.L_bar = float(L.mean() if importance else L.max())

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group) if self.group is not None else 0

    def _gather_int(self, value: int) -> list[int]:
        if self.group is None:
            return [value]
        out = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(out, torch.tensor([value]), group=self.group)
        return [int(t) for t in out]

    def allreduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.group is not None:
            dist.all_reduce(t, group=self.group)
        return t

    def R(self, x) -> float:
        return float(self.l1 * x.abs().sum() + 0.5 * self.l2 * x.dot(x))

    def prox(self, v, t: float):
        return prox_elastic_net(v, t, self.l1, self.l2)

    def full(self, x):
        """(F(x), ∇F(x), local φ'(a_iᵀx)): one pass over every rank's rows."""
        t = self.rows.matvec(x)
        dphi = self.dphi(t, self.y)
        out = self.allreduce(torch.cat([self.rows.rmatvec(dphi), self.phi(t, self.y).sum()[None]]))
        return float(out[-1]) / self.n, out[:-1].div_(self.n), dphi

    def objective(self, x) -> float:
        return self.full(x)[0] + self.R(x)

    def draw(self, seed: int, stage: int, m: int, b: int):
        """Stage batches I_1..I_m (same on every rank): local (rows, y, idx, weight) per k."""
        gen = torch.Generator().manual_seed((seed * 1_000_003 + stage) % (1 << 62))
        idx = (torch.randint(self.n, (m * b,), generator=gen) if self.q is None else
               torch.multinomial(self.q, m * b, replacement=True, generator=gen))
        w = None if self.q is None else 1.0 / (self.n * self.q.index_select(0, idx))
        mine = (idx >= self.offset) & (idx < self.offset + self.rows.n)
        sel = mine.nonzero().squeeze(1)                       # kept in draw order
        local = idx.index_select(0, sel) - self.offset
        counts = mine.view(m, b).sum(1).tolist()
        parts = self.rows.take(local).split(counts)
        ws = w.index_select(0, sel).split(counts) if w is not None else [None] * m
        ys = self.y.index_select(0, local).split(counts)
        return list(zip(parts, ys, local.split(counts), ws, strict=False))

    def batch_grad(self, batch, x, dphi_snap, b: int):
        """(1/b) Σ_{i∈I} (∇f_i(x) − ∇f_i(x̃))/(n q_i), all ranks' rows of I summed."""
        rows, y, idx, w = batch
        c = (self.dphi(rows.matvec(x), y) - dphi_snap.index_select(0, idx)).div_(b)  # b, not d
        if w is not None:
            c = c * w
        return self.allreduce(rows.rmatvec(c))


# --- variance-reduced solvers as step-wise state machines -------------------------------------
class VRSolver:
    """Snapshot, then m inner steps per stage; ``step()`` is one inner iteration.

    Subclasses set ``state_keys`` and implement ``begin(P_snap)``, ``inner(k, g_diff)`` and
    ``end()``. ``output`` is the latest stage's x̃ and ``objective`` its P, known from the
    snapshot pass that opens the next stage (run as soon as a stage ends).
    """
    state_keys: tuple = ()
    dense_ops = 0  # d-length vector operations per inner step (FLOP accounting)

    def __init__(self, problem: ERMProblem, x0: torch.Tensor, *, b: int, m: int, eta: float,
                 seed: int = 0):
        self.P, self.b, self.m, self.eta, self.seed = problem, b, m, eta, seed
        self.xt = x0.detach().double().clone()   # x̃: the snapshot point and stage output
        self.stage, self.k = 0, 0
        self.evals = 0           # component gradients evaluated (global), for data passes
        self.flops = 0.0         # this rank's multiply-adds x2, counted where computed
        self.objective = math.nan
        self.started = False

    # -- the algorithm: one subclass per paper ---------------------------------------------
    def begin(self, P_snap: float) -> None:
        """A new stage, from the snapshot's objective P(x̃)."""
        raise NotImplementedError

    def query_point(self, k: int) -> torch.Tensor:
        """Where the k-th inner step evaluates the variance-reduced gradient."""
        raise NotImplementedError

    def inner(self, k: int, g_diff: torch.Tensor) -> None:
        """The k-th inner step, given ∇f_B(query point) − ∇f_B(x̃)."""
        raise NotImplementedError

    def end(self) -> None:
        """Close the stage: set the new x̃."""
        raise NotImplementedError

    @property
    def passes(self) -> float:
        return self.evals / self.P.n

    @property
    def output(self) -> torch.Tensor:
        return self.xt

    def step(self) -> None:
        if not self.started:
            self._snapshot()
            self.started = True
        self.k += 1
        batch = self._batches[self.k - 1]
        x = self.query_point(self.k)
        g_diff = self.P.batch_grad(batch, x, self._dphi, self.b)
        self.evals += self.b
        self.flops += 4 * batch[0].nnz + self.dense_ops * self.P.d
        self.inner(self.k, g_diff)
        if self.k == self.m:
            self.end()
            self.stage, self.k = self.stage + 1, 0
            self._snapshot()

    def _snapshot(self) -> None:
        F, self.v, self._dphi = self.P.full(self.xt)
        self.evals += self.P.n
        self.flops += 4 * self.P.rows.nnz
        self.objective = F + self.P.R(self.xt)
        self._batches = self.P.draw(self.seed, self.stage, self.m, self.b)
        self.begin(self.objective)

    # -- checkpointing: algorithm tensors + counters; snapshot and batches are recomputed -----
    def state_dict(self) -> dict:
        keys = ("xt", "stage", "k", "evals", "flops", "objective", "started") + self.state_keys
        return {key: (v.clone() if torch.is_tensor(v) else v)
                for key in keys for v in [getattr(self, key)]}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.clone() if torch.is_tensor(value) else value)
        if self.started:  # deterministic: same x̃, same seed -> same ṽ, φ'(x̃), batches
            F, self.v, self._dphi = self.P.full(self.xt)
            self._batches = self.P.draw(self.seed, self.stage, self.m, self.b)


class DASVRDA(VRSolver):
    state_keys = ("xt_prev", "zt", "s", "P_prev", "restarts", "x", "z", "z0", "gbar")
    dense_ops = 12  # lerp y, axpy g, lerp ḡ, axpy, shrink, scale, lerp x (2 flops each)

    def __init__(self, problem, x0, *, b, m, eta, gamma=3.0, restart="adaptive", seed=0):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed)
        self.gamma, self.restart = gamma, restart
        self.xt_prev, self.zt = self.xt.clone(), self.xt.clone()  # x̃₋₁ = z̃₀ = x̃₀
        self.s, self.P_prev, self.restarts = 0, math.inf, 0        # stages since restart
        self.x, self.z, self.z0 = self.xt.clone(), self.xt.clone(), self.xt.clone()
        self.gbar = torch.zeros_like(self.xt)
        if restart == "fixed" and problem.l2 <= 0:
            raise ValueError("restart='fixed' needs l2 > 0 (strong convexity sets the period)")
        self.S = (math.ceil(2 / (1 - 1 / gamma) * math.sqrt(1 + 1 / (problem.l2 * eta * m * m)))
                  if problem.l2 > 0 else math.inf)

    def theta_tilde(self, s: int) -> float:
        return (1 - 1 / self.gamma) * (s + 2) / 2

    def begin(self, P_snap: float) -> None:
        # O'Donoghue & Candès' function and gradient schemes, stage-wise: the objective rose,
        # or the last step x̃_{s−1} − x̃_{s−2} points along ỹ_{s−1} − x̃_{s−1}, i.e. uphill
        uphill = float((self.z0 - self.xt).dot(self.xt - self.xt_prev)) > 0
        if ((self.restart == "adaptive" and (P_snap > self.P_prev or uphill))
                or (self.restart == "fixed" and self.s >= self.S)):
            self.xt_prev, self.zt, self.s = self.xt.clone(), self.xt.clone(), 0
            self.restarts += 1
        self.P_prev = P_snap
        s = self.s + 1
        th, th_prev = self.theta_tilde(s), self.theta_tilde(s - 1)
        y = (self.xt + (th_prev - 1) / th * (self.xt - self.xt_prev)
             + th_prev / th * (self.zt - self.xt))
        self.x, self.z, self.z0 = y, y.clone(), y.clone()
        self.gbar = torch.zeros_like(y)

    def query_point(self, k: int):
        return torch.lerp(self.x, self.z, 1 / ((k + 1) / 2))           # y_k

    def inner(self, k: int, g_diff) -> None:
        theta, theta_prev = (k + 1) / 2, k / 2
        g = g_diff.add_(self.v)                                        # g_k
        self.gbar.lerp_(g, 1 / theta)                                  # ḡ_k
        t = self.eta * theta * theta_prev
        self.z = self.P.prox(torch.add(self.z0, self.gbar, alpha=-t), t)
        self.x.lerp_(self.z, 1 / theta)

    def end(self) -> None:
        self.xt_prev, self.xt, self.zt = self.xt, self.x.clone(), self.z.clone()
        self.s += 1


class ProxSVRG(VRSolver):
    """x_k = prox_{ηR}(x_{k−1} − η g_k); x̃ ← x_m (the last iterate, as used in practice)."""
    state_keys = ("x",)
    dense_ops = 4

    def __init__(self, problem, x0, *, b, m, eta, seed=0):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed)
        self.x = self.xt.clone()

    def begin(self, P_snap: float) -> None:
        self.x = self.xt.clone()

    def query_point(self, k: int):
        return self.x

    def inner(self, k: int, g_diff) -> None:
        self.x = self.P.prox(self.x - self.eta * g_diff.add_(self.v), self.eta)

    def end(self) -> None:
        self.xt = self.x.clone()


class Katyusha(VRSolver):
    """Allen-Zhu Alg. 1 (option I, σ-strongly convex), mini-batch parameters after its §5::

        x_{k+1} = τ₁z_k + τ₂x̃ + (1 − τ₁ − τ₂)y_k
        z_{k+1} = prox_{αR}(z_k − α g),  y_{k+1} = prox_{R/(3L)}(x_{k+1} − g/(3L))
        x̃ ← Σ_j (1 + ασ)^j y_{j+1} / Σ_j (1 + ασ)^j
    τ₂ = 1/(2b), τ₁ = min(√(8bmσ/(3L)), 1/2), α = 1/(3τ₁L), σ = λ₂, L = L̄/eta_scale.
    """
    state_keys = ("y", "z", "xk", "ysum", "wsum")
    dense_ops = 14

    def __init__(self, problem, x0, *, b, m, eta, seed=0):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed)
        if problem.l2 <= 0:
            raise ValueError("katyusha (the σ-strongly convex variant) needs l2 > 0")
        L, sigma = 1 / eta, problem.l2                        # eta = eta_scale / L̄
        self.tau2 = 1 / (2 * b)
        self.tau1 = min(math.sqrt(8 * b * m * sigma / (3 * L)), 0.5)
        self.alpha, self.L, self.sigma = 1 / (3 * self.tau1 * L), L, sigma
        self.y, self.z, self.xk = self.xt.clone(), self.xt.clone(), self.xt.clone()
        self.ysum, self.wsum = torch.zeros_like(self.xt), 0.0

    def begin(self, P_snap: float) -> None:
        self.ysum, self.wsum = torch.zeros_like(self.xt), 0.0

    def query_point(self, k: int):
        self.xk = (self.tau1 * self.z + self.tau2 * self.xt
                   + (1 - self.tau1 - self.tau2) * self.y)
        return self.xk

    def inner(self, k: int, g_diff) -> None:
        g = g_diff.add_(self.v)
        self.z = self.P.prox(self.z - self.alpha * g, self.alpha)
        self.y = self.P.prox(self.xk - g / (3 * self.L), 1 / (3 * self.L))
        weight = (1 + self.alpha * self.sigma) ** (k - 1)
        self.ysum.add_(self.y, alpha=weight)
        self.wsum += weight

    def end(self) -> None:
        self.xt = self.ysum / self.wsum


# --- pure-function API: resolve defaults, run to a budget or a target --------------------------
SOLVERS = {"dasvrda": DASVRDA, "prox-svrg": ProxSVRG, "katyusha": Katyusha}


def make_solver(name: str, problem: ERMProblem, x0=None, *, b: int = 0, m: int = 0,
                eta_scale: float = 1.0, gamma: float = 3.0, restart: str = "adaptive",
                seed: int = 0) -> VRSolver:
    """A solver with the papers' defaults for b = 0 (⌊√n⌋) and m = 0, η from L̄."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {', '.join(SOLVERS)}")
    n = problem.n
    b = b or max(1, math.isqrt(n))
    m = m or (math.ceil(n / b) if name == "katyusha" else max(1, n // b))
    x0 = torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0
    if name == "dasvrda":
        eta = eta_scale / ((1 + gamma * (m + 1) / b) * problem.L_bar)
        return DASVRDA(problem, x0, b=b, m=m, eta=eta, gamma=gamma, restart=restart, seed=seed)
    return SOLVERS[name](problem, x0, b=b, m=m, eta=eta_scale / problem.L_bar, seed=seed)


@dataclass
class Trace:
    """One row per snapshot: effective data passes, wall seconds, P(x̃)."""
    passes: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    objective: list = field(default_factory=list)


def solve(solver: VRSolver, *, max_passes: float, target: float | None = None,
          max_seconds: float = math.inf) -> Trace:
    """Run until P(x̃) ≤ target (checked at every snapshot) or a budget is spent."""
    trace, t0, seen = Trace(), time.perf_counter(), -1
    while True:
        if solver.started and solver.stage != seen:
            seen = solver.stage
            trace.passes.append(solver.passes)
            trace.seconds.append(time.perf_counter() - t0)
            trace.objective.append(solver.objective)
            if ((target is not None and solver.objective <= target) or
                    solver.passes >= max_passes or trace.seconds[-1] >= max_seconds):
                return trace
        solver.step()


def dasvrda(problem: ERMProblem, x0=None, *, max_passes: float = 50.0,
            target: float | None = None, **options) -> tuple[torch.Tensor, Trace]:
    """Minimise P with DASVRDA; returns (x̃, trace). ``options``: see ``make_solver``."""
    solver = make_solver("dasvrda", problem, x0, **options)
    trace = solve(solver, max_passes=max_passes, target=target)
    return solver.output, trace


# --- reference optimum and its certificate ------------------------------------------------------
def certify(problem: ERMProblem, x: torch.Tensor, L: float | None = None):
    """(x⁺, P(x⁺), bound): P(x⁺) − P* ≤ bound, from a subgradient of P at x⁺.

    x⁺ = prox_{R/L}(x − ∇F(x)/L) gives s = L(x − x⁺) + ∇F(x⁺) − ∇F(x) ∈ ∂P(x⁺), and
    λ₂-strong convexity of P gives P(x⁺) − P* ≤ ‖s‖²/(2λ₂); valid for any L > 0. ‖s‖ is
    padded by a float64 rounding allowance (ε√n times the terms' scale), so a computed
    fixed point x⁺ = x never certifies a gap of exactly 0.
    """
    L = L or problem.L_bar
    _, grad, _ = problem.full(x)
    x_plus = problem.prox(x - grad / L, 1 / L)
    F_plus, grad_plus, _ = problem.full(x_plus)
    s = L * (x - x_plus) + grad_plus - grad
    scale = L * float(x.norm()) + float(grad.norm()) + problem.l1 * math.sqrt(problem.d)
    s_norm = float(s.norm()) + torch.finfo(torch.float64).eps * math.sqrt(problem.n) * scale
    bound = s_norm ** 2 / (2 * problem.l2) if problem.l2 > 0 else math.inf
    return x_plus, F_plus + problem.R(x_plus), bound


def fista(problem: ERMProblem, x0=None, *, iters: int = 1000, L: float | None = None,
          tol: float = 0.0, check_every: int = 100) -> torch.Tensor:
    """Beck & Teboulle's FISTA with backtracking and function-value restarts (reference)."""
    x = torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0.clone()
    L = L or problem.L_bar / 8
    y, t, P_x = x.clone(), 1.0, problem.objective(x)
    for it in range(1, iters + 1):
        F_y, grad, _ = problem.full(y)
        while True:
            x_new = problem.prox(y - grad / L, 1 / L)
            diff = x_new - y
            F_new = problem.full(x_new)[0]
            if F_new <= F_y + grad.dot(diff) + 0.5 * L * diff.dot(diff) + 1e-15 * abs(F_y):
                break
            L *= 2
        P_new = F_new + problem.R(x_new)
        if P_new > P_x and t > 1:            # restart: drop the momentum (a plain step from
            y, t = x.clone(), 1.0            # x, taken next, is a descent step)
            continue
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t, P_x = x_new, t_new, P_new
        if tol and it % check_every == 0 and certify(problem, x, L)[2] <= tol * abs(P_x):
            break
    return x


# --- the method seam: one inner iteration per engine step --------------------------------------
def problem_from_shard(ctx: MethodContext, objective, importance: bool) -> ERMProblem:
    """Read this rank's whole shard once (ctx.iterate_shard) into an ERMProblem."""
    for name in ("loss", "l1", "l2"):
        if not hasattr(objective, name):
            raise ValueError(f"this method solves regularised ERM: the task's parameters need "
                             f"'{name}' (use task 'erm'); got {type(objective).__name__}")
    if ctx.iterate_shard is None:
        raise ValueError("this method needs ctx.iterate_shard (full passes over the shard)")
    batches = list(ctx.iterate_shard(4096))
    rows = cat_rows([as_rows(X) for X, _ in batches])
    y = torch.cat([t for _, t in batches])
    return ERMProblem(rows, y, loss=objective.loss, l1=objective.l1, l2=objective.l2,
                      group=ctx.group if ctx.distributed else None, importance=importance)


class SolverOptimizer(torch.optim.Optimizer):
    """The engine's optimizer slot: ``step()`` runs one inner iteration and writes x̃ to the
    model (the stage output, whose objective is known). The LR in param_groups is unused."""

    def __init__(self, param: torch.nn.Parameter, solver: VRSolver):
        super().__init__([param], {"lr": solver.eta})
        self.solver, self.param = solver, param

    @torch.no_grad()
    def step(self, closure=None):
        self.solver.step()
        self.param.copy_(self.solver.output.view_as(self.param))

    def state_dict(self) -> dict:
        return {"solver": self.solver.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        self.solver.load_state_dict(state["solver"])
        self.param.copy_(self.solver.output.view_as(self.param))


class _VRMethod(Method):
    solver_name = ""
    owns_gradient_sync = True   # gradients are evaluated and all-reduced by the solver

    def make_optimizer(self, model, ctx: MethodContext):
        params = [p for p in model.parameters() if p.requires_grad]
        if len(params) != 1:
            raise ValueError(f"{self.solver_name} needs a linear model with one weight vector; "
                             f"got {len(params)} parameters")
        c = self.config
        problem = problem_from_shard(ctx, ctx.task.params, c.importance)
        extra = {"gamma": c.gamma, "restart": c.restart} if self.solver_name == "dasvrda" else {}
        self.solver = make_solver(self.solver_name, problem, params[0].detach().flatten(),
                                  b=c.b, m=c.m, eta_scale=c.eta_scale,
                                  seed=getattr(ctx.task, "seed", 0), **extra)
        self._flops_seen = 0.0
        return SolverOptimizer(params[0], self.solver)

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        s = self.solver
        return {"objective": s.objective, "stage": float(s.stage), "data_passes": s.passes}

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        done, self._flops_seen = self.solver.flops - self._flops_seen, self.solver.flops
        return done


class DASVRDAMethod(_VRMethod):
    solver_name = "dasvrda"


class ProxSVRGMethod(_VRMethod):
    solver_name = "prox-svrg"


class KatyushaMethod(_VRMethod):
    solver_name = "katyusha"
