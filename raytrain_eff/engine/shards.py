"""Model and optimizer state as ``torch.distributed.checkpoint`` (DCP) shards.

One on-disk format for every strategy: each rank writes the tensors it holds (under ``fsdp`` its
FSDP shards, under ``ddp`` its share of the replicated tensors, DCP's planner deduplicating
them), and a load reshards to whatever the reader holds: any world size, either strategy, or a
plain model in one process. So no rank ever gathers the whole model to save or load it, and a
checkpoint written under ``fsdp`` on 4 workers resumes under ``ddp`` on 1. Two formats (full
state under ``ddp``, shards under ``fsdp``) would need a converter for every pair.

``.metadata`` (the coordinator's) and ``__<rank>_<i>.distcp`` (every rank's data) sit in one
directory; under Ray each rank writes into its own local directory and Ray Train uploads them
all into the checkpoint's directory. Keys are parameter names (``get_state_dict``), never
integer ids, so the optimizer's state follows its parameters across layouts.

Loading runs no pickled code: DCP unpickles ``.metadata`` and ``torch.load``s non-tensor values
without ``weights_only``; here the metadata goes through an unpickler that admits only DCP's
own metadata classes, and values through ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import pathlib
import pickle
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import AsyncSaveResponse

from raytrain_eff.blocks.flat_shards import quiet
from raytrain_eff.methods.base import sharded_state, world_size_independent_state

MODEL, OPTIMIZER = "model", "optimizer"


def optimizer_in_shards(optimizer: torch.optim.Optimizer) -> bool:
    """True for torch's optimizers (and subclasses), whose per-parameter state DCP keys by name,
    and for a method's optimizer that offers its state in shards (``sharded_state``: FOSI/DHO2's
    flat vectors). Another layout of its own (the VR solvers, sublinear's neuron updates) is
    saved whole by rank 0 instead (``optimizer.pt``)."""
    if sharded_state(optimizer):
        return True
    return _torch_layout(optimizer) and not world_size_independent_state(optimizer)


def _torch_layout(optimizer: torch.optim.Optimizer) -> bool:
    """One of torch's optimizers or a subclass of one (the baselines' ``DecoupledSGD``): state
    per parameter. Saved whole instead, a subclass's state would be rank 0's slices alone
    under fsdp, and every rank would resume with rank 0's momentum."""
    return any(
        c.__module__.startswith("torch.optim") and c is not torch.optim.Optimizer
        for c in type(optimizer).__mro__
    )


def _optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    if sharded_state(optimizer):
        return optimizer.sharded_state_dict()  # type: ignore[attr-defined]
    return get_optimizer_state_dict(model, optimizer)


def _distributed(group) -> bool:
    return dist.is_available() and dist.is_initialized()


def save(
    directory: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, group=None
) -> list[str]:
    """Every rank writes its shards into ``directory`` (a collective when distributed);
    returns the names of the files this rank wrote. ``optimizer=None``: the model alone."""
    return begin_save(directory, model, optimizer, group).wait()


@dataclasses.dataclass
class Writing:
    """Shards being written; ``wait`` returns the names of the files this rank wrote once
    they are on disk (DCP's writer syncs every file)."""

    directory: pathlib.Path
    before: set[str]
    future: Future | None = None  # an asynchronous save's; None once done

    def wait(self) -> list[str]:
        if self.future is not None:
            future, self.future = self.future, None
            future.result()  # raises what the background save raised
        return sorted(_files(self.directory) - self.before)


class CachedPlanner(DefaultSavePlanner):
    """DCP's planner with its plan cache on: a save whose layout is the previous one's sends
    empty plans and reuses the global plan, so a run's repeated saves skip most of DCP's
    planning (pickled plans gathered to the coordinator and scattered back). DCP keys the cache
    by class name, process-wide; ``key`` makes it one writer's (a run's manager and its
    group), so two runs or groups in one process never read each other's plans."""

    def __init__(self, key: str):
        super().__init__(enable_plan_caching=True)
        self._cached_plans_key = key  # DCP's own attribute: the key of its class-level caches


def begin_save(
    directory: pathlib.Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    group=None,
    background: bool = False,
    plan_key: str | None = None,
) -> Writing:
    """``save``, or with ``background`` a save that copies the state now and writes it in a
    background thread; its ``group`` must then be a CPU process group of its own (the
    writer's collectives must not interleave with training's). ``plan_key``: reuse DCP's plan
    across the saves that pass the same key (``CachedPlanner``)."""
    state: dict[str, Any] = {MODEL: get_model_state_dict(model)}
    if optimizer is not None:
        state[OPTIMIZER] = _optimizer_state(model, optimizer)
    writing = Writing(directory, _files(directory))
    writer = dcp.FileSystemWriter(str(directory))
    save = dcp.async_save if background else dcp.save
    with _one_process_is_intended():
        done = save(
            state,
            storage_writer=writer,
            planner=CachedPlanner(plan_key) if plan_key else None,
            process_group=group,
            no_dist=not _distributed(group),
        )
    if background:  # a Future, or (with a stager that works in the background) a response
        writing.future = done.upload_completion if isinstance(done, AsyncSaveResponse) else done
    return writing


def load(
    directory: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, group=None
) -> None:
    """Every rank reads what it holds of the shards in ``directory`` into ``model`` (and
    ``optimizer``), in place: the layout it was saved in does not matter."""
    own = optimizer is not None and sharded_state(optimizer)
    state: dict[str, Any] = {MODEL: get_model_state_dict(model)}
    if optimizer is not None and not own:
        # a fresh optimizer has no state to load into: torch builds it (a step at lr 0)
        state[OPTIMIZER] = get_optimizer_state_dict(model, optimizer)
    _read(directory, state, group)
    set_model_state_dict(model, state[MODEL])
    if own:  # it reads its own template(s): sizes first, then its slices
        optimizer.load_sharded_state_dict(  # type: ignore[union-attr]
            lambda template: _read(directory, {OPTIMIZER: template}, group)[OPTIMIZER]
        )
    elif optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state[OPTIMIZER])


def _read(directory: pathlib.Path, state: dict[str, Any], group) -> dict[str, Any]:
    """``state`` filled in place from the shards in ``directory`` (a collective)."""
    with _one_process_is_intended():
        dcp.load(
            state,
            storage_reader=SafeReader(str(directory)),
            planner=_WeightsOnlyPlanner(),
            process_group=group,
            no_dist=not _distributed(group),
        )
    return state


def load_model(directory: pathlib.Path, model: nn.Module) -> None:
    """The model's weights in one process (evaluation, export, sampling): read straight into
    the model's own tensors, so no second copy of the model is ever held."""
    load(directory, model, None)


@contextlib.contextmanager
def _one_process_is_intended() -> Iterator[None]:
    """DCP warns on every save or load without a process group; local mode and the finished-run
    commands mean exactly that."""
    with warnings.catch_warnings(), quiet():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _files(directory: pathlib.Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.is_file()} if directory.is_dir() else set()


# -- loading without running pickled code ------------------------------------------------------
_METADATA_MODULES = (
    "torch.distributed.checkpoint.metadata",
    "torch.distributed.checkpoint.filesystem",
)
_METADATA_NAMES = {
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("collections", "OrderedDict"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """Admits DCP's metadata classes, torch's dtypes and sizes, and nothing else."""

    def find_class(self, module: str, name: str):
        allowed = (
            module in _METADATA_MODULES
            or (module, name) in _METADATA_NAMES
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        )
        if not allowed:
            raise pickle.UnpicklingError(
                f"checkpoint metadata names {module}.{name}, which is "
                "not a torch.distributed.checkpoint metadata type"
            )
        return super().find_class(module, name)


class SafeReader(dcp.FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = os.path.join(str(self.path), ".metadata")
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"{path} holds no checkpoint metadata")
        storage_meta = metadata.storage_meta or StorageMeta()
        storage_meta.load_id = self.load_id  # as FileSystemReader.read_metadata does
        metadata.storage_meta = storage_meta
        return metadata


class _WeightsOnlyPlanner(DefaultLoadPlanner):
    """Non-tensor values (an optimizer's hyper-parameters, step counts) through
    ``torch.load(weights_only=True)``."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        super().load_bytes(read_item, _saved(loaded))


def _saved(obj: Any) -> io.BytesIO:
    """``obj`` as the bytes ``DefaultLoadPlanner.load_bytes`` reads back."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer
