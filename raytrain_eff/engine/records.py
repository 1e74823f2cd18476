"""The run's own records beside Ray's checkpoints: per-step ``metrics.parquet`` and
``summary.json``.

Train V2 keeps only metrics attached to checkpoints, so rank 0 keeps the full per-step table
itself. After a restart from a checkpoint at step s, rows for steps >= s are dropped (they
will be recomputed) and new rows carry the next ``attempt`` number: exactly one row per step.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.table imports it at first use: here, not in a run
import pyarrow.parquet as pq
import torch

from raytrain_eff.engine import storage
from raytrain_eff.monitor import keys as K

TABLE = "metrics.parquet"
SUMMARY = "summary.json"


@dataclasses.dataclass
class StepStats:
    """One optimizer step, as DESIGN.md's data flow names it; ``row()`` is what the sinks
    (the table, the exporter, Ray's report) receive, under the ``monitor.keys`` vocabulary.
    Amounts (samples, tokens, FLOPs) are the step's totals over ranks; ``rank_share`` is this
    rank's part of them, which the exporter sums over ranks. ``loss`` stays on the device: the
    row's loss (its mean over ranks) is filled in at the next report (``engine.pending``)."""

    step: int
    wall_s: float  # since the attempt started
    loss: torch.Tensor  # this rank's mean over micro-batches, 0-d, on the device
    lr: float
    world_size: int
    samples: float
    tokens: float
    step_time_s: float
    dense_flops: float
    effective_flops: float
    rss_bytes: int
    peak_memory_bytes: int
    memory: dict[str, int]  # this rank's parameter/gradient/optimizer bytes, GPU memory
    method_stats: dict[str, float]
    rank_share: dict[str, float]

    def row(self) -> dict:
        return {
            K.STEP: self.step,
            K.WALL: self.wall_s,
            K.LOSS: None,
            K.LR: self.lr,
            K.WORLD_SIZE: self.world_size,
            K.SAMPLES: self.samples,
            K.TOKENS: self.tokens,
            K.STEP_TIME: self.step_time_s,
            K.DENSE_FLOPS: self.dense_flops,
            K.EFFECTIVE_FLOPS: self.effective_flops,
            K.RSS: self.rss_bytes,
            K.PEAK_MEMORY: self.peak_memory_bytes,
            **self.memory,
            **self.method_stats,
        }


class MetricsTable:
    def __init__(self, run_dir: str, resume_step: int):
        self.uri = storage.join(run_dir, TABLE)
        self.rows: list[dict] = []
        self.attempt = 0
        old = storage.read_bytes(self.uri)
        if old is not None:
            previous = pq.read_table(io.BytesIO(old)).to_pylist()
            self.attempt = 1 + max((r.get("attempt", 0) for r in previous), default=-1)
            self.rows = [r for r in previous if r["step"] < resume_step]

    def append(self, row: dict) -> None:
        self.rows.append({"attempt": self.attempt, **row})

    def flush(self) -> None:
        if not self.rows:
            return
        columns = sorted({k for r in self.rows for k in r}, key=_column_order)
        data = {c: [_clean(r.get(c)) for r in self.rows] for c in columns}
        buf = io.BytesIO()
        pq.write_table(pa.table(data), buf)
        storage.write_bytes(self.uri, buf.getvalue())


FIRST_COLUMNS = [
    "step",
    "attempt",
    "world_size",
    "wall_s",
    "loss",
    "val_loss",
    "lr",
    "samples",
    "tokens",
    "step_time_s",
    "data_wait_s",
    "dense_flops",
    "effective_flops",
    "rss_bytes",
    "peak_memory_bytes",
]


def _column_order(name: str):
    if name in FIRST_COLUMNS:
        return FIRST_COLUMNS.index(name), name
    return len(FIRST_COLUMNS), name


def _clean(value):
    if value is None:
        return None
    if isinstance(value, (bool, int, str)):
        return value
    value = float(value)
    return None if math.isnan(value) else value


def write_summary(run_dir: str, summary: dict) -> None:
    storage.write_bytes(
        storage.join(run_dir, SUMMARY), json.dumps(summary, indent=2, default=str).encode()
    )


def read_summary(run_dir: str) -> dict | None:
    data = storage.read_bytes(storage.join(run_dir, SUMMARY))
    return None if data is None else json.loads(data)


def read_table(run_dir: str) -> pa.Table | None:
    data = storage.read_bytes(storage.join(run_dir, TABLE))
    return None if data is None else pq.read_table(io.BytesIO(data))
