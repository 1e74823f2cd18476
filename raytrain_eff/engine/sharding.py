"""The ``fsdp`` strategy: workers hold slices of the model (FSDP2 ``fully_shard``).

Each module the task names (``Task.shard_units``: a transformer block's attention and its
MLP, conv stages, wide layers) becomes one FSDP unit, then the root takes what is left
(embeddings, a tied head, norms). Between steps a rank holds only its 1/P slice of every
parameter, gradient and optimizer moment (DTensors sharded on dim 0); a unit's full
parameters exist only while its forward or backward runs. FSDP reduce-scatters the gradients
itself, so the engine's own all-reduce (``grad_sync``) is off under this strategy.

Checkpoints hold the model as ``torch.distributed.checkpoint`` shards (``engine.shards``): each
rank writes its own slices and a load reshards, so no rank gathers the whole model. The loaders
below read the whole-model checkpoints of earlier versions (formats 1 and 2) into the shards.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def mesh(group, device: torch.device) -> DeviceMesh:
    """A 1-D device mesh over the data-parallel group (the whole world when ``group`` is
    None, as for a 1-worker Ray Train group)."""
    if not dist.is_initialized():
        raise RuntimeError(
            "scaling.strategy=fsdp needs a torch.distributed process group "
            "(Ray Train workers; not local mode)"
        )
    pg = group if group is not None else dist.group.WORLD
    assert pg is not None  # initialised above
    return DeviceMesh.from_group(pg, device_type=device.type)


def shard(model: nn.Module, units: Iterable[nn.Module], device_mesh: DeviceMesh) -> nn.Module:
    """``fully_shard`` each unit, then the root; the model's parameters become DTensors."""
    for unit in units:
        fully_shard(unit, mesh=device_mesh)
    fully_shard(model, mesh=device_mesh)
    return model


# -- checkpoints ---------------------------------------------------------------------------------
def is_sharded(model: nn.Module) -> bool:
    """True when the model's parameters are FSDP's DTensors."""
    return any(isinstance(p, DTensor) for p in model.parameters())


def full_model_state(model: nn.Module) -> dict:
    """The unsharded model state dict on rank 0 (CPU); empty on other ranks. Collective."""
    return get_model_state_dict(model, options=FULL)


class ShardedModelLoader:
    """``load_state_dict`` of a full (unsharded) model state into the sharded model."""

    def __init__(self, model: nn.Module):
        self.model = model

    def load_state_dict(self, state: dict) -> None:
        set_model_state_dict(self.model, state, options=StateDictOptions(full_state_dict=True))


class ShardedOptimizerLoader:
    """``load_state_dict`` of a plain (integer-keyed, unsharded) optimizer state: each rank
    keeps the slices of its own parameters."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def load_state_dict(self, state: dict) -> None:
        names = param_names(self.model)
        order = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        if len(order) != sum(len(g["params"]) for g in state["param_groups"]):
            raise ValueError(
                f"optimizer checkpoint holds "
                f"{sum(len(g['params']) for g in state['param_groups'])} "
                f"parameters; this model's optimizer has {len(order)}"
            )
        groups, k = [], 0
        for group in state["param_groups"]:
            groups.append({**group, "params": order[k : k + len(group["params"])]})
            k += len(group["params"])
        named = {"state": {order[i]: s for i, s in state["state"].items()}, "param_groups": groups}
        set_optimizer_state_dict(
            self.model,
            self.optimizer,
            named,  # type: ignore[arg-type]
            options=StateDictOptions(full_state_dict=True),
        )


def param_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name (a tied weight has one name, as in named_parameters)."""
    return {id(p): n for n, p in model.named_parameters()}
