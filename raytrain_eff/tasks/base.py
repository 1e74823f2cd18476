"""A workload: model + data + loss + evaluation, with deterministic per-step batches.

A batch is a pure function of (seed, micro-batch position, rank, world size), where the
position of micro-batch ``micro`` of optimizer step ``step`` is ``step * grad_accum + micro``
(``micro_batch_position``): the micro-batches of a run walk through each epoch's permutation
one after the other, so gradient accumulation never repeats or skips rows. A resumed run sees
exactly the batches it would have seen, and no data-loader state needs checkpointing.
Tasks never import ray.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils import _pytree as pytree

from raytrain_eff.data import validate
from raytrain_eff.data.seeds import step_generator  # tasks import it from here too
from raytrain_eff.ranks import shard_rows  # tasks import it from here too
from raytrain_eff.typed import ConfigError


class Task:
    """Subclasses set ``num_train`` in ``load`` and implement the hooks below."""

    # False when the task generates its own data and data.dataset is only a label
    reads_dataset: ClassVar[bool] = True
    # data.dataset names that are bundled with the package rather than Parquet paths
    builtin_datasets: ClassVar[tuple[str, ...]] = ()
    # a table task's label column: 'integer' class indices 0..K-1 or any finite 'numeric'
    label_kind: ClassVar[str | None] = None
    # build_model() may run on the meta device: its tensors are parameters and buffers only,
    # and each module holding some has reset_parameters() that fills just its own (the root
    # may add init_weights(name, module)); each rank then materialises only its own slices
    # (engine.materialize). False: built whole on every rank after torch.manual_seed(seed).
    builds_on_meta: ClassVar[bool] = True
    # True when the task streams Parquet row groups (data.plan) and so takes data.val_dataset
    streams_parquet: ClassVar[bool] = False
    # True when the task can hold out a test split of bundled data (data.test_fraction)
    offers_test_split: ClassVar[bool] = False

    def __init__(self, params: Any, data: Any, seed: int = 0, *, grad_accum: int = 1):
        self.params = params  # the task's hyper-parameter dataclass
        self.data = data  # config.DataConfig
        self.seed = seed
        self.grad_accum = grad_accum  # train.grad_accum: micro-batches per optimizer step
        self.num_train = 0  # training rows (all ranks)
        self._data_wait = 0.0  # seconds spent building training batches since last asked

    @property
    def replicated_batches(self) -> bool:
        """True when every rank trains on the same batch (width-sharded models): a step then
        sees one batch's samples, not one per rank."""
        return False

    # -- driver-side checks (class methods: no data is loaded) ---------------------------------
    @classmethod
    def required_columns(cls, data: Any) -> dict[str, str]:
        """Columns read from a Parquet ``data.dataset`` -> the kind each must have
        ('string', 'integer' or 'numeric'), checked from the files' footers."""
        if cls.label_kind is None:
            return {}
        return {
            data.label_column: cls.label_kind,
            **dict.fromkeys(data.feature_columns or (), "numeric"),
        }

    @classmethod
    def preflight(cls, cfg: Any) -> None:
        """Checks on the driver before any worker starts; raises ``ConfigError`` (``DataError``)
        naming the key, file, column or value. A table task's data is then scanned: finite
        features, and labels of its ``label_kind`` (class indices 0..K-1 with every class
        present: a stray 1000 is named, never turned into a 1001-way head)."""
        if cfg.data.val_dataset is not None and not cls.streams_parquet:
            raise ConfigError(
                f"data.val_dataset: task {cfg.task.name} holds its data in memory "
                f"and holds out data.val_fraction instead; unset it"
            )
        if cfg.data.test_fraction and not cls.offers_test_split:
            raise ConfigError(
                f"data.test_fraction: {cfg.data.test_fraction}: task {cfg.task.name} "
                f"holds out no test split; set it to 0"
            )
        if not cls.reads_dataset or cfg.data.dataset in cls.builtin_datasets:
            return
        validate.check_footers(cfg.data.dataset, cls.required_columns(cfg.data))
        if cfg.data.val_dataset is not None:
            validate.check_footers(cfg.data.val_dataset, cls.required_columns(cfg.data))
        cls.check_rows(cfg)

    @classmethod
    def check_rows(cls, cfg: Any) -> None:
        """The driver's check of a table task's rows (default: a scan of every row, one record
        batch at a time, for tasks that hold all rows anyway); streaming tasks override it
        with bounded checks."""
        if cls.label_kind is not None:
            validate.check_tabular(
                cfg.data.dataset,
                cfg.data.label_column,
                cfg.data.feature_columns,
                classes=cls.label_kind == "integer",
            )

    @classmethod
    def ray_datasets(cls, cfg: Any) -> dict[str, Any]:
        """Ray Data datasets the driver hands to Ray Train, by name ('train', and 'val' when
        there is one); each worker then gets its shard of each through ``use_shards``.
        Default: none (the task reads its own data)."""
        return {}

    # -- hooks ---------------------------------------------------------------------------------
    def use_shards(self, shards: dict[str, Any]) -> None:
        """This worker's ``ray.data.DataIterator`` for each name of ``ray_datasets`` (called
        after ``load``; 'train' is this worker's split, 'val' the whole dataset)."""
        raise NotImplementedError(f"{type(self).__name__} takes no Ray Data shards")

    def load(self) -> None:
        """Read and split the data (called once per worker, before anything else)."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Mean training loss of ``model`` on ``batch``."""
        raise NotImplementedError

    def batch_at(self, position: int, rank: int, world: int, batch_size: int) -> Any:
        """The training micro-batch at ``position`` in this rank's stream of micro-batches
        (the hook: subclasses see positions only, never steps)."""
        raise NotImplementedError

    # -- the batch stream (not hooks) ----------------------------------------------------------
    def batch_position(self, step: int, micro: int) -> int:
        return micro_batch_position(step, micro, self.grad_accum)

    def train_batch(self, step: int, micro: int, rank: int, world: int, batch_size: int) -> Any:
        """Micro-batch ``micro`` (0 <= micro < grad_accum) of optimizer step ``step``."""
        t0 = time.perf_counter()
        try:
            return self.batch_at(self.batch_position(step, micro), rank, world, batch_size)
        finally:
            self._data_wait += time.perf_counter() - t0

    def data_wait_s(self) -> float:
        """Seconds spent waiting for training batches (reads, decoding, assembly) since the
        last call, which resets it: the runner asks once per step for ``data_wait_s``."""
        waited, self._data_wait = self._data_wait, 0.0
        return waited

    def val_batches(self, batch_size: int, num_batches: int) -> Iterator[Any]:
        raise NotImplementedError

    def test_batches(self, batch_size: int, num_batches: int) -> Iterator[Any]:
        """The test split (``data.test_fraction`` of the held-out rows), which no evaluation
        during training scores: for a final, unselected figure (``evaluate_test``)."""
        raise ConfigError(f"data.test_fraction: {type(self).__name__} holds out no test split")

    # -- defaults ------------------------------------------------------------------------------
    def counts(self, batch: Any) -> tuple[int, int]:
        """(samples, tokens) in a batch; tokens = samples for non-sequence tasks."""
        n = len(batch[0])
        return n, n

    def extra_flops(self, batch: Any) -> float:
        """Forward FLOPs the FLOP counter misses (CPU SDPA attention counts as 0)."""
        return 0.0

    def evaluate(self, model: nn.Module, batch_size: int, num_batches: int) -> dict[str, float]:
        return self.score(model, self.val_batches(batch_size, num_batches), "val")

    def evaluate_test(
        self, model: nn.Module, batch_size: int, num_batches: int
    ) -> dict[str, float]:
        """``evaluate`` on the test split: keys ``test_loss`` (, ``test_accuracy`` ...)."""
        return self.score(model, self.test_batches(batch_size, num_batches), "test")

    @torch.no_grad()
    def score(self, model: nn.Module, batches: Iterator[Any], split: str) -> dict[str, float]:
        """Mean loss over ``batches`` as ``{split}_loss``."""
        was_training = model.training
        model.eval()
        total, n = 0.0, 0
        for batch in batches:
            total += float(self.loss(model, batch)) * self.counts(batch)[0]
            n += self.counts(batch)[0]
        model.train(was_training)
        return {f"{split}_loss": total / max(n, 1)}

    def forward_needs_every_rank(self, model: nn.Module) -> bool:
        """True when ``model``'s forward runs collectives (an FSDP unit gathers its parameters,
        a width-sharded layer sums over ranks): then every rank evaluates, on the same batches,
        or rank 0 would wait alone in a collective that the others never join."""
        from torch.distributed.fsdp import FSDPModule

        return any(isinstance(m, FSDPModule) for m in model.modules())

    def shard_units(self, model: nn.Module) -> list[nn.Module]:
        """The modules that become one FSDP unit each under scaling.strategy=fsdp (gathered
        whole for their forward and backward only); the root takes the rest. Default: none,
        so the whole model is one unit (sharded between steps, gathered for each step)."""
        return []

    def shard_iterator(self, rank: int, world: int, batch_size: int) -> Iterator[Any]:
        """One pass over this rank's training rows in order (variance-reduction snapshots)."""
        raise NotImplementedError(f"{type(self).__name__} has no full-pass iterator")

    def shard_size(self, rank: int, world: int) -> int:
        return len(shard_rows(self.num_train, rank, world))

    def checksum(self) -> str:
        """Identifies the exact data a run saw (for summary.json)."""
        return ""


def take_rows(batch: Any, rows: range) -> Any:
    """The given rows of a batch: every tensor in it is cut along dim 0 (batches are tuples
    or dicts of tensors whose first dimension is the row)."""
    return pytree.tree_map(
        lambda t: t[rows.start : rows.stop] if isinstance(t, torch.Tensor) and t.dim() else t, batch
    )


def micro_batch_position(step: int, micro: int, grad_accum: int) -> int:
    """Where micro-batch ``micro`` of optimizer step ``step`` lies in a rank's stream of
    micro-batches: ``step * grad_accum + micro``. A step is not a position once
    ``grad_accum > 1``: (step s, micro 1) and (step s + 1, micro 0) must differ."""
    if grad_accum < 1 or not 0 <= micro < grad_accum:
        raise ValueError(
            f"micro-batch {micro} of a step with grad_accum={grad_accum}: "
            "need 0 <= micro < grad_accum"
        )
    return step * grad_accum + micro


def epoch_batch_indices(
    num_rows: int, seed: int, *, position: int, rank: int, world: int, batch_size: int
) -> torch.Tensor:
    """Row indices of the micro-batch at ``position`` (``micro_batch_position``, never a bare
    step): each epoch is a fresh permutation of this rank's shard, seeded by (seed, epoch,
    rank, world), cut into ``len(shard) // batch_size`` disjoint micro-batches."""
    rows = shard_rows(num_rows, rank, world)
    if len(rows) == 0:
        raise ValueError(f"rank {rank} of {world} has an empty data shard ({num_rows} rows)")
    if position < 0:
        raise ValueError(f"micro-batch position {position} < 0")
    per_epoch = max(len(rows) // batch_size, 1)
    epoch, within = divmod(position, per_epoch)
    perm = torch.randperm(len(rows), generator=step_generator(seed, epoch, rank, world))
    take = perm[(within * batch_size) % len(rows) :][:batch_size]
    if len(take) < batch_size:
        take = torch.cat([take, perm[: batch_size - len(take)]])
    return take + rows.start


def tensor_checksum(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
