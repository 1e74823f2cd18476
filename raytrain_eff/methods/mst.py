"""Mixed Sparsity Training (Hu, Li, Huang; arXiv 2408.11746): dynamic sparse training whose
sparsity varies over the run, plus hybrid sparse attention.

Weight W_l of each sparse layer carries a binary mask M_l (a buffer on its module): weights
outside the mask are exactly 0, their gradients are masked, and the forward always sees
W_l ⊙ M_l. The target sparsity s(t) follows three phases — warm-up (0 → s), ultra-sparse
(hold s), restoration (s → 0) — and per-layer densities d_l(t) come from Erdős–Rényi(-Kernel)
or uniform allocation so that Σ d_l n_l = (1 − s(t)) Σ n_l. Every ΔT steps (topology update)::

    a_l = |M_l|,  k_l = round(d_l(t) n_l)           active now, active wanted
    D = max(round(ζ_t a_l), a_l − k_l)              prune D smallest |W| among active
    G = k_l − (a_l − D)                             regrow G > D in restoration
    grow ⌊share·G⌉ by largest |∇W| (dense gradient of this step), the rest uniformly at random
    new weights start at 0; optimizer moments of every changed entry are reset to 0

ζ_t is cosine-annealed from ζ_0 to 0; restoration completes on the step s(t) reaches 0, even
between multiples of ΔT. A head tied to the embedding shares its weight, hence its mask. Scores
are all-reduced over the data-parallel group and random growth is seeded by (seed, step, layer),
so every rank takes the same decisions.

Under model shards (FSDP2, ``scaling.strategy=fsdp``) each weight is a DTensor and its mask
lives on the local shard only: masking, gradient masking, moment resets and density all
work on ``to_local()`` slices. A topology update gathers one layer's |W|, scores and mask at a
time (the prune/grow choice is a top-k over the whole layer) and keeps the local slice of the
result, so the decisions are the ones ddp takes.

Accounting (``FlopCounter``): per training forward, a linear layer on R rows with n weights at
density ρ costs 2Rnρ (forward) + 2Rnρ (dX, when its input needs a gradient) + 2Rnρ (dW; 2Rn on
gradient-growth steps, which need the dense gradient); an embedding costs Rdρ adds for its
scatter-add dW; attention costs 12·B·C·P for P (query, key) pairs of touched kernel tiles
(QKᵀ and AV forward, four matmuls backward).
"""
from __future__ import annotations

import dataclasses
import fnmatch

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from raytrain_eff import collectives
from raytrain_eff.hparams.mst import MSTConfig
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.methods.schedules import Piecewise, UpdateFrequency, make_schedule, ramp
from raytrain_eff.methods.sparse_attention import (
    AttentionSchedule,
    HybridAttention,
    pattern,
    tile_pairs,
)
from raytrain_eff.monitor import keys
from raytrain_eff.typed import ConfigError


@dataclasses.dataclass
class SparseParam:
    name: str                   # parameter name in the model
    weight: torch.Tensor        # the module's nn.Parameter
    owner: nn.Module            # holds the mask buffer ``mst_mask``
    index: int                  # position in the sparse-parameter list (seeds random growth)

    @property
    def mask(self) -> torch.Tensor:
        return self.owner.get_buffer("mst_mask")


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a sharded tensor; the tensor itself otherwise."""
    return t.to_local() if isinstance(t, DTensor) else t


def _full(weight: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
    """The whole tensor whose local slice is ``part``, sharded as ``weight`` is (collective)."""
    if not isinstance(weight, DTensor):
        return part
    dtype = part.dtype
    part = part.to(torch.uint8) if dtype == torch.bool else part  # gloo gathers no bools
    whole = DTensor.from_local(part, weight.device_mesh, weight.placements,
                               shape=weight.shape, stride=weight.stride()).full_tensor()
    return whole.to(dtype)


def _slice(weight: torch.Tensor, whole: torch.Tensor) -> torch.Tensor:
    """This rank's slice of ``whole`` (identical on every rank), sharded as ``weight`` is."""
    if not isinstance(weight, DTensor):
        return whole
    return distribute_tensor(whole, weight.device_mesh, weight.placements,
                             src_data_rank=None).to_local()


def discover(model: nn.Module, include: list[str], exclude: list[str]) -> list[SparseParam]:
    """Weights of nn.Linear / nn.Embedding modules selected by name; tied weights once."""
    seen: dict[int, SparseParam] = {}
    names = {id(p): n for n, p in model.named_parameters()}  # first name of a tied weight
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, (nn.Linear, nn.Embedding)) or id(mod.weight) in seen:
            continue
        chosen = any(fnmatch.fnmatch(mod_name, pat) for pat in include) and \
            not any(fnmatch.fnmatch(mod_name, pat) for pat in exclude)
        if chosen and mod.weight.requires_grad:
            seen[id(mod.weight)] = SparseParam(names[id(mod.weight)], mod.weight, mod, len(seen))
    return list(seen.values())


def layer_densities(shapes: list[tuple], density: float, distribution: str) -> list[float]:
    """Per-layer densities with Σ d_l n_l = density·Σ n_l; d_l ∝ Σ dims / Π dims (ERK) or
    (n_in + n_out)/(n_in n_out) (ER; equal to ERK for matrices), capped at 1."""
    n = [float(torch.Size(s).numel()) for s in shapes]
    if distribution == "uniform":
        return [density] * len(n)
    raw = [sum(s) / nl if distribution == "erk" else (s[0] + s[1]) / (s[0] * s[1])
           for s, nl in zip(shapes, n, strict=True)]
    dense: set[int] = set()
    while True:  # layers whose density would exceed 1 become dense; redistribute the rest
        budget = density * sum(n) - sum(n[i] for i in dense)
        eps = budget / max(sum(raw[i] * n[i] for i in range(len(n)) if i not in dense), 1e-30)
        over = {i for i in range(len(n)) if i not in dense and eps * raw[i] > 1}
        if not over:
            return [1.0 if i in dense else min(eps * raw[i], 1.0) for i in range(len(n))]
        dense |= over


def prune_and_grow(w_abs: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor | None,
                   k: int, zeta: float, n_grad: float, gen: torch.Generator) -> torch.Tensor:
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
    candidates[drop] = False          # prefer weights that were not just dropped...
    if int(candidates.sum()) < G:
        candidates = ~m               # ...unless restoration needs them back
    G_grad = round(n_grad * G) if grad is not None else 0
    by_grad = [] if grad is None else [(G_grad, grad.flatten().abs())]
    for count, score in by_grad + [(G - G_grad, torch.rand(n, generator=gen).to(m.device))]:
        if count:
            idx = torch.topk(torch.where(candidates, score, -1.0), count).indices
            m[idx] = True
            candidates[idx] = False
    return m.view_as(mask)


class FlopCounter:
    """Analytic matmul FLOPs of the training forwards since ``reset`` (see module docstring)."""

    def __init__(self, model: nn.Module, density: dict[int, float], tile: int):
        self.density = density    # id(weight) -> current density; missing: dense
        self.tile = tile
        self.records: list[tuple] = []
        # id(module) -> id(its weight) now: under FSDP a forward sees a gathered stand-in
        self.weight_id = {id(m): id(m.weight) for m in model.modules()
                          if isinstance(m, (nn.Linear, nn.Embedding))}
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
        self.records.append(("linear" if linear else "embedding", rows, mod.weight.numel(),
                             mod.weight.shape[1],
                             self.density.get(self.weight_id.get(id(mod), id(mod.weight)), 1.0),
                             linear and x.requires_grad, mod.weight.requires_grad,
                             self.weight_id.get(id(mod), id(mod.weight))))

    def _attention(self, mod, args, out):
        if torch.is_grad_enabled() and mod.training:
            B, T, C = args[0].shape
            mask = mod.pattern_mask
            P = tile_pairs(pattern("dense", T, 1) if mask is None else mask[:T, :T].cpu(),
                           self.tile)
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


class MST(Method[MSTConfig]):
    """Mixed Sparsity Training through the method seam; combine with an optimizer method."""

    @classmethod
    def preflight(cls, params, cfg) -> None:
        if params.attention_kernel == "flex" and not cfg.scaling.use_gpu:
            raise ConfigError("methods.mst.attention_kernel=flex needs scaling.use_gpu=true "
                             "(FlexAttention has no CPU backward); on CPU use tiles")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.params: list[SparseParam] = []
        self.step = 0
        self._pending: dict | None = None
        self._scores: dict[int, torch.Tensor] = {}
        self._collect = False
        self._dense_dw: frozenset = frozenset()
        self.last_update: dict[str, float] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        c, T = self.config, ctx.total_steps
        at = lambda f: int(round(f * T))  # noqa: E731 - phase fraction -> step
        self.sparsity = make_schedule(c.schedule) if c.schedule is not None else Piecewise(
            [[0, ramp(c.warmup_shape, c.init_sparsity, c.sparsity, 0, at(c.warmup_end))],
             [at(c.restore_start), ramp(c.restore_shape, c.sparsity, c.final_sparsity,
                                        at(c.restore_start), at(c.restore_end))]])
        self.drop = ramp(c.drop_anneal, c.drop_fraction, 0.0, at(c.update_start),
                         at(c.restore_end))
        self.update = UpdateFrequency(c.update_every, at(c.update_start), at(c.update_stop))
        self.attention = HybridAttention(AttentionSchedule(
            c.attention, c.attention_window, at(c.attention_start), at(c.attention_stop)),
            kernel=c.attention_kernel, tile=c.attention_tile)
        self.attention.attach(model)
        self.params = discover(model, c.include, c.exclude)
        for sp in self.params:  # not persistent: masks travel in this method's state_dict
            sp.owner.register_buffer("mst_mask", torch.ones_like(_local(sp.weight),
                                                                 dtype=torch.bool),
                                     persistent=False)
            sp.weight.register_post_accumulate_grad_hook(self._grad_hook(sp))
        self.density: dict[int, float] = {}
        self.counter = FlopCounter(model, self.density, c.attention_tile)
        model.register_forward_pre_hook(self._apply_masks)
        if self._pending is not None:
            self._restore(self._pending)
        else:
            self._set_masks(self._initial_masks(self.sparsity(0)))
        return model

    def _initial_masks(self, s: float) -> list[torch.Tensor]:
        """Random masks at the per-layer densities of sparsity ``s`` (all ones when s = 0)."""
        dens = layer_densities([tuple(sp.weight.shape) for sp in self.params], 1 - s,
                               self.config.distribution)
        out = []
        for sp, d in zip(self.params, dens, strict=True):
            r = torch.rand(sp.weight.shape, generator=self._generator(-1, sp.index))
            k = round(d * r.numel())
            m = torch.zeros(r.numel(), dtype=torch.bool)
            m[torch.topk(r.flatten(), k).indices] = True
            out.append(m.view_as(r).to(sp.weight.device))
        return out

    def _generator(self, step: int, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + (step + 1) * 7_919 + index) % (1 << 62))

    def _set_masks(self, masks: list[torch.Tensor]) -> None:
        """Install whole-layer masks (each rank keeps its slice) and zero what they drop."""
        with torch.no_grad():
            for sp, m in zip(self.params, masks, strict=True):
                sp.mask.copy_(_slice(sp.weight, m))
                _local(sp.weight).mul_(sp.mask)
                self.density[id(sp.weight)] = float(m.float().mean())

    # -- hooks ----------------------------------------------------------------------------------
    def _apply_masks(self, module, args):
        # .data: keeps autograd's version counters intact (values are already masked)
        for sp in self.params:
            _local(sp.weight.data).mul_(sp.mask)

    def _grad_hook(self, sp: SparseParam):
        def hook(p):
            grad = _local(p.grad)  # under fsdp: this rank's slice, already averaged
            if self._collect:  # dense gradient of inactive weights: the regrowth score
                score = self._scores.setdefault(sp.index, torch.zeros_like(grad))
                score.add_(grad * ~sp.mask)
            grad.mul_(sp.mask)
        return hook

    # -- per step -------------------------------------------------------------------------------
    def _is_update(self, t: int) -> bool:
        restored = self.sparsity(t) == 0 and any(d < 1 for d in self.density.values())
        return self.update.is_update(t) or restored

    def before_step(self, step: int, ctx: MethodContext) -> None:
        self.step = self.attention.step = step
        self.counter.reset()
        self._scores = {}
        self._collect = (self._is_update(step) and self.config.grow != "random"
                         and self.sparsity(step) > 0)

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        self._dense_dw = frozenset(id(sp.weight) for sp in self.params) if self._collect \
            else frozenset()
        with torch.no_grad():
            for sp in self.params:
                _local(sp.weight).mul_(sp.mask)  # weight decay or curvature must not revive zeros
            if self._is_update(step):
                self._topology_update(step, ctx)
        self._collect = False
        dense, eff = self.counter.totals(self._dense_dw)
        n = sum(sp.weight.numel() for sp in self.params)
        density = sum(self.density[id(sp.weight)] * sp.weight.numel()
                      for sp in self.params) / max(n, 1)
        out = {"mst_sparsity_target": self.sparsity(step), "mst_drop_fraction": self.drop(step),
               "mst_density": density, keys.SPARSITY: 1.0 - density,  # the dashboard's gauge
               keys.ATTENTION_DENSITY: self.counter.attention_density(),
               "mst_flops_dense": dense, "mst_flops_effective": eff, **self.last_update}
        out.update({f"mst_density/{sp.name}": self.density[id(sp.weight)] for sp in self.params})
        self.last_update = {}
        return out

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        """The engine's dense count scaled by this step's analytic effective/dense ratio, so
        both figures share one convention; the analytic count itself when none is given."""
        dense, eff = self.counter.totals(self._dense_dw)
        if not dense:
            return dense_flops
        return dense_flops * eff / dense if dense_flops else eff

    def _topology_update(self, t: int, ctx: MethodContext) -> None:
        c = self.config
        dens = layer_densities([tuple(sp.weight.shape) for sp in self.params],
                               1 - self.sparsity(t), c.distribution)
        share = {"gradient": 1.0, "random": 0.0, "mixed": c.gradient_share}[c.grow]
        masks, pruned, grown = [], 0, 0
        for sp, d in zip(self.params, dens, strict=True):
            # whole layers, one at a time: gathered from the shards under fsdp
            w_abs = _full(sp.weight, _local(sp.weight).abs())
            grad = self._scores.get(sp.index) if share > 0 else None
            grad = _full(sp.weight, grad) if grad is not None else None
            mask = _full(sp.weight, sp.mask)
            if ctx.distributed and not isinstance(sp.weight, DTensor):  # same decisions everywhere
                collectives.all_reduce(w_abs, ctx.group)
                if grad is not None:
                    collectives.all_reduce(grad, ctx.group)
            m = prune_and_grow(w_abs, mask, grad, round(d * sp.weight.numel()),
                               self.drop(t), share, self._generator(t, sp.index))
            pruned += int((mask & ~m).sum())
            grown += int((m & ~mask).sum())
            self._reset_moments(sp, _slice(sp.weight, m ^ mask), ctx.optimizer)
            masks.append(m)
        self._set_masks(masks)  # regrown weights were 0 while masked: they start at 0
        self.last_update = {"mst_pruned": float(pruned), "mst_grown": float(grown)}

    @staticmethod
    def _reset_moments(sp: SparseParam, changed: torch.Tensor, opt) -> None:
        """Zero every per-entry optimizer state (Adam exp_avg/exp_avg_sq, SGD momentum, ...)
        where the topology changed: stale moments would move new weights off zero."""
        state = opt.state.get(sp.weight, {}) if opt is not None else {}
        for v in state.values():
            if torch.is_tensor(v) and v.shape == sp.weight.shape:
                _local(v).masked_fill_(changed, 0)

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"step": self.step,
                "masks": {sp.name: _full(sp.weight, sp.mask).cpu().clone() for sp in self.params},
                "sparsity": self.sparsity.spec(), "drop": self.drop.spec(),
                "update": self.update.spec(),
                "attention": dataclasses.asdict(self.attention.schedule)}

    def load_state_dict(self, state: dict) -> None:
        if not self.params:  # before prepare: applied once the masks exist
            self._pending = state
            return
        self._restore(state)

    def _restore(self, state: dict) -> None:
        names = {sp.name for sp in self.params}
        if set(state["masks"]) != names:
            raise ValueError(f"MST checkpoint masks {sorted(state['masks'])} do not match this "
                             f"model's sparse weights {sorted(names)}")
        self.step = state["step"]
        self.sparsity, self.drop = make_schedule(state["sparsity"]), make_schedule(state["drop"])
        self.update = UpdateFrequency(**state["update"])
        self.attention.schedule = AttentionSchedule(**state["attention"])
        self._set_masks([state["masks"][sp.name].to(sp.weight.device) for sp in self.params])
        self._pending = None

    def export(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for sp in self.params:
                _local(sp.weight).mul_(sp.mask)
        return model
