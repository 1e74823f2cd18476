"""torch.compile vs eager for the deep linear networks at d = 100, where eager is overhead-bound.

Matrix factorisation and completion (30% observed) at d = 100, float64, one thread, full-batch
GD: seconds per iteration of the original (width d) and compressed (width 2r) networks, eager
and with the loss ``f(W_L⋯W_1)`` compiled (its backward is compiled with it by AOTAutograd;
the GD update stays eager). The compile warm-up (first iterations, tracing and code
generation) is reported apart from the steady state, and both runs must follow the same
trajectory (recovery errors equal to 1e-9).

    python bench/lowdim_compile.py [--smoke] [--out PATH]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from bench.harness import parser, summary, write_result  # noqa: E402
from raytrain_eff.methods import lowdim as L  # noqa: E402

EPS, ETA, ALPHA, D, R = 1e-2, 0.4, 1.5, 100, 5


def problem(kind: str, d: int) -> L.LowRankProblem:
    gen = torch.Generator().manual_seed(1)
    return L.factorization(d, R, gen) if kind == "mf" else L.completion(d, R, 0.3, gen)


def network(variant: str, P: L.LowRankProblem) -> L.DeepLinear:
    gen = torch.Generator().manual_seed(10_001)
    if variant == "original":
        return L.original(P.Phi.shape[0], 3, EPS, gen)
    return L.compressed(P.surrogate, 2 * R, EPS, "spectral", gen)


def timed_run(variant: str, P: L.LowRankProblem, iterations: int, warmup: int,
              compiled: bool) -> dict:
    net = network(variant, P)
    opt = L.make_optimizer(L.param_groups(net, [net], ETA, ALPHA), "gd")
    loss_of = (lambda: P.loss(net.product()))
    if compiled:
        torch._dynamo.reset()
        loss_of = torch.compile(loss_of, dynamic=False)
    stamps, errors = [time.perf_counter()], []
    for _ in range(warmup + iterations):
        opt.zero_grad(set_to_none=True)
        loss_of().backward()
        opt.step()
        stamps.append(time.perf_counter())
        with torch.no_grad():
            errors.append(P.error(net.product()))
    steady = (stamps[-1] - stamps[warmup]) / iterations
    return {"seconds_per_iteration": steady, "warmup_seconds": stamps[warmup] - stamps[0],
            "final_error": errors[-1], "errors": errors}


def _payback(eager: dict, compiled: dict):
    """Iterations after which the compiled run's extra warm-up is paid back (None: never)."""
    saved = eager["seconds_per_iteration"] - compiled["seconds_per_iteration"]
    if saved <= 0:
        return None
    return (compiled["warmup_seconds"] - eager["warmup_seconds"]) / saved


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    # a fresh Inductor cache: warm-ups are what a first run on a new machine pays
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="lowdim-inductor-")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    d, iterations, warmup = (30, 20, 3) if args.smoke else (D, 600, 5)
    results, speedups, same = {}, {}, True
    for kind in ("mf", "mc"):
        P = problem(kind, d)
        for variant in ("original", "compressed"):
            eager = timed_run(variant, P, iterations, warmup, compiled=False)
            comp = timed_run(variant, P, iterations, warmup, compiled=True)
            gap = max(abs(a - b) for a, b in zip(eager.pop("errors"), comp.pop("errors")))
            same &= gap <= 1e-9
            key = f"{kind}_{variant}"
            results[key] = {"eager": eager, "compiled": comp, "max_error_gap": gap}
            speedups[key] = eager["seconds_per_iteration"] / comp["seconds_per_iteration"]
            print(key, f"eager {1e3 * eager['seconds_per_iteration']:.3f} ms/it, compiled "
                  f"{1e3 * comp['seconds_per_iteration']:.3f} ms/it, warm-up "
                  f"{comp['warmup_seconds']:.1f} s", flush=True)
    amortise = {k: _payback(r["eager"], r["compiled"]) for k, r in results.items()}
    notes = ("steady-state speed-up of the compiled loss (eager s/it over compiled s/it): "
             + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
             + "; compile warm-up: "
             + ", ".join(f"{k} {r['compiled']['warmup_seconds']:.1f} s"
                         for k, r in results.items())
             + "; iterations to pay the warm-up back: "
             + ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} never"
                         for k, v in amortise.items())
             + f". Trajectories equal to 1e-9: {same}. Warm-ups start from an empty "
               "Inductor cache; the first also pays Inductor's own start-up.")
    path = write_result(
        "lowdim_compile", smoke=args.smoke, out=args.out,
        config={"d": d, "r": R, "eps": EPS, "eta": ETA, "alpha": ALPHA, "iterations": iterations,
                "warmup_iterations": warmup, "dtype": "float64", "threads": 1,
                "compiled": "loss f(W_L...W_1) with its backward; GD update eager"},
        baseline={k: r["eager"] for k, r in results.items()},
        method={k: r["compiled"] for k, r in results.items()},
        ratios={"eager_over_compiled_seconds_per_iteration": speedups,
                "iterations_to_amortise_warmup": amortise},
        target={"report": "d=100 is overhead-bound: measure what torch.compile gains"},
        met=same, notes=notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
