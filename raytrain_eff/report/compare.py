"""Run a method and its baseline on the same cluster, data and budget, then report.

Both sides get the same shared overrides and the same seeds (``run.seed``); runs alternate
A, B, A, B ... so that drift in the machine's load falls on both sides alike. Before anything
trains, the two configs must agree on data, scaling and step budget: a comparison that
changes those along with the method would not measure the method.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Sequence

from raytrain_eff import config as config_mod
from raytrain_eff.config import ExperimentConfig
from raytrain_eff.typed import ConfigError

SAME = ("data", "scaling")  # whole sections both sides must share
SAME_RUN = ("steps",)  # and the step budget


def resolve(spec: str, overrides: Sequence[str]) -> tuple[ExperimentConfig, str]:
    """A preset name or a YAML path -> (config, its label)."""
    if spec.endswith((".yaml", ".yml")) or os.path.sep in spec:
        cfg = config_mod.load(path=spec, overrides=list(overrides))
        return cfg, os.path.basename(spec).rsplit(".", 1)[0]
    cfg = config_mod.load(preset=spec, overrides=list(overrides))
    return cfg, spec


def check_fair(a: ExperimentConfig, b: ExperimentConfig) -> None:
    """Refuse a comparison whose sides differ in data, scaling or step budget."""
    da, db = a.to_dict(), b.to_dict()
    bad = [k for k in SAME if da[k] != db[k]] + [
        f"run.{k}" for k in SAME_RUN if da["run"][k] != db["run"][k]
    ]
    if bad:
        pairs = [p for key in bad for p in _differences(da, db, key)]
        details = ", ".join(f"{k} ({va} vs {vb})" for k, va, vb in pairs)
        key, value, _ = pairs[0]
        raise ConfigError(
            f"the two sides must share data, scaling and run.steps to be "
            f"compared fairly; they differ in {details}. Give the value you want "
            f"as a shared override, e.g. {key}={value}"
        )


def _differences(da: dict, db: dict, key: str) -> list[tuple[str, object, object]]:
    if key.startswith("run."):
        k = key[4:]
        return [(key, da["run"][k], db["run"][k])]
    return [
        (f"{key}.{k}", da[key][k], db[key].get(k)) for k in da[key] if da[key][k] != db[key].get(k)
    ]


def run_name(stamp: str, side: str, label: str, seed: int) -> str:
    name = f"cmp-{stamp}-{side}-{label}-s{seed}"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:128]


def compare(
    a: str,
    b: str,
    seeds: int = 3,
    overrides: Sequence[str] = (),
    price_per_node_hour: float = 3.0,
    out_dir: str | None = None,
    address: str | None = None,
    *,
    metric: str = "val_loss",
    mode: str | None = None,
    target: float | None = None,
    workers_per_node: int = 1,
    quiet: bool = False,
) -> str:
    """Train ``a`` (the method) and ``b`` (its baseline) over ``seeds`` seeds and write the
    report; returns the report directory. ``quiet``: as ``launch.fit``'s (each run's Ray
    logs in its own ``logs/``)."""
    if seeds < 1:
        raise ConfigError(f"seeds: {seeds} is not allowed; expected an integer >= 1")
    (cfg_a, label_a), (cfg_b, label_b) = resolve(a, overrides), resolve(b, overrides)
    check_fair(cfg_a, cfg_b)
    if label_a == label_b:
        label_a, label_b = f"{label_a} (A)", f"{label_b} (B)"
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid() % 10000}"
    out_dir = out_dir or os.path.abspath(f"compare-{stamp}")
    from raytrain_eff.engine.launch import fit

    dirs: dict[str, list[str]] = {"A": [], "B": []}
    for seed in range(seeds):
        for side, cfg, label in (("A", cfg_a, label_a), ("B", cfg_b, label_b)):
            run = dataclasses.replace(
                cfg.run, seed=cfg.run.seed + seed, name=run_name(stamp, side, label, seed)
            )
            dirs[side].append(
                fit(config_mod.replace(cfg, run=run), address=address, quiet=quiet).run_dir
            )
    from raytrain_eff.report.build import build_report

    build_report(
        dirs["A"],
        dirs["B"],
        out_dir,
        price_per_node_hour,
        (label_a, label_b),
        metric=metric,
        mode=mode,
        target=target,
        workers_per_node=workers_per_node,
    )
    return out_dir
