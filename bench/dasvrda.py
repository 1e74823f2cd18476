"""DASVRDA (compiled and torch) vs Prox-SVRG, Katyusha, scikit-learn SAGA and coordinate descent.

Every solver runs at its defaults: DASVRDA, Prox-SVRG and Katyusha with the data-aware step
(``smoothness="batch"``, eta_scale 1) and b = ⌊√n⌋; SAGA and coordinate descent with the
step sizes scikit-learn sets from the data. The question is the one a user asks: at the
defaults, which reaches the same certified optimum sooner, on these data?

Problems (fixed here before anything runs), all through task ``erm`` with every row
(``val_fraction: 0``), standardised columns where the data are dense, unit rows and no bias
column (a plain elastic net: the certificate needs λ₂-strong convexity in every coordinate):

* ``kjv``: bag-of-words (tf-idf) of the King James Bible verses, Old vs New Testament,
  sparse; λ₁ ∈ {1e-4, 1e-3} at λ₂ = 1e-6 (the earlier results' settings).
* ``breast_cancer``, ``digits`` (0-4 vs 5-9): scikit-learn's bundled sets, dense;
  (λ₁, λ₂) ∈ {(1e-3, 1e-6), (1e-3, 1e-4)}.
* ``diabetes``: scikit-learn's bundled regression set, squared loss (targets standardised),
  where scikit-learn's coordinate descent (``ElasticNet``) solves the same objective; SAGA
  does not apply (scikit-learn's SAGA has no elastic-net least squares). Same settings.

λ₂ = 1e-6 is each set's ill-conditioned setting. SAGA: C = 1/(n(λ₁ + λ₂)), l1_ratio =
λ₁/(λ₁ + λ₂); ElasticNet: alpha = λ₁ + λ₂, l1_ratio the same; fit_intercept=False for both.

Per setting: (1) a reference P* certified by a subgradient bound (λ₂-strong convexity);
(2) on every evaluation seed, arms in rotating order, each arm first gets (untimed) the
fewest data passes (library solvers: epochs) that reach P ≤ P*(1 + ε), ε ∈ {1e-6, 1e-8};
then one fixed-budget fit with exactly that budget is timed from problem set-up to return.
(3) The cost of one pass from whole-run timings: one fit of 2K passes (epochs), set-up to
return, over the passes it made, for compiled DASVRDA, torch DASVRDA and SAGA, alternating,
per seed. (4) Data-parallel DASVRDA on the largest set, 1 and 2 gloo ranks. One thread
everywhere. The claim: compiled DASVRDA's time to each gap is no more than SAGA's (paired per
seed) on at least two thirds of the logistic settings. Each setting is also reported against
its fastest other arm (the lowest median time among Prox-SVRG, Katyusha and the library's).

JIT compilation is excluded for every arm alike: before any timing, each arm's first call is
made once in this process and timed apart (``wall_s.warm_up``, per arm): numba compiles (or
loads from its cache) the compiled arms' kernels, the torch path its first sparse operations,
scikit-learn its imports and checks (its Cython is compiled at install).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from bench.harness import (
    Arm,
    Claim,
    Protocol,
    StoppingRule,
    TimedRegion,
    paired,
    parser,
    same_rules,
    summary,
    write_result,
)
from raytrain_eff.blocks.rows import as_rows
from raytrain_eff.config import DataConfig
from raytrain_eff.hparams.dasvrda import (
    DASVRDAConfig,
    KatyushaConfig,
    ProxSVRGConfig,
)
from raytrain_eff.hparams.tasks import ERMConfig
from raytrain_eff.methods.vr.certificate import certify, fista
from raytrain_eff.methods.vr.problem import ERMProblem
from raytrain_eff.methods.vr.solvers import make_solver, solve
from raytrain_eff.tasks.erm import ERMTask

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
warnings.filterwarnings("ignore", message="The max_iter was reached")  # tol=0: by design
warnings.filterwarnings("ignore", message="Objective did not converge")  # ditto (ElasticNet)

# VR arm -> (solver, backend, its config's defaults): every one at its defaults
VR = {
    "dasvrda": ("dasvrda", "compiled", DASVRDAConfig()),
    "dasvrda-torch": ("dasvrda", "torch", DASVRDAConfig()),
    "prox-svrg": ("prox-svrg", "compiled", ProxSVRGConfig()),
    "katyusha": ("katyusha", "compiled", KatyushaConfig()),
}
LIB = {"logistic": "saga", "squared": "cd"}  # the scikit-learn solver for each loss
OTHERS = ("prox-svrg", "katyusha")  # DASVRDA's other competitors beside the library's
EPS = (1e-6, 1e-8)
EVAL_SEEDS = [1, 2, 3, 4, 5]
ILL, WELL = (1e-3, 1e-6), (1e-3, 1e-4)
# data set -> loss, settings, the budget cap (data passes = library epochs) shared by every
# arm, timing repetitions (median kept), rows, K passes for the per-pass cost
FULL = {
    "kjv": {
        "loss": "logistic",
        "settings": [(1e-4, 1e-6), (1e-3, 1e-6)],
        "cap": 300,
        "reps": 1,
        "rows": None,
        "K": 10,
    },
    "breast_cancer": {
        "loss": "logistic",
        "settings": [ILL, WELL],
        "cap": 10000,
        "reps": 3,
        "rows": None,
        "K": 400,
    },
    "digits": {
        "loss": "logistic",
        "settings": [ILL, WELL],
        "cap": 2000,
        "reps": 3,
        "rows": None,
        "K": 300,
    },
    "diabetes": {
        "loss": "squared",
        "settings": [ILL, WELL],
        "cap": 10000,
        "reps": 3,
        "rows": None,
        "K": 400,
    },
}
SMOKE = {
    "kjv": {
        "loss": "logistic",
        "settings": [(1e-3, 1e-6)],
        "cap": 60,
        "reps": 1,
        "rows": 600,
        "K": 2,
    },
    "breast_cancer": {
        "loss": "logistic",
        "settings": [WELL],
        "cap": 600,
        "reps": 1,
        "rows": None,
        "K": 20,
    },
    "digits": {"loss": "logistic", "settings": [WELL], "cap": 300, "reps": 1, "rows": 400, "K": 10},
    "diabetes": {
        "loss": "squared",
        "settings": [WELL],
        "cap": 600,
        "reps": 1,
        "rows": None,
        "K": 20,
    },
}
WHY = {
    "kjv": "the original benchmark's data (ours: the authors did not choose it either); sparse",
    "breast_cancer": "scikit-learn's bundled data; dense, small n",
    "digits": "scikit-learn's bundled data, 0-4 vs 5-9; dense",
    "diabetes": "scikit-learn's bundled regression data: where coordinate descent applies",
}
DP = {"full": {"dataset": "kjv", "passes": 10}, "smoke": {"dataset": "digits", "passes": 2}}
ENGINE_STEPS = {"full": 700, "smoke": 25}


# --- data -----------------------------------------------------------------------------------------
def load(name: str, spec: dict):
    """(X torch [CSR or dense] float64, y, scikit-learn's copy of X, how it was built)."""
    cfg = ERMConfig(loss=spec["loss"], bias_feature=False, max_rows=spec["rows"])
    task = ERMTask(cfg, DataConfig(dataset=name, val_fraction=0.0))
    task.load()
    X, y = task.X_train, task.y_train
    built = "task erm: every row, unit rows, no bias column"
    if spec["loss"] == "squared":
        y = (y - y.mean()) / y.std()
        built += ", targets standardised"
    if X.layout == torch.sparse_csr:
        import scipy.sparse as sp

        A = sp.csr_matrix(
            (X.values().numpy(), X.col_indices().numpy(), X.crow_indices().numpy()),
            shape=tuple(X.shape),
        )
    else:
        A = np.ascontiguousarray(X.numpy())
    return X, y, A, built


def warm_up(data: dict, plan: dict) -> dict[str, float]:
    """Every arm's first call in this process, made once before any timing and timed apart
    (seconds per arm): numba compiles or loads the compiled arms' kernels, the torch path
    initialises its sparse kernels, scikit-learn imports and checks its solver (its Cython was
    compiled at install). One-off costs are thus excluded for every arm alike."""
    seconds: dict[str, float] = {}

    def timed(arm: str, fit, *args, **kwargs) -> None:
        t0 = time.perf_counter()
        fit(*args, **kwargs)
        seconds[arm] = seconds.get(arm, 0.0) + time.perf_counter() - t0

    for name, (X, y, A, _) in data.items():
        for loss in ("logistic", "squared"):
            P = ERMProblem(as_rows(X), y, loss=loss, l1=1e-3, l2=1e-3)
            for arm, (solver, backend, _) in VR.items():
                timed(arm, _first_call, solver, backend, P)
        lib = LIB[plan[name]["loss"]]
        timed(lib, lib_fit, lib, A, y.numpy(), 1e-3, 1e-3, 1, 0)
    return seconds


def _first_call(solver: str, backend: str, P: ERMProblem) -> None:
    solve(make_solver(solver, P, seed=0, m=2, backend=backend), max_passes=0)


# --- the reference optimum ------------------------------------------------------------------------
def reference(X, y, loss, l1, l2, smoke):
    """DASVRDA, FISTA polish to a 1e-12 certificate, best bound over prox steps: (P_ref, bound)."""
    P = ERMProblem(as_rows(X), y, loss=loss, l1=l1, l2=l2)
    solver = make_solver("dasvrda", P, seed=99)
    solve(solver, max_passes=20 if smoke else 200)
    x = fista(P, solver.output, iters=300 if smoke else 20000, tol=1e-12, check_every=10)
    certs = [certify(P, x, P.L_bar * f) for f in (0.25, 1.0, 4.0)]  # each bound is valid
    P_ref = min(c[1] for c in certs)
    return P_ref, min(c[1] - P_ref + c[2] for c in certs)  # P_ref − P* ≤ this


# --- the arms -------------------------------------------------------------------------------------
def vr_fit(arm, X, y, loss, l1, l2, seed, max_passes, target=None):
    """Set up the problem and run; (seconds, trace). ``target=None``: a fixed budget."""
    solver_name, backend, cfg = VR[arm]
    t0 = time.perf_counter()
    P = ERMProblem(as_rows(X), y, loss=loss, l1=l1, l2=l2)
    solver = make_solver(
        solver_name,
        P,
        seed=seed,
        backend=backend,
        eta_scale=cfg.eta_scale,
        smoothness=cfg.smoothness,
    )
    trace = solve(solver, max_passes=max_passes, target=target)
    return time.perf_counter() - t0, trace


def lib_fit(arm, A, y, l1, l2, epochs, seed):
    """scikit-learn SAGA or coordinate descent, tol=0: exactly ``epochs`` epochs;
    (seconds, coefficients, epochs run)."""
    from sklearn.linear_model import ElasticNet, LogisticRegression

    lam = l1 + l2
    t0 = time.perf_counter()
    if arm == "saga":
        clf = LogisticRegression(
            C=1 / (A.shape[0] * lam),
            l1_ratio=l1 / lam,
            solver="saga",
            fit_intercept=False,
            tol=0.0,
            max_iter=int(epochs),
            random_state=seed,
        )
    else:
        clf = ElasticNet(
            alpha=lam,
            l1_ratio=l1 / lam,
            fit_intercept=False,
            tol=0.0,
            max_iter=int(epochs),
            selection="random",
            random_state=seed,
        )
    clf.fit(A, y)
    seconds = time.perf_counter() - t0
    coef = np.ravel(clf.coef_)
    return seconds, torch.from_numpy(coef.copy()), int(np.max(clf.n_iter_))


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
        lo = max(lo, 0)  # 0 epochs never reach
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


def _record(cell, seconds, passes, gap):
    cell["seconds"].append(seconds)
    cell["passes"].append(passes)
    cell["rel_gap"].append(gap)


# --- one (data set, λ₁, λ₂) setting ---------------------------------------------------------------
def run_setting(name, data, spec, l1, l2, smoke):
    X, y, A, _ = data
    loss, cap, reps, lib = spec["loss"], spec["cap"], spec["reps"], LIB[spec["loss"]]
    arms = (*VR, lib)
    yn = y.numpy()
    clock = time.perf_counter()
    P = ERMProblem(as_rows(X), y, loss=loss, l1=l1, l2=l2)  # P outside every timer
    P_ref, bound = reference(X, y, loss, l1, l2, smoke)
    targets = {eps: P_ref * (1 + eps) for eps in EPS}
    rel = lambda value: (value - P_ref) / P_ref  # noqa: E731
    ref_s = time.perf_counter() - clock

    raw = {eps: {arm: {"seconds": [], "passes": [], "rel_gap": []} for arm in arms} for eps in EPS}
    lib_fits, lib_start = [], {eps: 10 for eps in EPS}  # previous seed's budgets
    for i, seed in enumerate(EVAL_SEEDS):
        order = arms[i % len(arms) :] + arms[: i % len(arms)]  # rotate: no arm always first
        for arm in order:
            if arm == lib:
                objective: dict[int, float] = {}  # epochs -> P of that fit

                def reaches(e, eps, seed=seed, objective=objective, arm=arm):
                    if e not in objective:
                        objective[e] = P.objective(lib_fit(arm, A, yn, l1, l2, e, seed)[1])
                    return objective[e] <= targets[eps]

                budgets, floor = {}, 1.0  # (untimed) fewest epochs to each gap
                for eps in EPS:
                    before = len(objective)
                    budgets[eps] = (
                        fewest(
                            lambda e, eps=eps: reaches(e, eps), max(lib_start[eps], int(floor)), cap
                        )[0]
                        if math.isfinite(floor)
                        else math.inf
                    )
                    lib_fits.append(len(objective) - before)
                    floor = budgets[eps]  # a tighter gap needs at least as many
                    if math.isfinite(floor):
                        lib_start[eps] = int(floor)
                for eps in EPS:  # the timed fixed-budget fits
                    if not math.isfinite(budgets[eps]):
                        _record(raw[eps][arm], math.inf, math.inf, math.nan)
                        continue
                    fits = [lib_fit(arm, A, yn, l1, l2, budgets[eps], seed) for _ in range(reps)]
                    _record(
                        raw[eps][arm],
                        statistics.median(f[0] for f in fits),
                        float(fits[-1][2]),
                        rel(P.objective(fits[-1][1])),
                    )
                continue
            _, tr = vr_fit(arm, X, y, loss, l1, l2, seed, cap, targets[EPS[-1]])  # untimed
            for eps in EPS:
                budget = first_hit(tr, targets[eps])
                if not math.isfinite(budget):
                    _record(raw[eps][arm], math.inf, math.inf, math.nan)
                    continue
                fits = [vr_fit(arm, X, y, loss, l1, l2, seed, budget) for _ in range(reps)]
                _record(
                    raw[eps][arm],
                    statistics.median(f[0] for f in fits),
                    fits[-1][1].passes[-1],
                    rel(fits[-1][1].objective[-1]),
                )
    eval_s = time.perf_counter() - clock - ref_s

    out = {
        "dataset": name,
        "loss": loss,
        "library_arm": lib,
        "l1": l1,
        "l2": l2,
        "ill_conditioned": l2 <= 1e-6,
        "n": int(X.shape[0]),
        "d": int(X.shape[1]),
        "cap_passes": cap,
        "P_ref": P_ref,
        "certified_gap": bound,
        "certified_rel_gap": bound / P_ref,
        "certificate_ok": bound / P_ref <= 1e-3 * min(EPS),
        "timed_fits_reach_gap": all(
            g <= eps * (1 + 1e-9)
            for eps in EPS
            for a in arms
            for g in raw[eps][a]["rel_gap"]
            if not math.isnan(g)
        ),
        "defaults_reach_1e-8": {
            a: all(math.isfinite(p) for p in raw[EPS[-1]][a]["passes"]) for a in arms
        },
        "L": {"L_bar": P.L_bar, "L_F": P.L_F, "L_b": P.L_batch(max(1, math.isqrt(P.n)))},
        "targets": {str(e): t for e, t in targets.items()},
        "eval_seeds": EVAL_SEEDS,
        "per_seed": {},
        "seconds": {},
        "passes": {},
        "paired_time_lib_over": {},
        "paired_passes_lib_over": {},
        "fastest_other": {},
        "library_search_fits": lib_fits,
        "wall_s": {"reference": ref_s, "evaluation": eval_s},
        "load_average_after": os.getloadavg(),
    }
    for eps in EPS:
        key = str(eps)
        out["per_seed"][key] = raw[eps]
        out["seconds"][key] = {a: summary(raw[eps][a]["seconds"]) for a in arms}
        out["passes"][key] = {a: summary(raw[eps][a]["passes"]) for a in arms}
        by_seed = {a: dict(zip(EVAL_SEEDS, raw[eps][a]["seconds"], strict=True)) for a in arms}
        passes_by_seed = {
            a: dict(zip(EVAL_SEEDS, raw[eps][a]["passes"], strict=True)) for a in arms
        }
        out["paired_time_lib_over"][key] = {a: paired(by_seed[lib], by_seed[a]) for a in VR}
        out["paired_passes_lib_over"][key] = {
            a: paired(passes_by_seed[lib], passes_by_seed[a]) for a in VR
        }
        # the strongest baseline of this setting: DASVRDA's competitor with the lowest median
        best = min(OTHERS + (lib,), key=lambda a: out["seconds"][key][a]["median"])
        out["fastest_other"][key] = {
            "arm": best,
            "paired_time_over_dasvrda": paired(by_seed[best], by_seed["dasvrda"]),
        }
    return out


# --- the cost of one pass -------------------------------------------------------------------------
def pass_cost(name, data, spec):
    """Seconds per data pass (SAGA: per epoch) from whole-run timings: one fit of 2K passes,
    set-up to return, divided by the passes it made, so no difference of two noisy timings
    can come out negative; set-up is inside for every arm alike (a small share at 2K
    passes). Arms alternate, once per evaluation seed."""
    X, y, A, _ = data
    K, (l1, l2) = spec["K"], spec["settings"][0]
    yn = y.numpy()
    per = {"dasvrda": [], "dasvrda-torch": [], "saga": []}
    for i, seed in enumerate(EVAL_SEEDS):
        order = list(per)[i % 3 :] + list(per)[: i % 3]
        for arm in order:
            if arm == "saga":
                seconds, _, epochs = lib_fit("saga", A, yn, l1, l2, 2 * K, seed)
                per[arm].append(seconds / epochs)
                continue
            seconds, trace = vr_fit(arm, X, y, "logistic", l1, l2, seed, 2 * K)
            per[arm].append(seconds / trace.passes[-1])
    by_seed = {a: dict(zip(EVAL_SEEDS, v, strict=True)) for a, v in per.items()}
    saga_over = paired(by_seed["saga"], by_seed["dasvrda"])
    torch_over = paired(by_seed["dasvrda"], by_seed["dasvrda-torch"])
    return {
        "dataset": name,
        "l1": l1,
        "l2": l2,
        "K": K,
        "passes": 2 * K,
        "seconds_per_pass": {a: summary(v) for a, v in per.items()},
        "dasvrda_pass_over_saga_epoch": 1 / saga_over["geometric_mean"],
        "torch_pass_over_compiled_pass": 1 / torch_over["geometric_mean"],
        "paired_saga_epoch_over_dasvrda_pass": saga_over,
        "by_seed": by_seed,
    }


# --- data-parallel DASVRDA ------------------------------------------------------------------------
def _dp_rank(rank, world, X, y, l1, l2, passes):
    import torch.distributed as dist

    n = len(y)
    lo, hi = rank * n // world, (rank + 1) * n // world
    rows = X if world == 1 else _take(X, lo, hi)
    P = ERMProblem(as_rows(rows), y[lo:hi], l1=l1, l2=l2, group=dist.group.WORLD)
    solver = make_solver("dasvrda", P, seed=0)  # a group: the torch path
    t0 = time.perf_counter()
    trace = solve(solver, max_passes=passes)
    # numpy travels by value: a shared tensor would die with this process
    return rank, time.perf_counter() - t0, solver.output.numpy(), trace.objective[-1]


def _take(X, lo, hi):
    if X.layout != torch.sparse_csr:
        return X[lo:hi]
    from raytrain_eff.blocks.rows import CSRRows

    return CSRRows.from_torch(X).take(torch.arange(lo, hi)).S


def _ranks(world, X, y, l1, l2, passes):
    from raytrain_eff.engine import local_ranks

    return local_ranks.spawn(_dp_rank, world, X, y, l1, l2, passes)


def data_parallel(name, X, y, l1, l2, passes):
    """1 and 2 gloo ranks (rows split in half, torch path), and one compiled process."""
    one, two = _ranks(1, X, y, l1, l2, passes), _ranks(2, X, y, l1, l2, passes)
    compiled = make_solver("dasvrda", ERMProblem(as_rows(X), y, l1=l1, l2=l2), seed=0)
    t0 = time.perf_counter()
    solve(compiled, max_passes=passes)
    compiled_s = time.perf_counter() - t0
    s1, s2 = one[0][1], max(r[1] for r in two)
    return {
        "dataset": name,
        "l1": l1,
        "l2": l2,
        "passes": passes,
        "ranks_equal": bool(np.array_equal(two[0][2], two[1][2])),
        "max_abs_diff_2_vs_1_rank": float(np.abs(two[0][2] - one[0][2]).max()),
        "max_abs_diff_vs_compiled": float(np.abs(two[0][2] - compiled.output.numpy()).max()),
        "seconds_1_rank": s1,
        "seconds_2_ranks": s2,
        "speedup_2_over_1": s1 / s2,
        "seconds_compiled_1_process": compiled_s,
        "objective_2_ranks": two[0][3],
        "objective_1_rank": one[0][3],
        "transport": "torch.distributed gloo ranks in spawned processes (the group Ray "
        "Train's TorchTrainer sets up); Ray's own start-up not included",
        "cores": os.cpu_count(),
    }


def engine_scaling(steps: int) -> dict:
    """The erm-dasvrda preset (kjv, λ₁ = 1e-4, λ₂ = 1e-6) through the engine's ``Runner`` on
    spawned gloo ranks (``engine.local_ranks``, the group Ray Train would set up, without
    Ray's start-up): 1 rank compiled, 1 and 2 ranks on the torch path; steady steps/s from
    the engine's per-step wall clock (metrics.parquet), set-up excluded."""
    import tempfile

    from raytrain_eff.engine import local_ranks

    arms = {
        "1 worker compiled": (1, "compiled"),
        "1 worker torch": (1, "torch"),
        "2 workers torch": (2, "torch"),
    }
    out: dict = {"preset": "erm-dasvrda", "steps": steps}
    with tempfile.TemporaryDirectory() as storage:
        for i, (arm, (workers, backend)) in enumerate(arms.items()):
            overrides = [
                f"scaling.num_workers={workers}",
                f"methods.dasvrda.backend={backend}",
                f"run.steps={steps}",
                f"run.eval_interval={steps}",
                "run.report_interval=25",
                f"run.checkpoint_interval={-(-steps // 25) * 25}",  # the last step's only
                "monitor.progress=false",
            ]
            t0 = time.perf_counter()
            rank0 = local_ranks.spawn(_engine_rank, workers, overrides, f"{storage}/{i}")[0]
            out[arm] = {**rank0, "total_s": time.perf_counter() - t0}
    base = out["1 worker torch"]["steps_per_s"]
    out["speedup_2_over_1_torch"] = out["2 workers torch"]["steps_per_s"] / base
    out["compiled_over_torch_1_worker"] = out["1 worker compiled"]["steps_per_s"] / base
    return out


def _engine_rank(rank: int, world: int, overrides: list[str], run_dir: str) -> dict:
    from raytrain_eff import config
    from raytrain_eff.engine import local_ranks, records

    cfg = config.load(preset="erm-dasvrda", overrides=overrides)
    local_ranks.runner(cfg, rank, world, run_dir).run()
    if rank != 0:
        return {}
    table = records.read_table(run_dir).to_pandas()
    done, wall = table.step.to_numpy(), table.wall_s.to_numpy()
    return {
        "steps_per_s": float((done[-1] - done[0]) / (wall[-1] - wall[0])),
        "objective_last": (
            float(table["objective"].iloc[-1]) if "objective" in table else math.nan
        ),
    }


# --- the record -----------------------------------------------------------------------------------
def _label(r):
    return f"{r['dataset']} l1={r['l1']:g} l2={r['l2']:g}"


def _ratio(v, lib="SAGA"):
    """A library/DASVRDA ratio: inf means the library missed the gap, 0 that DASVRDA did."""
    if math.isinf(v):
        return f"{lib} not reached"
    return "DASVRDA not reached" if v == 0 else f"{v:.2g}"


def _fmt(v, unit=""):
    return "not reached" if not math.isfinite(v) else f"{v:.3g}{unit}"


def _engine_note(engine: dict) -> str:
    if "steps_per_s" not in engine.get("2 workers torch", {}):
        return f"Through the engine: not measured ({engine.get('error')})."
    return (
        "Through the engine's Runner on spawned gloo ranks (preset erm-dasvrda, one inner "
        "step per engine step, set-up excluded): "
        + ", ".join(
            f"{arm} {engine[arm]['steps_per_s']:.3g} steps/s"
            for arm in ("1 worker compiled", "1 worker torch", "2 workers torch")
        )
        + f"; 2 over 1 worker {engine['speedup_2_over_1_torch']:.2f}x."
    )


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    plan = SMOKE if args.smoke else FULL
    start = time.perf_counter()
    data = {name: load(name, spec) for name, spec in plan.items()}
    load_s = time.perf_counter() - start
    warm_s = warm_up(data, plan)
    costs = [
        pass_cost(name, data[name], spec)
        for name, spec in plan.items()
        if spec["loss"] == "logistic"
    ]
    print(
        "pass cost:",
        {c["dataset"]: round(c["dasvrda_pass_over_saga_epoch"], 3) for c in costs},
        flush=True,
    )
    results = []
    for name, spec in plan.items():
        for l1, l2 in spec["settings"]:
            r = run_setting(name, data[name], spec, l1, l2, args.smoke)
            results.append(r)
            print(f"{_label(r)}: done in {sum(r['wall_s'].values()):.0f} s", flush=True)
    dp_plan = DP["smoke" if args.smoke else "full"]
    X, y, _, _ = data[dp_plan["dataset"]]
    dp = data_parallel(
        dp_plan["dataset"], X, y, *plan[dp_plan["dataset"]]["settings"][0], dp_plan["passes"]
    )
    try:
        dp["engine"] = engine_scaling(ENGINE_STEPS["smoke" if args.smoke else "full"])
    except Exception as err:  # the record keeps everything else; the failure is reported
        dp["engine"] = {"error": f"{type(err).__name__}: {err}"[:500]}
    record(
        args,
        plan,
        data,
        results,
        costs,
        dp,
        {"load": load_s, "warm_up": warm_s, "total": time.perf_counter() - start},
    )


def record(args, plan, data, results, costs, dp, wall):
    saga_settings = [r for r in results if r["library_arm"] == "saga"]
    largest = max(costs, key=lambda c: data[c["dataset"]][0].shape[0])
    specs = _claims(saga_settings, results, largest)
    judged = {c.name: c.judged() for c in specs}
    per_setting = {
        _label(r): all(judged[_time_claim(r, e)]["met"] for e in EPS) for r in saga_settings
    }
    won = sum(per_setting.values())
    bar = won * 3 >= 2 * len(per_setting)
    converge = {_label(r): r["defaults_reach_1e-8"] for r in results}
    all_converge = all(all(v.values()) for v in converge.values())
    cost_ok = judged["per_pass_cost"]["met"]
    ratios = {
        _label(r): {
            f"eps={e}": {
                f"{r['library_arm']}_over_{a}_time": {
                    k: r["paired_time_lib_over"][str(e)][a][k]
                    for k in (
                        "per_seed",
                        "median",
                        "geometric_mean",
                        "worst",
                        "bootstrap_lower_90",
                        "wins",
                    )
                }
                for a in VR
            }
            for e in EPS
        }
        for r in results
    }
    for r in results:
        for e in EPS:
            fastest = r["fastest_other"][str(e)]
            ratios[_label(r)][f"eps={e}"]["fastest_other_over_dasvrda_time"] = {
                "arm": fastest["arm"],
                **{
                    k: fastest["paired_time_over_dasvrda"][k]
                    for k in ("per_seed", "median", "worst", "bootstrap_lower_90", "wins")
                },
            }
    ratios["per_pass_cost"] = {
        c["dataset"]: {
            "dasvrda_pass_over_saga_epoch": c["dasvrda_pass_over_saga_epoch"],
            "torch_pass_over_compiled_pass": c["torch_pass_over_compiled_pass"],
        }
        for c in costs
    }

    e0, e1 = (str(e) for e in EPS)
    headline = (
        f"At every solver's defaults, compiled DASVRDA reached relative gaps 1e-6 and 1e-8 "
        f"no later than scikit-learn SAGA (paired over {len(EVAL_SEEDS)} seeds) on {won} of "
        f"{len(per_setting)} logistic settings (SAGA/DASVRDA time at 1e-6 [1e-8], median: "
        + "; ".join(
            f"{_label(r)} {_ratio(r['paired_time_lib_over'][e0]['dasvrda']['median'])}"
            f" [{_ratio(r['paired_time_lib_over'][e1]['dasvrda']['median'])}]"
            for r in saga_settings
        )
        + f"); one compiled DASVRDA pass costs {largest['dasvrda_pass_over_saga_epoch']:.2g}x "
        f"a SAGA epoch on {largest['dataset']} (target <= 1.2x), "
        f"and the torch path's pass {largest['torch_pass_over_compiled_pass']:.2g}x the "
        f"compiled one."
    )
    lines = []
    for r in results:
        sec, pas, lib = r["seconds"][e0], r["passes"][e0], r["library_arm"]
        arms = (*VR, lib)
        lines.append(
            f"{_label(r)} ({r['loss']}): median s / passes to 1e-6 "
            + ", ".join(
                f"{a} {_fmt(sec[a]['median'], ' s')} / {_fmt(pas[a]['median'])}" for a in arms
            )
            + "; to 1e-8 "
            + ", ".join(f"{a} {_fmt(r['seconds'][e1][a]['median'], ' s')}" for a in arms)
            + f"; worst-seed {lib}/DASVRDA time at 1e-6 "
            f"{_fmt(r['paired_time_lib_over'][e0]['dasvrda']['worst'])}, at 1e-8 "
            f"{_fmt(r['paired_time_lib_over'][e1]['dasvrda']['worst'])}; "
            + "; ".join(
                f"fastest other at {e} {r['fastest_other'][e]['arm']}, its time / DASVRDA's "
                f"median {_fmt(r['fastest_other'][e]['paired_time_over_dasvrda']['median'])}, "
                f"worst {_fmt(r['fastest_other'][e]['paired_time_over_dasvrda']['worst'])}"
                for e in (e0, e1)
            )
            + "; "
            f"L_bar {r['L']['L_bar']:.3g}, L_F {r['L']['L_F']:.3g}, L_b {r['L']['L_b']:.3g}"
        )
    missed = [f"{k}: {a}" for k, v in converge.items() for a, ok in v.items() if not ok]
    previous = (
        "Previous result (commit 46e98b8e+dirty): eta_scale tuned per solver and setting, "
        "torch solvers only, a penalised bias column, DASVRDA beat SAGA on 3 of 6 settings at "
        "1e-6. Now: every arm at its defaults (no tuning: the data-aware step replaces it), "
        "compiled stage loops, plain elastic nets (no bias column) on every row, caps raised "
        "so every default reaches 1e-8, diabetes (squared loss, coordinate descent) added, "
        "per-pass cost measured."
    )
    notes = " ".join(
        [
            previous,
            f"Claim (>= 2/3 of the SAGA settings at both gaps): {'met' if bar else 'not met'} "
            f"({won}/{len(per_setting)}); settings without a win: "
            + (", ".join(k for k, v in per_setting.items() if not v) or "none")
            + ".",
            "Defaults reach 1e-8 within the cap on every seed: "
            + (
                "every arm, every setting."
                if all_converge
                else "not all: " + "; ".join(missed) + "."
            ),
            "; ".join(lines) + ".",
            "Per-pass cost (whole 2K-pass fits, set-up included, over their passes; median "
            "over seeds): "
            + "; ".join(
                f"{c['dataset']}: compiled {c['seconds_per_pass']['dasvrda']['median'] * 1e3:.3g} "
                f"ms, torch {c['seconds_per_pass']['dasvrda-torch']['median'] * 1e3:.3g} ms, SAGA "
                f"epoch {c['seconds_per_pass']['saga']['median'] * 1e3:.3g} ms"
                for c in costs
            )
            + ".",
            f"Data-parallel DASVRDA (torch path, gloo ranks) on {dp['dataset']}: "
            f"{dp['seconds_1_rank']:.2f} s on 1 rank, {dp['seconds_2_ranks']:.2f} s on 2 "
            f"(speedup {dp['speedup_2_over_1']:.2f}x, {dp['cores']} cores shared with other work), "
            f"{dp['seconds_compiled_1_process']:.2f} s compiled in one process, for "
            f"{dp['passes']} passes; 2 ranks equal each other {dp['ranks_equal']} and 1 rank to "
            f"{dp['max_abs_diff_2_vs_1_rank']:.1e}. " + _engine_note(dp["engine"]),
        ]
    )
    stop = StoppingRule(
        kind="target",
        metric="relative gap P(x)/P_ref - 1",
        target="1e-6 and 1e-8",
        cadence="every stage snapshot (VR solvers) / every epoch (scikit-learn)",
        note=(
            "one rule for every arm: on each evaluation seed the arm is first given (untimed) "
            "the fewest data passes that reach P(x) <= P_ref(1 + eps) for eps in {1e-6, 1e-8}, "
            "P_ref certified to within 1e-3*eps of P*: for the VR solvers the passes at the "
            "first stage snapshot at or below the target (P is a by-product of the snapshot "
            "pass), for SAGA / coordinate descent the fewest epochs (tol=0, max_iter=e; "
            "doubling then bisection to one epoch); then that fixed budget is run again and "
            "timed, with no target and no convergence check inside. A budget is one data pass "
            "= n component gradients = one library epoch; nothing past the per-data-set cap "
            "counts: such a run is 'not reached' (inf, counted against its arm)."
        ),
    )
    timed = TimedRegion(
        includes=(
            "problem set-up: ERMProblem construction, make_solver (the power iteration "
            "for L_F) / LogisticRegression or ElasticNet construction",
            "solve(max_passes=budget) / fit at the found budget",
        ),
        excludes=(
            "loading the data and converting it to each library's format",
            "evaluating P afterwards",
            "each arm's first call in the process (numba compiling or loading its kernels, "
            "torch's and scikit-learn's first-use costs), made once before any timing and "
            "timed apart per arm (wall_s.warm_up)",
        ),
        note=(
            "from problem set-up to return, for every arm: ERMProblem construction (row "
            "norms, CSR transpose for the torch path) + make_solver (the power iteration for "
            "L_F of the data-aware step) + solve(max_passes=budget) for the VR solvers; "
            "LogisticRegression / ElasticNet(...) + fit (input checks, step size, epochs) for "
            "scikit-learn. Excluded for all: loading the data, converting it to each "
            "library's format, evaluating P afterwards, and each arm's first call in the process "
            "(numba's compilation or cache load, torch's and scikit-learn's first-use costs; "
            "scikit-learn's Cython is compiled at install), made before any timing. Fits "
            "of tens of milliseconds run 3 times back to back, median kept, for every arm."
        ),
    )
    protocol = Protocol(
        kind="comparison",
        arms=_arms(stop, timed, costs),
        quorum={"settings": 2 / 3},
        untuned={
            **{
                a: (
                    "run at its defaults (eta_scale 1 with the data-aware step, b = floor("
                    "sqrt(n))): the claim is about defaults, and the data-aware step is what "
                    "replaces tuning"
                )
                for a in VR
            },
            "saga": (
                "scikit-learn sets SAGA's step size from the data; tol/max_iter are "
                "fixed by the stopping rule"
            ),
            "cd": (
                "coordinate descent has no step size; tol/max_iter fixed by the stopping "
                "rule; selection='random' seeded per evaluation seed"
            ),
            **{a: "the same solver at its defaults, timed per pass" for a in PASS_ARMS},
            "reference": "the certified reference solve: a tolerance, no hyper-parameter",
        },
        tuning_seeds=[],
        eval_seeds=EVAL_SEEDS,
        problems=[
            {
                "name": name,
                "standard": name != "kjv",
                "why": WHY[name],
                "built": data[name][3],
                "loss": plan[name]["loss"],
                "n": int(data[name][0].shape[0]),
                "d": int(data[name][0].shape[1]),
                "settings": [list(s) for s in plan[name]["settings"]],
                "cap_passes": plan[name]["cap"],
                "timing_reps": plan[name]["reps"],
            }
            for name in plan
        ],
        baselines={
            "saga": (
                "scikit-learn's SAGA (Cython, lazy updates on sparse rows): the maintained "
                "solver users reach for, on exactly the same objective"
            ),
            "cd": (
                "scikit-learn's ElasticNet coordinate descent (Cython) on the same "
                "least-squares objective: where coordinate descent applies"
            ),
            "dasvrda-torch": "the readable torch reference of the same algorithm and iterates",
            "prox-svrg": "same compiled code path, sampling, b and snapshot reuse as DASVRDA",
            "katyusha": "same compiled code path as DASVRDA (option I, section 5 parameters)",
        },
        departures={
            "smoothness": (
                "reference: L = max_i L_i (the papers); default here 'batch': "
                "L_b = (1 - 1/b) L_F + max L_i / b, the smoothness a b-row batch "
                "sees, for every VR solver"
            ),
            "prox-svrg eta_scale": "1.0 with L_b (earlier default 0.5 with max L_i)",
            "saga / cd tol, max_iter": (
                "scikit-learn defaults tol=1e-4, max_iter=100 "
                "(ElasticNet 1000); here tol=0 and max_iter = the "
                "found epoch budget"
            ),
        },
        selection_split="none: nothing is tuned (every arm at its defaults)",
        report_split=(
            "the training objective (gap to the certified P*) on evaluation seeds "
            "1-5: an optimisation benchmark, no held-out quality is claimed"
        ),
        alternation=(
            "within each seed every arm runs its search and its timed fits in turn; "
            "the order rotates by one arm per seed; per-pass costs alternate alike"
        ),
        claims=specs,
    )
    write_result(
        "dasvrda",
        smoke=args.smoke,
        out=args.out,
        headline=headline,
        config={
            "datasets": {
                n: {k: (list(map(list, v)) if k == "settings" else v) for k, v in plan[n].items()}
                | {"built": data[n][3]}
                for n in plan
            },
            "eps": list(EPS),
            "eval_seeds": EVAL_SEEDS,
            "threads": 1,
            "arms": {
                a: {"solver": s, "backend": b, "eta_scale": c.eta_scale, "smoothness": c.smoothness}
                for a, (s, b, c) in VR.items()
            },
            "b": "floor(sqrt(n)) (default)",
            "m": "default",
            "restart": "adaptive",
            "gamma": 3.0,
        },
        baseline={
            "saga": [
                {"setting": _label(r), **{k: r[k][e0]["saga"] for k in ("seconds", "passes")}}
                for r in saga_settings
            ]
        },
        method={"settings": results, "per_pass_cost": costs, "data_parallel": dp, "wall_s": wall},
        ratios=ratios,
        target={
            "dasvrda_time_le_saga": (
                "at both gaps, paired per seed (90% bootstrap bound "
                "> 1), on >= 2/3 of the SAGA settings"
            ),
            "per_pass_cost": (
                "compiled DASVRDA pass < 1.2x a SAGA epoch (largest set; "
                "90% bootstrap bound of SAGA epoch / DASVRDA pass > 1/1.2)"
            ),
            "defaults_converge": "every arm reaches 1e-8 within the cap on every seed",
            "certified": "every reference P_ref certified to 1e-3 x the smallest gap",
        },
        notes=notes,
        protocol=protocol,
        extra={
            "met_per_setting": per_setting,
            "defaults_reach_1e-8": converge,
            "per_pass_cost_met": cost_ok,
            "all_defaults_converge": all_converge,
        },
    )


PASS_ARMS = ("dasvrda per pass", "saga per epoch")
PASS_COST_TARGET = 1.2


def _time_claim(r: dict, eps: float) -> str:
    return f"time to {eps}: saga / dasvrda, {_label(r)}"


def _claims(saga_settings: list, results: list, largest: dict) -> list[Claim]:
    """DASVRDA faster than SAGA at both gaps on >= 2/3 of the SAGA settings (group
    ``settings/<setting>``); the per-pass cost on the largest set; every arm's defaults reach
    1e-8 within the cap on every seed; every reference certified."""
    out = [
        Claim(
            name=_time_claim(r, e),
            arm="dasvrda",
            baseline="saga",
            metric=f"seconds to relative gap {e}",
            statistic="bootstrap_lower_90",
            baseline_values=dict(
                zip(EVAL_SEEDS, r["per_seed"][str(e)]["saga"]["seconds"], strict=True)
            ),
            arm_values=dict(
                zip(EVAL_SEEDS, r["per_seed"][str(e)]["dasvrda"]["seconds"], strict=True)
            ),
            group=f"settings/{_label(r)}",
        )
        for r in saga_settings
        for e in EPS
    ]
    out += [
        Claim(
            name=f"fastest other ({fastest['arm']}) / dasvrda, time to {e}, {_label(r)}",
            arm="dasvrda",
            baseline=fastest["arm"],
            metric=f"seconds to relative gap {e}",
            statistic="bootstrap_lower_90",
            baseline_values=dict(
                zip(EVAL_SEEDS, r["per_seed"][str(e)][fastest["arm"]]["seconds"], strict=True)
            ),
            arm_values=dict(
                zip(EVAL_SEEDS, r["per_seed"][str(e)]["dasvrda"]["seconds"], strict=True)
            ),
            required=False,  # reported: the claim is against SAGA, this is the strongest arm
        )
        for r in results
        for e in EPS
        for fastest in [r["fastest_other"][str(e)]]
    ]
    by_seed = largest["by_seed"]
    out.append(
        Claim(
            name="per_pass_cost",
            arm=PASS_ARMS[0],
            baseline=PASS_ARMS[1],
            metric=f"seconds per pass of a whole 2K-pass fit on {largest['dataset']}",
            baseline_values=by_seed["saga"],
            arm_values=by_seed["dasvrda"],
            threshold=1 / PASS_COST_TARGET,
            statistic="bootstrap_lower_90",
        )
    )
    arms = sorted({a for r in results for a in r["defaults_reach_1e-8"]})
    for arm in arms:
        reached = {
            f"{_label(r)} seed {s}": float(math.isfinite(p))
            for r in results
            if arm in r["per_seed"][str(EPS[-1])]
            for s, p in zip(EVAL_SEEDS, r["per_seed"][str(EPS[-1])][arm]["passes"], strict=True)
        }
        out.append(
            Claim(
                name=f"defaults_converge: {arm}",
                arm=arm,
                baseline=None,
                kind="bound",
                metric=f"reached {EPS[-1]} within the cap (1 = yes)",
                arm_values=reached,
                lower_is_better=False,
                threshold=0.5,
            )
        )
    out.append(
        Claim(
            name="references_certified",
            arm="reference",
            baseline=None,
            kind="bound",
            metric="certified relative gap of P_ref",
            arm_values={_label(r): r["certified_rel_gap"] for r in results},
            threshold=1e-3 * min(EPS) * (1 + 1e-9),
        )
    )
    return out


def _arms(stop: StoppingRule, timed: TimedRegion, costs: list) -> dict[str, Arm]:
    """The solvers share one rule; the per-pass arms another; the reference its own."""
    K = {c["dataset"]: c["K"] for c in costs}
    per_pass = Arm(
        stopping=StoppingRule(
            kind="budget",
            metric="data passes (SAGA: epochs)",
            target=f"2K, K per data set: {K}",
            cadence="once per budget",
            note="seconds per pass: the whole fit's time over the passes it made",
        ),
        timed=TimedRegion(
            includes=("one whole fit of 2K passes (epochs), set-up to return",),
            excludes=("each arm's first call in the process (warm-up, timed apart)",),
        ),
    )
    reference = Arm(
        stopping=StoppingRule(
            kind="target",
            metric="certified relative gap of P_ref",
            target=1e-3 * min(EPS),
            cadence="once per setting",
        ),
        timed=TimedRegion(includes=("the reference solve (untimed for claims)",)),
    )
    return {
        **same_rules([*VR, "saga", "cd"], stop, timed),
        **dict.fromkeys(PASS_ARMS, per_pass),
        "reference": reference,
    }


if __name__ == "__main__":
    main()
