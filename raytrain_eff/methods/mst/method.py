"""Mixed Sparsity Training on the method seam: masks as buffers, gradient masking, the
three-phase schedule, topology updates every ΔT steps, moment resets, checkpointed masks
(the maths: ``methods/mst``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from raytrain_eff import collectives
from raytrain_eff.blocks.dtensor import full, local, slice_like
from raytrain_eff.hparams.mst import MSTConfig
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.methods.mst.flops import FlopCounter
from raytrain_eff.methods.mst.topology import SparseParam, discover, layer_densities, prune_and_grow
from raytrain_eff.methods.schedules import Piecewise, UpdateFrequency, make_schedule, ramp
from raytrain_eff.methods.sparse_attention import AttentionSchedule, HybridAttention
from raytrain_eff.monitor import keys
from raytrain_eff.typed import ConfigError


class MST(Method[MSTConfig]):
    """Mixed Sparsity Training through the method seam; combine with an optimizer method."""

    @classmethod
    def preflight(cls, params, cfg) -> None:
        if params.attention_kernel == "flex" and not cfg.scaling.use_gpu:
            raise ConfigError(
                "methods.mst.attention_kernel=flex needs scaling.use_gpu=true "
                "(FlexAttention has no CPU backward); on CPU use tiles"
            )

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
        self.sparsity = (
            make_schedule(c.schedule)
            if c.schedule is not None
            else Piecewise(
                [
                    [0, ramp(c.warmup_shape, c.init_sparsity, c.sparsity, 0, at(c.warmup_end))],
                    [
                        at(c.restore_start),
                        ramp(
                            c.restore_shape,
                            c.sparsity,
                            c.final_sparsity,
                            at(c.restore_start),
                            at(c.restore_end),
                        ),
                    ],
                ]
            )
        )
        self.drop = ramp(c.drop_anneal, c.drop_fraction, 0.0, at(c.update_start), at(c.restore_end))
        self.update = UpdateFrequency(c.update_every, at(c.update_start), at(c.update_stop))
        self.attention = HybridAttention(
            AttentionSchedule(
                c.attention, c.attention_window, at(c.attention_start), at(c.attention_stop)
            ),
            kernel=c.attention_kernel,
            tile=c.attention_tile,
        )
        self.attention.attach(model)
        self.params = discover(model, c.include, c.exclude)
        for sp in self.params:  # not persistent: masks travel in this method's state_dict
            sp.owner.register_buffer(
                "mst_mask", torch.ones_like(local(sp.weight), dtype=torch.bool), persistent=False
            )
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
        dens = layer_densities(
            [tuple(sp.weight.shape) for sp in self.params], 1 - s, self.config.distribution
        )
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
            (self.config.seed * 1_000_003 + (step + 1) * 7_919 + index) % (1 << 62)
        )

    def _set_masks(self, masks: list[torch.Tensor]) -> None:
        """Install whole-layer masks (each rank keeps its slice) and zero what they drop."""
        with torch.no_grad():
            for sp, m in zip(self.params, masks, strict=True):
                sp.mask.copy_(slice_like(sp.weight, m))
                local(sp.weight).mul_(sp.mask)
                self.density[id(sp.weight)] = float(m.float().mean())

    # -- hooks ----------------------------------------------------------------------------------
    def _apply_masks(self, module, args):
        # .data: keeps autograd's version counters intact (values are already masked)
        for sp in self.params:
            local(sp.weight.data).mul_(sp.mask)

    def _grad_hook(self, sp: SparseParam):
        def hook(p):
            grad = local(p.grad)  # under fsdp: this rank's slice, already averaged
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
        self._collect = (
            self._is_update(step) and self.config.grow != "random" and self.sparsity(step) > 0
        )

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        self._dense_dw = (
            frozenset(id(sp.weight) for sp in self.params) if self._collect else frozenset()
        )
        with torch.no_grad():
            for sp in self.params:
                local(sp.weight).mul_(sp.mask)  # weight decay or curvature must not revive zeros
            if self._is_update(step):
                self._topology_update(step, ctx)
        self._collect = False
        dense, eff = self.counter.totals(self._dense_dw)
        n = sum(sp.weight.numel() for sp in self.params)
        density = sum(self.density[id(sp.weight)] * sp.weight.numel() for sp in self.params) / max(
            n, 1
        )
        out = {
            "mst_sparsity_target": self.sparsity(step),
            "mst_drop_fraction": self.drop(step),
            "mst_density": density,
            keys.SPARSITY: 1.0 - density,  # the dashboard's gauge
            keys.ATTENTION_DENSITY: self.counter.attention_density(),
            "mst_flops_dense": dense,
            "mst_flops_effective": eff,
            **self.last_update,
        }
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
        dens = layer_densities(
            [tuple(sp.weight.shape) for sp in self.params], 1 - self.sparsity(t), c.distribution
        )
        share = {"gradient": 1.0, "random": 0.0, "mixed": c.gradient_share}[c.grow]
        masks, pruned, grown = [], 0, 0
        for sp, d in zip(self.params, dens, strict=True):
            # whole layers, one at a time: gathered from the shards under fsdp
            w_abs = full(sp.weight, local(sp.weight).abs())
            grad = self._scores.get(sp.index) if share > 0 else None
            grad = full(sp.weight, grad) if grad is not None else None
            mask = full(sp.weight, sp.mask)
            if ctx.distributed and not isinstance(sp.weight, DTensor):  # same decisions everywhere
                collectives.all_reduce(w_abs, ctx.group)
                if grad is not None:
                    collectives.all_reduce(grad, ctx.group)
            m = prune_and_grow(
                w_abs,
                mask,
                grad,
                round(d * sp.weight.numel()),
                self.drop(t),
                share,
                self._generator(t, sp.index),
            )
            pruned += int((mask & ~m).sum())
            grown += int((m & ~mask).sum())
            self._reset_moments(sp, slice_like(sp.weight, m ^ mask), ctx.optimizer)
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
                local(v).masked_fill_(changed, 0)

    # -- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "masks": {sp.name: full(sp.weight, sp.mask).cpu().clone() for sp in self.params},
            "sparsity": self.sparsity.spec(),
            "drop": self.drop.spec(),
            "update": self.update.spec(),
            "attention": dataclasses.asdict(self.attention.schedule),
        }

    def load_state_dict(self, state: dict) -> None:
        if not self.params:  # before prepare: applied once the masks exist
            self._pending = state
            return
        self._restore(state)

    def _restore(self, state: dict) -> None:
        names = {sp.name for sp in self.params}
        if set(state["masks"]) != names:
            raise ValueError(
                f"MST checkpoint masks {sorted(state['masks'])} do not match this "
                f"model's sparse weights {sorted(names)}"
            )
        self.step = state["step"]
        self.sparsity, self.drop = make_schedule(state["sparsity"]), make_schedule(state["drop"])
        self.update = UpdateFrequency(**state["update"])
        self.attention.schedule = AttentionSchedule(**state["attention"])
        self._set_masks([state["masks"][sp.name].to(sp.weight.device) for sp in self.params])
        self._pending = None

    def export(self, model: nn.Module) -> nn.Module:
        with torch.no_grad():
            for sp in self.params:
                local(sp.weight).mul_(sp.mask)
        return model
