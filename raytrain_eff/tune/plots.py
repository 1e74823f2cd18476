"""PNG figures of a sweep: each trial's curve, and quality against cost with the Pareto front."""

from __future__ import annotations

import pandas as pd

from raytrain_eff.figures import png, pyplot


def sweep_figures(
    steps: pd.DataFrame, done: pd.DataFrame, front: pd.DataFrame, metric: str
) -> dict[str, bytes]:
    """A sweep's trials: ``metric`` against cumulative effective FLOPs and wall time, one line
    per trial; and each finished trial's quality against its cost, with the Pareto front."""
    plt = pyplot()
    figures = {}
    if not steps.empty and metric in steps:
        for x, label in [
            ("effective_flops_cum", "effective training FLOPs"),
            ("wall_s", "wall time (s)"),
        ]:
            fig, ax = plt.subplots(figsize=(6.4, 4))
            for tid, frame in steps.groupby("trial_id"):
                frame = frame.assign(effective_flops_cum=frame["effective_flops"].cumsum())
                pts = frame[frame[metric].notna()]
                ax.plot(pts[x], pts[metric], marker=".", label=tid)
            ax.set_xlabel(label)
            ax.set_ylabel(metric)
            ax.legend(fontsize=6)
            figures[f"{metric}_vs_{x}"] = png(fig)
    if not done.empty:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.scatter(done.effective_flops_total, done[metric], label="trials")
        ax.plot(front.effective_flops_total, front[metric], "r-o", label="Pareto front")
        ax.set_xlabel("effective training FLOPs (cost)")
        ax.set_ylabel(metric)
        ax.legend()
        figures["pareto"] = png(fig)
    return figures
