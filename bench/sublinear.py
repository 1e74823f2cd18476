"""Per-iteration time vs width m: dense GEMM + mask, exact max-tree index, LSH (arXiv 2208.04508).

The paper's regime: f(x) = (1/√m) Σ_r a_r·max(⟨w_r, x⟩ − b, 0), b = √(0.4·ln m), unit-norm x in
d = 64, full-batch gradient steps on n points (B = n: the index keeps one max-tree per point).
One iteration = forward, backward, update and (index paths) index maintenance. The three paths
run interleaved on the same batches from the same initial weights, so machine noise hits all
alike; per seed the median iteration time is kept, and figures are medians over seeds.
A second regime (minibatches B < n) shows where the index loses. Quality: the `wide` task on
scikit-learn digits through the method seam, all three paths with the learning rate tuned on
the dense path (the quality target is fixed before the index paths run).
"""
from __future__ import annotations

import math
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from bench import harness  # noqa: E402
from raytrain_eff.hparams.sublinear import SublinearConfig, WideConfig  # noqa: E402
from raytrain_eff.methods.base import MethodContext  # noqa: E402
from raytrain_eff.methods.sublinear import NeuronSGD, ShiftedReLU, Sublinear  # noqa: E402
from raytrain_eff.tasks.wide import WideTask, unit_rows  # noqa: E402

MODES = ("dense", "exact", "lsh")
D, LSH_TABLES = 64, 8


def lsh_bits(m: int) -> int:
    return max(1, round(math.log2(m)) - 9)      # buckets of ~512 neurons: L·512 candidates


class _Holder(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer


def make_paths(m: int, X: torch.Tensor, seed: int, fanout: int, modes: tuple) -> dict:
    paths = {}
    for mode in modes:
        layer = ShiftedReLU(D, m, 1, seed=seed)               # same init for every path
        layer.count_active = False                            # the baseline does no extra pass
        layer.use_index(mode, X, fanout=fanout, tables=LSH_TABLES, bits=lsh_bits(m), seed=seed)
        paths[mode] = (layer, NeuronSGD(_Holder(layer), lr=1.0))
    return paths


def step(layer, opt, x, y, rows) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) of one iteration."""
    t0, w0 = time.thread_time(), time.perf_counter()
    f = layer(x, rows)
    loss = 0.5 * ((f - y) ** 2).sum(1).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.thread_time() - t0, time.perf_counter() - w0


def time_width(m: int, n: int, B: int, seed: int, iters: int, fanout: int,
               modes: tuple = MODES) -> dict:
    gen = torch.Generator().manual_seed(seed)
    X = unit_rows(torch.randn(n, D, generator=gen))
    Y = torch.sin(D ** 0.5 * X[:, :1])
    paths = make_paths(m, X, seed, fanout, modes)
    times, walls = {mode: [] for mode in modes}, {mode: [] for mode in modes}
    for it in range(iters + 2):                               # 2 warm-up iterations
        rows = torch.randperm(n, generator=gen)[:B]
        for mode in modes:
            layer, opt = paths[mode]
            layer.reset_stats()
            dt, wall = step(layer, opt, X[rows], Y[rows], rows)
            if it >= 2:
                times[mode].append(dt)
                walls[mode].append(wall)
    out = {mode: {"time": statistics.median(times[mode]),
                  "wall": statistics.median(walls[mode]),
                  "updated": paths[mode][0].stats["updated"],
                  "pairs": paths[mode][0].stats["pairs"],
                  "candidates": paths[mode][0].stats["candidates"]} for mode in modes}
    if "lsh" in modes:
        out["lsh"]["recall"] = lsh_recall(paths["lsh"][0], X[:B])
    gap = paths["exact"][0].weight.detach() - paths["dense"][0].weight.detach()
    out["exact"]["max_weight_gap"] = float(gap.abs().max())
    return out


@torch.no_grad()
def lsh_recall(layer, x) -> float:
    bi, r, _ = layer.active_pairs(x, None)
    truth = x @ layer.weight.T > layer.b
    return float(truth[bi, r].sum() / truth.sum().clamp_min(1))


def slope(ms: list[int], ts: list[float]) -> float:
    return float(np.polyfit(np.log(ms), np.log(ts), 1)[0])


def sweep(widths: list[int], n: int, B: int, seeds: list[int], iters: int, fanout: int,
          modes: tuple = MODES) -> dict:
    per = {mode: {m: [] for m in widths} for mode in modes}
    wall = {mode: {m: [] for m in widths} for mode in modes}
    extra = {m: [] for m in widths}
    for m in widths:
        for seed in seeds:
            r = time_width(m, n, B, seed, iters, fanout, modes)
            for mode in modes:
                per[mode][m].append(r[mode]["time"])
                wall[mode][m].append(r[mode]["wall"])
            extra[m].append(r)
            print(f"n={n} B={B} m=2^{int(math.log2(m))} seed {seed}: " +
                  " ".join(f"{mo} {r[mo]['time'] * 1e3:.1f}ms" for mo in modes), flush=True)
    res = {}
    for mode in modes:
        med = [statistics.median(per[mode][m]) for m in widths]
        res[mode] = {"widths": widths, "seconds": {str(m): harness.summary(per[mode][m])
                                                   for m in widths},
                     "wall_seconds": {str(m): harness.summary(wall[mode][m]) for m in widths},
                     "slope": slope(widths, med) if len(widths) > 1 else None,
                     # the upper half of the range, where fixed per-call overheads fade
                     "slope_upper_half": slope(widths[len(widths) // 2:],
                                               med[len(widths) // 2:])
                     if len(widths) > 3 else None}
    res["exact"]["neurons_updated_per_step"] = {
        str(m): statistics.median(e["exact"]["updated"] for e in extra[m]) for m in widths}
    res["exact"]["active_per_input"] = {
        str(m): statistics.median(e["exact"]["pairs"] / B for e in extra[m]) for m in widths}
    res["exact"]["max_weight_gap_vs_dense"] = max(e["exact"]["max_weight_gap"]
                                                  for m in widths for e in extra[m])
    if "lsh" in modes:
        res["lsh"]["recall"] = {str(m): harness.summary([e["lsh"]["recall"] for e in extra[m]])
                                for m in widths}
        res["lsh"]["candidates_per_input"] = {
            str(m): statistics.median(e["lsh"]["candidates"] / B for e in extra[m])
            for m in widths}
    res["dense"]["neurons_updated_per_step"] = {str(m): m for m in widths}
    ratio = {str(m): statistics.median(per["dense"][m]) / statistics.median(per["exact"][m])
             for m in widths}
    res["speedup_exact_over_dense"] = ratio
    wins = [m for m in widths if ratio[str(m)] > 1]
    res["crossover_m"] = next((m for i, m in enumerate(widths)
                               if all(ratio[str(w)] > 1 for w in widths[i:])), None)
    res["exact_wins_at"] = wins
    return res


def train_digits(mode: str, lr: float, seed: int, steps: int, width: int, B: int) -> dict:
    """The `wide` task on digits through the method seam, as the engine would drive it."""
    from raytrain_eff.config import DataConfig
    task = WideTask(WideConfig(dataset="digits", width=width),
                    DataConfig(batch_size=B, val_fraction=0.2), seed=seed)
    task.load()
    method = Sublinear(SublinearConfig(index=mode, lr=lr, lsh_tables=LSH_TABLES,
                                       lsh_bits=lsh_bits(width), recall_interval=5))
    ctx = MethodContext(task=task)
    model = method.prepare(task.build_model(), ctx)
    opt = method.make_optimizer(model, ctx)
    logs, t0 = [], time.perf_counter()
    for s in range(steps):
        method.before_step(s, ctx)
        batch = task.train_batch(s, 0, 0, 1, B)
        loss = task.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logs.append({**method.after_step(s, ctx), "loss": float(loss.detach()),
                     "flops": method.step_flops(0.0, ctx)})
    seconds = (time.perf_counter() - t0) / steps
    ev = task.evaluate(model, 512, 10)
    recalls = [g["index_recall"] for g in logs if "index_recall" in g]
    return {"val_accuracy": ev["val_accuracy"], "val_loss": ev["val_loss"],
            "seconds_per_step": seconds,
            "flops_per_step": statistics.mean(g["flops"] for g in logs),
            "active_fraction": statistics.mean(g["active_fraction"] for g in logs),
            "neurons_updated": statistics.mean(g["neurons_updated"] for g in logs),
            "index_recall": statistics.mean(recalls) if recalls else None}


def digits(seeds: list[int], lrs: list[float], steps: int, width: int, B: int) -> dict:
    tuned = {lr: train_digits("dense", lr, seeds[0], steps, width, B)["val_accuracy"]
             for lr in lrs}
    lr = max(tuned, key=tuned.get)                            # tuned on the dense baseline
    runs = {mode: [train_digits(mode, lr, s, steps, width, B) for s in seeds] for mode in MODES}
    out = {"lr_grid": {str(k): v for k, v in tuned.items()}, "lr": lr,
           "width": width, "batch": B, "steps": steps}
    for mode, rs in runs.items():
        out[mode] = {key: harness.summary([r[key] for r in rs])
                     for key in rs[0] if rs[0][key] is not None}
    return out


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        cfg = dict(widths=[2 ** 8, 2 ** 9, 2 ** 10], n=8, B=8, seeds=[0, 1, 2], iters=3,
                   lose=[(32, 8)], lose_widths=[2 ** 10], digits_steps=20,
                   digits_width=512, digits_batch=32, lrs=[30.0])
    else:
        cfg = dict(widths=[2 ** k for k in range(10, 19)], n=8, B=8, seeds=[0, 1, 2], iters=7,
                   lose=[(64, 64), (256, 16)], lose_widths=[2 ** 12, 2 ** 15, 2 ** 17],
                   digits_steps=200, digits_width=2048, digits_batch=32,
                   lrs=[30.0, 100.0, 300.0])
    fanout = 8
    main_res = sweep(cfg["widths"], cfg["n"], cfg["B"], cfg["seeds"], cfg["iters"], fanout)
    lose = {f"n={n},B={B}": sweep(cfg["lose_widths"], n, B, cfg["seeds"], cfg["iters"], fanout,
                                  ("dense", "exact")) for n, B in cfg["lose"]}
    acc = digits(cfg["seeds"], cfg["lrs"], cfg["digits_steps"], cfg["digits_width"],
                 cfg["digits_batch"])
    top = str(cfg["widths"][-1])
    target = {"exact_slope_max": 0.85, "exact_beats_dense_at_largest_m": True}
    s_exact, speed_top = main_res["exact"]["slope"], main_res["speedup_exact_over_dense"][top]
    met = s_exact <= target["exact_slope_max"] and speed_top > 1
    notes = notes_for(main_res, lose, acc, cfg, met)
    print(notes)
    harness.write_result(
        "sublinear", smoke=args.smoke, out=args.out,
        config={**{k: v for k, v in cfg.items() if k != "lose"},
                "lose": [list(x) for x in cfg["lose"]], "d": D, "fanout": fanout,
                "shift": "sqrt(0.4 ln m)", "update": "sgd (first order, active neurons only)",
                "lsh_tables": LSH_TABLES, "lsh_bits": "log2(m) - 9"},
        baseline={"dense": main_res["dense"], "digits": acc["dense"]},
        method={"exact": main_res["exact"], "lsh": main_res["lsh"],
                "digits": {m: acc[m] for m in ("exact", "lsh")}},
        ratios={"speedup_exact_over_dense": main_res["speedup_exact_over_dense"],
                "crossover_m": main_res["crossover_m"],
                "slopes": {m: main_res[m]["slope"] for m in MODES}},
        target=target, met=met, notes=notes,
        extra={"losing_regimes": lose, "digits": {k: v for k, v in acc.items()
                                                  if k not in MODES}})


def notes_for(main_res: dict, lose: dict, acc: dict, cfg: dict, met: bool) -> str:
    sl = {m: round(main_res[m]["slope"], 3) for m in MODES}
    su = {m: main_res[m]["slope_upper_half"] for m in MODES}
    su = {m: round(v, 3) for m, v in su.items() if v is not None}
    sp = {k: round(v, 2) for k, v in main_res["speedup_exact_over_dense"].items()}
    lsp = {reg: {k: round(v, 2) for k, v in r["speedup_exact_over_dense"].items()}
           for reg, r in lose.items()}
    rec = {k: round(v["median"], 3) for k, v in main_res["lsh"]["recall"].items()}
    upd = main_res["exact"]["neurons_updated_per_step"]
    acc_txt = ", ".join(f"{m} {acc[m]['val_accuracy']['median']:.3f} "
                        f"({acc[m]['flops_per_step']['median'] / 1e6:.0f} MFLOP/step, "
                        f"{acc[m]['seconds_per_step']['median'] * 1e3:.0f} ms/step)"
                        for m in MODES)
    dense_t = main_res["dense"]["seconds"]
    ws = main_res["dense"]["widths"]
    doubling = [round(dense_t[str(b)]["median"] / dense_t[str(a)]["median"], 2)
                for a, b in zip(ws, ws[1:])]
    return (f"{'met' if met else 'NOT met'}: per-iteration CPU seconds (thread_time, 1 thread; "
            f"the 2-core host was shared, wall times are kept beside them). Log-log slopes over "
            f"the whole range {sl}, over its upper half {su}; exact speed-up over dense "
            f"by m {sp} (n=B={cfg['n']}); crossover m={main_res['crossover_m']}; "
            f"neurons updated per step (exact) {upd}. "
            f"Where the index loses: {lsp} — re-keying a changed neuron costs n·d (one key per "
            f"indexed input) while the dense step costs B·d per neuron, and |U| ≈ "
            f"m(1-(1-p)^B) changed neurons grows with B·p (p ≈ m^-0.2 active fraction); "
            f"small m adds fixed per-call overhead of the index's gather kernels. "
            f"LSH recall by m {rec}: in this Gaussian regime active and inactive neurons are "
            f"nearly equi-angular to x, so hashing barely separates them. "
            f"Dense time per doubling of m (cache effects show as jumps): "
            f"{doubling}. "
            f"Digits (m={acc['width']}, B={acc['batch']}, n=1438 indexed rows, lr {acc['lr']} "
            f"tuned on dense): val accuracy {acc_txt}; there n ≫ B, so the exact index "
            f"re-keys every changed neuron for 1438 inputs and costs more than dense: it is "
            f"shown for quality (it follows dense), not for speed. LSH's missed neurons give "
            f"no gradient and no output, so its model differs from the dense one.")


if __name__ == "__main__":
    main()
