"""Building the model without ever holding all of it: meta-device construction.

``build`` makes the task's model on the meta device (shapes, no storage), shards it under
``fsdp``, and then each rank allocates only its own slices (``to_empty``) and fills them
module by module: one module's own parameters and buffers at a time exist whole, on the CPU,
drawn from a generator seeded by (run seed, module name), and this rank copies out its dim-0
chunk (FSDP2's ``torch.chunk`` layout) before the next module is drawn. The draws depend on
neither the world size nor the strategy, so local mode, ddp and fsdp on any P start from
bitwise the same weights, and construction never holds more than the local slices plus one
module.

A module is initialised by its own ``reset_parameters()`` (the standard layers' init), then
by the root model's ``init_weights(name, module)`` when it has one (GPT's normal(0, 0.02)
and scaled residual init); both may touch only that module's own tensors (a reset that also
fills its children's, like ``nn.MultiheadAttention``'s, is not supported). A task whose
model draws its init another way (its own generator, a spectral init, a user's factory) sets
``Task.builds_on_meta = False``: its model is built whole on every rank after
``torch.manual_seed(seed)``, then sharded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard

from raytrain_eff.engine import sharding
from raytrain_eff.tasks.base import step_generator

META = "meta"  # built on the meta device, each rank materialised its own slices
WHOLE = "whole"  # built whole on every rank (the task's builds_on_meta is False)
DESCRIBE = {
    META: "built on the meta device; each rank materialised its own slices",
    WHOLE: "built whole on every rank (the task's builds_on_meta is False)",
}


def build(task: Any, seed: int, device: torch.device, mesh=None) -> tuple[nn.Module, str]:
    """The task's model on ``device`` (sharded over ``mesh`` when given) and which path built
    it (``META`` or ``WHOLE``)."""
    if not task.builds_on_meta:
        torch.manual_seed(seed)  # same initial weights on every rank
        model = task.build_model().to(device)
        if mesh is not None:
            model = sharding.shard(model, task.shard_units(model), mesh)
        return model, WHOLE
    with torch.device("meta"):
        model = task.build_model()
    if mesh is not None:
        model = sharding.shard(model, task.shard_units(model), mesh)
    materialize(model, seed, device, owner=type(task).__name__)
    return model, META


@torch.no_grad()
def materialize(model: nn.Module, seed: int, device: torch.device, owner: str = "") -> None:
    """Allocate ``model``'s (meta) tensors on ``device``, this rank's slices only when they are
    sharded, and initialise them one module at a time, in ``named_modules`` order. A tied
    tensor is initialised once, by the first module that holds it."""
    ties = _ties(model)
    model.to_empty(device=device)  # allocates a tied tensor once per module that holds it
    for module, key, first, first_key in ties:
        module._parameters[key] = first._parameters[first_key]
    init_weights = getattr(model, "init_weights", None)
    done: set[int] = set()
    for name, module in model.named_modules():
        own = {
            k: t
            for k, t in [*module._parameters.items(), *module._buffers.items()]
            if t is not None
        }
        if all(id(t) in done for t in own.values()):
            continue  # nothing of its own, or only tied tensors already initialised
        full = _initialised_copy(name, module, own, seed, init_weights, owner)
        for key, target in own.items():
            if id(target) not in done:
                _copy_local(full[key], target, f"{name}.{key}" if name else key)
                done.add(id(target))
        del full  # the module's whole tensors go before the next module's are drawn


def _ties(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(module, key, first module, its key) for each parameter that an earlier module holds
    too (a tied embedding and head)."""
    first: dict[int, tuple[nn.Module, str]] = {}
    ties = []
    for module in model.modules():
        for key, p in module._parameters.items():
            if p is None:
                continue
            if id(p) in first:
                ties.append((module, key, *first[id(p)]))
            else:
                first[id(p)] = (module, key)
    return ties


def _initialised_copy(
    name: str,
    module: nn.Module,
    own: dict[str, torch.Tensor],
    seed: int,
    init_weights: Callable | None,
    owner: str,
) -> dict[str, torch.Tensor]:
    """Whole CPU tensors for ``module``'s own parameters and buffers, initialised by its
    ``reset_parameters`` and the model's ``init_weights`` with the RNG seeded by
    (seed, name); the module's own (sharded) tensors are swapped out meanwhile."""
    reset = getattr(module, "reset_parameters", None)
    if reset is None:
        raise TypeError(
            f"module '{name}' ({type(module).__name__}) holds {sorted(own)} but has no "
            f"reset_parameters(): meta-device construction cannot initialise it; give it "
            f"one, or set builds_on_meta = False on the task {owner}"
        )
    params, buffers = dict(module._parameters), dict(module._buffers)
    try:
        for k, t in own.items():
            whole = torch.empty(t.shape, dtype=t.dtype)  # a DTensor's shape is the global one
            if k in params:
                module._parameters[k] = nn.Parameter(whole, requires_grad=t.requires_grad)
            else:
                module._buffers[k] = whole
        with torch.random.fork_rng(devices=[]):  # CPU draws only: the same on any device
            torch.manual_seed(step_generator(seed, "init", name).initial_seed())
            reset()
            if init_weights is not None:
                init_weights(name, module)
        # read back after init: a reset may assign new tensors rather than fill in place
        initialised = {}
        for k in own:
            got = (module._parameters if k in params else module._buffers)[k]
            if got is None:
                raise TypeError(f"module '{name}': its init set '{k}' to None")
            initialised[k] = got.detach()
        return initialised
    finally:
        module._parameters.update(params)
        module._buffers.update(buffers)


def _copy_local(full: torch.Tensor, target: torch.Tensor, name: str) -> None:
    """This rank's part of ``full`` into ``target``: all of it, or FSDP2's dim-0 chunk
    (``torch.chunk(full, P)[rank]``, empty past the last chunk) of a sharded parameter."""
    if not isinstance(target, DTensor):
        target.copy_(full)
        return
    if tuple(target.placements) != (Shard(0),):
        raise NotImplementedError(
            f"{name}: placements {target.placements}; the materialiser "
            f"fills FSDP2's Shard(0) layout only"
        )
    mesh = target.device_mesh
    chunks = torch.chunk(full, mesh.size(), dim=0)
    rank = mesh.get_local_rank()
    piece = chunks[rank] if rank < len(chunks) else full[:0]
    local = target.to_local()
    if piece.shape != local.shape:
        raise RuntimeError(
            f"{name}: rank {rank} of {mesh.size()} holds {tuple(local.shape)} of "
            f"{tuple(full.shape)}; torch.chunk gives {tuple(piece.shape)}"
        )
    local.copy_(piece)
