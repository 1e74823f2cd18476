"""A checkpoint written by one process (rank 0 of 1), as the engine writes it: the tests'
one way to put a checkpoint on disk without a process group."""

from __future__ import annotations

import pathlib

import torch
from torch import nn

from raytrain_eff.engine import checkpoint


def save(directory, step: int, model=None, optimizer=None, **kw) -> nn.Module:
    """``model`` (default: a fresh ``nn.Linear(3, 2)``) and ``optimizer`` (default: SGD at
    lr 0.1) saved as step ``step`` into ``directory``; ``kw`` goes to ``checkpoint.save``."""
    model = model or nn.Linear(3, 2)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(
        pathlib.Path(directory),
        rank=0,
        world_size=1,
        step=step,
        attempt=0,
        model=model,
        optimizer=optimizer,
        methods=[],
        **kw,
    )
    return model
