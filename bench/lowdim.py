"""Benchmark: compressed (width 2r, spectral init) vs original (width d) deep linear networks.

arXiv 2311.05061, under the protocol of bench/README.md. Low-rank recovery in float64 on one
thread with full-batch GD (depth 3, ε = 1e-2): matrix factorisation (MF) at d = 100 and matrix
completion (MC, 30% observed, r = 5) at d = 100 and d = 400 (the d = 1000 of earlier runs
does not fit 5 paired seeds in the time budget). Each arm's step size η is tuned by
``harness.tune_bracketed`` on tuning seed 0 (score: iterations to the error target, then the
final error); the arms then alternate on evaluation seeds 1-5. One stopping rule (the first
check at or below recovery error 1e-3, checked every iteration, cap ``CAP``) and one timed
region (network construction, the compressed net's surrogate gradient and SVD included, plus
every step and check). The standard second problem is the product itself: the packaged
presets trained by the engine's ``Runner`` on a spawned gloo rank (bench/product.py), the
digits MLP 64-512-512 with its head as ``digits-dense-head`` (a plain nn.Linear head), as
``digits-lowdim-head`` at LowDimConfig()'s defaults (the compressed width-2r head) or as the
uncompressed deep linear head (``lowdim`` at width = hidden, random orthogonal init, one
rate), Adam, each LR tuned the same way, stopped (``Runner(stop_when=...)``) at the first
epoch whose validation accuracy reaches ``head_target``; the claim on it has two baselines,
the uncompressed deep head and the plain dense head. Test accuracy is reported on the task's
test split (``data.test_fraction``: the second half of the held-out 20%), which neither
tuning nor stopping saw.

JIT: no arm of either problem is compiled (eager PyTorch), so there is no compile time to
time or exclude; bench/lowdim_compile.py measures torch.compile on its own. Head runs are
timed from ``Runner.setup`` (data, model, the method's prepare, optimizer) to the epoch that
reaches the target; each head arm first runs once, untimed, so that one-time imports and lazy
initialisation fall on no arm.

    python bench/lowdim.py [--smoke] [--out PATH]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from bench import product
from bench.harness import (
    Arm,
    Claim,
    Protocol,
    StoppingRule,
    TimedRegion,
    paired,
    parser,
    summary,
    tune_bracketed,
    write_result,
)
from raytrain_eff import config
from raytrain_eff.blocks import deep_linear
from raytrain_eff.engine import local_ranks
from raytrain_eff.engine.runner import build_task
from raytrain_eff.hparams.lowdim import LowDimConfig
from raytrain_eff.methods import lowdim as L
from raytrain_eff.tasks import lowrank

EPS = 1e-2  # the paper's ε (both networks)
TOL = 1e-3  # the recovery-error target
ALPHA = {
    "original": 1.0,  # the reference trains the original net with one rate
    "compressed": LowDimConfig().alpha,
}  # 5.0: the reference's dlr for MC
ARMS = ("original", "compressed")
TUNING_SEED = 0
# the same grid size (3) for every arm, each centred where a d = 100 pilot on the tuning seed
# put its optimum; tune_bracketed widens past an edge
GRIDS = {"original": [0.4, 0.57, 0.8], "compressed": [0.1, 0.14, 0.2]}
HEAD_ARMS = ("original", "compressed", "dense")
HEAD_GRIDS = {arm: [1e-3, 3e-3, 1e-2] for arm in HEAD_ARMS}
HEAD_HIDDEN = 512  # the head must be a real share of the step (the paper's MLP is wide)
HEAD_BATCH = 64

FULL = {
    "problems": [("mf", 100), ("mc", 100), ("mc", 400)],
    "cap": 3000,
    "eval_seeds": [1, 2, 3, 4, 5],
    "head_epochs": 30,
    "head_target": 0.95,
}
SMOKE = {
    "problems": [("mf", 20), ("mc", 30)],
    "cap": 400,
    "eval_seeds": [1, 2],
    "head_epochs": 2,
    "head_target": 0.5,
}


# -- low-rank recovery -------------------------------------------------------------------------
def rank_of(d: int) -> int:
    return 5 if d >= 50 else 2  # r = 5 as in the reference's MC; smoke sizes use 2


def build(kind: str, d: int, seed: int) -> tuple[lowrank.LowRankProblem, int]:
    gen = torch.Generator().manual_seed(seed)
    r = rank_of(d)
    problem = (
        lowrank.factorization(d, r, gen) if kind == "mf" else lowrank.completion(d, r, 0.3, gen)
    )
    return problem, r


def lowrank_run(
    arm: str, P: lowrank.LowRankProblem, r: int, seed: int, eta: float, cap: int
) -> dict:
    """One timed run: construction (and for the compressed net Φ̂ = −∇f(0) and its SVD), then
    GD until the first error at or below TOL, a NaN or ``cap`` steps."""
    d = P.Phi.shape[0]
    start = time.perf_counter()
    if arm == "original":
        net = deep_linear.original(d, 3, EPS, torch.Generator().manual_seed(10_000 + seed))
    else:
        net = L.compressed(lowrank.surrogate(P.loss, tuple(P.Phi.shape)), 2 * r, EPS, "spectral")
    opt = L.make_optimizer(L.param_groups(net, [net], eta, ALPHA[arm]), "gd")
    setup = time.perf_counter() - start
    traj = lowrank.fit(net, P, opt, cap, tol=TOL)
    seconds = time.perf_counter() - start
    hit = traj.first_below(TOL)
    return {
        "iterations": hit[0] if hit else math.inf,
        "seconds": seconds if hit else math.inf,
        "seconds_run": seconds,
        "setup_seconds": setup,
        "steps_run": len(traj.errors) - 1,
        "final_error": traj.errors[-1],
        "eta": eta,
    }


def lowrank_score(arm: str, kind: str, d: int, cap: int):
    """score(η) on the tuning seed: (iterations to TOL, final error). A run stops once it has
    used as many iterations as the best run so far: it can no longer win."""
    P, r = build(kind, d, TUNING_SEED)
    best = [cap]

    def score(eta: float) -> tuple:
        res = lowrank_run(arm, P, r, TUNING_SEED, eta, best[0])
        if math.isfinite(res["iterations"]):
            best[0] = min(best[0], res["iterations"])
        return (res["iterations"], res["final_error"])

    return score


def lowrank_problem(kind: str, d: int, cfg: dict) -> dict:
    tuning = {
        arm: tune_bracketed(arm, lowrank_score(arm, kind, d, cfg["cap"]), GRIDS[arm])
        for arm in ARMS
    }
    runs = {arm: {} for arm in ARMS}
    for seed in cfg["eval_seeds"]:
        P, r = build(kind, d, seed)  # the problem (Φ, Ω) is data: built outside the timer
        for arm in ARMS if seed % 2 else ARMS[::-1]:  # alternate which arm goes first
            runs[arm][seed] = lowrank_run(arm, P, r, seed, tuning[arm]["winner"], cfg["cap"])
    print(
        f"{kind}_d{d}",
        {a: t["winner"] for a, t in tuning.items()},
        {
            a: [(x["iterations"], round(x["seconds"], 3)) for x in rs.values()]
            for a, rs in runs.items()
        },
        flush=True,
    )
    return {"tuning": tuning, "runs": runs}


# -- the classifier head (the standard problem): the product's presets through its Runner -------
def head_arm(arm: str, lr: float) -> tuple[str, list[str]]:
    """(preset, overrides) of one head arm: ``dense`` is digits-dense-head; ``compressed`` is
    digits-lowdim-head at LowDimConfig()'s defaults but for the tuned lr; ``original`` is the
    uncompressed deep linear head (the lowdim method at width = hidden, random orthogonal
    init, one rate), as the reference trains it."""
    if arm == "dense":
        return "digits-dense-head", [f"methods.adamw.lr={lr}"]
    lowdim = [f"methods.lowdim.lr={lr}", f"methods.lowdim.alpha={ALPHA[arm]}"]
    if arm == "original":
        lowdim += [f"methods.lowdim.width={HEAD_HIDDEN}", "methods.lowdim.init=random"]
    return "digits-lowdim-head", lowdim


@functools.cache
def steps_per_epoch() -> int:
    """Steps in one pass over digits' training rows (80%) at HEAD_BATCH."""
    task = build_task(config.load(preset="digits-dense-head", overrides=["data.val_fraction=0.2"]))
    task.load()
    return task.num_train // HEAD_BATCH


def head_overrides(seed: int, epochs: int) -> list[str]:
    """Every head arm: the MLP 64-512-512, digits' held-out 20% halved into validation | test
    (``data.test_fraction``), one evaluation per epoch."""
    steps = epochs * steps_per_epoch()
    return [
        f"task.hidden={HEAD_HIDDEN}",
        f"data.batch_size={HEAD_BATCH}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.5",
        f"run.seed={seed}",
        f"run.steps={steps}",
        f"run.eval_interval={steps_per_epoch()}",
        f"run.report_interval={steps_per_epoch()}",
        f"run.checkpoint_interval={steps}",
    ]


def head_run(arm: str, seed: int, lr: float, max_epochs: int, target: float) -> dict:
    """One run through the Runner, stopped at the first epoch whose validation accuracy
    reaches ``target``; timed from Runner.setup (the compressed head's step-0 gradient and SVD
    included) to that epoch's last step."""
    preset, overrides = head_arm(arm, lr)
    run = product.train(
        preset,
        [*head_overrides(seed, max_epochs), *overrides],
        test=True,
        stop_when=lambda scores: scores["val_accuracy"] >= target,
    )
    if arm != "dense":
        check_head_reference(run, arm, lr)
    seconds = run.setup_s + run.loop_s
    epochs = len(run.rows) // steps_per_epoch()
    reached = run.scores["val_accuracy"] >= target
    return {
        "epochs": epochs if reached else math.inf,
        "seconds": seconds if reached else math.inf,
        "seconds_run": seconds,
        "setup_seconds": run.setup_s,
        "epochs_run": epochs,
        "val_accuracy": run.scores["val_accuracy"],
        "test_accuracy": run.scores["test_accuracy"],
        "lr": lr,
    }


def check_head_reference(run, arm: str, lr: float) -> None:
    """The lowdim arms run at LowDimConfig()'s defaults but for what head_arm names."""
    want = LowDimConfig(lr=lr, alpha=ALPHA[arm])
    if arm == "original":
        want = dataclasses.replace(want, width=HEAD_HIDDEN, init="random")
    if run.cfg.methods["lowdim"] != want:
        raise RuntimeError(f"methods.lowdim departs from {want}: {run.cfg.methods['lowdim']}")


def head_score(arm: str, cfg: dict):
    best = [cfg["head_epochs"]]

    def score(lr: float) -> tuple:
        res = head_run(arm, TUNING_SEED, lr, best[0], cfg["head_target"])
        if math.isfinite(res["epochs"]):
            best[0] = min(best[0], res["epochs"])
        return (res["epochs"], 1.0 - res["val_accuracy"])

    return score


def head_problem(rank: int, world: int, cfg: dict) -> dict:
    """On the spawned rank: one untimed warm-up run per arm, then tuning and evaluation."""
    arms = [head_arm(arm, 1e-3) for arm in HEAD_ARMS]
    product.warm_up([(preset, head_overrides(0, 1) + extra) for preset, extra in arms])
    tuning = {arm: tune_bracketed(arm, head_score(arm, cfg), HEAD_GRIDS[arm]) for arm in HEAD_ARMS}
    runs = {arm: {} for arm in HEAD_ARMS}
    for seed in cfg["eval_seeds"]:
        for arm in HEAD_ARMS if seed % 2 else HEAD_ARMS[::-1]:
            runs[arm][seed] = head_run(
                arm, seed, tuning[arm]["winner"], cfg["head_epochs"], cfg["head_target"]
            )
    print(
        "digits_head",
        {a: t["winner"] for a, t in tuning.items()},
        {
            a: [(x["epochs"], round(x["seconds"], 2), x["test_accuracy"]) for x in rs.values()]
            for a, rs in runs.items()
        },
        flush=True,
    )
    return {"tuning": tuning, "runs": runs}


# -- the record --------------------------------------------------------------------------------
def per_seed(runs: dict, key: str) -> dict:
    return {seed: r[key] for seed, r in runs.items()}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    cfg = SMOKE if args.smoke else FULL
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    wall = time.perf_counter()
    results = {f"{k}_d{d}": lowrank_problem(k, d, cfg) for k, d in cfg["problems"]}
    (results["digits_head"],) = local_ranks.spawn(head_problem, 1, cfg, timeout=3600)
    record(results, cfg, args, time.perf_counter() - wall)


def record(results: dict, cfg: dict, args, wall: float) -> None:
    specs, ratios, baseline, method = [], {}, {}, {}
    for name, res in results.items():
        runs = res["runs"]
        specs.append(
            Claim(
                name=f"{name}_seconds",
                arm=f"{name}/compressed",
                baseline=f"{name}/original",
                metric="seconds to the target",
                baseline_values=per_seed(runs["original"], "seconds"),
                arm_values=per_seed(runs["compressed"], "seconds"),
                statistic="bootstrap_lower_90",
            )
        )
        count = "epochs" if name == "digits_head" else "iterations"
        ratios[f"{name}_{count}"] = paired(
            per_seed(runs["original"], count), per_seed(runs["compressed"], count)
        )
        baseline[name] = {arm: runs[arm] for arm in runs if arm != "compressed"}
        method[name] = runs["compressed"]
    head = results["digits_head"]["runs"]
    specs.append(
        Claim(
            name="digits_head_seconds_vs_dense",
            arm="digits_head/compressed",
            baseline="digits_head/dense",
            metric="seconds to the target",
            baseline_values=per_seed(head["dense"], "seconds"),
            arm_values=per_seed(head["compressed"], "seconds"),
            statistic="bootstrap_lower_90",
        )
    )
    ratios["digits_head_epochs_vs_dense"] = paired(
        per_seed(head["dense"], "epochs"), per_seed(head["compressed"], "epochs")
    )
    claims = {c.name: c.judged() for c in specs}
    dense_claim = claims["digits_head_seconds_vs_dense"]
    ratios["digits_head_seconds_dense_over_compressed"] = dense_claim
    test_acc = {arm: summary([r["test_accuracy"] for r in head[arm].values()]) for arm in HEAD_ARMS}
    met = all(c["met"] for c in claims.values())
    big = f"mc_d{max(d for k, d in cfg['problems'] if k == 'mc')}"
    protocol = Protocol(
        kind="comparison",
        arms=_arms(results, cfg),
        tuning={
            f"{name}/{arm}": t for name, res in results.items() for arm, t in res["tuning"].items()
        },
        untuned={
            "alpha": f"the discrepant rate is not tuned: compressed {ALPHA['compressed']}"
            " (the reference's dlr and LowDimConfig's default), original 1.0 "
            "(the reference trains it with one rate)",
            "eps": f"ε = {EPS} for every network (the reference's init_scale)",
        },
        tuning_seeds=[TUNING_SEED],
        eval_seeds=list(cfg["eval_seeds"]),
        problems=[
            *(
                {
                    "name": f"{k}_d{d}",
                    "standard": False,
                    "why": "the paper's own deep matrix "
                    f"{'factorisation' if k == 'mf' else 'completion (30% observed)'}, "
                    f"d = {d}, rank {rank_of(d)}",
                }
                for k, d in cfg["problems"]
            ),
            {
                "name": "digits_head",
                "standard": True,
                "why": "scikit-learn's digits, MLP 64-512-512: the method compresses a "
                "classifier head on data its authors did not choose",
            },
        ],
        baselines={
            "original": "the same fit() loop as the compressed net: one end-to-end "
            "product per iteration shared by the error check and the loss "
            "(issue 17: it was formed twice), step size tuned with the same "
            "grid size; for the head, digits-lowdim-head at width = hidden with random "
            "orthogonal init and one rate (the uncompressed deep head) through the same Runner",
            "dense": "head only: digits-dense-head, the plain nn.Linear head with Adam "
            "(adamw, weight decay 0) through the same Runner, LR tuned the same way; a "
            "baseline of the standard problem's claim (issue 29: it is the strongest one)",
        },
        departures={
            "head target": "the reference trains for a fixed number of epochs; here "
            "every arm stops at the same validation accuracy"
        },
        selection_split=(
            "low-rank: the tuning seed's own problem instance; head: the first "
            "half of digits' held-out 20% (validation)"
        ),
        report_split=(
            "low-rank: evaluation seeds' problem instances; head: the second half "
            "of the held-out 20% (test), never used to tune or stop"
        ),
        alternation="on each evaluation seed the arms run back to back, first arm alternating "
        "by seed parity",
        claims=specs,
    )
    c_big, c_head = claims[f"{big}_seconds"], claims["digits_head_seconds"]
    dense = dense_claim
    headline = (
        f"Timed from construction to recovery error 1e-3, the compressed network was "
        f"{_g(c_big['geometric_mean'])}x faster than the original on {big} (worst seed "
        f"{_g(c_big['worst'])}x, {c_big['n']} seeds) and its digits head "
        f"{_g(c_head['geometric_mean'])}x faster than the uncompressed deep head (worst "
        f"{_g(c_head['worst'])}x), "
        + (
            f"but a plain dense head was {_g(1 / dense['median'])}x faster than the compressed one."
            if dense["median"] < 1
            else f"and {_g(dense['median'])}x faster than a plain dense head."
        )
    )
    notes = _notes(results, claims, ratios, big, met, test_acc, wall)
    path = write_result(
        "lowdim",
        smoke=args.smoke,
        out=args.out,
        headline=headline,
        config={
            "eps": EPS,
            "tol": TOL,
            "alpha": ALPHA,
            "depth": 3,
            "dtype": "float64",
            "threads": 1,
            "optimizer": "full-batch GD (low-rank), Adam (head)",
            "problems": [f"{k}_d{d}" for k, d in cfg["problems"]],
            "cap": cfg["cap"],
            "mc_observed": 0.3,
            "head": f"digits MLP 64-{HEAD_HIDDEN}-{HEAD_HIDDEN}, "
            f"batch {HEAD_BATCH}, compressed width {LowDimConfig().width}",
            "head_target_val_accuracy": cfg["head_target"],
            "head_max_epochs": cfg["head_epochs"],
            "full_run_seconds": wall,
        },
        baseline=baseline,
        method=method,
        ratios=ratios,
        target={
            "claim": "every problem's paired time ratio (original over compressed) wins, and "
            "on the digits head also dense over compressed: 90% bootstrap lower bound > 1"
        },
        notes=notes,
        extra={"head_test_accuracy": test_acc},
        protocol=protocol,
    )
    print(path.read_text()[:2000])


def _arms(results: dict, cfg: dict) -> dict[str, Arm]:
    """Every arm of a problem shares its stopping rule and timed region."""
    lowrank = StoppingRule(
        kind="target",
        metric="recovery error ‖W−Φ‖_F/‖Φ‖_F",
        target=TOL,
        cadence="every iteration",
        note=f"cap {cfg['cap']} iterations",
    )
    head = StoppingRule(
        kind="target",
        metric="validation accuracy (at or above)",
        target=cfg["head_target"],
        cadence="every epoch",
        note=f"cap {cfg['head_epochs']} epochs",
    )
    timed = TimedRegion(
        includes=(
            "network construction: the original net's orthogonal init (QR), the "
            "compressed net's surrogate −∇f(0), its SVD and spectral init",
            "the optimizer, every step and every stopping check",
        ),
        excludes=(
            "building the problem (Φ, Ω), shared by the arms",
            "JIT compilation: none exists (eager; bench/lowdim_compile.py measures compile)",
        ),
    )
    head_timed = TimedRegion(
        includes=(
            "Runner.setup: loading digits, building the MLP, the lowdim method's prepare (the "
            "head's step-0 gradient, SVD and spectral or orthogonal init), the optimizer",
            "the Runner's loop to the last step of the epoch whose evaluation reaches the "
            "target, every earlier per-epoch evaluation included",
        ),
        excludes=(
            "the Runner's dense FLOP count before the loop (one forward, every arm alike)",
            "the evaluation that reaches the target",
            "one-time imports and lazy set-up: each arm runs once, untimed, first",
            "JIT compilation: none exists (eager; no arm compiles)",
        ),
    )
    return {
        f"{name}/{arm}": (
            Arm(stopping=head, timed=head_timed)
            if name == "digits_head"
            else Arm(stopping=lowrank, timed=timed)
        )
        for name, res in results.items()
        for arm in res["runs"]
    }


def _g(x) -> str:
    return "inf" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _count_key(seconds_key: str) -> str:
    """The hardware-independent count beside a time claim: epochs (head) or iterations."""
    return seconds_key.replace("_seconds", "_epochs" if "head" in seconds_key else "_iterations")


def _notes(results, claims, ratios, big, met, test_acc, wall) -> str:
    per_problem = "; ".join(
        f"{name}: time {_g(c['geometric_mean'])}x (per seed "
        f"{', '.join(_g(v) for v in c['per_seed'])}), "
        f"{'epochs' if name == 'digits_head_seconds' else 'iterations'} "
        f"{_g(ratios[_count_key(name)]['median'])}x"
        for name, c in claims.items()
    )
    setup = {
        arm: summary([r["setup_seconds"] for r in results[big]["runs"][arm].values()])["median"]
        for arm in ARMS
    }
    return (
        f"Issue 29: the digits head now runs the product (presets through the engine's Runner "
        f"on a gloo rank, the task's own test split) instead of the bench's own Adam loop, "
        f"and its claim includes the plain dense head as a baseline. "
        f"Re-run under the protocol (issue 17 item 6). Changes from the previous result: the "
        f"original network's fit() formed the end-to-end product twice per iteration (error "
        f"and loss), now once; the compressed net's surrogate gradient and SVD were outside "
        f"the timer, now both arms' set-up is timed (at {big} median set-up "
        f"{setup['original']:.3g} s original, {setup['compressed']:.3g} s compressed); "
        f"step sizes are tuned per arm by tune_bracketed (same grid size, tuning seed 0) "
        f"instead of a shared 3-point (η, α) grid, and α is fixed at the reference's values "
        f"(1 original, 5 compressed; it was 1.5 for both); the previous headline figure, "
        f"27.2x at MC d = 1000, was one seed with the arms run one after the other; d = 1000 "
        f"does not fit 5 paired seeds in the 8-minute budget (the original takes ~0.5 s per "
        f"iteration there), so the largest problem is now {big}, and the MS problem and the "
        f"random-init ablation are no longer run. Previous wall-time ratios (3 seeds, set-up "
        f"untimed, arms one after the other): mf_d100 2.04x, mc_d100 2.14x, digits head "
        f"2.86x (medians). Paired ratios now, original over compressed: "
        f"{per_problem}. The claim (compressed faster on every problem, and than the "
        f"plain dense head on digits, paired) "
        f"{'holds' if met else 'does not hold'}; the ratio grows with d because the "
        f"original's iteration costs O(d^3) and the compressed one's O(r d^2); the "
        f"iteration ratios above are hardware-independent. The previous 27x at d = 1000 "
        f"is not re-measured here; issue 17 measured about 16x with the set-up timed. "
        f"Head test accuracy (median): "
        f"original {test_acc['original']['median']:.3f}, compressed "
        f"{test_acc['compressed']['median']:.3f}, dense {test_acc['dense']['median']:.3f}. "
        f"Whole run {wall:.0f} s."
    )


if __name__ == "__main__":
    main()
