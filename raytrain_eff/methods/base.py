"""The method seam: what every efficient-training method may hook into.

The engine calls these hooks in a fixed order and never names a method::

    model = method.prepare(model, ctx)            # once, before the optimizer exists
    opt = method.make_optimizer(model, ctx)       # exactly one method returns one
    for step in range(start, steps):
        method.before_step(step, ctx)             # schedules, topology updates
        forward / backward on ctx.loss_fn(model, batch), gradient sync (the engine's
                                                  all-reduce, or method.gradient_sync())
        opt.step()
        stats = method.after_step(step, ctx)      # method metrics for this step
        effective = method.step_flops(dense, ctx) # FLOPs this step really needed

Methods are pure PyTorch; collective work goes through ``raytrain_eff.collectives`` (which
puts tensors on the group's device) on ``ctx.group`` (None in a single process), so the same
code runs in a gloo unit test and on a Ray Train worker group under NCCL. An optimizer a method
builds may subclass ``MethodOptimizer`` to tell the engine about state that torch's
per-parameter ``optimizer.state`` does not hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

import torch
from torch import nn

if TYPE_CHECKING:  # for the annotation only: tasks never import methods, nor the reverse
    from raytrain_eff.tasks.base import Task

ConfigT = TypeVar("ConfigT")  # a method's hyper-parameter dataclass (hparams/)


@dataclasses.dataclass
class MethodContext:
    """What the engine hands each hook. Fields a method does not need it ignores."""

    rank: int = 0
    world_size: int = 1
    group: Any = None  # torch.distributed group, None when single-process
    device: torch.device = torch.device("cpu")
    total_steps: int = 1
    step: int = 0
    # mean loss of ``model`` on ``batch`` (no backward); HVPs and line searches use it
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None
    # a fresh training batch (curvature refreshes draw their own): ``next_batch()`` is this
    # rank's own; ``next_batch((part, parts))`` is that part of one batch all ranks draw alike
    next_batch: Callable[..., Any] | None = None
    # iterates this rank's whole shard in batches of the given size (VR snapshots)
    iterate_shard: Callable[[int], Iterator[Any]] | None = None
    shard_size: int = 0  # training rows on this rank
    optimizer: torch.optim.Optimizer | None = None  # set by the engine after make_optimizer
    task: Task | None = None  # the run's task (model factory, loss, eval)
    # train.grad_clip: a method that owns the gradient sync clips the averaged gradient itself
    grad_clip: float | None = None

    @property
    def distributed(self) -> bool:
        return self.group is not None and self.world_size > 1


class GradientSync(Protocol):
    """Gradient averaging the engine drives during backward (``engine.grad_sync``'s, or a
    method's own from ``Method.gradient_sync``)."""

    def arm(self, armed: bool) -> None:
        """Before each micro-batch's loss: sync on its backward (the last) or only accumulate."""

    def finish(self) -> None:
        """After the last backward, before ``optimizer.step()``: complete the sync."""

    def settle(self) -> None:
        """Complete any parameter update still in flight: before anything outside the
        step reads the parameters (other methods' hooks, eval, checkpoints)."""

    def buffer_bytes(self) -> int:
        """Bytes of the sync's own buffers (memory accounting)."""


class Method(Generic[ConfigT]):
    """Base class: every hook is a no-op, so a method overrides only what its paper changes.
    ``Method[XConfig]`` types ``self.config`` as the method's own hyper-parameters."""

    name: ClassVar[str] = ""
    # True when the method averages gradients itself (sharded optimizers); the engine then
    # skips its own gradient all-reduce. A method may set it per instance, from its config.
    owns_gradient_sync: bool = False

    def __init__(self, config: ConfigT):
        self.config = config

    @classmethod
    def preflight(cls, params: Any, cfg: Any) -> None:
        """Checks on the driver before any worker starts: refuse settings that cannot work
        with the rest of the run's config (``cfg``), raising ``typed.ConfigError`` naming the
        key (the CLI shows it as one line)."""

    def prepare(self, model: nn.Module, ctx: MethodContext) -> nn.Module:
        return model

    def make_optimizer(self, model: nn.Module, ctx: MethodContext) -> torch.optim.Optimizer | None:
        return None

    def gradient_sync(self, ctx: MethodContext) -> GradientSync | None:
        """With ``owns_gradient_sync``: the method's own sync for the engine to arm and
        finish around backward (after make_optimizer); None: the method averages in its step."""
        return None

    def before_step(self, step: int, ctx: MethodContext) -> None:
        pass

    def after_step(self, step: int, ctx: MethodContext) -> dict[str, float]:
        return {}

    def step_flops(self, dense_flops: float, ctx: MethodContext) -> float:
        """FLOPs this step actually needed, given the dense reference count."""
        return dense_flops

    def export(self, model: nn.Module) -> nn.Module:
        """Fold method artefacts into a plain model (apply masks, merge compressed layers)."""
        return model

    def state_dict(self) -> dict:
        """Everything a resume needs beyond model and optimizer; tensors and plain data only."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MethodOptimizer(torch.optim.Optimizer):
    """An optimizer a method builds (``make_optimizer``) and what it tells the engine beyond
    torch's API. Torch's own optimizers (AdamW, SGD) keep all state in ``self.state`` per
    parameter: the functions below give them these defaults, so the engine asks any
    optimizer the same way."""

    # True when state_dict() is the whole state, the same at every world size, sharded or not,
    # and load_state_dict() takes it so (FOSI/DHO2's flat vectors): the engine then saves and
    # loads it as it is, without FSDP's per-parameter gathering and re-keying
    world_size_independent_state: ClassVar[bool] = False
    # True when sharded_state_dict() offers the state in shards: the engine then writes it into
    # the torch.distributed.checkpoint shards (no rank gathers it) instead of optimizer.pt
    sharded_state: ClassVar[bool] = False

    def state_tensors(self) -> list[torch.Tensor]:
        """State held outside torch's per-parameter ``self.state`` (flat moments,
        eigenvectors), which the engine's memory accounting counts too."""
        return []

    def sharded_state_dict(self) -> dict:
        """The whole state for ``torch.distributed.checkpoint``: tensors of which this rank
        holds only its part (DTensor, ShardedTensor; plain tensors in one process), so a save
        gathers nothing and a load reshards to any world size; plain data beside them."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sharded state")

    def load_sharded_state_dict(self, read: Callable[[dict], Mapping[str, Any]]) -> None:
        """Restore from ``read(template)``: ``template`` is a state dict shaped as
        ``sharded_state_dict`` would give (this rank's parts), ``read`` returns it filled from
        the checkpoint (a collective). An optimizer may read twice: first the plain data that
        sizes its tensors, then the tensors."""
        raise NotImplementedError(f"{type(self).__name__} keeps no sharded state")


def state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """``optimizer.state_tensors()``; none for an optimizer that is not a MethodOptimizer."""
    return optimizer.state_tensors() if isinstance(optimizer, MethodOptimizer) else []


def world_size_independent_state(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.world_size_independent_state``; False for torch's own optimizers."""
    return isinstance(optimizer, MethodOptimizer) and optimizer.world_size_independent_state


def sharded_state(optimizer: torch.optim.Optimizer) -> bool:
    """``optimizer.sharded_state``; False for torch's own optimizers (DCP shards them by
    parameter name through ``get_optimizer_state_dict``)."""
    return isinstance(optimizer, MethodOptimizer) and optimizer.sharded_state


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices, not biases or norm gains (the nanoGPT convention)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
