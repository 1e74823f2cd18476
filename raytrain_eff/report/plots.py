"""PNG figures of a comparison report and of a sweep, drawn from the same frames their tables
hold.

Curves show every seed thin and the per-step median thick, so the seed spread is visible
beside the difference between the sides.
"""
from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd

COLOURS = ("#1f77b4", "#d62728")
CURVE_AXES = [("step", "optimizer steps"), ("elapsed_s", "wall time (s)"),
              ("effective_flops", "effective training FLOPs")]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    return buf.getvalue()


def curve_figures(curves: pd.DataFrame, metric: str, labels: tuple[str, str],
                  target: float) -> dict[str, bytes]:
    """``metric`` against steps, wall time and effective FLOPs, each side's seeds and median."""
    plt = _pyplot()
    evals = curves[curves[metric].notna()]
    figures = {}
    for x, xlabel in CURVE_AXES:
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for label, colour in zip(labels, itertools.cycle(COLOURS)):
            side = evals[evals.side == label]
            for _, run in side.groupby("run"):
                ax.plot(run[x], run[metric], color=colour, alpha=0.35, lw=1)
            median = side.groupby("step")[[x, metric]].median()
            ax.plot(median[x], median[metric], color=colour, lw=2.2, marker="o", ms=3,
                    label=f"{label} (median of seeds)")
        ax.axhline(target, color="grey", ls="--", lw=1, label="target")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figures[f"{metric}_vs_{x}"] = _png(fig)
    return figures


def per_run_figure(runs: pd.DataFrame, columns: list[tuple[str, str]],
                   labels: tuple[str, str]) -> bytes:
    """One panel per column: each seed a dot, each side's median a bar; never-reached as a gap."""
    plt = _pyplot()
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
    return _png(fig)


def sweep_figures(steps: pd.DataFrame, done: pd.DataFrame, front: pd.DataFrame,
                  metric: str) -> dict[str, bytes]:
    """A sweep's trials: ``metric`` against cumulative effective FLOPs and wall time, one line
    per trial; and each finished trial's quality against its cost, with the Pareto front."""
    plt = _pyplot()
    figures = {}
    if not steps.empty and metric in steps:
        for x, label in [("effective_flops_cum", "effective training FLOPs"),
                         ("wall_s", "wall time (s)")]:
            fig, ax = plt.subplots(figsize=(6.4, 4))
            for tid, frame in steps.groupby("trial_id"):
                frame = frame.assign(effective_flops_cum=frame["effective_flops"].cumsum())
                pts = frame[frame[metric].notna()]
                ax.plot(pts[x], pts[metric], marker=".", label=tid)
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.legend(fontsize=6)
            figures[f"{metric}_vs_{x}"] = _png(fig)
    if not done.empty:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.scatter(done.effective_flops_total, done[metric], label="trials")
        ax.plot(front.effective_flops_total, front[metric], "r-o", label="Pareto front")
        ax.set_xlabel("effective training FLOPs (cost)")
        ax.set_ylabel(metric)
        ax.legend()
        figures["pareto"] = _png(fig)
    return figures
