"""Bring your own model and a Ray Data dataset: Parquet text streamed to the workers.

    raytrain-eff train --config examples/my_ray_data_task.yaml \
        'task.options={path: /data/corpus.parquet, seq_len: 64}'

The factory returns a UserTask whose data is a ``ray.data.Dataset``: ``read_parquet`` streams
the rows, ``map_batches`` turns text into a Hugging Face-style batch (``input_ids``,
``attention_mask``, ``labels``) on CPUs the training workers leave free, and the model takes
that batch as keyword arguments and returns its own loss.
"""

import numpy as np
import ray.data
from torch import nn

from raytrain_eff.tasks.custom import UserTask

IGNORE = -100  # a label position the loss skips (padding), as in Hugging Face models


def tokenise(batch: dict, seq_len: int) -> dict:
    """UTF-8 bytes -> ids 1..256 (0 pads); labels are the ids, padding ignored."""
    texts = batch["text"]
    ids = np.zeros((len(texts), seq_len), np.int64)
    for i, text in enumerate(texts):
        raw = np.frombuffer(str(text).encode()[:seq_len], np.uint8)
        ids[i, : len(raw)] = raw.astype(np.int64) + 1
    mask = (ids != 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "labels": np.where(mask == 1, ids, IGNORE)}


class ByteLM(nn.Module):
    """A tiny next-byte model with a Hugging Face-style forward: (B, T) ids -> {'loss'}."""

    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.Embedding(257, dim)
        self.mix = nn.GRU(dim, dim, batch_first=True)
        self.head = nn.Linear(dim, 257)

    def forward(self, input_ids, attention_mask, labels=None):
        h, _ = self.mix(self.embed(input_ids) * attention_mask.unsqueeze(-1))
        logits = self.head(h)  # (B, T, 257)
        out = {"logits": logits}
        if labels is not None:  # position t predicts the byte at t + 1
            out["loss"] = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, 257), labels[:, 1:].reshape(-1), ignore_index=IGNORE
            )
        return out


def make_task(path: str, val_path: str | None = None, seq_len: int = 64, dim: int = 32) -> UserTask:
    def stream(uri):
        return (
            ray.data.read_parquet(uri)
            .select_columns(["text"])
            .map_batches(tokenise, fn_kwargs={"seq_len": seq_len}, batch_format="numpy")
        )

    return UserTask(
        model_fn=lambda: ByteLM(dim),
        loss_fn=None,
        data=stream(path),
        val_data=stream(val_path) if val_path else None,
    )
