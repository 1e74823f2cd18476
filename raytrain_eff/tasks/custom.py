"""Bring your own model: ``task: {name: custom, factory: "mypkg.mymod:make_task"}``.

The factory is called with ``options`` as keyword arguments and returns a ``UserTask``::

    def make_task(hidden=64):
        model = lambda: torch.nn.Sequential(...)
        data = (X_train, y_train, X_val, y_val)            # tensors
        return UserTask(model_fn=model, loss_fn=torch.nn.functional.cross_entropy, data=data)

Rows are sharded per worker like the built-in tasks; ``metrics_fn(logits, y)`` may add
evaluation metrics beside ``val_loss``. ``model_fn`` runs whole on every worker after
``torch.manual_seed(run.seed)`` (never on the meta device: it may initialise its model any
way it likes), and under ``scaling.strategy: fsdp`` the model is sharded after that.

Data past one worker's memory: ``data`` may instead be a ``ray.data.Dataset`` (and
``val_data`` another). The driver hands it to Ray Train, each worker reads its split in order
(``data.shard_stream``: sequential positions, and every attempt starts a fresh pass), and
batches are dicts of tensors, one per column, such as a Hugging Face model's ``input_ids``,
``attention_mask`` and ``labels``: the model is called as ``model(**batch)`` and the loss is
``loss_fn(outputs, batch)``, or with no ``loss_fn`` the model's own (``outputs.loss`` or
``outputs["loss"]``). Samples are a batch's rows; tokens are ``attention_mask.sum()``, else
the rows. The factory runs on the driver and on every worker (building a Dataset is lazy).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raytrain_eff.catalog import load_object
from raytrain_eff.data.shard_stream import SequentialShard
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum
from raytrain_eff.typed import ConfigError


@dataclasses.dataclass
class UserTask:
    model_fn: Callable[[], nn.Module]
    # (outputs, targets) -> mean; with a Ray Data dataset (outputs, batch dict), or None for
    # a model that returns its own loss
    loss_fn: Callable[[Any, Any], torch.Tensor] | None
    data: Any  # (X_train, y_train, X_val, y_val) tensors, or a ray.data.Dataset
    metrics_fn: Callable[[torch.Tensor, torch.Tensor], dict] | None = None
    val_data: Any = None  # with a ray.data.Dataset as data: an optional validation one

    @property
    def streams(self) -> bool:
        """True when ``data`` is a Ray Data dataset (duck-typed: tasks never import ray)."""
        return hasattr(self.data, "iter_torch_batches") and hasattr(self.data, "streaming_split")


class CustomTask(Task):
    reads_dataset = False  # the factory brings its own data
    builds_on_meta = False  # a user's model_fn may initialise its model any way it likes

    @classmethod
    def preflight(cls, cfg) -> None:
        _factory(cfg.task.params.factory)

    @classmethod
    def ray_datasets(cls, cfg) -> dict[str, Any]:
        user = _make(cfg.task.params)
        if not user.streams:
            return {}
        return {"train": user.data, **({"val": user.val_data} if user.val_data is not None else {})}

    def load(self) -> None:
        self.user = user = _make(self.params)
        self.stream: SequentialShard | None = None
        self.val_shard: Any = None
        if user.streams:
            if user.metrics_fn is not None:
                raise ConfigError(
                    "UserTask.metrics_fn takes in-memory validation tensors; with "
                    "a Ray Data dataset put metrics in the loss's outputs instead"
                )
            return  # the engine hands the shards over (use_shards); num_train stays 0: unknown
        if user.loss_fn is None or user.val_data is not None:
            raise ConfigError(
                "UserTask with tensors: loss_fn is required and the validation "
                "tensors go in data=(X_train, y_train, X_val, y_val), not val_data"
            )
        Xt, yt, Xv, yv = (torch.as_tensor(t) for t in user.data)
        if len(Xt) != len(yt) or len(Xv) != len(yv) or len(Xt) == 0 or len(Xv) == 0:
            raise ConfigError(
                "UserTask.data: expected non-empty (X_train, y_train, X_val, y_val) "
                "with matching lengths"
            )
        self.Xt, self.yt, self.Xv, self.yv = Xt, yt, Xv, yv
        self.num_train = len(Xt)

    def use_shards(self, shards):
        self.stream = SequentialShard(
            shards["train"], f"task.factory '{self.params.factory}''s Ray Data dataset"
        )
        self.val_shard = shards.get("val")

    def build_model(self):
        return self.user.model_fn()

    def loss(self, model, batch):
        if isinstance(batch, dict):
            out = model(**batch)
            if self.user.loss_fn is not None:
                return self.user.loss_fn(out, batch)
            return out["loss"] if isinstance(out, dict) else out.loss
        return self.user.loss_fn(model(batch[0]), batch[1])

    def batch_at(self, position, rank, world, batch_size):
        if self.user.streams:
            if self.stream is None:
                raise RuntimeError("a Ray Data task's shard was never handed over (use_shards)")
            return self.stream.at(position, batch_size)  # this worker's split: rank is implied
        idx = epoch_batch_indices(
            self.num_train,
            self.seed,
            position=position,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )
        return self.Xt[idx], self.yt[idx]

    def val_batches(self, batch_size, num_batches):
        if self.user.streams:
            if self.val_shard is not None:
                yield from itertools.islice(
                    self.val_shard.iter_torch_batches(batch_size=batch_size, device="cpu"),
                    num_batches or None,
                )
            return
        for start in range(0, len(self.yv), batch_size):
            yield self.Xv[start : start + batch_size], self.yv[start : start + batch_size]

    def counts(self, batch):
        if not isinstance(batch, dict):
            return super().counts(batch)
        rows = len(next(t for t in batch.values() if isinstance(t, torch.Tensor)))
        mask = batch.get("attention_mask")
        return rows, (int(mask.sum()) if mask is not None else rows)

    def shard_iterator(self, rank, world, batch_size):
        if self.user.streams:
            return super().shard_iterator(rank, world, batch_size)  # no full passes on demand
        return self._rows_in_order(rank, world, batch_size)

    def _rows_in_order(self, rank, world, batch_size):
        rows = shard_rows(self.num_train, rank, world)
        for start in range(rows.start, rows.stop, batch_size):
            stop = min(start + batch_size, rows.stop)
            yield self.Xt[start:stop], self.yt[start:stop]

    @torch.no_grad()
    def evaluate(self, model, batch_size, num_batches):
        if self.user.streams and self.val_shard is None:
            return {}  # no validation data was given
        out = super().evaluate(model, batch_size, num_batches)
        if self.user.metrics_fn is not None:
            was = model.training
            model.eval()
            out.update(self.user.metrics_fn(model(self.Xv), self.yv))
            model.train(was)
        return out

    def checksum(self):
        if self.user.streams:
            return ""  # a streamed dataset is not read whole
        return tensor_checksum(*(t.float() for t in (self.Xt, self.yt, self.Xv, self.yv)))


def _make(params) -> UserTask:
    user = _factory(params.factory)(**(params.options or {}))
    if not isinstance(user, UserTask):
        raise TypeError(
            f"task.factory '{params.factory}' returned {type(user).__name__}; "
            f"expected raytrain_eff.tasks.custom.UserTask"
        )
    return user


def _factory(path: str):
    try:
        return load_object(path)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"task.factory '{path}' cannot be imported: {err}") from None
