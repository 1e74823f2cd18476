"""FOSI: a first-order base optimizer plus a Newton step in the top Hessian eigenspace.

Sivan, Gabel, Schuster, "FOSI: Hybrid First and Second Order Optimization", ICLR 2024,
arXiv 2302.08484 (reference code hsivan/fosi, ``fosi/jax_optim/fosi_optimizer.py``,
``scale_by_fosi``). With V the (k+ℓ)×n eigenvector rows from Lanczos, ρ = 1/|λ| and
t the updates taken so far (the reference's ``count``)::

    if t + 1 >= W and (t + 1 − W) % T == 0:     # before update t + 1; W = T if unset
        λ, V = lanczos(H(θ_t), v_0)              # v_0 fixed across refreshes (reference)
        c = clip(ρ_k / ρ_max, 1, learning_rate_clip)    # = |λ_max / λ_k|
    a   = V g;        g1 = Vᵀ a;          g2 = g − g1
    m_t = φ(g1, m_{t−1})                   # Adam: β1 m + (1−β1) g1; heavy-ball: μ m + g1
    d_N = Vᵀ (ρ ⊙ (V m_t))                 # Newton direction inside span(V)
    u   = base.update(g2);  u⊥ = u − Vᵀ(V u)
    Δθ  = c · u⊥ − α · d_N
    θ  ← θ (1 − lr·wd) + Δθ                # decoupled weight decay, outside the split

Before the first refresh V is empty and the step is the base optimizer's. Reference values:
``learning_rate_clip`` 1.0 for Adam (``fosi_adam`` passes it), 3.0 for momentum/SGD;
all k (+ℓ) Ritz pairs kept; one start vector. These are our defaults
(``raytrain_eff.hparams.fosi``); where we still differ, on purpose:

* ρ uses |λ| floored at ``eig_floor`` (reference: unfloored), so a λ near 0 cannot explode ρ;
* weight decay is decoupled, outside the split (the reference has none, see its TODO);
* β1 of Adam and the Newton momentum are one value, ``momentum`` (reference: two, both 0.9);
* each refresh takes a fresh batch from ``next_batch`` (reference: static or caller's batch).

The optimizer works on flat vectors. Every hook that touches more than this process's data
(gradient, HVP, sums over coordinates, parameter write-back, checkpoints) is a method, so
``dho2.DHO2Optimizer`` reuses the maths unchanged and only redistributes it.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import vector_to_parameters

from raytrain_eff.blocks import flat_shards
from raytrain_eff.hparams.fosi import FOSIConfig
from raytrain_eff.methods.base import Method, MethodContext, MethodOptimizer
from raytrain_eff.methods.lanczos import (
    HessianOperator,
    Hvp,
    RitzPairs,
    lanczos,
    start_vector_pieces,
)
from raytrain_eff.monitor import keys

BASE_STATE = {"adamw": ("exp_avg", "exp_avg_sq"), "heavy_ball": ("momentum_buffer",)}


def flatten(params) -> torch.Tensor:
    """The parameters as one detached flat vector; unlike ``parameters_to_vector`` it takes
    non-contiguous ones too (a transposed orthogonal init, as tasks/lowrank.py's)."""
    return torch.cat([p.detach().reshape(-1) for p in params])


def base_update(
    kind: str,
    g: torch.Tensor,
    state: dict,
    lr: float,
    momentum: float,
    beta2: float,
    eps: float,
    t: int,
) -> torch.Tensor:
    """The base optimizer's signed update u (θ ← θ + u); elementwise, so slices are exact."""
    if kind == "heavy_ball":
        buf = state["momentum_buffer"].mul_(momentum).add_(g)
        return -lr * buf
    m = state["exp_avg"].mul_(momentum).add_(g, alpha=1 - momentum)
    v = state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
    m_hat = m / (1 - momentum**t)
    v_hat = v / (1 - beta2**t)
    return -lr * m_hat / (v_hat.sqrt() + eps)


def newton_momentum(kind: str, g1: torch.Tensor, m: torch.Tensor, momentum: float) -> torch.Tensor:
    """φ(g1, m): heavy-ball accumulates, Adam averages (as the reference code does)."""
    if kind == "heavy_ball":
        return m.mul_(momentum).add_(g1)
    return m.mul_(momentum).add_(g1, alpha=1 - momentum)


def lr_scale(rho_top: torch.Tensor, clip: float) -> float:
    """c = clip(ρ_k / ρ_max, 1, clip) = |λ_max / λ_k| clipped, as the reference computes it:
    the complement's curvature is at most λ_k, so its step may grow by λ_max / λ_k."""
    if len(rho_top) == 0:
        return 1.0
    return float((rho_top[-1] / rho_top[0]).clamp(1.0, clip))


class FOSIOptimizer(MethodOptimizer):
    """FOSI over AdamW or heavy-ball, in one process, on the flat parameter vector."""

    # state_dict() holds full-length vectors and load_state_dict() takes them on any worker
    # count, sharded or not: the engine saves and loads it as it is (no FSDP re-keying)
    world_size_independent_state = True
    # sharded_state_dict(): each rank's slices, saved and resharded by DCP (flat_shards)
    sharded_state = True

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        loss_fn: Callable,
        next_batch: Callable,
        max_grad_norm: float | None = None,
    ):
        self.model, self.cfg = model, config
        # train.grad_clip, applied here to the averaged gradient when the engine cannot (dho2)
        self.max_grad_norm = max_grad_norm
        self.loss_fn, self.next_batch = loss_fn, next_batch
        params = [p for p in model.parameters() if p.requires_grad]
        super().__init__(params, dict(lr=config.lr))
        self.n = sum(p.numel() for p in params)
        self.t = 0  # optimizer steps taken
        like = self._local_params()
        self.flat = {
            name: torch.zeros_like(like) for name in ("newton_m",) + BASE_STATE[config.base]
        }
        self.decay_mask = self._decay_mask(params, like)
        self.eig: RitzPairs | None = None
        self.V = like.new_zeros(0, like.numel())  # (r, n_local)
        self.rho = like.new_zeros(0)
        self.c = 1.0
        self.last: dict[str, float] = {}
        self.hvp_flops: float | None = None  # FLOPs of one HVP, counted once
        self.operator_flops = 0.0  # FLOPs of one operator's graph build
        self.operators_built = 0  # HVP operators made this step

    # -- what a sharded subclass redistributes ------------------------------------------------
    def _local_slice(self, full: torch.Tensor) -> torch.Tensor:
        return full

    def _decay_mask(self, params: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """1 where this rank's slice holds a decayed tensor's element (matrices, not biases or
        norm gains: raytrain_eff.methods.base's convention), else 0 (padding too). Built from
        this rank's pieces of the flat vector, so it is never n long under ddp or fsdp."""
        runs, size = self._local_runs()
        mask = torch.zeros(size, dtype=like.dtype, device=like.device)
        ends = list(itertools.accumulate(p.numel() for p in params))
        at = 0  # where the current piece starts in this rank's slice
        for start, length in runs:
            for p, end in zip(params, ends, strict=True):
                lo, hi = max(start, end - p.numel()), min(start + length, end)
                if lo < hi and p.dim() >= 2:
                    mask[at + lo - start : at + hi - start] = 1
            at += length
        return mask

    def _local_params(self) -> torch.Tensor:
        """This process's slice of θ, current; may be a view of live storage: read it only."""
        return flatten(self.param_groups[0]["params"])

    def _local_grad(self) -> torch.Tensor:
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                for p in self.param_groups[0]["params"]
            ]
        )

    def _psum(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _write_params(self, theta_local: torch.Tensor) -> None:
        vector_to_parameters(theta_local, self.param_groups[0]["params"])

    def _matvec(self, H: Hvp) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda q: self._hvp(H, q).to(torch.float64)

    def _hvp(self, H: Hvp, v: torch.Tensor) -> torch.Tensor:
        """H v; the first operator's graph build and first HVP run under the FLOP counter
        (apart), so step_flops counts the work really done."""
        if self.hvp_flops is not None:
            return H(v)
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            H.prepare()
        self.operator_flops = float(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            out = H(v)
        self.hvp_flops = float(counter.get_total_flops())
        return out

    def _draw(self, seed: int) -> Callable[[int], torch.Tensor]:
        """Local slice of the i-th random start vector, drawn piece by piece
        (``lanczos.start_vector_pieces``): the same vector under any slicing, never whole."""

        def draw(i: int) -> torch.Tensor:
            runs, size = self._local_runs()
            local = start_vector_pieces(seed * 1000003 + i, self.n, runs)
            local = torch.nn.functional.pad(local, (0, size - local.numel()))  # ddp's padding
            return local.to(self.decay_mask.device)

        return draw

    def _local_runs(self) -> tuple[list[tuple[int, int]], int]:
        """(start, length) of this rank's pieces of the flat vector, and its slice's length."""
        return [(0, self.n)], self.n

    def _start(self) -> Callable[[int], torch.Tensor]:
        """This refresh's start vector v_0 = draw(0) (draw(i ≥ 1): breakdown restarts).

        ``fixed``: seed 0 at every refresh: one fixed random vector, as the reference's one
        ``PRNGKey(0)`` vector (regenerated rather than kept, so it costs no memory).
        ``fresh``: seed t + 1.
        """
        return self._draw(0 if self.cfg.start_vector == "fixed" else self.t + 1)

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        """Full-length vector (rows) from local slices; world-size-independent checkpoints."""
        return x

    def _sharded(self, local: torch.Tensor) -> torch.Tensor:
        """``local`` (..., n_local) as a (..., n) tensor DCP saves in this rank's pieces."""
        return local

    # -- curvature -----------------------------------------------------------------------------
    def _refresh_due(self) -> bool:
        """Before update t + 1 (1-based), as the reference's ``count + 1`` test."""
        update, W = self.t + 1, self.cfg.first_refresh
        return update >= W and (update - W) % self.cfg.refresh_interval == 0

    def _operator(self, params: dict | None = None) -> Hvp:
        """HVP on a fresh batch; its seed ties the dropout mask to this refresh."""
        self.operators_built += 1
        return HessianOperator(
            self.model,
            self.loss_fn,
            self.next_batch(),
            params=params,
            seed=self.t,
            mode=self.cfg.hvp_mode,
        )

    def refresh(self) -> None:
        H = self._operator()
        m = min(self.cfg.order, self.n)
        self._install(
            lanczos(
                self._matvec(H),
                self._start(),
                m,
                self.cfg.k,
                self.cfg.num_smallest,
                self.cfg.ritz_cutoff,
                self._psum,
            )
        )

    def _install(self, eig: RitzPairs) -> None:
        """Swap new eigenpairs in (at a step boundary)."""
        like = self._local_params()
        self.V = eig.V.to(like.dtype)
        self.eig = dataclasses.replace(eig, V=self.V)  # no second, fp64 copy is kept
        self.rho = 1.0 / eig.eigvals.abs().clamp_min(self.cfg.eig_floor).to(like.dtype)
        self.c = lr_scale(self.rho[: eig.num_top], self.cfg.clip)

    def _curvature_work(self) -> int:
        """Curvature work due before this step's update; returns the HVPs it computed."""
        if not self._refresh_due():
            return 0
        self.refresh()
        assert self.eig is not None  # refresh() installed new pairs
        return self.eig.iterations

    # -- the step ------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        g = self._local_grad()
        start = time.perf_counter()
        self.operators_built = 0
        hvps = self._curvature_work()
        seconds = time.perf_counter() - start
        self.t += 1
        g, a = self._clip_and_project(g)
        delta = self.direction(g, a)
        theta = self._local_params()
        lr, wd = self.param_groups[0]["lr"], self.cfg.weight_decay
        self._write_params(
            theta - lr * wd * self.decay_mask * theta + delta if wd else theta + delta
        )
        self._record(seconds if hvps else 0.0, hvps)
        return loss

    def _clip_and_project(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """g clipped as ``clip_grad_norm_(max_grad_norm)`` would, and a = V g: both sums over
        slices (k projections, |g|²) in one all-reduce; a is None when neither is needed."""
        V, clip = self.V, self.max_grad_norm
        if clip is None:
            return g, self._psum(V @ g) if V.shape[0] else None
        sums = self._psum(torch.cat([V @ g, (g @ g).reshape(1)]))
        coef = (clip / (sums[-1].sqrt() + 1e-6)).clamp(max=1.0)
        return g * coef, sums[:-1] * coef

    def direction(self, g: torch.Tensor, a: torch.Tensor | None = None) -> torch.Tensor:
        """Δθ of the module docstring, on this process's slice; sums over slices via _psum.
        ``a``: V g already summed over slices (``_clip_and_project``)."""
        c, V = self.cfg, self.V
        lr = self.param_groups[0]["lr"]
        base = {name: self.flat[name] for name in BASE_STATE[c.base]}
        if V.shape[0] == 0:  # warm-up: base optimizer only
            return base_update(c.base, g, base, lr, c.momentum, c.beta2, c.eps, self.t)
        g1 = V.T @ (self._psum(V @ g) if a is None else a)
        # [V m, V u] cannot join a's all-reduce: both need a (and Adam's u is not linear in g)
        m = newton_momentum(c.base, g1, self.flat["newton_m"], c.momentum)
        u = base_update(c.base, g - g1, base, lr, c.momentum, c.beta2, c.eps, self.t)
        Vm, Vu = self._psum(torch.cat([V @ m, V @ u])).split(V.shape[0])  # one all-reduce
        return self.c * (u - V.T @ Vu) - c.alpha * (V.T @ (self.rho * Vm))

    def _record(self, seconds: float, hvps: int) -> None:
        eig = self.eig if self.eig is not None and len(self.eig.eigvals) > 0 else None
        self.last = {
            keys.CURVATURE_SECONDS: seconds,
            "lanczos_iterations": float(hvps),
            "lambda_max": float(eig.eigvals.max()) if eig is not None else 0.0,
            "ritz_residual_max": float(eig.residuals.max()) if eig is not None else 0.0,
            "curvature_bytes": float(self.curvature_bytes()),
            "curvature_transient_bytes": float(self.transient_bytes()),
            "eigenpairs": float(self.V.shape[0]),
            "newton_lr_scale": self.c,
        }

    def state_tensors(self) -> list[torch.Tensor]:
        """What this optimizer holds outside ``self.state``: base moments, Newton momentum,
        eigenvectors (``engine.accounting.state_bytes`` counts them)."""
        return [*self.flat.values(), self.V]

    def curvature_bytes(self) -> int:
        """Bytes of this process's Lanczos basis slice and eigenvector slice."""
        basis = self.eig.basis_bytes if self.eig is not None else 0
        return basis + self.V.numel() * self.V.element_size()

    def transient_bytes(self) -> int:
        """Per-HVP buffers beside the basis: the full-length H q and its fp64 copy."""
        return self.n * (self.decay_mask.element_size() + 8)

    # -- checkpoints: full-length vectors, so any worker count can resume ----------------------
    def _meta(self) -> dict:
        """The plain data of a checkpoint (what sizes its tensors, and the eigenvalues)."""
        eig = self.eig
        return {
            "t": self.t,
            "lr": [g["lr"] for g in self.param_groups],
            "eigvals": None if eig is None else eig.eigvals,
            "residuals": None if eig is None else eig.residuals,
            "iterations": 0 if eig is None else eig.iterations,
            "num_top": 0 if eig is None else eig.num_top,
        }

    def state_dict(self) -> dict:
        """Whole vectors (every rank gathers them): the format of optimizer.pt."""
        return {
            **self._meta(),
            "flat": {name: self._gather(x).cpu() for name, x in self.flat.items()},
            "V": self._gather(self.V).cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        like = self._local_params()
        for name, full in state["flat"].items():
            self.flat[name].copy_(self._local_slice(full.to(like)))
        self._load_meta(state, lambda: self._local_slice(state["V"].to(like)))

    def _load_meta(self, state: dict, eigenvectors: Callable[[], torch.Tensor]) -> None:
        self.t = state["t"]
        for group, lr in zip(self.param_groups, state["lr"], strict=True):
            group["lr"] = lr
        if state["eigvals"] is None:
            like = self._local_params()
            self.eig, self.V = None, like.new_zeros(0, like.numel())
            return
        # the basis was a transient of the refresh that produced V: none is held after resume
        self._install(
            RitzPairs(
                state["eigvals"],
                eigenvectors(),
                state["residuals"],
                state["iterations"],
                0,
                0,
                state["num_top"],
            )
        )

    def sharded_state_dict(self) -> dict:
        """This rank's slices, no gather: ``flat`` and ``V`` as (n,) and (r, n) tensors
        of which each rank holds its pieces; eigenvalues and counters as plain data
        (lists, so that a load reads them before it knows r)."""
        meta = {
            k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in self._meta().items()
        }
        state: dict[str, Any] = {
            "meta": meta,
            "flat": {name: self._sharded(x) for name, x in self.flat.items()},
        }
        if self.V.shape[0]:
            state["V"] = self._sharded(self.V)
        return state

    def load_sharded_state_dict(self, read) -> None:
        meta = dict(read({"meta": {k: None for k in self._meta()}})["meta"])
        like = self._local_params()
        for k in ("eigvals", "residuals"):
            if meta[k] is not None:
                meta[k] = torch.tensor(meta[k], dtype=torch.float64)
        rows = 0 if meta["eigvals"] is None else len(meta["eigvals"])
        V = like.new_zeros(rows, like.numel())
        template: dict[str, Any] = {
            "flat": {name: self._sharded(x) for name, x in self.flat.items()}
        }
        if rows:
            template["V"] = self._sharded(V)
        loaded = read(template)
        for name, x in self.flat.items():
            self._load_pieces(loaded["flat"][name], x)
        if rows:
            self._load_pieces(loaded["V"], V)
        self._load_meta(meta, lambda: V)

    def _load_pieces(self, loaded: torch.Tensor, into: torch.Tensor) -> None:
        """A loaded ``_sharded`` tensor into this rank's state tensor ``into``, in place."""
        flat_shards.pieces_into(loaded, into)


def curvature_inputs(ctx: MethodContext) -> tuple[Callable, Callable]:
    """The loss and the fresh-batch source that the HVPs need (the engine sets both)."""
    if ctx.loss_fn is None or ctx.next_batch is None:
        raise ValueError(
            "fosi and dho2 need ctx.loss_fn and ctx.next_batch (their "
            "Hessian-vector products draw fresh batches)"
        )
    return ctx.loss_fn, ctx.next_batch


class FOSI(Method[FOSIConfig]):
    """Registered as ``fosi``: one process (use ``dho2`` for several workers)."""

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        if ctx.distributed:
            raise ValueError(
                f"fosi runs in one process (world_size is {ctx.world_size}); "
                "use dho2, which shares the curvature across workers"
            )
        self.optimizer = FOSIOptimizer(model, self.config, *curvature_inputs(ctx))
        return self.optimizer

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        return dict(self.optimizer.last)

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        """The training step plus this step's HVPs and HVP graph builds (FLOP-counted)."""
        opt = self.optimizer
        return (
            dense_flops
            + opt.last.get("lanczos_iterations", 0.0) * (opt.hvp_flops or 0.0)
            + opt.operators_built * opt.operator_flops
        )
