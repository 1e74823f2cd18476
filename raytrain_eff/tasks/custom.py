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
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from raytrain_eff.catalog import load_object
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum
from raytrain_eff.typed import ConfigError


@dataclasses.dataclass
class UserTask:
    model_fn: Callable[[], nn.Module]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, targets) -> mean
    data: tuple  # (X_train, y_train, X_val, y_val)
    metrics_fn: Callable[[torch.Tensor, torch.Tensor], dict] | None = None


class CustomTask(Task):
    reads_dataset = False  # the factory brings its own data
    builds_on_meta = False  # a user's model_fn may initialise its model any way it likes

    @classmethod
    def preflight(cls, cfg) -> None:
        _factory(cfg.task.params.factory)

    def load(self) -> None:
        user = _factory(self.params.factory)(**self.params.options)
        if not isinstance(user, UserTask):
            raise TypeError(f"task.factory '{self.params.factory}' returned "
                            f"{type(user).__name__}; expected raytrain_eff.tasks.custom.UserTask")
        self.user = user
        Xt, yt, Xv, yv = (torch.as_tensor(t) for t in user.data)
        if len(Xt) != len(yt) or len(Xv) != len(yv) or len(Xt) == 0 or len(Xv) == 0:
            raise ConfigError("UserTask.data: expected non-empty (X_train, y_train, X_val, y_val) "
                              "with matching lengths")
        self.Xt, self.yt, self.Xv, self.yv = Xt, yt, Xv, yv
        self.num_train = len(Xt)

    def build_model(self):
        return self.user.model_fn()

    def loss(self, model, batch):
        return self.user.loss_fn(model(batch[0]), batch[1])

    def batch_at(self, position, rank, world, batch_size):
        idx = epoch_batch_indices(self.num_train, self.seed, position=position, rank=rank,
                                  world=world, batch_size=batch_size)
        return self.Xt[idx], self.yt[idx]

    def val_batches(self, batch_size, num_batches):
        for start in range(0, len(self.yv), batch_size):
            yield self.Xv[start:start + batch_size], self.yv[start:start + batch_size]

    def shard_iterator(self, rank, world, batch_size):
        rows = shard_rows(self.num_train, rank, world)
        for start in range(rows.start, rows.stop, batch_size):
            stop = min(start + batch_size, rows.stop)
            yield self.Xt[start:stop], self.yt[start:stop]

    @torch.no_grad()
    def evaluate(self, model, batch_size, num_batches):
        out = super().evaluate(model, batch_size, num_batches)
        if self.user.metrics_fn is not None:
            was = model.training
            model.eval()
            out.update(self.user.metrics_fn(model(self.Xv), self.yv))
            model.train(was)
        return out

    def checksum(self):
        return tensor_checksum(*(t.float() for t in (self.Xt, self.yt, self.Xv, self.yv)))


def _factory(path: str):
    try:
        return load_object(path)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"task.factory '{path}' cannot be imported: {err}") from None
