"""Hyper-parameters of the built-in tasks (model shape and task-specific data handling)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from raytrain_eff.typed import check


@dataclass(kw_only=True)
class LMConfig:
    """Character-level GPT (nanoGPT-shaped: pre-LN blocks, tied embedding and head)."""
    seq_len: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("seq_len", "n_layer", "n_head", "n_embd"):
            check(getattr(self, name) > 0, name, getattr(self, name), "an integer > 0")
        check(self.n_embd % self.n_head == 0, "n_embd", self.n_embd,
              f"a multiple of n_head ({self.n_head})")
        check(0 <= self.dropout < 1, "dropout", self.dropout, "in [0, 1)")


@dataclass(kw_only=True)
class ClassifyConfig:
    model: Literal["mlp", "cnn"] = "mlp"
    hidden: int = 128     # MLP width / CNN channels of the first block
    depth: int = 2        # hidden layers (MLP) or conv blocks (CNN)

    def __post_init__(self):
        check(self.hidden > 0, "hidden", self.hidden, "an integer > 0")
        check(self.depth > 0, "depth", self.depth, "an integer > 0")


@dataclass(kw_only=True)
class CustomTaskConfig:
    """A user task: ``factory`` returns a raytrain_eff.tasks.custom.UserTask (see README)."""
    factory: str              # "package.module:function"
    options: dict | None = None  # keyword arguments passed to the factory

    def __post_init__(self):
        check(bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.factory or "")),
              "factory", self.factory, "of the form 'package.module:function'")
        if self.options is None:
            self.options = {}
