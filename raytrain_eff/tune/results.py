"""Sweep results: one Parquet table of every trial's steps, a trials table, the best config as
ready-to-run YAML, and plots (PNG and one self-contained HTML page)."""
from __future__ import annotations

import base64
import html
import io
import re

import pandas as pd
import pyarrow.fs

from raytrain_eff import config as config_mod
from raytrain_eff.engine import records, storage
from raytrain_eff.tune import space as space_mod
from raytrain_eff.tune.space import SweepSpec

TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})")


def trial_id_of(result) -> str:
    """From the trial's directory name: after a PBT exploit the metrics may be the donor's."""
    match = TRIAL_ID.search(str(result.path))
    return match.group(1) if match else (result.metrics or {}).get("trial_id", str(result.path))


def collect(grid, spec: SweepSpec, sweep_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step table of all trials, one row per trial)."""
    sweep_name = sweep_dir.rstrip("/").rsplit("/", 1)[-1]
    steps, trials = [], []
    for result in grid:
        tid = trial_id_of(result)
        sample = {k: v for k, v in (result.config or {}).items()}
        frame = trial_steps(storage.join(sweep_dir, "trials"), f"{sweep_name}-{tid}")
        last = (result.metrics or {})
        row = {"trial_id": tid, "status": "ERROR" if result.error else "OK",
               "error": _error_text(result.error),
               spec.metric: last.get(spec.metric), "samples_seen": last.get("samples_seen"),
               "effective_flops_total": last.get("effective_flops_total"),
               "wall_s": last.get("wall_s"), "steps_done": last.get("step")}
        row.update({f"config/{k}": v for k, v in sample.items()})
        trials.append(row)
        if len(frame):
            frame.insert(0, "trial_id", tid)
            for k, v in sample.items():
                frame[f"config/{k}"] = v
            steps.append(frame)
    return (pd.concat(steps, ignore_index=True) if steps else pd.DataFrame()), pd.DataFrame(trials)


def trial_steps(trials_dir: str, run_name: str) -> pd.DataFrame:
    """A trial's rows; after PBT exploits, each '-fromSTEP' segment replaces what followed STEP."""
    frame = pd.DataFrame()
    fs, root = storage.filesystem(trials_dir)
    names = sorted(info.base_name for info in fs.get_file_info(
        pyarrow.fs.FileSelector(root, allow_not_found=True))
        if info.base_name == run_name or info.base_name.startswith(run_name + "-from"))
    for name in names:  # the plain name sorts first, then segments by start step
        table = records.read_table(storage.join(trials_dir, name))
        if table is None:
            continue
        part = table.to_pandas()
        if len(frame):
            frame = frame[frame.step < part.step.min()]
        frame = pd.concat([frame, part], ignore_index=True)
    return frame


def _error_text(error) -> str:
    if not error:
        return ""
    text = str(error)
    return text[-2000:]  # the end of a trace holds the cause


def best_trial(trials: pd.DataFrame, spec: SweepSpec):
    ok = trials[(trials.status == "OK") & trials[spec.metric].notna()]
    if ok.empty:
        return None
    return ok.sort_values(spec.metric, ascending=spec.mode == "min").iloc[0]


def write_results(grid, spec: SweepSpec, base: dict, sweep_dir: str) -> None:
    steps, trials = collect(grid, spec, sweep_dir)
    _write_parquet(steps, storage.join(sweep_dir, "results.parquet"))
    _write_parquet(trials, storage.join(sweep_dir, "trials.parquet"))
    best = best_trial(trials, spec)
    if best is not None:
        sample = {k[len("config/"):]: best[k] for k in trials.columns if k.startswith("config/")}
        sample = {k: _plain(v) for k, v in sample.items() if v is not None and v == v}
        raw = config_mod.apply_overrides(base, space_mod.overrides_for(sample))
        raw["run"]["name"] = None  # a fresh run, not a resume of the trial
        cfg = config_mod.from_dict(raw)
        header = (f"# best of sweep {sweep_dir}: trial {best.trial_id}, "
                  f"{spec.metric}={best[spec.metric]:.6g}\n")
        storage.write_bytes(storage.join(sweep_dir, "best.yaml"),
                            (header + config_mod.dump(cfg)).encode())
    figures = plots(steps, trials, spec)
    for name, png in figures.items():
        storage.write_bytes(storage.join(sweep_dir, "plots", f"{name}.png"), png)
    storage.write_bytes(storage.join(sweep_dir, "report.html"),
                        html_page(trials, figures, spec, sweep_dir).encode())


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _write_parquet(frame: pd.DataFrame, uri: str) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())


def plots(steps: pd.DataFrame, trials: pd.DataFrame, spec: SweepSpec) -> dict[str, bytes]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures = {}
    if not steps.empty and spec.metric in steps:
        for x, label in [("effective_flops_cum", "effective training FLOPs"),
                         ("wall_s", "wall time (s)")]:
            fig, ax = plt.subplots(figsize=(6.4, 4))
            for tid, frame in steps.groupby("trial_id"):
                frame = frame.assign(effective_flops_cum=frame["effective_flops"].cumsum())
                pts = frame[frame[spec.metric].notna()]
                ax.plot(pts[x], pts[spec.metric], marker=".", label=tid)
            ax.set_xlabel(label)
            ax.set_ylabel(spec.metric)
            ax.legend(fontsize=6)
            figures[f"{spec.metric}_vs_{x}"] = _png(fig)
    done = trials[trials[spec.metric].notna() & trials.effective_flops_total.notna()]
    if not done.empty:
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.scatter(done.effective_flops_total, done[spec.metric], label="trials")
        front = pareto_front(done, spec)
        ax.plot(front.effective_flops_total, front[spec.metric], "r-o", label="Pareto front")
        ax.set_xlabel("effective training FLOPs (cost)")
        ax.set_ylabel(spec.metric)
        ax.legend()
        figures["pareto"] = _png(fig)
    return figures


def pareto_front(done: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Trials no other trial beats on both quality and cost."""
    sign = 1 if spec.mode == "min" else -1
    ordered = done.sort_values("effective_flops_total")
    best, keep = float("inf"), []
    for idx, row in ordered.iterrows():
        quality = sign * row[spec.metric]
        if quality < best:
            best = quality
            keep.append(idx)
    return ordered.loc[keep]


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def html_page(trials: pd.DataFrame, figures: dict, spec: SweepSpec, sweep_dir: str) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
        for n, png in figures.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep "
            f"{html.escape(sweep_dir)}"
            f"</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:"
            f"collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}}</style>"
            f"</head><body><h1>Sweep results</h1><p>{html.escape(spec.path)}: {spec.metric} "
            f"({spec.mode}), {len(trials)} trials</p>{images}<h2>Trials</h2>"
            f"{trials.to_html(index=False, na_rep='')}</body></html>")
