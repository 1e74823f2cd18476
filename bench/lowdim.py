"""Benchmark: compressed (width 2r, spectral init) vs original (width d) deep linear networks.

arXiv 2311.05061. For matrix factorisation (MF), completion (MC, 30% observed) and sensing
(MS) at d = 100 and d = 1000, float64, one thread, same ``lowdim.fit`` loop for every variant:
iterations and wall time to recovery error 1e-3 and 1e-8 for the original network (random
orthogonal init), the compressed network (spectral init) and the compressed network with
random orthogonal init. Then a classifier: the digits MLP with its dense nn.Linear head, an
uncompressed deep linear head (width = hidden) and the compressed width-2r head (``lowdim``).

    python bench/lowdim.py [--smoke] [--out PATH]
"""
from __future__ import annotations

import statistics
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from bench.harness import parser, summary, write_result  # noqa: E402
from raytrain_eff.config import DataConfig  # noqa: E402
from raytrain_eff.hparams.lowdim import LowDimConfig  # noqa: E402
from raytrain_eff.hparams.tasks import ClassifyConfig  # noqa: E402
from raytrain_eff.methods import lowdim as L  # noqa: E402
from raytrain_eff.methods.base import MethodContext  # noqa: E402
from raytrain_eff.tasks.classify import ClassifyTask  # noqa: E402

EPS = 1e-2                      # the paper's ε
TOLS = (1e-3, 1e-8)
GRID = [(0.5, 1.0), (0.4, 1.5), (0.3, 2.0)]   # (η, α): the same tuning budget for every net
VARIANTS = ("original", "compressed", "compressed_random")


def build(kind: str, d: int, seed: int, smoke: bool) -> tuple[L.LowRankProblem, int]:
    gen = torch.Generator().manual_seed(seed)
    if kind == "mf":
        return L.factorization(d, 5, gen), 5
    if kind == "mc":
        return L.completion(d, 5, 0.3, gen), 5
    return L.sensing(d, 3, 300 if smoke else 1200, gen), 3   # m = 4·r·d at d = 100


def net_of(variant: str, P: L.LowRankProblem, r: int, seed: int) -> L.DeepLinear:
    gen = torch.Generator().manual_seed(10_000 + seed)
    if variant == "original":
        return L.original(P.Phi.shape[0], 3, EPS, gen)
    return L.compressed(P.surrogate, 2 * r, EPS, "spectral" if variant == "compressed" else
                        "random", gen)


def run(variant, P, r, seed, eta, alpha, cap, tol=TOLS[-1]) -> dict:
    net = net_of(variant, P, r, seed)
    traj = L.fit(net, P, L.make_optimizer(L.param_groups(net, [net], eta, alpha), "gd"), cap,
                 tol=tol)
    out = {"iterations": len(traj.errors) - 1, "seconds": traj.seconds[-1],
           "final_error": traj.errors[-1], "eta": eta, "alpha": alpha,
           "errors": traj.errors}
    for tol in TOLS:
        hit = traj.first_below(tol)
        out[f"iters_to_{tol:g}"], out[f"seconds_to_{tol:g}"] = hit if hit else (None, None)
    return out


def tune(kind, d, cap, smoke) -> dict:
    """Per variant, the (η, α) of GRID with the fewest iterations to 1e-3 on seed 0."""
    P, r = build(kind, d, 0, smoke)
    best = {}
    for variant in VARIANTS:
        trials = [run(variant, P, r, 0, eta, alpha, cap, TOLS[0]) for eta, alpha in GRID]
        key = [(t["iters_to_0.001"] or 10 ** 9, i) for i, t in enumerate(trials)]
        best[variant] = GRID[min(key)[1]]
    return best


def lowrank_benchmark(smoke: bool) -> dict:
    d_small, d_large = (30, 60) if smoke else (100, 1000)
    caps = {"mf": 1200, "mc": 1200, "ms": 1000} if not smoke else {"mf": 300, "mc": 300,
                                                                    "ms": 200}
    seeds = (1, 2) if smoke else (1, 2, 3)
    out, tuned_by_kind = {}, {}
    for kind in ("mf", "mc", "ms"):
        if kind != "ms":   # sensing reuses the MF choice: its iterations cost ~10x more
            tuned_by_kind[kind] = tune(kind, d_small, caps[kind], smoke)
        tuned = tuned_by_kind["mf" if kind == "ms" else kind]
        for d in (d_small, d_large):
            if kind == "ms" and d == d_large:
                m = 4 * 3 * d
                out[f"ms_d{d}"] = {"skipped": f"dense Gaussian sensing at m = 4·r·d = {m} needs "
                                              f"{8 * m * d * d / 1e9:.0f} GB: not run"}
                continue
            runs = {v: [] for v in VARIANTS}
            for seed in (seeds if d == d_small and kind != "ms" else seeds[:1]):
                P, r = build(kind, d, seed, smoke)
                for v in VARIANTS:
                    # the width-d original costs ~2 s per iteration at d = 1000: it stops at
                    # the first tolerance (1e-8 is below every variant's floor at this eps)
                    tol = TOLS[0] if (v == "original" and d == d_large) else TOLS[-1]
                    runs[v].append(run(v, P, r, seed, *tuned[v], caps[kind], tol))
            out[f"{kind}_d{d}"] = {"tuned_eta_alpha": tuned, "runs": runs,
                                   "equal_iterations": equal_iterations(runs)}
            for rs in runs.values():
                for x in rs:
                    x["errors_every_50"] = x.pop("errors")[::50]
            print(kind, d, {v: [(x["iters_to_0.001"], round(x["seconds"], 2),
                                 f"{x['final_error']:.1e}") for x in rs]
                            for v, rs in runs.items()}, flush=True)
    return out


def equal_iterations(runs: dict) -> list[dict]:
    """Per seed: iterations where the compressed error exceeds the original's, and the
    compressed error at the original's last iteration."""
    out = []
    for o, c in zip(runs["original"], runs["compressed"]):
        n = min(len(o["errors"]), len(c["errors"]))
        k = min(o["iterations"], len(c["errors"]) - 1)
        out.append({"compared": n,
                    "compressed_worse_at": sum(c["errors"][i] > o["errors"][i] for i in range(n)),
                    "original_last_error": o["errors"][-1],
                    "compressed_error_at_that_iteration": c["errors"][k]})
    return out


# -- the classifier head -----------------------------------------------------------------------
# The head must be a real share of the step for compressing it to save time (the paper's
# FashionMNIST MLP is wide): at hidden 512 the uncompressed deep head holds ~2/3 of the
# parameters. At hidden 128 both heads cost the same per epoch and the comparison is one of
# epochs alone (an earlier run of this bench: compressed 0.56x, not met).
HEAD_HIDDEN = 512


def head_run(variant: str, seed: int, lr: float, alpha: float, epochs: int) -> dict:
    task = ClassifyTask(ClassifyConfig(model="mlp", hidden=HEAD_HIDDEN, depth=2),
                        DataConfig(dataset="digits", val_fraction=0.2, batch_size=64), seed=seed)
    task.load()
    torch.manual_seed(seed)
    model = task.build_model()
    batch = 64
    ctx = MethodContext(loss_fn=task.loss, next_batch=lambda: task.train_batch(0, 0, 0, 1, batch))
    if variant == "compressed":
        method = L.LowDim(LowDimConfig(width=10, init_scale=EPS, alpha=alpha, lr=lr))
        model = method.prepare(model, ctx)
        opt = method.make_optimizer(model, ctx)
    elif variant == "original":   # uncompressed deep linear head: width = hidden, depth 3
        gen = torch.Generator().manual_seed(seed)
        model.head = L.DeepLinear(L.orthogonal_weights(HEAD_HIDDEN, task.classes, HEAD_HIDDEN,
                                                       3, EPS, gen, torch.float32),
                                  model.head.bias)
        opt = L.make_optimizer(L.param_groups(model, [model.head], lr, alpha), "adam")
    else:
        opt = L.make_optimizer([{"params": list(model.parameters()), "lr": lr}], "adam")
    steps_per_epoch = task.num_train // batch
    curve, seconds, step = [], 0.0, 0
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(steps_per_epoch):
            opt.zero_grad(set_to_none=True)
            task.loss(model, task.train_batch(step, 0, 0, 1, batch)).backward()
            opt.step()
            step += 1
        seconds += time.perf_counter() - start
        curve.append((seconds, task.evaluate(model, 256, 1)["val_accuracy"]))
    return {"curve": curve, "final_accuracy": curve[-1][1], "lr": lr, "alpha": alpha}


def time_to(curve, target) -> float | None:
    return next((s for s, acc in curve if acc >= target), None)


def head_benchmark(smoke: bool) -> dict:
    epochs, seeds = (3, (1, 2)) if smoke else (25, (1, 2, 3))
    grids = {"dense": [(lr, 1.0) for lr in (1e-3, 3e-3)],
             "original": [(lr, a) for lr in (1e-3, 3e-3) for a in (1.0, 3.0)],
             "compressed": [(lr, a) for lr in (1e-3, 3e-3) for a in (1.0, 3.0)]}
    tuned = {v: max(g, key=lambda la: head_run(v, 0, *la, epochs)["final_accuracy"])
             for v, g in grids.items()}
    runs = {v: [head_run(v, s, *tuned[v], epochs) for s in seeds] for v in ("dense", "original")}
    # the quality target is fixed from the uncompressed head before the compressed one runs
    target = statistics.median(r["final_accuracy"] for r in runs["original"])
    runs["compressed"] = [head_run("compressed", s, *tuned["compressed"], epochs) for s in seeds]
    times = {v: [time_to(r["curve"], target) for r in rs] for v, rs in runs.items()}
    print("head", tuned, target, times, flush=True)
    return {"tuned_lr_alpha": tuned, "target_accuracy": target, "runs": runs,
            "seconds_to_target": times}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    lowrank = lowrank_benchmark(args.smoke)
    torch.set_default_dtype(torch.float32)
    head = head_benchmark(args.smoke)
    record(lowrank, head, args)


def med(runs, key):
    vals = [r[key] for r in runs if r[key] is not None]
    return summary(vals) if len(vals) == len(runs) else None


def record(lowrank: dict, head: dict, args) -> None:
    baseline, method, ratios = {}, {}, {}
    for name, res in lowrank.items():
        if "runs" not in res:
            continue
        o, c, cr = (res["runs"][v] for v in VARIANTS)
        baseline[name] = {k: med(o, k) for k in ("iters_to_0.001", "seconds_to_0.001",
                                                 "iters_to_1e-08", "final_error", "iterations",
                                                 "seconds")}
        method[name] = {v: {k: med(rs, k) for k in ("iters_to_0.001", "seconds_to_0.001",
                                                      "iters_to_1e-08", "final_error")}
                        for v, rs in (("compressed", c), ("compressed_random", cr))}
        ratios[name] = speedups(o, c)
    mc_large = max((k for k in lowrank if k.startswith("mc_")),
                   key=lambda k: int(k.split("_d")[1]))
    # equal or lower error: the compressed error at the original's last iteration, seed by seed
    eq = lowrank[mc_large]["equal_iterations"]
    at_equal = max(e["compressed_error_at_that_iteration"] for e in eq)
    mc_met = (ratios[mc_large]["wall_speedup_to_1e-3_lower_bound"] >= 5 and all(
        e["compressed_error_at_that_iteration"] <= e["original_last_error"] for e in eq))
    head_times = head["seconds_to_target"]
    comp_t = [t for t in head_times["compressed"] if t is not None]
    orig_t = [t for t in head_times["original"] if t is not None]
    head_met = (len(comp_t) == len(head_times["compressed"]) and bool(orig_t)
                and statistics.median(comp_t) < statistics.median(orig_t))
    ratios["head_seconds_to_target_original_over_compressed"] = (
        statistics.median(orig_t) / statistics.median(comp_t) if comp_t and orig_t else None)
    method["head"] = {"seconds_to_target": head_times["compressed"],
                      "final_accuracy": summary([x["final_accuracy"]
                                                 for x in head["runs"]["compressed"]])}
    baseline["head"] = {v: {"seconds_to_target": head_times[v],
                            "final_accuracy": summary([x["final_accuracy"]
                                                       for x in head["runs"][v]])}
                        for v in ("dense", "original")}
    write_result(
        "lowdim", smoke=args.smoke, out=args.out,
        config={"eps": EPS, "tolerances": TOLS, "grid_eta_alpha": GRID, "dtype": "float64",
                "threads": 1, "optimizer": "full-batch GD", "depth": 3,
                "mc_observed": 0.3, "ms": "r=3, m=1200 Gaussian at d=100",
                "head": f"digits MLP 64-{HEAD_HIDDEN}-{HEAD_HIDDEN}, Adam, batch 64"},
        baseline=baseline, method=method, ratios=ratios,
        target={"mc_large_wall_speedup_to_1e-3": 5.0, "head": "compressed reaches the "
                "uncompressed deep head's median accuracy in less median time"},
        met=mc_met and head_met, notes=notes(lowrank, ratios, mc_large, at_equal, head_met),
        extra={"lowrank": lowrank, "head": head})


def speedups(o: list, c: list) -> dict:
    """Iteration and wall ratios (original / compressed) to 1e-3, seed by seed.

    When the original stops at its cap above 1e-3 its time there is a lower bound."""
    wall, iters, bound = [], [], []
    for oo, cc in zip(o, c):
        t_c = cc["seconds_to_0.001"]
        if t_c is None:
            continue
        reached = oo["seconds_to_0.001"] is not None
        t_o = oo["seconds_to_0.001"] if reached else oo["seconds"]
        wall.append(t_o / t_c)
        bound.append(not reached)
        if reached:
            iters.append(oo["iters_to_0.001"] / cc["iters_to_0.001"])
    return {"wall_speedup_to_1e-3": summary(wall) if wall else None,
            "wall_speedup_to_1e-3_lower_bound": min(wall) if wall else 0.0,
            "original_capped_before_1e-3": any(bound),
            "iteration_ratio_to_1e-3": summary(iters) if iters else None}


def notes(lowrank, ratios, mc_large, at_equal, head_met) -> str:
    floor = ", ".join(f"{k}: {v['runs']['original'][0]['final_error']:.1e} vs "
                      f"{v['runs']['compressed'][0]['final_error']:.1e}"
                      for k, v in lowrank.items() if "runs" in v)
    o, c = (lowrank[mc_large]["runs"][v][0] for v in ("original", "compressed"))
    per_iter = (o["seconds"] / o["iterations"], c["seconds"] / c["iterations"])
    return (
        f"1e-8 is below both networks' floor at eps=1e-2: directions not in the target keep "
        f"their eps^3 = 1e-6 singular values (depth-3 GD shrinks them like s' = -3 s^(7/3)), "
        f"so the error stalls near sqrt(k)*eps^3/||Phi||_F, k = d - r (original) or r "
        f"(compressed); final errors original vs compressed: {floor}. tests/methods/"
        f"test_lowdim.py reaches < 1e-8 with eps = 1.5e-3 on a small MF. At d=1000 the "
        f"original networks run one seed and stop at 1e-3 ({mc_large}: {o['iterations']} "
        f"iterations, each 7 dense d^3 float64 matmuls: {per_iter[0]:.2f} s vs "
        f"{per_iter[1]:.3f} s per compressed iteration); {mc_large} wall-time ratio to 1e-3 "
        f"{ratios[mc_large]['wall_speedup_to_1e-3_lower_bound']:.1f}x"
        f"{' (a lower bound: the original hit its cap)' if ratios[mc_large]['original_capped_before_1e-3'] else ''}"
        f"; the compressed error at the original's last iteration was {at_equal:.2e}. "
        f"MS at d=100 runs one seed "
        f"(each iteration reads the 96 MB operator twice), MS uses the MF-tuned (eta, alpha); "
        f"MS at d=1000 is not run (a dense Gaussian operator would not fit in memory). "
        f"torch.compile at d=100: bench/lowdim_compile.py (bench/results/lowdim_compile.json). "
        f"Head target met: {head_met}.")


if __name__ == "__main__":
    main()
