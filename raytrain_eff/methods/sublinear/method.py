"""``sublinear`` on the method seam: index the wide layers, pick the update, report the
active fraction and the FLOPs the index paths counted (the maths: ``methods/sublinear``)."""

from __future__ import annotations

from torch import nn

from raytrain_eff.blocks.shifted_relu import STAT_KEYS, wide_layers
from raytrain_eff.hparams.sublinear import SublinearConfig
from raytrain_eff.methods.base import Method, MethodContext
from raytrain_eff.methods.sublinear.index import use_index
from raytrain_eff.methods.sublinear.optimizers import GaussNewton, NeuronSGD
from raytrain_eff.monitor import keys


class Sublinear(Method[SublinearConfig]):
    """Finds active neurons with an index so a step touches few of the m; see the module doc.

    Width sharding: each rank keeps its slice of every wide layer (``task.shard_width``, so
    all ranks see the same batch) and updates only its own neurons, so the engine's gradient
    all-reduce is skipped.
    """

    owns_gradient_sync = True

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        self.layers = wide_layers(model)
        if not self.layers:
            raise ValueError(
                "sublinear: the model has no ShiftedReLU layer; build the wide "
                "layer with raytrain_eff.blocks.shifted_relu.ShiftedReLU "
                "(the `wide` task does)"
            )
        if ctx.distributed:
            if not getattr(getattr(ctx.task, "params", None), "shard_width", False):
                raise ValueError(
                    "sublinear on several ranks shards the width; set "
                    "task.shard_width: true so every rank sees the same batch"
                )
            for layer in self.layers:
                layer.shard(ctx.rank, ctx.world_size, ctx.group)
        self._ctx, self._stale = ctx, True
        return model

    def _build_indexes(self) -> None:
        c, X = self.config, None
        if c.index == "exact":
            inputs = getattr(self._ctx.task, "index_inputs", None)
            if inputs is None:
                raise ValueError(
                    "sublinear.index=exact indexes the training inputs: it needs a "
                    "task with index_inputs() (the wide task); use index=lsh"
                )
            X = inputs().to(self._ctx.device)
        for layer in self.layers:
            use_index(
                layer,
                c.index,
                X,
                fanout=c.fanout,
                slack=c.slack,
                tables=c.lsh_tables,
                bits=c.lsh_bits,
                seed=getattr(self._ctx.task, "seed", 0),
            )
        self._stale = False

    def make_optimizer(self, model: nn.Module, ctx: MethodContext):
        c = self.config
        if c.update == "gauss_newton":
            return GaussNewton(model, c.lr, c.damping)
        return NeuronSGD(model, c.lr)

    def before_step(self, step: int, ctx: MethodContext) -> None:
        if self._stale:  # from the weights the run starts or resumes at
            self._build_indexes()
        for layer in self.layers:
            layer.reset_stats()
            layer.check_recall = (
                self.config.index != "dense" and step % self.config.recall_interval == 0
            )

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        s = {key: sum(layer.stats[key] for layer in self.layers) for key in STAT_KEYS}
        width = sum(len(layer.weight) * layer.stats["batch"] for layer in self.layers)
        out = {
            keys.ACTIVE_FRACTION: s["pairs"] / max(width, 1),
            "neurons_updated": s["updated"],
            "neurons_rekeyed": s["rekeyed"],
            "candidates": s["candidates"],
            "query_seconds": s["query_s"],
            "update_seconds": s["update_s"],
        }
        if s["recall_true"]:
            out["index_recall"] = s["recall_hits"] / s["recall_true"]
        return out

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        """Counted FLOPs of the wide layers plus the rest of the model's dense count."""
        ref = sum(layer.dense_reference_flops(int(layer.stats["batch"])) for layer in self.layers)
        return max(dense_flops - ref, 0.0) + sum(layer.stats["flops"] for layer in self.layers)

    def load_state_dict(self, state: dict) -> None:
        self._stale = True  # the index follows the restored weights
