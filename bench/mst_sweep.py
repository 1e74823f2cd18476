"""MST schedule search: a Ray Tune sweep over the sparsity schedule at bench/mst.py's scale.

The space is ``tune_spaces/mst_sparsity.yaml``'s schedule entries (warm-up end, peak sparsity,
restoration window, ΔT is fixed to the bench's, ζ, grow mode, attention pattern and window);
its learning rate and batch size are left out: bench/mst.py gives every arm the same LR grid
and equal tokens. Each trial trains the bench's tiny GPT through the engine (one Ray Train
worker). The schedule kept is the best validation loss among trials whose effective training
FLOPs are at most ``FLOP_BUDGET`` of dense (the stretch goal's budget); bench/mst.py reads it
from ``bench/results/mst_sweep.json``.

    python bench/mst_sweep.py            # 16 trials, ~5 minutes on 2 cores
    python bench/mst_sweep.py --smoke    # 2 short trials; checks the script end to end
"""
from __future__ import annotations

import pathlib
import sys
import tempfile

import pandas as pd
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.harness import parser, summary, write_result  # noqa: E402

FLOP_BUDGET = 0.5
SCHEDULE_KEYS = ("sparsity", "warmup_end", "restore_start", "restore_end", "drop_fraction",
                 "grow", "attention", "attention_window")
SPACE = {   # the schedule part of tune_spaces/mst_sparsity.yaml, sparsity from 0.8 (budget)
    "methods.mst.sparsity": {"uniform": [0.8, 0.97]},
    "methods.mst.warmup_end": {"uniform": [0.05, 0.25]},
    "methods.mst.restore_start": {"uniform": [0.4, 0.75]},
    "methods.mst.restore_end": {"uniform": [0.8, 0.95]},
    "methods.mst.drop_fraction": {"uniform": [0.1, 0.5]},
    "methods.mst.grow": {"choice": ["gradient", "random", "mixed"]},
    "methods.mst.attention": {"choice": ["local", "strided", "local_strided"]},
    "methods.mst.attention_window": {"choice": [8, 16, 32]},
}


def base_overrides(smoke: bool) -> list[str]:
    """bench/mst.py's FULL (or SMOKE) scale, in engine terms."""
    model = ("task.n_layer=1 task.n_head=2 task.n_embd=32 task.seq_len=32" if smoke else
             "task.n_layer=2 task.n_head=4 task.n_embd=64 task.seq_len=64").split()
    steps = 12 if smoke else 240
    return model + [
        f"data.batch_size={4 if smoke else 8}", f"run.steps={steps}",
        f"train.warmup_steps={max(steps // 20, 1)}", "methods.adamw.lr=5e-3",
        f"methods.mst.update_every={3 if smoke else 20}",
        f"methods.mst.attention_tile={8 if smoke else 16}",
        "run.eval_interval=0", f"run.eval_batches={4 if smoke else 64}",
        f"run.report_interval={steps // 4}", f"run.checkpoint_interval={steps}",
        "scaling.num_workers=1", "monitor.enabled=false", "monitor.progress=false"]


def sweep(smoke: bool, storage: str) -> str:
    from raytrain_eff.tune.sweep import run_sweep
    space = {"base": "gpt-mst", "metric": "val_loss", "mode": "min",
             "num_samples": 2 if smoke else 16, "search": "random",
             "overrides": base_overrides(smoke), "space": SPACE}
    if smoke:   # two fast trials: the smallest attention window only
        space["space"] = {**SPACE, "methods.mst.attention_window": {"choice": [8]}}
    path = pathlib.Path(storage) / "mst_sweep.yaml"
    path.write_text(yaml.safe_dump(space))
    return run_sweep(str(path), storage_path=storage, name="mst-sweep")


def trial_table(sweep_dir: str) -> pd.DataFrame:
    """One row per finished trial: schedule, val loss, effective / dense training FLOPs."""
    trials = pd.read_parquet(pathlib.Path(sweep_dir) / "trials.parquet")
    steps = pd.read_parquet(pathlib.Path(sweep_dir) / "results.parquet")
    flops = steps.groupby("trial_id")[["dense_flops", "effective_flops"]].sum()
    trials = trials[trials.status == "OK"].join(flops, on="trial_id")
    trials["flop_fraction"] = trials.effective_flops / trials.dense_flops
    return trials


def choose(trials: pd.DataFrame) -> pd.Series:
    within = trials[trials.flop_fraction <= FLOP_BUDGET]
    pool = within if len(within) else trials
    return pool.sort_values("val_loss").iloc[0]


def schedule_of(row: pd.Series) -> dict:
    out = {}
    for key in SCHEDULE_KEYS:
        value = row[f"config/methods.mst.{key}"]
        out[key] = value.item() if hasattr(value, "item") else value
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="mst-sweep-") as storage:
        trials = trial_table(sweep(args.smoke, storage))
    best = choose(trials)
    schedule = schedule_of(best)
    rows = [{"schedule": schedule_of(r), "val_loss": float(r.val_loss),
             "flop_fraction": float(r.flop_fraction), "trial_id": r.trial_id}
            for _, r in trials.sort_values("val_loss").iterrows()]
    within = sum(r["flop_fraction"] <= FLOP_BUDGET for r in rows)
    path = write_result(
        "mst_sweep", smoke=args.smoke, out=args.out,
        config={"base": "gpt-mst", "overrides": base_overrides(args.smoke), "space": SPACE,
                "trials": len(rows), "flop_budget": FLOP_BUDGET, "search": "random"},
        baseline={"dense_flops_per_trial": float(best.dense_flops)},
        method={"schedule": schedule, "val_loss": float(best.val_loss),
                "flop_fraction": float(best.flop_fraction), "trial_id": best.trial_id},
        ratios={"flop_fraction": summary([r["flop_fraction"] for r in rows]),
                "val_loss": summary([r["val_loss"] for r in rows])},
        target={"flop_fraction": f"<= {FLOP_BUDGET}"}, met=within > 0,
        notes=(f"{len(rows)} trials, {within} within {FLOP_BUDGET}x dense training FLOPs; "
               f"kept trial {best.trial_id}: val loss {best.val_loss:.4f} at "
               f"{best.flop_fraction:.3f}x FLOPs. One seed per trial (the tuning seed); "
               f"bench/mst.py re-runs the kept schedule on fresh seeds against dense."),
        extra={"trials": rows})
    print(path.read_text())


if __name__ == "__main__":
    main()
