"""Sweep results: one Parquet table of every trial's steps, a trials table, the best config as
ready-to-run YAML, and plots (PNG and one self-contained HTML page)."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np
import pandas as pd
import yaml

from raytrain_eff import config as config_mod
from raytrain_eff.engine import storage
from raytrain_eff.engine import trials as trial_dirs
from raytrain_eff.engine.launch import CONFIG_FILE
from raytrain_eff.tune import schedulers
from raytrain_eff.tune import space as space_mod
from raytrain_eff.tune.plots import sweep_figures
from raytrain_eff.tune.space import SweepSpec

STATUSES = ("completed", "early_stopped", "errored", "interrupted", "not_started")


def saved_grid(sweep_dir: str, spec: SweepSpec):
    """The sweep's results as Tune saved them when it ended: on SIGINT Tune saves the state,
    then stops the running trials and marks them TERMINATED in the grid ``fit`` returns."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(
        ExperimentAnalysis(sweep_dir, default_metric=spec.metric, default_mode=spec.mode)
    )


def trials_of(grid) -> list:
    """Tune's trials, in the result grid's order (a result has no status of its own)."""
    return list(grid._experiment_analysis.trials)


def unfinished(grid) -> list:
    """Trials a sweep left running, paused or pending: it was interrupted."""
    return [t for t in trials_of(grid) if t.status not in ("TERMINATED", "ERROR")]


def collect(grid, spec: SweepSpec, base: dict, sweep_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-step table of all trials, one row per trial, trials never generated included)."""
    sweep_name = sweep_dir.rstrip("/").rsplit("/", 1)[-1]
    trials_dir = storage.join(sweep_dir, "trials")
    steps, rows = [], []
    for trial, result in zip(trials_of(grid), grid, strict=True):
        frame, history = stitched(
            trials_dir, f"{sweep_name}-{trial.trial_id}", [e.key for e in spec.entries]
        )
        rows.append(trial_row(trial, result, frame, history, spec, base))
        if len(frame):
            frame.insert(0, "trial_id", trial.trial_id)
            steps.append(frame)
    rows += [
        {"trial_id": None, "status": "not_started"}
        for _ in range(expected_trials(spec) - len(rows))
    ]
    return (pd.concat(steps, ignore_index=True) if steps else pd.DataFrame()), pd.DataFrame(rows)


def trial_row(
    trial, result, frame: pd.DataFrame, history: list[dict], spec: SweepSpec, base: dict
) -> dict:
    """The trial's own record: its metric and counts from its own (stitched) steps, since
    Tune's last result can be a PBT donor's."""
    sample = space_mod.effective(space_mod.conditions(spec), trial.config or {})
    last = dict(result.metrics or {})
    done = int(max(last.get("step", 0), frame.step.max() + 1 if len(frame) else 0))
    planned = schedulers.planned_steps(base, sample)
    own = frame[spec.metric].dropna() if spec.metric in frame else pd.Series(dtype=float)
    row = {
        "trial_id": trial.trial_id,
        # a saved config means the trial's function ran, whether or not it reported
        "status": status_of(trial.status, done, planned, "step" in last or bool(history)),
        "error": _error_text(result.error),
        spec.metric: own.iloc[-1] if len(own) else last.get(spec.metric),
        "samples_seen": (
            int(frame["samples"].sum()) if "samples" in frame else last.get("samples_seen")
        ),
        "effective_flops_total": last.get("effective_flops_total"),
        "wall_s": last.get("wall_s"),
        "steps_done": done,
        "steps_planned": planned,
        "config_history": json.dumps(history, default=_plain),
    }
    row.update({f"config/{k}": v for k, v in sample.items()})
    return row


def status_of(tune_status: str, steps_done: int, planned: int, started: bool) -> str:
    if tune_status == "ERROR":
        return "errored"
    if tune_status == "TERMINATED":  # a scheduler's STOP also ends as TERMINATED
        return "completed" if steps_done >= planned else "early_stopped"
    if tune_status in ("RUNNING", "PAUSED"):
        return "interrupted"
    return "interrupted" if started or steps_done else "not_started"  # PENDING


def expected_trials(spec: SweepSpec) -> int:
    grid = [len(e.args) for e in spec.entries if e.kind == "grid" and not e.when]
    return spec.num_samples * int(np.prod(grid)) if grid else spec.num_samples


def stitched(trials_dir: str, run_name: str, keys: list[str]) -> tuple[pd.DataFrame, list[dict]]:
    """(a trial's rows, its config history): each row carries the ``config/KEY`` of the
    searched ``keys`` its PBT segment ran with (``engine.trials.stitched``)."""
    return trial_dirs.stitched(trials_dir, run_name, lambda run_dir: segment_config(run_dir, keys))


def segment_config(run_dir: str, keys: list[str]) -> dict | None:
    """The searched keys' values in a run's saved config (None: no config saved)."""
    data = storage.read_bytes(storage.join(run_dir, CONFIG_FILE))
    if data is None:
        return None
    raw = yaml.safe_load(data)
    return {k: space_mod.base_value(raw, k) for k in keys}


def _error_text(error) -> str:
    if not error:
        return ""
    text = str(error)
    return text[-2000:]  # the end of a trace holds the cause


def best_trial(trials: pd.DataFrame, spec: SweepSpec):
    """The best completed trial: an early-stopped or interrupted one never saw its budget."""
    if spec.metric not in trials:
        return None
    done = trials[(trials.status == "completed") & trials[spec.metric].notna()]
    if done.empty:
        return None
    return done.sort_values(spec.metric, ascending=spec.mode == "min").iloc[0]


def write_results(grid, spec: SweepSpec, base: dict, sweep_dir: str) -> None:
    steps, trials = collect(grid, spec, base, sweep_dir)
    _write_parquet(steps, storage.join(sweep_dir, "results.parquet"))
    _write_parquet(trials, storage.join(sweep_dir, "trials.parquet"))
    best = best_trial(trials, spec)
    if best is not None:
        sample = {k[len("config/") :]: best[k] for k in trials.columns if k.startswith("config/")}
        sample = {k: _plain(v) for k, v in sample.items() if v is not None and v == v}
        raw = config_mod.apply_overrides(base, space_mod.overrides_for(sample))
        raw["run"]["name"] = None  # a fresh run, not a resume of the trial
        cfg = config_mod.from_dict(raw)
        header = (
            f"# best of sweep {sweep_dir}: trial {best.trial_id}, "
            f"{spec.metric}={best[spec.metric]:.6g}\n"
        )
        storage.write_bytes(
            storage.join(sweep_dir, "best.yaml"), (header + config_mod.dump(cfg)).encode()
        )
    figures = plots(steps, trials, spec)
    for name, png in figures.items():
        storage.write_bytes(storage.join(sweep_dir, "plots", f"{name}.png"), png)
    storage.write_bytes(
        storage.join(sweep_dir, "report.html"), html_page(trials, figures, spec, sweep_dir).encode()
    )


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _write_parquet(frame: pd.DataFrame, uri: str) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    storage.write_bytes(uri, buf.getvalue())


def plots(steps: pd.DataFrame, trials: pd.DataFrame, spec: SweepSpec) -> dict[str, bytes]:
    done = trials[trials[spec.metric].notna() & trials.effective_flops_total.notna()]
    front = pareto_front(done, spec) if not done.empty else done
    return sweep_figures(steps, done, front, spec.metric)


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


def html_page(trials: pd.DataFrame, figures: dict, spec: SweepSpec, sweep_dir: str) -> str:
    images = "".join(
        f'<figure><img alt="{html.escape(n)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"><figcaption>{html.escape(n)}</figcaption></figure>'
        for n, png in figures.items()
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep "
        f"{html.escape(sweep_dir)}"
        f"</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:"
        f"collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;font-size:12px}}</style>"
        f"</head><body><h1>Sweep results</h1><p>{html.escape(spec.path)}: {spec.metric} "
        f"({spec.mode}), {len(trials)} trials</p>{images}<h2>Trials</h2>"
        f"{trials.to_html(index=False, na_rep='')}</body></html>"
    )
