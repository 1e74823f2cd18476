"""Hyper-parameters of Mixed Sparsity Training (arXiv 2408.11746): what a Tune space searches.

Phase boundaries are fractions of the run's total steps, so one config (and one Tune space)
fits runs of any length: warm-up ``[0, warmup_end]`` (sparsity 0 → ``sparsity``), ultra-sparse
``[warmup_end, restore_start]``, restoration ``[restore_start, restore_end]`` (back to
``final_sparsity``), then training at the final density.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from raytrain_eff.typed import check

Shape = Literal["linear", "cubic", "cosine"]


@dataclass(kw_only=True)
class MSTConfig:
    # -- how sparse: the sparsity-variation schedule -------------------------------------------
    sparsity: float = 0.9  # ultra-sparse level (fraction of sparse-layer weights at 0)
    init_sparsity: float = 0.0  # at step 0: MST starts dense
    final_sparsity: float = 0.0  # after restoration: MST ends dense
    warmup_end: float = 0.1  # fraction of steps where warm-up reaches `sparsity`
    warmup_shape: Shape = "cubic"  # cubic prunes fast early, gently near the target
    restore_start: float = 0.6  # fraction of steps where restoration begins
    restore_end: float = 0.85  # fraction of steps where restoration reaches final_sparsity
    restore_shape: Shape = "linear"
    schedule: Any | None = None  # explicit schedule in absolute steps (float / [[step, s]] /
    # {type: ...}); overrides the three phases above
    # -- when and how the topology changes (dynamic sparse training) -------------------------
    update_every: int = 100  # ΔT: steps between topology updates
    update_start: float = 0.0  # fraction of steps where topology updates begin
    update_stop: float = 1.0  # fraction of steps where they end
    drop_fraction: float = 0.3  # ζ at the first update, cosine-annealed to 0 at restore_end
    drop_anneal: Shape = "cosine"
    grow: Literal["gradient", "random", "mixed"] = "mixed"
    gradient_share: float = 0.75  # of regrown weights chosen by |gradient| when grow=mixed (3:1)
    distribution: Literal["erk", "er", "uniform"] = "erk"  # per-layer densities
    include: list[str] = field(default_factory=lambda: ["*"])  # fnmatch on module names
    exclude: list[str] = field(default_factory=lambda: ["*wpe"])  # positional table stays dense
    # -- hybrid sparse attention ---------------------------------------------------------------
    # local / block skip whole kernel tiles; strided patterns touch every causal tile
    attention: Literal["dense", "local", "strided", "local_strided", "block"] = "local"
    attention_window: int = 32  # local width / stride / block length, in tokens
    attention_start: float = 0.1  # fraction of steps where sparse attention begins
    attention_stop: float = 0.6  # ... and ends (dense attention elsewhere)
    attention_tile: int = 16  # kernel tile: attention FLOPs count whole tiles touched
    # masked: dense SDPA with a mask (no time saved); tiles: compute touched tiles only
    # (real CPU savings at long sequences, overhead at short ones; see bench/results/mst.json);
    # flex: FlexAttention with a BlockMask of the pattern at attention_tile blocks (CUDA:
    # FlexAttention has no CPU backward, so training with it needs scaling.use_gpu)
    attention_kernel: Literal["masked", "tiles", "flex"] = "masked"
    seed: int = 0  # random growth; the same on every rank

    def __post_init__(self):
        for name in ("sparsity", "init_sparsity", "final_sparsity"):
            check(0 <= getattr(self, name) < 1, name, getattr(self, name), "in [0, 1)")
        check(
            0 <= self.warmup_end <= self.restore_start <= self.restore_end <= 1,
            "restore_start",
            self.restore_start,
            f"ordered 0 <= warmup_end ({self.warmup_end}) <= restore_start <= restore_end "
            f"({self.restore_end}) <= 1",
        )
        check(self.update_every >= 1, "update_every", self.update_every, "an integer >= 1")
        check(
            0 <= self.update_start < self.update_stop <= 1,
            "update_stop",
            self.update_stop,
            f"in (update_start ({self.update_start}), 1]",
        )
        check(0 <= self.drop_fraction < 1, "drop_fraction", self.drop_fraction, "in [0, 1)")
        check(0 <= self.gradient_share <= 1, "gradient_share", self.gradient_share, "in [0, 1]")
        check(
            self.attention_window >= 1, "attention_window", self.attention_window, "an integer >= 1"
        )
        check(
            0 <= self.attention_start <= self.attention_stop <= 1,
            "attention_stop",
            self.attention_stop,
            f"in [attention_start ({self.attention_start}), 1]",
        )
        check(self.attention_tile >= 1, "attention_tile", self.attention_tile, "an integer >= 1")
        if self.schedule is not None:
            from raytrain_eff.methods.schedules import make_schedule  # torch-free

            make_schedule(self.schedule)
