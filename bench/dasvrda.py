"""DASVRDA vs Prox-SVRG vs Katyusha vs scikit-learn SAGA on elastic-net logistic regression.

Problems (three data sets x two (λ₁, λ₂) settings, fixed here before anything runs):

* ``kjv``: bag-of-words (tf-idf, unit rows, penalised bias column) of the King James Bible
  verses, Old vs New Testament, the training split of task ``erm``; λ₁ ∈ {1e-4, 1e-3} at
  λ₂ = 1e-6 (the previous result's settings, kept so the two can be compared).
* ``breast_cancer``: scikit-learn's bundled set through task ``erm`` (standardised columns,
  unit rows, penalised bias column, training split); (λ₁, λ₂) ∈ {(1e-3, 1e-6), (1e-3, 1e-4)}.
* ``digits``: scikit-learn's bundled digits as a binary problem (0-4 vs 5-9), standardised
  columns, unit rows, no bias: a plain elastic net, which ``ERMTask`` cannot express (it
  always appends a penalised constant column), so ``ERMProblem`` is built from the arrays here.
  Same two settings as breast_cancer.

λ₂ = 1e-6 is the ill-conditioned setting of each set. SAGA solves the same objective:
C = 1/(n(λ₁ + λ₂)), l1_ratio = λ₁/(λ₁ + λ₂), fit_intercept=False (a bias, where there is
one, is a penalised column in both).

Per setting: (1) a reference P* certified by a subgradient bound (λ₂-strong convexity);
(2) each VR solver's eta_scale tuned by ``tune_bracketed`` on tuning seed 0 (same grid size
for every solver; score: passes to ε = 1e-6, then the final objective); SAGA's step size is
scikit-learn's, set from the data. (3) On every evaluation seed, arms in rotating order, each
solver first gets (untimed) the fewest data passes (SAGA: epochs) that reach P ≤ P*(1 + ε);
then one fixed-budget fit with exactly that budget is timed from problem set-up to return,
no target and no convergence check inside. The claim: SAGA's time over DASVRDA's, paired
per seed (``harness.paired``), must win on every setting at ε = 1e-6. One thread everywhere.
A 2-rank data-parallel DASVRDA run on digits checks that both ranks hold the same iterate.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.harness import Protocol, paired, parser, summary, tune_bracketed, write_result  # noqa: E402
from raytrain_eff.config import DataConfig  # noqa: E402
from raytrain_eff.hparams.dasvrda import ERMConfig  # noqa: E402
from raytrain_eff.methods.dasvrda import ERMProblem, as_rows, certify, fista, make_solver, solve  # noqa: E402
from raytrain_eff.tasks.erm import ERMTask  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="The max_iter was reached")  # tol=0: by design

VR = ("dasvrda", "prox-svrg", "katyusha")
ARMS = (*VR, "saga")
EPS = (1e-6, 1e-8)               # relative gaps reported; tuning and the claim use EPS[0]
GRID = (4.0, 8.0, 16.0)          # initial eta_scale grid, the same size for every VR solver
TUNING_SEEDS = [0]
EVAL_SEEDS = [1, 2, 3, 4, 5]
ILL, WELL = (1e-3, 1e-6), (1e-3, 1e-4)
# data set -> settings and the budget cap (data passes = SAGA epochs) shared by every arm
FULL = {
    "kjv": {"settings": [(1e-4, 1e-6), (1e-3, 1e-6)], "cap": 60, "reps": 1, "rows": None},
    "breast_cancer": {"settings": [ILL, WELL], "cap": 1000, "reps": 3, "rows": None},
    "digits": {"settings": [ILL, WELL], "cap": 1000, "reps": 3, "rows": None},
}
SMOKE = {
    "kjv": {"settings": [(1e-3, 1e-6)], "cap": 30, "reps": 1, "rows": 600},
    "breast_cancer": {"settings": [WELL], "cap": 200, "reps": 2, "rows": None},
    "digits": {"settings": [WELL], "cap": 200, "reps": 2, "rows": 400},
}
WHY = {
    "kjv": ("the original benchmark's data (ours: the authors did not choose it either); "
            "sparse, n = 29,548, d = 8,557"),
    "breast_cancer": "scikit-learn's bundled data, through task erm; dense, small n",
    "digits": "scikit-learn's bundled data as a plain elastic net (no bias); dense",
}
DP_PASSES = {"full": 10, "smoke": 2}


# --- data -----------------------------------------------------------------------------------------
def load(name: str, rows):
    """(X torch [CSR or dense] float64, y ±1, SAGA's copy of X, how it was built)."""
    if name == "digits":
        import sklearn.datasets
        A, labels = sklearn.datasets.load_digits(return_X_y=True)
        A = (A - A.mean(0)) / np.maximum(A.std(0), 1e-12)          # constant pixels -> 0
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        y = np.where(labels >= 5, 1.0, -1.0)
        if rows:
            A, y = A[:rows], y[:rows]
        return (torch.tensor(A), torch.tensor(y), np.ascontiguousarray(A),
                "ERMProblem from the arrays: standardised columns, unit rows, no bias, all rows")
    task = ERMTask(ERMConfig(max_rows=rows), DataConfig(dataset=name))
    task.load()
    X, y = task.X_train, task.y_train
    if X.layout == torch.sparse_csr:
        import scipy.sparse as sp
        A = sp.csr_matrix((X.values().numpy(), X.col_indices().numpy(),
                           X.crow_indices().numpy()), shape=tuple(X.shape))
    else:
        A = X.numpy()
    return X, y, A, "task erm's training split (unit rows, penalised bias column)"


# --- the reference optimum ------------------------------------------------------------------------
def reference(X, y, l1, l2, smoke):
    """DASVRDA, FISTA polish to a 1e-12 certificate, best bound over prox steps: (P_ref, bound)."""
    P = ERMProblem(as_rows(X), y, l1=l1, l2=l2)
    solver = make_solver("dasvrda", P, eta_scale=8.0, seed=99)
    solve(solver, max_passes=10 if smoke else 40)
    x = fista(P, solver.output, iters=200 if smoke else 5000, tol=1e-12, check_every=10)
    certs = [certify(P, x, P.L_bar * f) for f in (0.25, 1.0, 4.0)]   # each bound is valid
    P_ref = min(c[1] for c in certs)
    return P_ref, min(c[1] - P_ref + c[2] for c in certs)             # P_ref − P* ≤ this


# --- the arms -------------------------------------------------------------------------------------
def vr_fit(name, X, y, l1, l2, scale, seed, max_passes, target=None):
    """Set up the problem and run; (seconds, trace). ``target=None``: a fixed budget."""
    t0 = time.perf_counter()
    P = ERMProblem(as_rows(X), y, l1=l1, l2=l2)
    trace = solve(make_solver(name, P, eta_scale=scale, seed=seed), max_passes=max_passes,
                  target=target)
    return time.perf_counter() - t0, trace


def saga_fit(A, y, l1, l2, epochs, seed):
    """scikit-learn SAGA, tol=0: exactly ``epochs`` epochs; (seconds, coefficients, epochs)."""
    from sklearn.linear_model import LogisticRegression
    lam = l1 + l2
    t0 = time.perf_counter()
    clf = LogisticRegression(C=1 / (A.shape[0] * lam), l1_ratio=l1 / lam, solver="saga",
                             fit_intercept=False, tol=0.0, max_iter=int(epochs),
                             random_state=seed)
    clf.fit(A, y)
    seconds = time.perf_counter() - t0
    return seconds, torch.from_numpy(clf.coef_[0].copy()), int(clf.n_iter_[0])


def fewest(reaches, start: int, cap: int) -> tuple[float, int]:
    """Fewest e in [1, cap] with reaches(e), walking out from ``start`` by doubling steps,
    then bisecting to one epoch; exact when P(fit of e epochs) falls monotonically with e,
    which the search assumes; (e or inf, fits made)."""
    seen: dict[int, bool] = {}

    def r(e):
        if e not in seen:
            seen[e] = reaches(e)
        return seen[e]

    start = min(max(int(start), 1), cap)
    if r(start):
        hi, step = start, 1
        lo = hi - step
        while lo >= 1 and r(lo):
            hi, step = lo, step * 2
            lo = hi - step
        lo = max(lo, 0)                        # 0 epochs never reach
    else:
        lo, step = start, 1
        hi = lo + step
        while hi < cap and not r(hi):
            lo, step = hi, step * 2
            hi = lo + step
        hi = min(hi, cap)
        if not r(hi):
            return math.inf, len(seen)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if r(mid) else (mid, hi)
    return float(hi), len(seen)


def first_hit(trace, target):
    """Data passes at the first snapshot with P(x̃) ≤ target (inf if none)."""
    pairs = zip(trace.passes, trace.objective, strict=True)
    return next((p for p, o in pairs if o <= target), math.inf)


# --- one (data set, λ₁, λ₂) setting ---------------------------------------------------------------
def run_setting(name, data, l1, l2, cap, reps, smoke, max_widenings):
    X, y, A, _ = data
    yn = y.numpy()
    clock = time.perf_counter()
    P = ERMProblem(as_rows(X), y, l1=l1, l2=l2)          # for evaluating P outside every timer
    P_ref, bound = reference(X, y, l1, l2, smoke)
    targets = {eps: P_ref * (1 + eps) for eps in EPS}
    rel = lambda value: (value - P_ref) / P_ref            # noqa: E731
    ref_s = time.perf_counter() - clock

    tuning = {}
    for arm in VR:
        def score(scale, arm=arm):
            _, tr = vr_fit(arm, X, y, l1, l2, scale, TUNING_SEEDS[0], cap, targets[EPS[0]])
            return (first_hit(tr, targets[EPS[0]]), tr.objective[-1])
        tuning[arm] = tune_bracketed(arm, score, GRID, max_widenings=max_widenings)
    tune_s = time.perf_counter() - clock - ref_s

    raw = {eps: {arm: {"seconds": [], "passes": [], "rel_gap": []} for arm in ARMS}
           for eps in EPS}
    saga_fits, saga_start = [], {eps: 10 for eps in EPS}   # previous seed's budgets
    for i, seed in enumerate(EVAL_SEEDS):
        order = ARMS[i % len(ARMS):] + ARMS[:i % len(ARMS)]   # rotate: no arm always first
        for arm in order:
            if arm == "saga":
                objective = {}                       # epochs -> P of that fit

                def reaches(e, eps, seed=seed, objective=objective):
                    if e not in objective:
                        objective[e] = P.objective(saga_fit(A, yn, l1, l2, e, seed)[1])
                    return objective[e] <= targets[eps]
                budgets, floor = {}, 1               # (untimed) the fewest epochs to each gap
                for eps in EPS:
                    fits_before = len(objective)
                    budgets[eps] = (fewest(lambda e, eps=eps: reaches(e, eps),
                                           max(saga_start[eps], floor), cap)[0]
                                    if math.isfinite(floor) else math.inf)
                    saga_fits.append(len(objective) - fits_before)
                    floor = budgets[eps]             # a tighter gap needs at least as many
                    if math.isfinite(floor):
                        saga_start[eps] = int(floor)
                for eps in EPS:                      # the timed fixed-budget fits
                    cell = raw[eps][arm]
                    if math.isfinite(budgets[eps]):
                        fits = [saga_fit(A, yn, l1, l2, budgets[eps], seed)
                                for _ in range(reps)]
                        _, w, done = fits[-1]
                        cell["seconds"].append(statistics.median(f[0] for f in fits))
                        cell["passes"].append(float(done))
                        cell["rel_gap"].append(rel(P.objective(w)))
                    else:
                        cell["seconds"].append(math.inf)
                        cell["passes"].append(math.inf)
                        cell["rel_gap"].append(math.nan)
                continue
            scale = tuning[arm]["winner"]
            _, tr = vr_fit(arm, X, y, l1, l2, scale, seed, cap, targets[EPS[-1]])  # untimed
            for eps in EPS:
                cell = raw[eps][arm]
                budget = first_hit(tr, targets[eps])
                if math.isfinite(budget):
                    fits = [vr_fit(arm, X, y, l1, l2, scale, seed, budget)  # no target
                            for _ in range(reps)]
                    timed = fits[-1][1]
                    cell["seconds"].append(statistics.median(f[0] for f in fits))
                    cell["passes"].append(timed.passes[-1])
                    cell["rel_gap"].append(rel(timed.objective[-1]))
                else:
                    cell["seconds"].append(math.inf)
                    cell["passes"].append(math.inf)
                    cell["rel_gap"].append(math.nan)
    eval_s = time.perf_counter() - clock - ref_s - tune_s

    out = {"dataset": name, "l1": l1, "l2": l2, "ill_conditioned": l2 <= 1e-6,
           "n": int(X.shape[0]), "d": int(X.shape[1]), "cap_passes": cap, "P_ref": P_ref,
           "certified_gap": bound, "certified_rel_gap": bound / P_ref,
           "certificate_ok": bound / P_ref <= 1e-3 * min(EPS),
           "timed_fits_reach_gap": all(g <= eps * (1 + 1e-9) for eps in EPS for a in ARMS
                                       for g in raw[eps][a]["rel_gap"] if not math.isnan(g)),
           "targets": {str(e): t for e, t in targets.items()},
           "eta_scale": {arm: tuning[arm]["winner"] for arm in VR},
           "eval_seeds": EVAL_SEEDS, "per_seed": {}, "seconds": {}, "passes": {},
           "paired_time_saga_over": {}, "paired_passes_saga_over": {},
           "saga_search_fits": saga_fits,
           "wall_s": {"reference": ref_s, "tuning": tune_s, "evaluation": eval_s},
           "load_average_after": os.getloadavg()}
    for eps in EPS:
        key = str(eps)
        out["per_seed"][key] = raw[eps]
        out["seconds"][key] = {a: summary(raw[eps][a]["seconds"]) for a in ARMS}
        out["passes"][key] = {a: summary(raw[eps][a]["passes"]) for a in ARMS}
        by_seed = {a: dict(zip(EVAL_SEEDS, raw[eps][a]["seconds"], strict=False)) for a in ARMS}
        passes_by_seed = {a: dict(zip(EVAL_SEEDS, raw[eps][a]["passes"], strict=True))
                          for a in ARMS}
        out["paired_time_saga_over"][key] = {a: paired(by_seed["saga"], by_seed[a])
                                             for a in VR}
        out["paired_passes_saga_over"][key] = {a: paired(passes_by_seed["saga"],
                                                         passes_by_seed[a]) for a in VR}
    return out, tuning


# --- 2-rank data-parallel DASVRDA -----------------------------------------------------------------
def _dp_worker(rank, world, port, X, y, l1, l2, passes, out):
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    lo, hi = (0, len(y) // 2) if rank == 0 else (len(y) // 2, len(y))
    P = ERMProblem(as_rows(X[lo:hi]), y[lo:hi], l1=l1, l2=l2, group=dist.group.WORLD)
    solver = make_solver("dasvrda", P, seed=0)
    t0 = time.perf_counter()
    trace = solve(solver, max_passes=passes)
    # numpy travels by value: a shared tensor would die with this process
    out.put((rank, time.perf_counter() - t0, solver.output.numpy(), trace.objective[-1]))
    dist.destroy_process_group()


def data_parallel(X, y, l1, l2, passes):
    """2 gloo ranks, rows split in half (dense digits): iterates must equal one process's."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_dp_worker, args=(r, 2, port, X, y, l1, l2, passes, out))
             for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=300) for _ in procs)
    for p in procs:
        p.join()
    single = make_solver("dasvrda", ERMProblem(as_rows(X), y, l1=l1, l2=l2), seed=0)
    t0 = time.perf_counter()
    solve(single, max_passes=passes)
    single_s = time.perf_counter() - t0
    return {"dataset": "digits", "l1": l1, "l2": l2, "passes": passes,
            "ranks_equal": bool(np.array_equal(results[0][2], results[1][2])),
            "max_abs_diff_vs_single": float(np.abs(results[0][2] - single.output.numpy()).max()),
            "seconds_2_ranks": max(r[1] for r in results), "seconds_1_process": single_s,
            "objective_2_ranks": results[0][3], "objective_1_process": single.objective}


# --- the record -----------------------------------------------------------------------------------
def _label(r):
    return f"{r['dataset']} l1={r['l1']:g} l2={r['l2']:g}"


def _ratio(v):
    """A SAGA/DASVRDA ratio: inf means SAGA missed the gap, 0 that DASVRDA did."""
    if math.isinf(v):
        return "SAGA not reached"
    return "DASVRDA not reached" if v == 0 else f"{v:.2g}"


def _fmt(v, unit=""):
    return "not reached" if not math.isfinite(v) else f"{v:.3g}{unit}"


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    plan = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    data = {name: load(name, spec["rows"]) for name, spec in plan.items()}
    load_s = time.perf_counter() - start
    results, tunings = [], {}
    for name, spec in plan.items():
        for l1, l2 in spec["settings"]:
            r, tuning = run_setting(name, data[name], l1, l2, spec["cap"], spec["reps"],
                                    args.smoke,
                                    max_widenings=1 if args.smoke else 4)
            results.append(r)
            for arm, rec in tuning.items():
                tunings[f"{arm} | {_label(r)}"] = rec
            print(f"{_label(r)}: done in {sum(r['wall_s'].values()):.0f} s", flush=True)
    X, y, _, _ = data["digits"]
    dp = data_parallel(X, y, *WELL, DP_PASSES["smoke" if args.smoke else "full"])

    e0 = str(EPS[0])
    claims = {f"time to {e0}: saga / dasvrda, {_label(r)}":
              r["paired_time_saga_over"][e0]["dasvrda"] for r in results}
    per_setting = {_label(r): c["wins"] for r, c in zip(results, claims.values(), strict=False)}
    met = all(per_setting.values())
    ratios = {_label(r): {
        f"eps={e}": {f"saga_over_{a}_time": {k: r["paired_time_saga_over"][e][a][k]
                                              for k in ("per_seed", "median", "geometric_mean",
                                                        "worst", "bootstrap_lower_90", "wins")}
                     for a in VR} | {
            f"saga_over_{a}_passes_median": r["paired_passes_saga_over"][e][a]["median"]
            for a in VR}
        for e in map(str, EPS)} for r in results}

    won = sum(per_setting.values())
    headline = (
        f"Each solver given its fewest passes (SAGA: epochs) to a 1e-6 gap and that "
        f"fixed-budget fit timed, DASVRDA beat scikit-learn SAGA on {won} of {len(results)} "
        f"settings (SAGA/DASVRDA time, median [worst] of {len(EVAL_SEEDS)} paired seeds: "
        + "; ".join(f"{_label(r)} {_ratio(c['median'])} [{_ratio(c['worst'])}]"
                    for r, c in zip(results, claims.values(), strict=False)) + ").")
    lines = []
    for r in results:
        sec, pas = r["seconds"][e0], r["passes"][e0]
        lines.append(
            f"{_label(r)}: median s / passes to 1e-6 " + ", ".join(
                f"{a} {_fmt(sec[a]['median'], ' s')} / {_fmt(pas[a]['median'])}" for a in ARMS)
            + f"; at 1e-8 dasvrda {_fmt(r['seconds']['1e-08']['dasvrda']['median'], ' s')}, "
              f"saga {_fmt(r['seconds']['1e-08']['saga']['median'], ' s')}; "
              f"worst-seed SAGA/DASVRDA time at 1e-6 "
              f"{_fmt(r['paired_time_saga_over'][e0]['dasvrda']['worst'])} "
              f"({'win' if per_setting[_label(r)] else 'no win'}); eta_scale {r['eta_scale']}")
    previous = (
        "Previous result (commit f78752e, 3 seeds, seed 0 both tuned and evaluated, KJV only): "
        "DASVRDA stopped at its first snapshot below the target while SAGA's time was its "
        "first fit reaching the target with tol stepped 1e-3..1e-6 (16 epochs where 13-14 "
        "suffice), giving SAGA/DASVRDA median time ratios 2.06 (l1=1e-4) and 1.40 (l1=1e-3) "
        "and met = true. Now every arm gets its fewest passes/epochs to the gap (found "
        "untimed) and one fixed-budget fit is timed from problem set-up to return; SAGA runs "
        "with tol=0; eta_scale is bracketed (the previous winners sat on the grid's edge, 8); "
        "5 evaluation seeds disjoint from the tuning seed; breast_cancer and digits added; "
        "relative gap 1e-8 reported too; the b-vs-sqrt(n) batch sweep was dropped (not part "
        "of the claim, and the 10-minute budget goes to the three data sets).")
    verdict = ("The claim (DASVRDA no slower than SAGA on every setting) "
               + ("still holds." if met else "no longer holds: it fails on "
                  + ", ".join(k for k, v in per_setting.items() if not v) + "."))
    notes = " ".join([previous, verdict, "; ".join(lines) + ".",
                      (f"2-rank data-parallel DASVRDA on digits: ranks equal "
                      f"{dp['ranks_equal']}, max |diff| vs one process "
                      f"{dp['max_abs_diff_vs_single']:.1e} after {dp['passes']} passes "
                      f"({dp['seconds_2_ranks']:.2f} s on 2 ranks vs "
                      f"{dp['seconds_1_process']:.2f} s in one process; the ranks share "
                      f"{os.cpu_count()} cores).")])
    protocol = Protocol(
        kind="comparison",
        stopping_rule=(
            "one rule for every arm: on each evaluation seed the arm is first given (untimed) "
            "the fewest data passes that reach P(x) <= P_ref(1 + eps) for eps in {1e-6, 1e-8}, "
            "P_ref certified to within 1e-3*eps of P*: for the VR solvers the passes at the "
            "first stage snapshot at or below the target (P is a by-product of the snapshot "
            "pass), for SAGA the fewest epochs (tol=0, max_iter=e; doubling then bisection to "
            "one epoch); then that fixed budget is run again and timed, with no target and no "
            "convergence check inside. A budget is one data pass = n component gradients = one "
            "SAGA epoch; nothing past the per-data-set cap (kjv 60, others 1000) counts: such "
            "a run is 'not reached' (inf, counted against its arm)."),
        timed_region=(
            "from problem set-up to return, for every arm: ERMProblem construction (row "
            "norms, CSR transpose) + make_solver + solve(max_passes=budget) for the VR "
            "solvers; LogisticRegression(...) + fit (input checks, step size, epochs) for "
            "SAGA. Excluded for all: loading the data, converting it to each library's "
            "format (torch CSR/dense vs scipy CSR/numpy), evaluating P afterwards. Where a "
            "fit lasts only tens of milliseconds (breast_cancer, digits) the same fit is run "
            "3 times back to back and its median time kept, for every arm alike."),
        tuning=tunings,
        untuned={"saga": "scikit-learn sets SAGA's step size from the data (1/(max row "
                         "squared norm/4 + alpha), as in Defazio et al.); it exposes no "
                         "step-size scale to tune, and tol/max_iter are fixed by the "
                         "stopping rule (tol=0, max_iter = the found epoch budget)"},
        tuning_seeds=TUNING_SEEDS, eval_seeds=EVAL_SEEDS,
        problems=[{"name": name, "standard": name != "kjv", "why": WHY[name],
                   "built": data[name][3], "n": int(data[name][0].shape[0]),
                   "d": int(data[name][0].shape[1]),
                   "settings": [list(s) for s in plan[name]["settings"]],
                   "cap_passes": plan[name]["cap"], "timing_reps": plan[name]["reps"]}
                  for name in plan],
        baselines={
            "saga": ("scikit-learn's SAGA (Cython, lazy just-in-time updates on sparse rows): "
                     "the maintained solver users reach for, on exactly the same objective "
                     "(C = 1/(n(l1 + l2)), l1_ratio = l1/(l1 + l2), fit_intercept=False)"),
            "prox-svrg": "same code path, sampling, mini-batch b = floor(sqrt(n)) and "
                         "snapshot reuse as DASVRDA (Xiao & Zhang 2014, last-iterate variant)",
            "katyusha": "same code path as DASVRDA (Allen-Zhu 2018, option I, mini-batch "
                        "parameters of its section 5)"},
        departures={
            "eta_scale": ("reference: 1.0, the papers' theoretical step; here tuned per "
                          "solver and setting by tune_bracketed from the grid "
                          f"{list(GRID)} (values > 1 go beyond the theory)"),
            "saga tol / max_iter": ("scikit-learn defaults tol=1e-4, max_iter=100; here "
                                    "tol=0 and max_iter = the found epoch budget, so SAGA "
                                    "runs the same kind of fixed budget as every arm")},
        selection_split=("training objective on tuning seed 0's sampling order (an "
                         "optimisation benchmark: the objective minimised is the measure; "
                         "no held-out quality is claimed)"),
        report_split=("the same training objective (gap to the certified P*) on evaluation "
                      "seeds 1-5, sampling orders tuning never saw"),
        alternation=("within each seed every arm runs its search and its timed fits in "
                     "turn; the order rotates by one arm per seed"),
        claims=claims)
    write_result(
        "dasvrda", smoke=args.smoke, out=args.out, headline=headline,
        config={"datasets": {n: {"settings": [list(s) for s in plan[n]["settings"]],
                                 "cap_passes": plan[n]["cap"], "rows": plan[n]["rows"],
                                 "timing_reps": plan[n]["reps"],
                                 "built": data[n][3]} for n in plan},
                "eps": list(EPS), "claim_eps": EPS[0], "grid": list(GRID),
                "tuning_seeds": TUNING_SEEDS, "eval_seeds": EVAL_SEEDS, "threads": 1,
                "b": "floor(sqrt(n)) (default)", "m": "default", "restart": "adaptive",
                "gamma": 3.0},
        baseline={"saga": [{"setting": _label(r), **{k: r[k][e0]["saga"]
                                                      for k in ("seconds", "passes")}}
                           for r in results]},
        method={"settings": results, "data_parallel": dp,
                "wall_s": {"load": load_s, "total": time.perf_counter() - start}},
        ratios=ratios,
        target={"dasvrda_time_to_1e-6_le_saga": "every setting, paired per seed "
                                                 "(worst seed or 90% bootstrap bound > 1)"},
        met=met, notes=notes, protocol=protocol,
        extra={"met_per_setting": per_setting})


if __name__ == "__main__":
    main()
