"""Build the comparison report from finished runs and Tune sweeps.

Each side is a list of run directories and/or sweep directories (a sweep contributes every
trial under ``trials/``, PBT segments stitched into one history). The side's runs are grouped
by their config minus seed, name and where it ran; a side holding several groups (a sweep) is
represented by its best completed group on the quality metric, so a method and its baseline
are each compared at their tuned settings. The report directory gets ``tables/*.parquet``,
``plots/*.png`` and ``report.html`` rendered from those same tables.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import pandas as pd
import pyarrow.fs
import yaml

from raytrain_eff.engine import records, storage, trials
from raytrain_eff.report import analysis, html, plots
from raytrain_eff.typed import ConfigError

LR_SCALE_KEY = "newton_lr_scale"  # FOSI/DHO2's step multiplier c, as methods/fosi.py logs it

IGNORED_KEYS = {
    "run": ("seed", "name", "storage_path", "stop_after", "max_failures"),
    "monitor": None,
    "preset": None,
}


@dataclasses.dataclass
class Loaded:
    run_dir: str
    name: str
    config: dict
    summary: dict
    steps: pd.DataFrame


def _json(uri: str) -> dict:
    data = storage.read_bytes(uri)
    return {} if data is None else json.loads(data)


def load_run(run_dir: str, steps: pd.DataFrame | None = None) -> Loaded:
    summary = _json(storage.join(run_dir, records.SUMMARY))
    config = summary.get("config")
    if config is None:
        data = storage.read_bytes(storage.join(run_dir, "config.yaml"))
        if data is None:
            raise ConfigError(
                f"{run_dir}: no summary.json or config.yaml, so its config is unknown"
            )
        config = yaml.safe_load(data)
    if steps is None:
        table = records.read_table(run_dir)
        if table is None:
            raise ConfigError(f"{run_dir}: no {records.TABLE} (did the run start?)")
        steps = table.to_pandas()
    name = run_dir.rstrip("/").rsplit("/", 1)[-1]
    return Loaded(run_dir=run_dir, name=name, config=config, summary=summary, steps=steps)


def expand(path: str) -> list[Loaded]:
    """A run directory -> that run; a sweep directory -> each of its trials."""
    path = storage.resolve(path)
    if storage.exists(storage.join(path, records.TABLE)):
        return [load_run(path)]
    trials_dir = storage.join(path, "trials")
    if not storage.exists(trials_dir):
        raise ConfigError(
            f"{path}: neither a run directory ({records.TABLE}) nor a Tune "
            f"sweep directory (trials/)"
        )
    fs, root = storage.filesystem(trials_dir)
    names = sorted(
        i.base_name
        for i in fs.get_file_info(pyarrow.fs.FileSelector(root))
        if i.type == pyarrow.fs.FileType.Directory
    )
    runs = []
    for base in (n for n in names if not trials.is_restart(n)):
        steps = trials.trial_steps(trials_dir, base)
        if len(steps):  # the newest segment holds the config the trial ended with
            newest = trials.segments(trials_dir, base)[-1][1]
            runs.append(load_run(storage.join(trials_dir, newest), steps))
    return runs


def group_key(config: dict) -> str:
    """The config minus what may differ between seeds of one experiment."""
    reduced = copy.deepcopy(config)
    for section, keys in IGNORED_KEYS.items():
        if keys is None:
            reduced.pop(section, None)
        else:
            for key in keys:
                reduced.get(section, {}).pop(key, None)
    return json.dumps(reduced, sort_keys=True, default=str)


def label_of(config: dict) -> str:
    return config.get("preset") or f"{config['task']['name']}-{'+'.join(config['methods'])}"


def _completed(run: Loaded) -> bool:
    return int(run.steps["step"].max()) + 1 >= int(run.config["run"]["steps"])


def choose(runs: list[Loaded], side: str, metric: str, mode: str) -> tuple[list[Loaded], list]:
    """The side's best completed config group, and one row per group found."""
    if not runs:
        raise ConfigError(f"side {side}: no runs given")
    groups: dict[str, list[Loaded]] = {}
    for run in runs:
        groups.setdefault(group_key(run.config), []).append(run)
    rows = []
    for key, members in groups.items():
        finals = [
            m.steps[metric].dropna().iloc[-1]
            for m in members
            if metric in m.steps and m.steps[metric].notna().any()
        ]
        rows.append(
            {
                "side": side,
                "label": label_of(members[0].config),
                "runs": len(members),
                f"median_final_{metric}": float(pd.Series(finals, dtype=float).median()),
                "completed": all(_completed(m) for m in members),
                "key": key,
            }
        )
    frame = pd.DataFrame(rows)
    pool = frame[frame.completed] if frame.completed.any() else frame
    score = pool[f"median_final_{metric}"] * (1 if mode == "min" else -1)
    best = score.idxmin() if score.notna().any() else pool.index[0]
    frame["chosen"] = frame.index == best
    return groups[frame.loc[best, "key"]], frame.drop(columns="key").to_dict("records")


def to_analysis_run(run: Loaded, side: str) -> analysis.Run:
    workers = int(run.config["scaling"]["num_workers"])
    world = int(run.summary.get("world_size") or max(workers, 1))
    return analysis.Run(
        name=run.name,
        side=side,
        seed=int(run.config["run"]["seed"]),
        steps=run.steps,
        world_size=world,
        isolated=workers > 0,
    )


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = json.dumps(value, default=str)
    return out


def config_diff(a: dict, b: dict) -> pd.DataFrame:
    """Dotted keys whose values differ between the sides (seed, name and storage aside)."""
    fa, fb = (flatten(json.loads(group_key(c))) for c in (a, b))
    keys = sorted(set(fa) | set(fb))
    rows = [
        {"key": k, "a": fa.get(k, "(unset)"), "b": fb.get(k, "(unset)")}
        for k in keys
        if fa.get(k) != fb.get(k)
    ]
    return pd.DataFrame(rows, columns=["key", "a", "b"])


def setup_row(runs: list[Loaded], label: str, table: pd.DataFrame) -> dict:
    """What makes the comparison fair or not: data, world size, budget, code, machine."""
    cfg = runs[0].config
    mine = table[table.side == label]

    def joined(key: str) -> str:
        return ", ".join(sorted({str(r.summary.get(key, "unknown")) for r in runs}))

    return {
        "side": label,
        "runs": len(runs),
        "seeds": ", ".join(str(s) for s in sorted(mine.seed)),
        "world_size": int(mine.world_size.max()),
        "steps": int(cfg["run"]["steps"]),
        "batch_size": int(cfg["data"]["batch_size"]),
        "dataset": str(cfg["data"]["dataset"]),
        "median_samples": float(mine.samples.median()),
        **step_sizes(runs),
        "data_checksum": joined("data_checksum"),
        "commit": joined("commit"),
        "machine": ", ".join(sorted({_machine(r.summary.get("machine")) for r in runs})),
    }


def step_sizes(runs: list[Loaded]) -> dict:
    """Each side's peak scheduled LR and its effective step size: the LR times the step
    multiplier a method actually applied (FOSI's clip factor c, logged as ``newton_lr_scale``),
    so that a comparison cannot hide an LR multiplier inside a method. Medians over runs."""
    peak, effective, scale = [], [], []
    for run in runs:
        lr = run.steps["lr"] if "lr" in run.steps else pd.Series([float("nan")])
        c = run.steps.get(LR_SCALE_KEY, pd.Series(1.0, index=lr.index)).fillna(1.0)
        peak.append(float(lr.max()))
        effective.append(float((lr * c).max()))
        scale.append(float(c.max()))
    med = lambda xs: float(pd.Series(xs).median())  # noqa: E731
    return {
        "peak_lr": med(peak),
        "lr_multiplier_max": med(scale),
        "effective_peak_lr": med(effective),
    }


def _machine(info: dict | None) -> str:
    if not info:
        return "unknown"
    return f"{info.get('nproc', '?')} CPUs, Python {info.get('python', '?')}"


def build_report(
    run_dirs_a: list[str],
    run_dirs_b: list[str],
    out_dir: str,
    price_per_node_hour: float = 3.0,
    labels: tuple[str, str] | None = None,
    *,
    metric: str = "val_loss",
    mode: str | None = None,
    target: float | None = None,
    workers_per_node: int = 1,
) -> str:
    """Write the report of A (the method) against B (its baseline) into ``out_dir`` (returned):
    ``report.html``, ``tables/*.parquet``, ``plots/*.png``."""
    mode = mode or ("max" if "acc" in metric else "min")
    loaded = {
        "A": [r for d in run_dirs_a for r in expand(d)],
        "B": [r for d in run_dirs_b for r in expand(d)],
    }
    for side, runs in loaded.items():
        if runs and not any(metric in r.steps for r in runs):
            found = sorted(c for r in runs for c in r.steps.columns if c.startswith("val_"))
            raise ConfigError(
                f"side {side}: the runs never recorded '{metric}'; they have: "
                f"{', '.join(sorted(set(found))) or 'no val_ metrics'}"
            )
    (runs_a, groups_a), (runs_b, groups_b) = (choose(loaded[s], s, metric, mode) for s in "AB")
    labels = labels or _labels(runs_a[0].config, runs_b[0].config)
    chosen = [to_analysis_run(r, labels[0]) for r in runs_a] + [
        to_analysis_run(r, labels[1]) for r in runs_b
    ]
    tables = _tables(
        chosen,
        (runs_a, runs_b),
        groups_a + groups_b,
        labels,
        metric,
        mode,
        target,
        price_per_node_hour,
        workers_per_node,
        (run_dirs_a, run_dirs_b),
    )
    write(out_dir, tables, metric, labels)
    return out_dir


def _labels(a: dict, b: dict) -> tuple[str, str]:
    la, lb = label_of(a), label_of(b)
    return (la, lb) if la != lb else (f"{la} (A)", f"{lb} (B)")


def _tables(
    chosen, sides, groups, labels, metric, mode, target, price, workers_per_node, sources
) -> dict[str, pd.DataFrame]:
    runs_a, runs_b = sides
    curve = analysis.curves(chosen, metric)
    provisional = analysis.per_run(chosen, metric, mode, 0.0, price, workers_per_node)
    value, source = analysis.baseline_target(provisional, metric, labels[1], target)
    table = analysis.per_run(chosen, metric, mode, value, price, workers_per_node)
    comparison = analysis.compare_sides(table, labels[0], labels[1], metric, mode)
    settings = pd.DataFrame(
        [
            {
                "label_a": labels[0],
                "label_b": labels[1],
                "source_a": ", ".join(sources[0]),
                "source_b": ", ".join(sources[1]),
                "metric": metric,
                "mode": mode,
                "target": value,
                "target_source": source,
                "price_per_node_hour": float(price),
                "workers_per_node": int(workers_per_node),
                "memory_isolated": bool(table.memory_isolated.all()),
            }
        ]
    )
    setup = pd.DataFrame([setup_row(runs_a, labels[0], table), setup_row(runs_b, labels[1], table)])
    return {
        "settings": settings,
        "comparison": comparison,
        "runs": table,
        "setup": setup,
        "config_diff": config_diff(runs_a[0].config, runs_b[0].config),
        "groups": pd.DataFrame(groups),
        "curves": curve,
    }


def write(
    out_dir: str, tables: dict[str, pd.DataFrame], metric: str, labels: tuple[str, str]
) -> str:
    """Parquet first, then plots and the page rendered from the tables as read back."""
    os.makedirs(os.path.join(out_dir, "tables"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    for name, frame in tables.items():
        frame.to_parquet(os.path.join(out_dir, "tables", f"{name}.parquet"), index=False)
    tables = {
        name: pd.read_parquet(os.path.join(out_dir, "tables", f"{name}.parquet")) for name in tables
    }
    figures = section_figures(tables, metric, labels)
    for section in figures.values():
        for name, png in section.items():
            with open(os.path.join(out_dir, "plots", f"{name}.png"), "wb") as f:
                f.write(png)
    page = os.path.join(out_dir, "report.html")
    with open(page, "w") as f:
        f.write(html.render(tables, figures))
    return page


def section_figures(
    tables: dict[str, pd.DataFrame], metric: str, labels: tuple[str, str]
) -> dict[str, dict[str, bytes]]:
    runs, target = tables["runs"], float(tables["settings"].target.iloc[0])
    bars = lambda cols: plots.per_run_figure(runs, cols, labels)  # noqa: E731
    return {
        "curves": plots.curve_figures(tables["curves"], metric, labels, target),
        "target": {
            "to_target": bars(
                [
                    ("time_to_target_s", "wall time to target (s)"),
                    ("flops_to_target", "effective FLOPs to target"),
                    ("steps_to_target", "steps to target"),
                ]
            )
        },
        "memory": {"peak_memory": bars([("peak_memory_mib", "peak memory per worker (MiB)")])},
        "throughput": {
            "throughput": bars(
                [
                    ("samples_per_s", "samples per second"),
                    ("effective_flops_per_s", "effective FLOP/s"),
                ]
            )
        },
        "cost": {"cost": bars([("cost", "cost per run"), ("node_hours", "node-hours")])},
    }
