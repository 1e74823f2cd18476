"""DASVRDA vs Prox-SVRG vs Katyusha vs scikit-learn SAGA on L1/elastic-net logistic regression.

Data: bag-of-words (tf-idf, unit rows, bias column) of the King James Bible verses, Old vs
New Testament (task ``erm``, dataset ``kjv``). Settings fixed here before anything runs:
λ₁ ∈ {1e-4, 1e-3}, λ₂ = 1e-6. SAGA solves the same objective: C = 1/(n(λ₁ + λ₂)),
l1_ratio = λ₁/(λ₁ + λ₂), no intercept (the bias column is regularised in both).

Per setting: (1) a reference P* certified by a subgradient bound (λ₂-strong convexity);
(2) the same tuning budget for every solver: four step-size scales for each VR method,
five tolerances for SAGA (its step size is automatic); (3) three seeds of each tuned
solver, interleaved, timed to 1e-6 relative suboptimality (VR solvers check P at every
snapshot, which they compute anyway; SAGA's time is its fastest single fit that reaches ε).
Also: inner iterations to ε vs b around √n, and a 2-rank data-parallel DASVRDA run. One
thread everywhere. Target: DASVRDA's median time to ε ≤ SAGA's on every setting.
"""
from __future__ import annotations

import math
import os
import sys
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.harness import parser, summary, write_result  # noqa: E402
from raytrain_eff.config import DataConfig  # noqa: E402
from raytrain_eff.hparams.dasvrda import ERMConfig  # noqa: E402
from raytrain_eff.methods.dasvrda import (ERMProblem, as_rows, certify, fista,  # noqa: E402
                                          make_solver, solve)
from raytrain_eff.tasks.erm import ERMTask  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="The max_iter was reached")  # tight SAGA tolerances
L1S, L2, EPS, SEEDS = (1e-4, 1e-3), 1e-6, 1e-6, (0, 1, 2)
SCALES = (1.0, 2.0, 4.0, 8.0)                  # step-size scales tried for each VR solver
SAGA_TOLS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
VR = ("dasvrda", "prox-svrg", "katyusha")
# work budgets (data passes) of the full run and of --smoke (which only checks the plumbing)
FULL = {"rows": None, "ref": 250, "max": 100, "sweep_ref": 100, "sweep": 80, "dp": 20}
SMOKE = {"rows": 600, "ref": 10, "max": 6, "sweep_ref": 6, "sweep": 4, "dp": 2}


def load(max_rows):
    task = ERMTask(ERMConfig(l1=L1S[0], l2=L2, max_rows=max_rows), DataConfig(dataset="kjv"))
    task.load()
    return task.X_train, task.y_train


def reference(X, y, l1, passes):
    """Long DASVRDA, FISTA polish, best certificate over prox steps: (P_ref, bound)."""
    P = ERMProblem(as_rows(X), y, l1=l1, l2=L2)
    solver = make_solver("dasvrda", P, eta_scale=2.0, seed=99)
    solve(solver, max_passes=passes)
    x = fista(P, solver.output, iters=int(passes))
    certs = [certify(P, x, P.L_bar * f) for f in (0.25, 1.0, 4.0)]   # each bound is valid
    P_ref = min(c[1] for c in certs)
    return P_ref, min(c[1] - P_ref + c[2] for c in certs)             # P_ref − P* ≤ this


def run_vr(name, X, y, l1, scale, seed, target, max_passes):
    """Time from problem set-up to P(x̃) ≤ target; (seconds or inf, passes, final P)."""
    t0 = time.perf_counter()
    P = ERMProblem(as_rows(X), y, l1=l1, l2=L2)
    trace = solve(make_solver(name, P, eta_scale=scale, seed=seed), max_passes=max_passes,
                  target=target)
    seconds = time.perf_counter() - t0
    reached = trace.objective[-1] <= target
    return (seconds if reached else math.inf), trace.passes[-1], trace.objective[-1]


def run_saga(A, y, l1, tol, seed, P):
    from sklearn.linear_model import LogisticRegression
    n, lam = A.shape[0], l1 + L2
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1 / (n * lam), l1_ratio=l1 / lam, solver="saga",
                             fit_intercept=False, tol=tol, max_iter=2000, random_state=seed)
    clf.fit(A, y)
    seconds = time.perf_counter() - t0
    return seconds, float(clf.n_iter_[0]), P.objective(torch.from_numpy(clf.coef_[0]))


def saga_time(A, yn, l1, seed, P, target, tols):
    """The first fit, loosest tolerance first, that reaches the target (inf if none does)."""
    for tol in tols:
        fit = run_saga(A, yn, l1, tol, seed, P)
        if fit[2] <= target:
            return fit
    return (math.inf, fit[1], fit[2])


def tune(X, y, A, yn, l1, P, target, max_passes):
    """Same budget for all. VR solvers: the fewest data passes to ε on seed 0 (or the lowest
    P if none reaches it): passes, unlike seconds, do not move with the machine's load."""
    choice = {}
    for name in VR:
        runs = {s: run_vr(name, X, y, l1, s, 0, target, max_passes) for s in SCALES}
        choice[name] = min(runs, key=lambda s: (math.isinf(runs[s][0]), runs[s][1], runs[s][2]))
    fits = {tol: run_saga(A, yn, l1, tol, 0, P) for tol in SAGA_TOLS}
    ok = [tol for tol, f in fits.items() if f[2] <= target]
    start = SAGA_TOLS.index(max(ok)) if ok else 0          # loosest tolerance that reaches ε
    choice["saga"] = list(SAGA_TOLS[start:])
    return choice


def setting(X, y, l1, budget):
    import scipy.sparse as sp
    A = sp.csr_matrix((X.values().numpy(), X.col_indices().numpy(), X.crow_indices().numpy()),
                      shape=tuple(X.shape))
    yn = y.numpy()
    P = ERMProblem(as_rows(X), y, l1=l1, l2=L2)
    P_ref, bound = reference(X, y, l1, budget["ref"])
    target = P_ref * (1 + EPS)
    max_passes = budget["max"]
    choice = tune(X, y, A, yn, l1, P, target, max_passes)
    raw = {name: [] for name in (*VR, "saga")}
    for seed in SEEDS:                               # interleaved: machine noise hits all alike
        for name in VR:
            raw[name].append(run_vr(name, X, y, l1, choice[name], seed, target, max_passes))
        raw["saga"].append(saga_time(A, yn, l1, seed, P, target, choice["saga"]))
    return {"l1": l1, "l2": L2, "P_ref": P_ref, "certified_gap": bound,
            "certified_rel_gap": bound / P_ref, "target": target, "tuned": choice,
            "seconds_to_eps": {k: summary(v[0] if math.isfinite(v[0]) else 1e9 for v in r)
                               for k, r in raw.items()},
            "passes_at_stop": {k: summary(v[1] for v in r) for k, r in raw.items()},
            "rel_subopt_at_stop": {k: [(v[2] - P_ref) / P_ref for v in r] for k, r in raw.items()},
            "reached": {k: [math.isfinite(v[0]) for v in r] for k, r in raw.items()}}


def batch_sweep(X, y, l1, budget):
    """Inner iterations to a looser ε (1e-4) vs b: the paper predicts a plateau from b ≈ √n."""
    P = ERMProblem(as_rows(X), y, l1=l1, l2=L2)
    root = math.isqrt(P.n)
    P_ref, _ = reference(X, y, l1, budget["sweep_ref"])
    out = []
    for b in (root // 4, root // 2, root, 2 * root, 4 * root):
        solver = make_solver("dasvrda", P, b=max(b, 1), seed=0)
        trace = solve(solver, max_passes=budget["sweep"], target=P_ref * (1 + 1e-4))
        out.append({"b": solver.b, "m": solver.m, "iterations": solver.stage * solver.m,
                    "passes": trace.passes[-1], "reached": trace.objective[-1] <= P_ref * 1.0001})
    return {"sqrt_n": root, "eps": 1e-4, "runs": out}


def _dp_worker(rank, world, port, X_parts, y, l1, max_passes, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    crow, col, val, shape, lo, hi = X_parts[rank]
    Xr = torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)
    P = ERMProblem(as_rows(Xr), y[lo:hi], l1=l1, l2=L2, group=dist.group.WORLD)
    solver = make_solver("dasvrda", P, seed=0)
    t0 = time.perf_counter()
    trace = solve(solver, max_passes=max_passes)
    # numpy travels by value: a shared tensor would die with this process
    out.put((rank, time.perf_counter() - t0, solver.output.numpy(), trace.objective[-1]))
    dist.destroy_process_group()


def data_parallel(X, y, l1, budget):
    """2 gloo ranks, rows split in half: iterates must equal the single-process run's."""
    import socket
    import torch.multiprocessing as mp
    from raytrain_eff.methods.dasvrda import CSRRows
    passes = budget["dp"]
    R, half = CSRRows.from_torch(X), X.shape[0] // 2
    parts = []
    for lo, hi in ((0, half), (half, X.shape[0])):
        sub = R.take(torch.arange(lo, hi))
        parts.append((sub.crow, sub.col, sub.val, (hi - lo, R.d), lo, hi))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_dp_worker, args=(r, 2, port, parts, y, l1, passes, out))
             for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    P = ERMProblem(as_rows(X), y, l1=l1, l2=L2)
    single = make_solver("dasvrda", P, seed=0)
    t0 = time.perf_counter()
    solve(single, max_passes=passes)
    single_s = time.perf_counter() - t0
    return {"passes": passes, "ranks_equal": bool(np.array_equal(results[0][2], results[1][2])),
            "max_abs_diff_vs_single": float(np.abs(results[0][2] - single.output.numpy()).max()),
            "seconds_2_ranks": max(r[1] for r in results), "seconds_1_process": single_s,
            "objective_2_ranks": results[0][3], "objective_1_process": single.objective}


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    budget = SMOKE if args.smoke else FULL
    X, y = load(budget["rows"])
    l1s = L1S[:1] if args.smoke else L1S
    results = [setting(X, y, l1, budget) for l1 in l1s]
    sweep = batch_sweep(X, y, L1S[0], budget)
    dp = data_parallel(X, y, L1S[0], budget)
    med = {r["l1"]: {k: v["median"] for k, v in r["seconds_to_eps"].items()} for r in results}
    met = all(m["dasvrda"] <= m["saga"] and m["dasvrda"] < 1e9 for m in med.values())
    ratios = {f"l1={l1}": {f"saga_over_{k}": m["saga"] / m[k] for k in VR}
              for l1, m in med.items()}
    notes = "; ".join(
        f"l1={l1}: median s to 1e-6 dasvrda {m['dasvrda']:.2f}, prox-svrg {m['prox-svrg']:.2f}, "
        f"katyusha {m['katyusha']:.2f}, saga {m['saga']:.2f} (1e9 = not reached)"
        for l1, m in med.items())
    for r in results:
        passes = {k: r["passes_at_stop"][k]["median"] for k in r["passes_at_stop"]}
        notes += (f"; l1={r['l1']}: median data passes at stop (SAGA: epochs) "
                  + ", ".join(f"{k} {v:.0f}" for k, v in passes.items())
                  + f"; tuned scales {r['tuned']}")
        edge = [k for k in VR if r["tuned"][k] == SCALES[-1]]
        if edge:
            notes += f" ({', '.join(edge)} chose the largest scale tried, {SCALES[-1]})"
    notes += (f"; runs that never reach ε within {budget['max']} passes count as 1e9 s; "
              f"2-rank run: {dp['seconds_2_ranks']:.2f} s vs {dp['seconds_1_process']:.2f} s in "
              f"one process for the same {dp['passes']} passes (a d-vector all-reduce per "
              f"inner step; ranks share this machine's {os.cpu_count()} cores)")
    if not met:
        notes += "; target missed where dasvrda's median exceeds saga's (see seconds_to_eps)"
    write_result(
        "dasvrda", smoke=args.smoke, out=args.out,
        config={"dataset": "kjv bag-of-words (tfidf, unit rows, bias)", "n": int(X.shape[0]),
                "d": int(X.shape[1]), "nnz": int(X.values().numel()), "l1": list(l1s),
                "l2": L2, "eps": EPS, "seeds": list(SEEDS), "scales": list(SCALES),
                "saga_tols": list(SAGA_TOLS), "threads": 1},
        baseline={"saga": [{"l1": r["l1"], **{k: r[k]["saga"] for k in
                                               ("seconds_to_eps", "passes_at_stop")}}
                           for r in results]},
        method={"settings": results, "batch_sweep": sweep, "data_parallel": dp},
        ratios=ratios, target={"dasvrda_seconds_to_1e-6_le_saga": "every setting"},
        met=met, notes=notes)


if __name__ == "__main__":
    main()
