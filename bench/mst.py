"""MST vs dense AdamW on the char-level GPT (King James Bible): validation loss, effective
training FLOPs and wall time, at equal tokens and at equal FLOPs.

Arms, all in one run through the method seam in a plain PyTorch loop (AdamW, linear LR
warm-up then cosine decay to 10%, each arm over its own step count):
  * ``dense_steps``  dense for S steps (equal tokens);
  * ``mst``          MST for S steps, with the schedule that bench/mst_sweep.py's Ray Tune
                     sweep kept (``bench/results/mst_sweep.json``; the gpt-mst preset's
                     schedule when there is none), phases scaled to S;
  * ``dense_flops``  dense for S_eq steps, S_eq = MST's effective FLOPs / dense FLOPs per step
                     (equal FLOPs, fewer tokens) — its own full LR schedule.
Fairness: every arm gets the same tuning budget — the same LR grid on a tuning seed — and
then runs on 3 fresh seeds. FLOPs of all arms come from the same analytic counter
(``raytrain_eff.methods.mst.FlopCounter``). Target: MST's median validation loss is below
dense_flops's by more than 3× the larger seed spread; stretch: within 2% of dense_steps at
≤ 0.5× its FLOPs. A CPU micro-benchmark times the block-sparse attention kernel (which skips
untouched tiles) against masked dense SDPA.

Scale: a 2-layer, 64-wide GPT on 64-character windows, batch 8, a few hundred steps, on a
shared 2-core CPU, so the whole run fits in about 10 minutes; the paper's figures are for
GPT-2 on 9B tokens.

    python bench/mst_sweep.py      # first: the Tune sweep that picks MST's schedule
    python bench/mst.py            # full run -> bench/results/mst.json
    python bench/mst.py --smoke    # seconds; checks the script end to end
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench.harness import parser, summary, write_result  # noqa: E402
from raytrain_eff.config import DataConfig  # noqa: E402
from raytrain_eff.hparams.mst import MSTConfig  # noqa: E402
from raytrain_eff.hparams.tasks import LMConfig  # noqa: E402
from raytrain_eff.methods.base import MethodContext  # noqa: E402
from raytrain_eff.methods.mst import MST, FlopCounter  # noqa: E402
from raytrain_eff.methods.sparse_attention import block_sparse_attention, pattern  # noqa: E402
from raytrain_eff.tasks.lm import LanguageModelTask  # noqa: E402

FULL = dict(model=LMConfig(seq_len=64, n_layer=2, n_head=4, n_embd=64), batch=8, steps=240,
            lrs=[2e-3, 5e-3, 1e-2], seeds=[1, 2, 3], tune_seed=0, eval_batches=16,
            mst=dict(update_every=20, attention_window=16, attention_tile=16), frontier=3)
SMOKE = dict(model=LMConfig(seq_len=32, n_layer=1, n_head=2, n_embd=32), batch=4, steps=12,
             lrs=[5e-3], seeds=[1, 2], tune_seed=0, eval_batches=2,
             mst=dict(update_every=3, attention_window=8, attention_tile=8), frontier=1)
PRESET_MST = dict(sparsity=0.9, warmup_end=0.1, restore_start=0.6, restore_end=0.85,
                  drop_fraction=0.3, grow="mixed", attention="local", attention_start=0.1,
                  attention_stop=0.6)
# sparser schedules (MST's tuned LR, 3 seeds each): at what FLOP fraction is MST within 2%?
FRONTIER = [dict(sparsity=0.95), dict(sparsity=0.95, restore_start=0.7, restore_end=0.9),
            dict(sparsity=0.98, restore_start=0.75, restore_end=0.9)]


def swept_schedule(smoke: bool) -> tuple[dict, str]:
    """(schedule, where it came from): the Tune sweep's choice, else the preset's."""
    path = pathlib.Path(__file__).resolve().parent / "results" / "mst_sweep.json"
    if smoke or not path.is_file():
        return {}, "gpt-mst preset"
    record = json.loads(path.read_text())
    return record["method"]["schedule"], (f"Tune sweep ({record['config']['trials']} trials, "
                                          f"kept trial {record['method']['trial_id']})")


def lr_at(t: int, steps: int, lr: float) -> float:
    warm = max(steps // 20, 1)
    if t < warm:
        return lr * (t + 1) / warm
    u = (t - warm) / max(steps - warm, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u)))


def run(task, cfg, *, arm: str, lr: float, seed: int, steps: int, schedule=None) -> dict:
    """One training run; returns val loss, analytic dense/effective FLOPs and wall seconds.
    ``schedule``: MST settings that replace the preset's."""
    torch.manual_seed(seed)
    task.seed = seed
    model = task.build_model()
    ctx = MethodContext(total_steps=steps)
    mst_cfg = {**PRESET_MST, **cfg["mst"], **(schedule or {}), "seed": seed}
    mst = MST(MSTConfig(**mst_cfg)) if arm == "mst" else None
    if mst:
        mst.prepare(model, ctx)
        counter = mst.counter
    else:
        counter = FlopCounter(model, {}, cfg["mst"]["attention_tile"])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.99))
    ctx.optimizer = opt
    dense = eff = 0.0
    start = time.perf_counter()
    for t in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(t, steps, lr)
        counter.reset()
        if mst:
            mst.before_step(t, ctx)
        opt.zero_grad(set_to_none=True)
        task.loss(model, task.train_batch(t, 0, 0, 1, cfg["batch"])).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if mst:
            mst.after_step(t, ctx)
        d, e = counter.totals(mst._dense_dw if mst else frozenset())
        dense, eff = dense + d, eff + e
    wall = time.perf_counter() - start
    val = task.evaluate(model, cfg["batch"] * 4, cfg["eval_batches"])["val_loss"]
    return {"val_loss": val, "flops_dense": dense, "flops_effective": eff, "wall_s": wall,
            "steps": steps}


def tune(task, cfg, arm: str, steps: int, schedule=None) -> tuple[float, list]:
    """Same LR grid for every arm on the tuning seed; returns the best LR and all trials."""
    trials = [(lr, run(task, cfg, arm=arm, lr=lr, seed=cfg["tune_seed"], steps=steps,
                       schedule=schedule)) for lr in cfg["lrs"]]
    best = min(trials, key=lambda tr: tr[1]["val_loss"])[0]
    return best, [{"lr": lr, **r} for lr, r in trials]


def arm_summary(runs: list[dict], lr: float, trials: list) -> dict:
    return {"lr": lr, "steps": runs[0]["steps"], "tuning_trials": trials, "runs": runs,
            **{k: summary([r[k] for r in runs])
               for k in ("val_loss", "flops_effective", "flops_dense", "wall_s")}}


def attention_kernel_timing(smoke: bool) -> dict:
    """Forward+backward seconds: block-sparse kernel vs masked dense SDPA, local pattern."""
    B, nh, T, hs, w = (2, 2, 64, 8, 16) if smoke else (4, 4, 512, 16, 64)
    mask = pattern("local", T, w)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, nh, T, hs, generator=g, requires_grad=True) for _ in range(3))
    fns = {"dense_sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(
               q, k, v, attn_mask=mask),
           "block_sparse": lambda: block_sparse_attention(q, k, v, mask, tile=w)}
    times = {name: [] for name in fns}
    for _ in range(2 if smoke else 7):  # interleaved so machine noise hits both alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn().sum().backward()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {"shape": {"B": B, "heads": nh, "T": T, "head_dim": hs, "window": w, "tile": w},
            "seconds": {n: summary(ts) for n, ts in times.items()},
            "speedup": med["dense_sdpa"] / med["block_sparse"]}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    cfg = SMOKE if args.smoke else FULL
    task = LanguageModelTask(cfg["model"], DataConfig(dataset="kjv"), seed=0)
    task.load()
    S = cfg["steps"]

    schedule, source = swept_schedule(args.smoke)
    lr_d, trials_d = tune(task, cfg, "dense", S)
    lr_m, trials_m = tune(task, cfg, "mst", S, schedule)
    best_m = next(t for t in trials_m if t["lr"] == lr_m)
    S_eq = max(round(S * best_m["flops_effective"] / best_m["flops_dense"]), 1)
    lr_e, trials_e = tune(task, cfg, "dense", S_eq)

    arms = {"dense_steps": ("dense", lr_d, S, trials_d), "mst": ("mst", lr_m, S, trials_m),
            "dense_flops": ("dense", lr_e, S_eq, trials_e)}
    runs = {name: [] for name in arms}
    for seed in cfg["seeds"]:  # seeds outermost: arms share the machine's state per seed
        for name, (arm, lr, steps, _) in arms.items():
            runs[name].append(run(task, cfg, arm=arm, lr=lr, seed=seed, steps=steps,
                                  schedule=schedule))
    res = {name: arm_summary(runs[name], lr, trials)
           for name, (_, lr, _, trials) in arms.items()}
    frontier = [{"schedule": {**schedule, **sched}, **arm_summary(
        [run(task, cfg, arm="mst", lr=lr_m, seed=seed, steps=S, schedule={**schedule, **sched})
         for seed in cfg["seeds"]], lr_m, [])} for sched in FRONTIER[:cfg["frontier"]]]
    report(args, cfg, res, frontier, attention_kernel_timing(args.smoke),
           {**PRESET_MST, **schedule}, source)


def report(args, cfg, res: dict, frontier: list, kernel: dict, schedule: dict,
           source: str) -> None:
    m, ds, de = res["mst"], res["dense_steps"], res["dense_flops"]
    mv, dsv, dev = (statistics.median(a["val_loss"]["values"]) for a in (m, ds, de))
    points = [{"schedule": a.get("schedule", schedule),
               "flop_fraction": a["flops_effective"]["median"] / ds["flops_dense"]["median"],
               "val_gap": a["val_loss"]["median"] / dsv - 1} for a in [m, *frontier]]
    within = [p["flop_fraction"] for p in points if p["val_gap"] <= 0.02]
    lowest = min(within) if within else None
    spread = max(m["val_loss"]["spread"], de["val_loss"]["spread"])
    flop_frac = m["flops_effective"]["median"] / ds["flops_dense"]["median"]
    gap = mv / dsv - 1
    met = dev - mv > 3 * spread
    stretch = gap <= 0.02 and flop_frac <= 0.5
    ratios = {"mst_flops_over_dense_steps": flop_frac,
              "mst_val_over_dense_steps": mv / dsv, "mst_val_over_dense_flops": mv / dev,
              "mst_wall_over_dense_steps": m["wall_s"]["median"] / ds["wall_s"]["median"],
              "dense_flops_steps_over_dense_steps": de["steps"] / ds["steps"]}
    notes = (f"Tiny scale ({cfg['model'].n_layer} layers x {cfg['model'].n_embd} wide, "
             f"T={cfg['model'].seq_len}, batch {cfg['batch']}, {cfg['steps']} steps, "
             f"{len(cfg['seeds'])} seeds, LR grid {cfg['lrs']} per arm) so the bench fits ~10 "
             f"min on a shared 2-core CPU. MST schedule from the {source} (phases scaled to "
             f"the run; ΔT={cfg['mst']['update_every']}); every arm tunes its LR on the same grid. "
             f"MST val {mv:.4f} vs dense@equal-FLOPs {dev:.4f} (diff {dev - mv:+.4f}, 3x spread "
             f"{3 * spread:.4f}) -> target {'met' if met else 'NOT met'}. MST uses "
             f"{flop_frac:.3f}x dense training FLOPs and is {gap * 100:+.2f}% vs dense at equal "
             f"steps ({dsv:.4f}); stretch (within 2% at <=0.5x FLOPs) "
             f"{'met' if stretch else 'not met'}. Sparser schedules (same LR): "
             + "; ".join(f"{p['flop_fraction']:.3f}x FLOPs -> {p['val_gap'] * 100:+.2f}%"
                         for p in points[1:]) +
             f". Lowest FLOP fraction within 2% of dense at this scale: "
             f"{'none' if lowest is None else f'{lowest:.3f}x'}. Effective FLOPs are analytic (sparse matmuls "
             f"at their density, attention at {cfg['mst']['attention_tile']}-token tiles, dense "
             f"dW on growth steps). Measured wall time of MST is "
             f"{ratios['mst_wall_over_dense_steps']:.2f}x dense at equal steps; on CPU the "
             f"masked weights stay dense tensors and masked SDPA computes every pair, so MST "
             f"does the dense arithmetic plus mask and topology work, and the ratio mostly "
             f"shows the noise of a shared 2-core host. The block-sparse attention kernel, which does skip "
             f"untouched tiles, runs at {kernel['speedup']:.2f}x the speed of masked SDPA "
             f"(T={kernel['shape']['T']}, window {kernel['shape']['window']}, fwd+bwd). "
             f"No GPU here: 2:4 semi-structured sparsity and FlexAttention BlockMask untested.")
    write_result("mst", config={k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                                for k, v in cfg.items()} | {"mst_schedule": schedule,
                                                            "mst_schedule_source": source},
                 baseline={"dense_steps": ds, "dense_flops": de}, method=m, ratios=ratios,
                 target={"mst_beats_dense_at_equal_flops_by": "3x seed spread",
                         "stretch": "val within 2% of dense at <= 0.5x FLOPs",
                         "stretch_met": stretch}, met=met, notes=notes, smoke=args.smoke,
                 out=args.out, extra={"cpu_attention_kernel": kernel, "frontier": frontier,
                                      "frontier_points": points,
                                      "lowest_flop_fraction_within_2pct": lowest})
    print(notes)


if __name__ == "__main__":
    main()
