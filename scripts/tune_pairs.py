"""Tune the LR of every side of the packaged method/baseline pairs with one procedure.

Each ``tune_spaces/pairs/<name>.yaml`` is a 5-point LR grid over one preset. Every grid
point runs as a real Ray Tune sweep of that file (one trial, the tuning seed the file sets,
validation loss at the preset's budget), through ``bench.harness.tune_bracketed``: a winner on
an edge of the grid widens it by the grid's own spacing and searches again. The winners are
written into the presets (``--write``) and every grid, score and winner into
``tune_spaces/pairs/tuned.json``, so a reader can check that each side had the same search.

    python scripts/tune_pairs.py                 # all pairs; prints the winners
    python scripts/tune_pairs.py --write         # ... and writes them into the presets
    python scripts/tune_pairs.py digits-sgd      # one space file
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
import tempfile

import pandas as pd
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.harness import provenance, tune_bracketed  # noqa: E402
from raytrain_eff import presets  # noqa: E402
from raytrain_eff.engine.launch import ensure_ray  # noqa: E402
from raytrain_eff.tune import space as space_mod  # noqa: E402
from raytrain_eff.tune.sweep import run_sweep  # noqa: E402

PAIRS = ROOT / "tune_spaces" / "pairs"


def lr_entry(spec_file: pathlib.Path) -> tuple[dict, str, list[float]]:
    raw = yaml.safe_load(spec_file.read_text())
    ((key, entry),) = raw["space"].items()
    return raw, key, [float(v) for v in entry["grid"]]


def score_of(spec_file: pathlib.Path, storage: str, overrides: list[str]):
    """value -> final validation loss of a one-trial sweep at that LR (inf if it failed)."""
    raw, key, _ = lr_entry(spec_file)

    def score(value: float) -> float:
        one = dict(raw, space={key: {"grid": [value]}})
        with tempfile.NamedTemporaryFile(
            "w", suffix=".yaml", dir=spec_file.parent, delete=False
        ) as f:
            yaml.safe_dump(one, f)
        try:
            name = f"{spec_file.stem}-lr{value:.3g}".replace("+", "")
            # scores are validation losses: the sweep needs no Prometheus exporter
            sweep_dir = run_sweep(
                f.name, ["monitor.enabled=false", *overrides], storage_path=storage, name=name
            )
        finally:
            pathlib.Path(f.name).unlink()
        trials = pd.read_parquet(pathlib.Path(sweep_dir) / "trials.parquet")
        val = float(trials[raw["metric"]].iloc[0]) if len(trials) else math.inf
        print(f"{spec_file.stem}: {key}={value:.4g} -> {raw['metric']} {val:.5g}", flush=True)
        return val if math.isfinite(val) else math.inf

    return score


def write_preset(preset: str, key: str, value: float) -> None:
    """Replace the method's ``lr:`` in the preset's flow-style methods line."""
    method = key.split(".")[1]
    path = pathlib.Path(presets.__file__).parent / f"{preset}.yaml"
    text = path.read_text()
    pattern = re.compile(rf"^(\s*{re.escape(method)}:\s*\{{.*?\blr:\s*)[^,}}]+", re.M)
    new, count = pattern.subn(lambda m: f"{m.group(1)}{value:.3g}", text)
    if count != 1:
        raise SystemExit(f"{path}: expected one '{method}: {{... lr: ...}}' line, found {count}")
    path.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="space files under tune_spaces/pairs (default: all)")
    p.add_argument("--write", action="store_true", help="write the winners into the presets")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override for every sweep (a quick check, e.g. run.steps=20; never with --write)",
    )
    args = p.parse_args()
    if args.write and args.set:
        p.error("--write records the presets' own budget: drop --set")
    files = [PAIRS / f"{n}.yaml" for n in args.names] or sorted(PAIRS.glob("*.yaml"))
    out_path = PAIRS / "tuned.json" if not args.set else pathlib.Path(tempfile.mkdtemp()) / "t.json"
    record = json.loads(out_path.read_text()) if out_path.exists() else {}
    # Scores are validation losses, not times: 4 logical CPUs let a 2-worker trial and its
    # driver share a 2-core machine, as the tests do
    ensure_ray(num_cpus=max(4, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as storage:
        for f in files:
            space_mod.load(str(f))  # fail on a bad file before Ray
            raw, key, grid = lr_entry(f)
            tuned = tune_bracketed(f.stem, score_of(f, storage, args.set), grid)
            record[f.stem] = {
                "base": raw["base"],
                "overrides": raw.get("overrides", []),
                "key": key,
                **tuned,
                "provenance": provenance(),
            }
            print(f"{f.stem}: winner {tuned['winner']:.3g} (inside grid: {tuned['inside']})")
            # a sweep that changes more than the seed tunes a variant, not the preset itself
            at_preset = all(o.startswith("run.seed=") for o in raw.get("overrides", []))
            if args.write and tuned["inside"] and at_preset:
                write_preset(raw["base"], key, tuned["winner"])
            out_path.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
