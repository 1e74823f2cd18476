"""Classification on real bundled images (scikit-learn digits) or the user's Parquet features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raytrain_eff.data import validate
from raytrain_eff.data.tabular import (
    BUILTIN_TABULAR,
    StreamedFeatures,
    load_features,
    streamed_features,
)
from raytrain_eff.tasks.base import Task, epoch_batch_indices, shard_rows, tensor_checksum
from raytrain_eff.typed import ConfigError


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
        layers += [nn.Conv2d(ch, hidden * 2**i, 3, padding=1), nn.ReLU()]
        ch = hidden * 2**i
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten())
    return Classifier(body, nn.Linear(ch * 4, classes))


class Classifier(nn.Module):
    """``body`` then a linear ``head``: methods that compress or sparsify the head find it here."""

    def __init__(self, body: nn.Module, head: nn.Module):
        super().__init__()
        self.body, self.head = body, head

    def forward(self, x):
        return self.head(self.body(x))


class InMemoryFeatures:
    """A bundled set (digits) held as tensors, behind ``StreamedFeatures``' interface: the last
    ``val_fraction`` of a fixed shuffle is held out (its last ``test_fraction`` as a test
    split); epochs permute each rank's shard."""

    def __init__(self, dataset: str, val_fraction: float, seed: int, test_fraction: float = 0.0):
        X, y, self.shape = load_features(dataset)
        split = int(len(y) * (1 - val_fraction))
        if split == 0 or split == len(y):
            raise ValueError(
                f"data.dataset {dataset}: {len(y)} rows cannot be split "
                f"with val_fraction={val_fraction}"
            )
        self.X, self.y = torch.from_numpy(X.reshape(len(X), *self.shape)), torch.from_numpy(y)
        self.seed, self.num_train, self.classes = seed, split, int(y.max()) + 1
        self.num_test = int((len(y) - split) * test_fraction)
        self.num_val = len(y) - split - self.num_test
        if test_fraction and not (self.num_val and self.num_test):
            raise ValueError(
                f"data.dataset {dataset}: {len(y) - split} held-out rows cannot be split "
                f"with test_fraction={test_fraction}"
            )

    def batch(self, position: int, rank: int, world: int, batch_size: int):
        idx = epoch_batch_indices(
            self.num_train,
            self.seed,
            position=position,
            rank=rank,
            world=world,
            batch_size=batch_size,
        )
        return self.X[idx], self.y[idx]

    def in_order(self, which: str, span: range, batch_size: int):
        first = {"train": 0, "val": self.num_train, "test": self.num_train + self.num_val}[which]
        for start in range(span.start, span.stop, batch_size):
            rows = slice(first + start, first + min(start + batch_size, span.stop))
            yield self.X[rows], self.y[rows]

    def checksum(self) -> str:
        return tensor_checksum(self.X, self.y)


class ClassifyTask(Task):
    """Classes from features: digits in memory, or Parquet features streamed a few row groups
    at a time (``data.tabular.StreamedFeatures``), scored on ``data.val_dataset`` or the last
    ``val_fraction`` of the rows."""

    builtin_datasets = BUILTIN_TABULAR
    label_kind = "integer"
    streams_parquet = True
    offers_test_split = True  # bundled data only (load refuses Parquet features)

    @classmethod
    def check_rows(cls, cfg) -> None:
        """Footers, label statistics and a bounded sample: no scan (``validate``)."""
        d = cfg.data
        classes = validate.check_classes(d.dataset, d.label_column, d.feature_columns)
        if d.val_dataset is not None:
            validate.check_held_out_classes(
                d.val_dataset, d.label_column, d.feature_columns, classes
            )

    def load(self) -> None:
        d = self.data
        self.rows: InMemoryFeatures | StreamedFeatures
        if d.dataset in BUILTIN_TABULAR:
            if d.val_dataset is not None:
                raise ConfigError(
                    f"data.val_dataset: {d.val_dataset}: set for the bundled "
                    f"{d.dataset}, which holds out data.val_fraction instead"
                )
            self.rows = InMemoryFeatures(d.dataset, d.val_fraction, self.seed, d.test_fraction)
            self.shape = self.rows.shape
        else:
            if self.params.model == "cnn":
                raise ValueError(
                    "task.model: cnn needs image data (dataset: digits); "
                    "use model: mlp for Parquet features"
                )
            if d.test_fraction:
                raise ConfigError(
                    f"data.test_fraction: {d.test_fraction}: Parquet features "
                    f"({d.dataset}) hold out no test split; set it to 0"
                )
            self.rows = streamed_features(d, self.seed)
            self.shape = (len(self.rows.features),)
        self.num_train, self.classes = self.rows.num_train, self.rows.classes

    def build_model(self) -> nn.Module:
        p = self.params
        if p.model == "cnn":
            return cnn(self.shape, p.hidden, p.depth, self.classes)
        return mlp(int(np.prod(self.shape)), p.hidden, p.depth, self.classes)

    def shard_units(self, model):
        """Each hidden layer (linear or conv stage) of the body; the head stays at the root."""
        return [m for m in model.body if isinstance(m, (nn.Linear, nn.Conv2d))]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y)

    def batch_at(self, position, rank, world, batch_size):
        return self.rows.batch(position, rank, world, batch_size)

    def val_batches(self, batch_size, num_batches):
        # the whole held-out split, however many batches that takes
        return self.rows.in_order("val", range(self.rows.num_val), batch_size)

    def shard_iterator(self, rank, world, batch_size):
        return self.rows.in_order("train", shard_rows(self.num_train, rank, world), batch_size)

    def test_batches(self, batch_size, num_batches):
        if not isinstance(self.rows, InMemoryFeatures) or not self.rows.num_test:
            return super().test_batches(batch_size, num_batches)
        return self.rows.in_order("test", range(self.rows.num_test), batch_size)

    @torch.no_grad()
    def score(self, model, batches, split):
        was = model.training
        model.eval()
        loss, correct, n = 0.0, 0, 0
        for x, y in batches:
            logits = model(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        model.train(was)
        return {f"{split}_loss": loss / n, f"{split}_accuracy": correct / n}

    def checksum(self) -> str:
        return self.rows.checksum()
