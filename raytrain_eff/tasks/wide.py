"""The `wide` task: the two-layer shifted-ReLU net of arXiv 2208.04508 on unit-norm inputs.

f(x) = (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0), b = √(0.4·ln m) unless set. Two data sets:

* ``synthetic`` — the paper's regression: x uniform on the unit sphere of R^d,
  y = sin(√d·⟨β, x⟩) for a fixed unit β (a smooth target of unit scale);
* ``digits`` — scikit-learn's 8×8 digits (1797 images, 10 classes), pixels centred on the
  training mean and scaled to unit norm; MSE on one-hot targets (or cross-entropy).

A batch is ``(x, y, rows)``: ``rows`` are the positions of x among ``index_inputs()``, the
inputs an exact active-neuron index keeps one max-tree for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff.blocks.shifted_relu import ShiftedReLU
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum


class WideNet(nn.Module):
    def __init__(self, d: int, m: int, k: int, b, seed: int):
        super().__init__()
        self.hidden = ShiftedReLU(d, m, k, b, seed)

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        return self.hidden(x, rows)


def unit_rows(X: torch.Tensor) -> torch.Tensor:
    return X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)


class WideTask(Task):
    reads_dataset = False  # task.dataset picks synthetic data or the bundled digits
    builds_on_meta = False  # ShiftedReLU draws its weights from its own generator

    def load(self) -> None:
        p = self.params
        if p.dataset == "synthetic":
            gen = torch.Generator().manual_seed(self.seed)
            X = unit_rows(torch.randn(p.num_train + p.num_val, p.dim, generator=gen))
            beta = unit_rows(torch.randn(1, p.dim, generator=gen))[0]
            Y = torch.sin(p.dim**0.5 * X @ beta)[:, None]
            n = p.num_train
        else:
            X, Y, n = self._digits()
        self.X_train, self.Y_train = X[:n], Y[:n]
        self.X_val, self.Y_val = X[n:], Y[n:]
        self.num_train = n

    def _digits(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        from sklearn.datasets import load_digits

        raw = load_digits()
        perm = torch.randperm(len(raw.target), generator=torch.Generator().manual_seed(self.seed))
        X = torch.tensor(raw.data, dtype=torch.float32)[perm]
        labels = torch.tensor(raw.target)[perm]
        n = int(round(len(X) * (1 - self.data.val_fraction)))
        X = unit_rows(X - X[:n].mean(0))  # centred on the training rows only
        return X, labels, n

    @property
    def num_outputs(self) -> int:
        return 1 if self.params.dataset == "synthetic" else 10

    def build_model(self) -> nn.Module:
        p = self.params
        return WideNet(self.X_train.shape[1], p.width, self.num_outputs, p.shift, self.seed)

    def index_inputs(self) -> torch.Tensor:
        """The inputs ``rows`` refer to: an exact index keeps one max-tree per row."""
        return self.X_train

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        x, y, rows = batch
        f = model(x, rows)  # (B, k)
        if self.params.loss == "ce":
            return F.cross_entropy(f, y)
        target = y if y.dtype.is_floating_point else F.one_hot(y, f.shape[1]).to(f)
        return 0.5 * ((f - target) ** 2).sum(1).mean()  # ℓ = mean ½‖f − y‖²

    @property
    def replicated_batches(self) -> bool:
        return self.params.shard_width

    def forward_needs_every_rank(self, model: nn.Module) -> bool:
        # width shards: each rank holds some neurons and the output sums over ranks
        return self.params.shard_width or super().forward_needs_every_rank(model)

    def batch_at(self, position: int, rank: int, world: int, batch_size: int) -> Any:
        if self.params.shard_width:  # width shards need the same batch
            rank, world = 0, 1
        rows = epoch_batch_indices(
            self.num_train,
            self.seed,
            position=position,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )
        return self.X_train[rows], self.Y_train[rows], rows

    def val_batches(self, batch_size: int, num_batches: int) -> Iterator[Any]:
        for start in range(0, min(len(self.X_val), batch_size * num_batches), batch_size):
            sl = slice(start, start + batch_size)
            yield self.X_val[sl], self.Y_val[sl], None

    def shard_iterator(self, rank: int, world: int, batch_size: int) -> Iterator[Any]:
        span = shard_rows(self.num_train, rank, world)
        rows = torch.arange(span.start, span.stop)
        for chunk in rows.split(batch_size):
            yield self.X_train[chunk], self.Y_train[chunk], chunk

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int, num_batches: int) -> dict[str, float]:
        out = super().evaluate(model, batch_size, num_batches)
        if self.params.dataset == "digits":
            was_training, hits, n = model.training, 0, 0
            model.eval()
            for x, y, _ in self.val_batches(batch_size, num_batches):
                hits += int((model(x).argmax(1) == y).sum())
                n += len(y)
            model.train(was_training)
            out["val_accuracy"] = hits / max(n, 1)
        return out

    def checksum(self) -> str:
        return tensor_checksum(self.X_train, self.Y_train.to(torch.float32))
