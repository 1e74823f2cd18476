"""PNG figures of a comparison report, drawn from the same frames its tables hold.

Curves show every seed thin and the per-step median thick, so the seed spread is visible
beside the difference between the sides.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from raytrain_eff.figures import png, pyplot

COLOURS = ("#1f77b4", "#d62728")
CURVE_AXES = [
    ("step", "optimizer steps"),
    ("elapsed_s", "wall time (s)"),
    ("effective_flops", "effective training FLOPs"),
]


def curve_figures(
    curves: pd.DataFrame, metric: str, labels: tuple[str, str], target: float
) -> dict[str, bytes]:
    """``metric`` against steps, wall time and effective FLOPs, each side's seeds and median."""
    plt = pyplot()
    evals = curves[curves[metric].notna()]
    figures = {}
    for x, xlabel in CURVE_AXES:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for label, colour in zip(labels, itertools.cycle(COLOURS)):
            side = evals[evals.side == label]
            for _, run in side.groupby("run"):
                ax.plot(run[x], run[metric], color=colour, alpha=0.35, lw=1)
            median = side.groupby("step")[[x, metric]].median()
            ax.plot(
                median[x],
                median[metric],
                color=colour,
                lw=2.2,
                marker="o",
                ms=3,
                label=f"{label} (median of seeds)",
            )
        ax.axhline(target, color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures[f"{metric}_vs_{x}"] = png(fig)
    return figures


def per_run_figure(
    runs: pd.DataFrame, columns: list[tuple[str, str]], labels: tuple[str, str]
) -> bytes:
    """One panel per column: each seed a dot, each side's median a bar; never-reached as a gap."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.2), squeeze=False)
    for ax, (column, title) in zip(axes[0], columns, strict=True):
        for i, (label, colour) in enumerate(zip(labels, itertools.cycle(COLOURS))):
            values = runs.loc[runs.side == label, column].astype(float)
            finite = values[np.isfinite(values)]
            if len(finite) == len(values) and len(values):
                ax.bar(i, values.median(), color=colour, alpha=0.35, width=0.6)
            ax.scatter(np.full(len(finite), i), finite, color=colour, zorder=3, s=18)
        ax.set_xticks(range(len(labels)), labels, rotation=15, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    return png(fig)
