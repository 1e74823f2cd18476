"""Classification on real bundled images (scikit-learn digits) or the user's Parquet features."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff.data.tabular import BUILTIN_TABULAR, load_features
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum


def mlp(in_dim: int, hidden: int, depth: int, classes: int) -> nn.Module:
    layers, width = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    body = nn.Sequential(nn.Flatten(), *layers)
    return Classifier(body, nn.Linear(width, classes))


def cnn(shape: tuple, hidden: int, depth: int, classes: int) -> nn.Module:
    layers, ch = [], shape[0]
    for i in range(depth):
        layers += [nn.Conv2d(ch, hidden * 2 ** i, 3, padding=1), nn.ReLU()]
        ch = hidden * 2 ** i
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return Classifier(body, nn.Linear(ch * 4, classes))


class Classifier(nn.Module):
    """``body`` then a linear ``head``: methods that compress or sparsify the head find it here."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        return self.head(self.body(x))


class ClassifyTask(Task):
    builtin_datasets = BUILTIN_TABULAR
    label_kind = "integer"

    def load(self) -> None:
        X, y, self.shape = load_features(self.data.dataset, self.data.label_column,
                                         self.data.feature_columns)
        split = int(len(y) * (1 - self.data.val_fraction))
        if split == 0 or split == len(y):
            raise ValueError(f"data.dataset {self.data.dataset}: {len(y)} rows cannot be split "
                             f"with val_fraction={self.data.val_fraction}")
        if self.params.model == "cnn":
            if not self.shape:
                raise ValueError("task.model: cnn needs image data (dataset: digits); "
                                 "use model: mlp for Parquet features")
            X = X.reshape(len(X), *self.shape)
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.num_train = split
        self.classes = int(y.max()) + 1

    def build_model(self) -> nn.Module:
        p = self.params
        if p.model == "cnn":
            return cnn(self.shape, p.hidden, p.depth, self.classes)
        return mlp(int(np.prod(self.X.shape[1:])), p.hidden, p.depth, self.classes)

    def shard_units(self, model):
        """Each hidden layer (linear or conv stage) of the body; the head stays at the root."""
        return [m for m in model.body if isinstance(m, (nn.Linear, nn.Conv2d))]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def batch_at(self, position, rank, world, batch_size):
        idx = epoch_batch_indices(self.num_train, self.seed, position=position, rank=rank,
                                  world=world, batch_size=batch_size)
        return self.X[idx], self.y[idx]

    def val_batches(self, batch_size, num_batches):
        # the whole held-out split, however many batches that takes
        for start in range(self.num_train, len(self.y), batch_size):
            end = min(start + batch_size, len(self.y))
            yield self.X[start:end], self.y[start:end]

    def shard_iterator(self, rank, world, batch_size):
        rows = shard_rows(self.num_train, rank, world)
        for start in range(rows.start, rows.stop, batch_size):
            end = min(start + batch_size, rows.stop)
            yield self.X[start:end], self.y[start:end]

    @torch.no_grad()
    def evaluate(self, model, batch_size, num_batches):
        was = model.training
        model.eval()
        loss, correct, n = 0.0, 0, 0
        for x, y in self.val_batches(batch_size, num_batches):
            logits = model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        model.train(was)
        return {"val_loss": loss / n, "val_accuracy": correct / n}

    def checksum(self) -> str:
        return tensor_checksum(self.X, self.y)
