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

Defaults b = ⌊√n⌋, m = ⌊n/b⌋, γ = 3, η = 1/((1 + γ(m+1)/b)·L) where the paper takes
L = L̄ = max_i L_i (uniform q) or mean_i L_i (q_i ∝ L_i) (``smoothness="max"``); by default
(``"batch"``) L = L_b = (1 − 1/b)·L_F + L̄/b, the smoothness a mini-batch of b rows drawn with
replacement sees (L_F = c·λ_max(AᵀA)/n by power iteration): L̄ at b = 1, falling to L_F as b
grows, several times below L̄ on real data. Prox-SVRG takes η = 1/L and Katyusha L alike.
Restarts reset the outer momentum (θ̃ counter, z̃ = x̃):
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

Two backends run the same algorithm (``backend``): ``compiled`` (default) fuses each stage's
inner loop and the snapshot pass into numba kernels (``vr.kernels``) and follows the torch
iterates to float64 rounding (tests check 1e-12), several times faster; ``torch`` is the
readable reference above. The sampled indices come from the same torch generator in both.
Data-parallel problems (rows on several ranks) run the torch path: every inner step
all-reduces a d-vector, which the fused loop cannot do.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from raytrain_eff.blocks.rows import CSRRows
from raytrain_eff.methods.vr import kernels as vr_kernels
from raytrain_eff.methods.vr.problem import ERMProblem

BACKENDS = ("compiled", "torch")  # compiled: numba stage loops; torch: the readable reference
SMOOTHNESS = ("batch", "max")  # batch: L_b the mini-batch sees; max: the paper's L̄


class VRSolver:
    """Snapshot, then m inner steps per stage; ``step()`` is one inner iteration.

    Subclasses set ``state_keys`` and implement ``begin(P_snap)``, ``inner(k, g_diff)`` and
    ``end()`` (the torch reference) and ``_kernel`` (the same inner steps in compiled code).
    ``output`` is the latest stage's x̃ and ``objective`` its P, known from the snapshot pass
    that opens the next stage (run as soon as a stage ends).
    """

    state_keys: tuple = ()
    dense_ops = 0  # d-length vector operations per inner step (FLOP accounting)

    def __init__(
        self,
        problem: ERMProblem,
        x0: torch.Tensor,
        *,
        b: int,
        m: int,
        eta: float,
        seed: int = 0,
        backend: str = "compiled",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
        self.P, self.b, self.m, self.eta, self.seed = problem, b, m, eta, seed
        # the fused loop holds all rows in one process: ranks all-reduce every inner step
        self.compiled = backend == "compiled" and problem.group is None
        self.backend = "compiled" if self.compiled else "torch"
        if self.compiled:
            self._rows, self._y = problem.kernel_rows(), problem.y.numpy()
            self._code = vr_kernels.LOSS_CODES[problem.loss]
            self._row_nnz = (
                problem.rows.crow.diff().numpy() if isinstance(problem.rows, CSRRows) else None
            )
            self._g = np.empty(problem.d)  # work space of the kernels
        self.xt = x0.detach().double().clone()  # x̃: the snapshot point and stage output
        self.stage, self.k = 0, 0
        self.evals = 0  # component gradients evaluated (global), for data passes
        self.flops = 0.0  # this rank's multiply-adds x2, counted where computed
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
        """One inner iteration (the method seam's unit)."""
        self._advance(self.k + 1)

    def run_stage(self) -> None:
        """The rest of the current stage: one kernel call on the compiled backend."""
        self._advance(self.m)

    def _advance(self, k_end: int) -> None:
        if not self.started:
            self._snapshot()
            self.started = True
        if self.compiled:
            self._kernel(self.k, k_end)
            rows = self._idx[self.k * self.b : k_end * self.b]
            nnz = (
                int(self._row_nnz[rows].sum())
                if self._row_nnz is not None
                else len(rows) * self.P.d
            )
            self.evals += (k_end - self.k) * self.b
            self.flops += 4 * nnz + (k_end - self.k) * self.dense_ops * self.P.d
            self.k = k_end
        while self.k < k_end:
            self.k += 1
            batch = self._batches[self.k - 1]
            g_diff = self.P.batch_grad(batch, self.query_point(self.k), self._dphi, self.b)
            self.evals += self.b
            self.flops += 4 * batch[0].nnz + self.dense_ops * self.P.d
            self.inner(self.k, g_diff)
        if self.k == self.m:
            self.end()
            self.stage, self.k = self.stage + 1, 0
            self._snapshot()

    def _kernel(self, k0: int, k1: int) -> None:
        """Inner steps k0+1..k1 in compiled code (``vr_kernels``), state updated in place."""
        raise NotImplementedError

    def _kernel_data(self) -> list:
        """The arguments every stage kernel starts with."""
        return [
            self._rows,
            self._y,
            self._code,
            self._dphi.numpy(),
            self.v.numpy(),
            self._idx,
            self._w,
            self.b,
        ]

    def _snapshot(self) -> None:
        self._prepare()
        self.evals += self.P.n
        self.flops += 4 * self.P.rows.nnz
        self.begin(self.objective)

    def _prepare(self) -> None:
        """x̃'s pass (P(x̃), ṽ, φ'(a_iᵀx̃)) and the stage's batches; deterministic in x̃,
        seed and stage, so a restored checkpoint recomputes it."""
        if not self.compiled:
            F, self.v, self._dphi = self.P.full(self.xt)
            self._batches = self.P.draw(self.seed, self.stage, self.m, self.b)
        else:
            dphi, grad = np.empty(self.P.n), np.empty(self.P.d)
            F = (
                vr_kernels.full_pass(self._rows, self._y, self._code, self.xt.numpy(), dphi, grad)
                / self.P.n
            )
            self.v, self._dphi = torch.from_numpy(grad / self.P.n), torch.from_numpy(dphi)
            idx, w = self.P.draw_indices(self.seed, self.stage, self.m, self.b)
            self._idx = idx.numpy()
            self._w = vr_kernels.empty_weights() if w is None else w.numpy()
            self.objective = F + vr_kernels.penalty(
                self.xt.numpy(), self.P.l1, self.P.l2, self.P.d_pen
            )
            return
        self.objective = F + self.P.R(self.xt)

    # -- checkpointing: algorithm tensors + counters; snapshot and batches are recomputed -----
    def state_dict(self) -> dict:
        keys = ("xt", "stage", "k", "evals", "flops", "objective", "started") + self.state_keys
        return {
            key: (v.clone() if torch.is_tensor(v) else v)
            for key in keys
            for v in [getattr(self, key)]
        }

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.clone() if torch.is_tensor(value) else value)
        if self.started:  # deterministic: same x̃, same seed -> same ṽ, φ'(x̃), batches
            self._prepare()


class DASVRDASolver(VRSolver):
    state_keys = ("xt_prev", "zt", "s", "P_prev", "restarts", "x", "z", "z0", "gbar")
    dense_ops = 12  # lerp y, axpy g, lerp ḡ, axpy, shrink, scale, lerp x (2 flops each)

    def __init__(
        self, problem, x0, *, b, m, eta, gamma=3.0, restart="adaptive", seed=0, backend="compiled"
    ):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed, backend=backend)
        self.gamma, self.restart = gamma, restart
        self.xt_prev, self.zt = self.xt.clone(), self.xt.clone()  # x̃₋₁ = z̃₀ = x̃₀
        self.s, self.P_prev, self.restarts = 0, math.inf, 0  # stages since restart
        self.x, self.z, self.z0 = self.xt.clone(), self.xt.clone(), self.xt.clone()
        self.gbar = torch.zeros_like(self.xt)
        if restart == "fixed" and problem.l2 <= 0:
            raise ValueError("restart='fixed' needs l2 > 0 (strong convexity sets the period)")
        self.S = (
            math.ceil(2 / (1 - 1 / gamma) * math.sqrt(1 + 1 / (problem.l2 * eta * m * m)))
            if problem.l2 > 0
            else math.inf
        )

    def theta_tilde(self, s: int) -> float:
        return (1 - 1 / self.gamma) * (s + 2) / 2

    def begin(self, P_snap: float) -> None:
        # O'Donoghue & Candès' function and gradient schemes, stage-wise: the objective rose,
        # or the last step x̃_{s−1} − x̃_{s−2} points along ỹ_{s−1} − x̃_{s−1}, i.e. uphill
        uphill = float((self.z0 - self.xt).dot(self.xt - self.xt_prev)) > 0
        if (self.restart == "adaptive" and (P_snap > self.P_prev or uphill)) or (
            self.restart == "fixed" and self.s >= self.S
        ):
            self.xt_prev, self.zt, self.s = self.xt.clone(), self.xt.clone(), 0
            self.restarts += 1
        self.P_prev = P_snap
        s = self.s + 1
        th, th_prev = self.theta_tilde(s), self.theta_tilde(s - 1)
        y = (
            self.xt
            + (th_prev - 1) / th * (self.xt - self.xt_prev)
            + th_prev / th * (self.zt - self.xt)
        )
        self.x, self.z, self.z0 = y, y.clone(), y.clone()
        self.gbar = torch.zeros_like(y)

    def query_point(self, k: int):
        return torch.lerp(self.x, self.z, 1 / ((k + 1) / 2))  # y_k

    def inner(self, k: int, g_diff) -> None:
        theta, theta_prev = (k + 1) / 2, k / 2
        g = g_diff.add_(self.v)  # g_k
        self.gbar.lerp_(g, 1 / theta)  # ḡ_k
        t = self.eta * theta * theta_prev
        self.z = self.P.prox(torch.add(self.z0, self.gbar, alpha=-t), t)
        self.x.lerp_(self.z, 1 / theta)

    def _kernel(self, k0: int, k1: int) -> None:
        vr_kernels.dasvrda_steps(  # type: ignore[call-arg]  # numba's stub: no *args
            *self._kernel_data(),
            k0,
            k1,
            self.eta,
            self.P.l1,
            self.P.l2,
            self.P.d_pen,
            self.x.numpy(),
            self.z.numpy(),
            self.z0.numpy(),
            self.gbar.numpy(),
            np.empty(self.P.d),
            self._g,
        )

    def end(self) -> None:
        self.xt_prev, self.xt, self.zt = self.xt, self.x.clone(), self.z.clone()
        self.s += 1


class ProxSVRGSolver(VRSolver):
    """x_k = prox_{ηR}(x_{k−1} − η g_k); x̃ ← x_m (the last iterate, as used in practice)."""

    state_keys = ("x",)
    dense_ops = 4

    def __init__(self, problem, x0, *, b, m, eta, seed=0, backend="compiled"):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed, backend=backend)
        self.x = self.xt.clone()

    def begin(self, P_snap: float) -> None:
        self.x = self.xt.clone()

    def query_point(self, k: int):
        return self.x

    def inner(self, k: int, g_diff) -> None:
        self.x = self.P.prox(self.x - self.eta * g_diff.add_(self.v), self.eta)

    def _kernel(self, k0: int, k1: int) -> None:
        vr_kernels.prox_svrg_steps(  # type: ignore[call-arg]  # numba's stub: no *args
            *self._kernel_data(),
            k0,
            k1,
            self.eta,
            self.P.l1,
            self.P.l2,
            self.P.d_pen,
            self.x.numpy(),
            self._g,
        )

    def end(self) -> None:
        self.xt = self.x.clone()


class KatyushaSolver(VRSolver):
    """Allen-Zhu Alg. 1 (option I, σ-strongly convex), mini-batch parameters after its §5::

        x_{k+1} = τ₁z_k + τ₂x̃ + (1 − τ₁ − τ₂)y_k
        z_{k+1} = prox_{αR}(z_k − α g),  y_{k+1} = prox_{R/(3L)}(x_{k+1} − g/(3L))
        x̃ ← Σ_j (1 + ασ)^j y_{j+1} / Σ_j (1 + ασ)^j
    τ₂ = 1/(2b), τ₁ = min(√(8bmσ/(3L)), 1/2), α = 1/(3τ₁L), σ = λ₂, L = L_b/eta_scale
    (the paper: L̄, ``smoothness="max"``).
    """

    state_keys = ("y", "z", "xk", "ysum", "wsum")
    dense_ops = 14

    def __init__(self, problem, x0, *, b, m, eta, seed=0, backend="compiled"):
        super().__init__(problem, x0, b=b, m=m, eta=eta, seed=seed, backend=backend)
        if problem.l2 <= 0:
            raise ValueError("katyusha (the σ-strongly convex variant) needs l2 > 0")
        L, sigma = 1 / eta, problem.l2  # eta = eta_scale / L
        self.tau2 = 1 / (2 * b)
        self.tau1 = min(math.sqrt(8 * b * m * sigma / (3 * L)), 0.5)
        self.alpha, self.L, self.sigma = 1 / (3 * self.tau1 * L), L, sigma
        self.y, self.z, self.xk = self.xt.clone(), self.xt.clone(), self.xt.clone()
        self.ysum, self.wsum = torch.zeros_like(self.xt), 0.0

    def begin(self, P_snap: float) -> None:
        self.ysum, self.wsum = torch.zeros_like(self.xt), 0.0

    def query_point(self, k: int):
        self.xk = self.tau1 * self.z + self.tau2 * self.xt + (1 - self.tau1 - self.tau2) * self.y
        return self.xk

    def inner(self, k: int, g_diff) -> None:
        g = g_diff.add_(self.v)
        self.z = self.P.prox(self.z - self.alpha * g, self.alpha)
        self.y = self.P.prox(self.xk - g / (3 * self.L), 1 / (3 * self.L))
        weight = (1 + self.alpha * self.sigma) ** (k - 1)
        self.ysum.add_(self.y, alpha=weight)
        self.wsum += weight

    def _kernel(self, k0: int, k1: int) -> None:
        self.wsum = vr_kernels.katyusha_steps(  # type: ignore[call-arg]  # numba's stub
            *self._kernel_data(),
            k0,
            k1,
            self.P.l1,
            self.P.l2,
            self.P.d_pen,
            self.tau1,
            self.tau2,
            self.alpha,
            self.L,
            self.sigma,
            self.xt.numpy(),
            self.y.numpy(),
            self.z.numpy(),
            self.xk.numpy(),
            self.ysum.numpy(),
            float(self.wsum),
            self._g,
        )

    def end(self) -> None:
        self.xt = self.ysum / self.wsum


# --- pure-function API: resolve defaults, run to a budget or a target --------------------------
SOLVERS = {"dasvrda": DASVRDASolver, "prox-svrg": ProxSVRGSolver, "katyusha": KatyushaSolver}


def make_solver(
    name: str,
    problem: ERMProblem,
    x0=None,
    *,
    b: int = 0,
    m: int = 0,
    eta_scale: float = 1.0,
    gamma: float = 3.0,
    restart: str = "adaptive",
    seed: int = 0,
    backend: str = "compiled",
    smoothness: str = "batch",
) -> VRSolver:
    """A solver with the papers' defaults for b = 0 (⌊√n⌋) and m = 0.

    The papers set the step from L̄ = max_i L_i (``smoothness="max"``). By default
    (``"batch"``) L̄ is replaced by L_b = (1 − 1/b)·L_F + L̄/b (``ERMProblem.L_batch``), the
    smoothness a mini-batch of b rows actually sees: the same formula, with the constant
    the papers' bound uses for one row (b = 1) taken for the batch size run. On real data
    L_b is several times below L̄, so the steps are that much longer. ``eta_scale``
    multiplies the step either way (Katyusha: L is divided by it).
    """
    if name not in SOLVERS:
        raise ValueError(f"unknown solver '{name}'; choose one of {', '.join(SOLVERS)}")
    if smoothness not in SMOOTHNESS:
        raise ValueError(
            f"unknown smoothness '{smoothness}'; choose one of {', '.join(SMOOTHNESS)}"
        )
    n = problem.n
    b = b or max(1, math.isqrt(n))
    m = m or (math.ceil(n / b) if name == "katyusha" else max(1, n // b))
    x0 = torch.zeros(problem.d, dtype=torch.float64) if x0 is None else x0
    L = problem.L_batch(b) if smoothness == "batch" else problem.L_bar
    if name == "dasvrda":
        eta = eta_scale / ((1 + gamma * (m + 1) / b) * L)
        return DASVRDASolver(
            problem, x0, b=b, m=m, eta=eta, gamma=gamma, restart=restart, seed=seed, backend=backend
        )
    return SOLVERS[name](problem, x0, b=b, m=m, eta=eta_scale / L, seed=seed, backend=backend)


@dataclass
class Trace:
    """One row per snapshot: effective data passes, wall seconds, P(x̃)."""

    passes: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    objective: list = field(default_factory=list)


def solve(
    solver: VRSolver,
    *,
    max_passes: float,
    target: float | None = None,
    max_seconds: float = math.inf,
) -> Trace:
    """Run until P(x̃) ≤ target (checked at every snapshot) or a budget is spent."""
    trace, t0, seen = Trace(), time.perf_counter(), -1
    while True:
        if solver.started and solver.stage != seen:
            seen = solver.stage
            trace.passes.append(solver.passes)
            trace.seconds.append(time.perf_counter() - t0)
            trace.objective.append(solver.objective)
            if (
                (target is not None and solver.objective <= target)
                or solver.passes >= max_passes
                or trace.seconds[-1] >= max_seconds
            ):
                return trace
        solver.run_stage()


def dasvrda(
    problem: ERMProblem,
    x0=None,
    *,
    max_passes: float = 50.0,
    target: float | None = None,
    **options,
) -> tuple[torch.Tensor, Trace]:
    """Minimise P with DASVRDA; returns (x̃, trace). ``options``: see ``make_solver``."""
    solver = make_solver("dasvrda", problem, x0, **options)
    trace = solve(solver, max_passes=max_passes, target=target)
    return solver.output, trace
