"""MST vs dense AdamW at equal steps and at equal effective FLOPs: held-out test loss, paired
per seed, on a char-level GPT (King James Bible) and on the scikit-learn digits MLP.

Every arm is the product: a packaged preset (``gpt-mst`` / ``gpt-dense`` for the LM,
``digits-dense-head`` for the MLP, with ``methods.mst`` added for its MST arm) through
``config.load`` overrides, trained by the engine's ``Runner`` on a spawned gloo rank
(``engine.local_ranks``; bench/product.py), with the presets' recipe made equal across
problems by overrides (AdamW, weight decay 0.1, β₂ 0.99, grad clip 1.0, 5% linear LR warm-up
then cosine decay to 10%, each arm over its own step count):
  * ``dense_steps``  dense for S steps (equal tokens);
  * ``mst``          MST at the reference defaults (``MSTConfig()``: 90% sparsity, warm-up to
                     0.1, restoration 0.6-0.85, ζ=0.3, mixed growth, local attention window
                     32; checked against ``MSTConfig()`` before each run), with ΔT scaled to
                     the run (a named departure);
  * ``dense_flops``  dense for S_eq steps, S_eq = MST's effective FLOPs / dense FLOPs per step
                     (equal effective FLOPs, fewer tokens), its own full LR schedule.
Every arm tunes its LR with ``harness.tune_bracketed`` on the same-size grid, scored by the
mean final validation loss over the tuning seeds; the evaluation seeds are disjoint and the
reported figure is the loss on the task's test split (``data.test_fraction``), which no
selection saw. The Tune-swept schedule is a departure from the reference defaults and is
measured in bench/mst_sweep.py (swept vs reference, paired, on the same test split), not here.

Splits (the tasks' own, ``data.val_fraction`` / ``data.test_fraction``). LM: the corpus's
held-out tail (last 5%) cut in two, validation then test. Digits: the task's fixed shuffled
order, 60% train / 20% validation / 20% test.

Timing: ``wall_s`` of the Runner's last step row, the training loop only (set-up, the dense
FLOP count and the final evaluation outside). Before any timed run each arm runs once,
untimed, so one-time imports and lazy set-up fall on no arm; nothing is compiled (no arm
uses torch.compile), so no JIT time exists to time or exclude.

FLOPs of all arms are the Runner's per-step ``dense_flops`` / ``effective_flops`` (MST's from
its analytic counter, ``raytrain_eff.methods.mst.flops``): "effective (theoretical) FLOPs" are
what an ideal sparse kernel would do; on this CPU the masked weights stay dense tensors and
masked SDPA computes every pair, so MST's measured wall time is about dense's. A CPU
micro-benchmark times the block-sparse attention kernel (which skips untouched tiles) against
masked dense SDPA.

    python bench/mst.py            # full run -> bench/results/mst.json (~5 min on 2 cores)
    python bench/mst.py --smoke    # seconds; checks the script end to end
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
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
from raytrain_eff.engine import local_ranks
from raytrain_eff.engine.runner import build_task
from raytrain_eff.hparams.mst import MSTConfig
from raytrain_eff.methods.sparse_attention import block_sparse_attention, pattern
from raytrain_eff.monitor import keys as K

REFERENCE_UPDATE_EVERY = MSTConfig().update_every  # ΔT of the reference defaults (100)
UPDATES_PER_RUN = 12  # ΔT = steps // 12 here (a departure)

FULL = dict(
    lm=dict(
        model=dict(seq_len=64, n_layer=2, n_head=4, n_embd=64),
        batch=8,
        steps=240,
        eval_windows=512,
        lrs=[2.5e-3, 5e-3, 1e-2],
    ),
    digits=dict(hidden=128, depth=2, batch=32, steps=300, lrs=[1e-3, 3e-3, 9e-3]),
    tuning_seeds=[0, 1],
    eval_seeds=[101, 102, 103, 104, 105, 106, 107, 108],
    max_widenings=4,
    kernel=dict(B=4, heads=4, T=512, head_dim=16, window=64, reps=7),
)
SMOKE = dict(
    lm=dict(
        model=dict(seq_len=32, n_layer=1, n_head=2, n_embd=32),
        batch=4,
        steps=12,
        eval_windows=32,
        lrs=[2.5e-3, 5e-3, 1e-2],
    ),
    digits=dict(hidden=32, depth=1, batch=16, steps=24, lrs=[1e-3, 3e-3, 9e-3]),
    tuning_seeds=[0],
    eval_seeds=[101, 102],
    max_widenings=1,
    kernel=dict(B=2, heads=2, T=64, head_dim=8, window=16, reps=2),
)
ARMS = ("dense_steps", "mst", "dense_flops")
WITHIN = 0.02  # stretch: MST's test loss within 2% of dense at equal steps


# -- the two problems: presets and the overrides every arm shares ----------------------------
@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    dense_preset: str
    mst_preset: str  # the dense preset when no MST preset exists for the problem
    shared: tuple[str, ...]  # overrides every arm of the problem takes
    steps: int
    lrs: list[float]


RECIPE = (  # the LM presets' AdamW and schedule, for the digits MLP too
    "methods.adamw.weight_decay=0.1",
    "methods.adamw.beta2=0.99",
    "train.decay=cosine",
    "train.min_lr_ratio=0.1",
    "train.grad_clip=1.0",
    "scaling.num_workers=1",
)


def lm_problem(cfg: dict) -> Problem:
    """Char-level GPT on the King James Bible; held-out tail split into validation | test."""
    model = tuple(f"task.{k}={v}" for k, v in cfg["model"].items())
    return Problem(
        name="kjv_char_gpt",
        dense_preset="gpt-dense",
        mst_preset="gpt-mst",
        shared=model
        + RECIPE
        + (
            f"data.batch_size={cfg['batch']}",
            "data.test_fraction=0.5",
            f"run.eval_batches={cfg['eval_windows'] // cfg['batch']}",
        ),
        steps=cfg["steps"],
        lrs=cfg["lrs"],
    )


def digits_problem(cfg: dict) -> Problem:
    """scikit-learn's 8x8 digits, an MLP; the task's fixed shuffled order, 60/20/20."""
    return Problem(
        name="digits_mlp",
        dense_preset="digits-dense-head",
        mst_preset="digits-dense-head",
        shared=RECIPE
        + (
            f"task.hidden={cfg['hidden']}",
            f"task.depth={cfg['depth']}",
            f"data.batch_size={cfg['batch']}",
            "data.val_fraction=0.4",
            "data.test_fraction=0.5",
        ),
        steps=cfg["steps"],
        lrs=cfg["lrs"],
    )


def problems(cfg: dict) -> list[Problem]:
    return [lm_problem(cfg["lm"]), digits_problem(cfg["digits"])]


def mst_overrides(steps: int, seed: int, schedule: dict | None = None) -> list[str]:
    """The reference defaults (gpt-mst's window of 16 back to MSTConfig's), ΔT scaled to the
    run (see ``departures``); ``schedule`` replaces some of them (bench/mst_sweep.py)."""
    values = {
        "attention_window": MSTConfig().attention_window,
        "update_every": max(steps // UPDATES_PER_RUN, 1),
        **(schedule or {}),
        "seed": seed,
    }
    return [f"methods.mst.{k}={v}" for k, v in values.items()]


def check_reference(run: product.Run, steps: int, seed: int) -> None:
    """The MST arm runs at MSTConfig()'s defaults but for the named departure (ΔT)."""
    want = dataclasses.replace(
        MSTConfig(), update_every=max(steps // UPDATES_PER_RUN, 1), seed=seed
    )
    if run.cfg.methods["mst"] != want:
        raise RuntimeError(f"methods.mst departs from MSTConfig(): {run.cfg.methods['mst']}")


def split_sizes(p: Problem) -> dict:
    """Rows (digits) or characters (LM) of each of the task's splits."""
    task = build_task(config.load(preset=p.dense_preset, overrides=list(p.shared)))
    task.load()
    if p.name == "kjv_char_gpt":
        text = task.text
        return {f"{k}_chars": len(getattr(text, f"{k}_ids")) for k in ("train", "val", "test")}
    rows = task.rows
    return {"train_rows": rows.num_train, "val_rows": rows.num_val, "test_rows": rows.num_test}


# -- one training run --------------------------------------------------------------------------
def run(
    p: Problem, *, arm: str, lr: float, seed: int, steps: int, split: str, schedule=None
) -> dict:
    """One Runner run scored on ``split`` (validation or test): loss, the Runner's dense and
    effective FLOPs, and the seconds of its training loop."""
    overrides = [
        *p.shared,
        f"run.steps={steps}",
        f"run.seed={seed}",
        f"train.warmup_steps={max(steps // 20, 1)}",
        f"methods.adamw.lr={lr}",
        "run.eval_interval=0",
        *product.one_report(steps),
    ]
    mst = arm == "mst"
    if mst:
        overrides += mst_overrides(steps, seed, schedule)
    r = product.train(p.mst_preset if mst else p.dense_preset, overrides, test=split == "test")
    if mst and schedule is None:
        check_reference(r, steps, seed)
    source = "val" if split == "validation" else "test"
    scores = {
        f"{split}_{key.removeprefix(source + '_')}": r.score(key)
        for key in r.scores
        if key.startswith(source + "_")
    }
    return scores | {
        "flops_dense": r.total(K.DENSE_FLOPS),
        "flops_effective": r.total(K.EFFECTIVE_FLOPS),
        "wall_s": r.loop_s,
        "steps": steps,
        "seed": seed,
        "lr": lr,
    }


def warm_up(p: Problem) -> None:
    base = [*p.shared, "methods.adamw.lr=1e-3"]
    product.warm_up([(p.dense_preset, base), (p.mst_preset, base + mst_overrides(1, 0))])


# -- tuning, evaluation, claims --------------------------------------------------------------
def tune_arms(problem, cfg: dict) -> tuple[dict, dict, int]:
    """tune_bracketed on the LR for each arm (same grid, tuning seeds, validation split).
    dense_flops's step count comes from MST's tuned runs (effective / dense FLOPs)."""
    S, seeds = problem.steps, cfg["tuning_seeds"]
    runs: dict[str, dict] = {arm: {} for arm in ARMS}

    def scorer(arm: str, steps: int):
        def score(lr: float) -> float:
            rs = [
                run(
                    problem,
                    arm="mst" if arm == "mst" else "dense",
                    lr=lr,
                    seed=s,
                    steps=steps,
                    split="validation",
                )
                for s in seeds
            ]
            runs[arm][lr] = rs
            return statistics.fmean(r["validation_loss"] for r in rs)

        return score

    tuned = {}
    for arm in ("dense_steps", "mst"):
        tuned[arm] = tune_bracketed(
            f"{problem.name}/{arm}", scorer(arm, S), problem.lrs, max_widenings=cfg["max_widenings"]
        )
    best = runs["mst"][tuned["mst"]["winner"]]
    fraction = statistics.fmean(r["flops_effective"] / r["flops_dense"] for r in best)
    S_eq = max(round(S * fraction), 1)
    tuned["dense_flops"] = tune_bracketed(
        f"{problem.name}/dense_flops",
        scorer("dense_flops", S_eq),
        problem.lrs,
        max_widenings=cfg["max_widenings"],
    )
    return tuned, runs, S_eq


def evaluate_arms(problem, cfg: dict, tuned: dict, S_eq: int) -> dict:
    """Every evaluation seed runs every arm, the order rotating from seed to seed."""
    steps = {"dense_steps": problem.steps, "mst": problem.steps, "dense_flops": S_eq}
    out: dict[str, list] = {arm: [] for arm in ARMS}
    for i, seed in enumerate(cfg["eval_seeds"]):
        order = ARMS[i % 3 :] + ARMS[: i % 3]
        for arm in order:
            out[arm].append(
                run(
                    problem,
                    arm="mst" if arm == "mst" else "dense",
                    lr=tuned[arm]["winner"],
                    seed=seed,
                    steps=steps[arm],
                    split="test",
                )
                | {"order": order.index(arm)}
            )
    return out


def by_seed(runs: list[dict], key: str, scale: float = 1.0) -> dict:
    return {r["seed"]: r[key] * scale for r in runs}


def analyse(problem, runs: dict) -> dict:
    m, ds, de = runs["mst"], runs["dense_steps"], runs["dense_flops"]
    at_steps = f"{problem.name}/{MST_AT_STEPS}"
    specs = [
        Claim(
            name=f"{problem.name}/{name}",
            arm=arm,
            baseline=f"{problem.name}/{base}",
            metric="test loss" + (f" (dense x {1 + WITHIN})" if scale != 1 else ""),
            baseline_values=by_seed(dense, "test_loss", scale),
            arm_values=by_seed(m, "test_loss"),
            kind="difference",
            statistic="bootstrap_lower_90",
            required=required,
        )
        for name, arm, base, dense, scale, required in (
            ("beats_dense_at_equal_flops", f"{problem.name}/mst", "dense_flops", de, 1.0, True),
            ("beats_dense_at_equal_steps", at_steps, "dense_steps", ds, 1.0, False),
            ("within_2pct_of_dense_at_equal_steps", at_steps, "dense_steps", ds, 1 + WITHIN, False),
        )
    ]
    claims = {c.name.split("/", 1)[1]: c.judged() for c in specs}
    wall = paired(by_seed(ds, "wall_s"), by_seed(m, "wall_s"), kind="ratio")
    fraction = [r["flops_effective"] / d["flops_dense"] for r, d in zip(m, ds, strict=True)]
    arms = {
        arm: {
            "steps": rs[0]["steps"],
            "lr": rs[0]["lr"],
            "runs": rs,
            **{
                k: summary([r[k] for r in rs])
                for k in rs[0]
                if k.startswith("test_") or k in ("flops_effective", "flops_dense", "wall_s")
            },
        }
        for arm, rs in runs.items()
    }
    return {
        "claims": claims,
        "specs": specs,
        "arms": arms,
        "flop_fraction": summary(fraction),
        "wall_dense_over_mst": wall,
    }


MST_AT_STEPS = "mst (step budget)"  # the mst runs, compared at equal steps


def _arms(problems, s_eq: dict) -> dict[str, Arm]:
    """mst and dense_flops share a budget of effective FLOPs (dense_flops: S_eq steps); the same
    mst runs and dense_steps share a budget of S steps."""
    timed = TimedRegion(
        includes=(
            "the Runner's training loop to its last step (wall_s of the last row): forward, "
            "backward, clip, AdamW, MST's mask/topology work, the engine's per-step records",
        ),
        excludes=(
            "Runner.setup (task, model build, methods' prepare, optimizer)",
            "the dense FLOP count before the loop",
            "the final evaluation",
            "one-time imports and lazy set-up (each arm runs once, untimed, first)",
            "JIT compilation: none exists (no arm compiles)",
        ),
    )
    out = {}
    for p in problems:
        steps = p.steps
        flops = StoppingRule(
            kind="budget",
            metric="effective training FLOPs",
            target=f"MST's over {steps} steps",
            cadence="one evaluation at the end",
            note=f"dense_flops: S_eq = {s_eq[p.name]} steps, each arm's "
            "LR schedule (5% warm-up, cosine to 10%) over its own steps",
        )
        equal = StoppingRule(
            kind="budget",
            metric="training steps",
            target=steps,
            cadence="one evaluation at the end",
        )
        out |= {
            f"{p.name}/mst": Arm(stopping=flops, timed=timed),
            f"{p.name}/dense_flops": Arm(stopping=flops, timed=timed),
            f"{p.name}/{MST_AT_STEPS}": Arm(stopping=equal, timed=timed),
            f"{p.name}/dense_steps": Arm(stopping=equal, timed=timed),
        }
    return out


def attention_kernel_timing(k: dict) -> dict:
    """Forward+backward seconds: block-sparse kernel vs masked dense SDPA, local pattern."""
    B, nh, T, hs, w = k["B"], k["heads"], k["T"], k["head_dim"], k["window"]
    mask = pattern("local", T, w)
    g = torch.Generator().manual_seed(0)
    q, kk, v = (torch.randn(B, nh, T, hs, generator=g, requires_grad=True) for _ in range(3))
    fns = {
        "dense_sdpa": lambda: F.scaled_dot_product_attention(q, kk, v, attn_mask=mask),
        "block_sparse": lambda: block_sparse_attention(q, kk, v, mask, tile=w),
    }
    times = {name: [] for name in fns}
    for _ in range(k["reps"]):  # interleaved so machine noise hits both alike
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn().sum().backward()
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    return {
        "shape": {"B": B, "heads": nh, "T": T, "head_dim": hs, "window": w, "tile": w},
        "seconds": {n: summary(ts) for n, ts in times.items()},
        "speedup": med["dense_sdpa"] / med["block_sparse"],
    }


def previous_result() -> dict | None:
    path = pathlib.Path(__file__).resolve().parent / "results" / "mst.json"
    return json.loads(path.read_text()) if path.is_file() else None


def train_problems(rank: int, world: int, smoke: bool) -> dict:
    """On the spawned rank: warm up, tune and evaluate every arm of both problems."""
    cfg = SMOKE if smoke else FULL
    out = {}
    for p in problems(cfg):
        warm_up(p)
        tuned, truns, S_eq = tune_arms(p, cfg)
        runs = evaluate_arms(p, cfg, tuned, S_eq)
        out[p.name] = dict(tuned=tuned, truns=truns, S_eq=S_eq, runs=runs, splits=split_sizes(p))
        print(p.name, {a: t["winner"] for a, t in tuned.items()}, f"S_eq={S_eq}", flush=True)
    return out


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    cfg = SMOKE if args.smoke else FULL
    t0 = time.perf_counter()
    (trained,) = local_ranks.spawn(train_problems, 1, args.smoke, timeout=3600)
    probs = problems(cfg)
    results, tuning, tuning_runs = {}, {}, {}
    for p in probs:
        done = trained[p.name]
        tuning |= {f"{p.name}/{arm}": rec for arm, rec in done["tuned"].items()}
        tuning_runs[p.name] = {
            arm: {str(lr): rs for lr, rs in d.items()} for arm, d in done["truns"].items()
        }
        results[p.name] = analyse(p, done["runs"])
    kernel = attention_kernel_timing(cfg["kernel"])
    report(
        args,
        cfg,
        probs,
        results,
        tuning,
        tuning_runs,
        kernel,
        time.perf_counter() - t0,
        _arms(probs, {p.name: trained[p.name]["S_eq"] for p in probs}),
        {p.name: trained[p.name]["splits"] for p in probs},
    )


def report(args, cfg, problems, results, tuning, tuning_runs, kernel, elapsed, arms, splits):
    lm, dg = (results[p.name] for p in problems)
    specs = [c for p in problems for c in results[p.name].pop("specs")]
    met = all(results[p.name]["claims"]["beats_dense_at_equal_flops"]["met"] for p in problems)

    def line(p, r) -> str:
        c, a = r["claims"], r["arms"]
        eq, st = c["beats_dense_at_equal_flops"], c["beats_dense_at_equal_steps"]
        return (
            f"{p.name}: MST test loss {a['mst']['test_loss']['median']:.3g} vs dense "
            f"{a['dense_flops']['test_loss']['median']:.3g} at equal effective FLOPs "
            f"(paired diff median {eq['median']:+.2g}, worst seed {eq['worst']:+.2g}, "
            f"90% bound {eq['bootstrap_lower_90']:+.2g}; "
            f"{'wins' if eq['met'] else 'does not win'}) and "
            f"{a['dense_steps']['test_loss']['median']:.3g} at equal steps (diff "
            f"{st['median']:+.2g}, worst {st['worst']:+.2g}, bound "
            f"{st['bootstrap_lower_90']:+.2g}) at "
            f"{r['flop_fraction']['median']:.2f}x effective (theoretical) FLOPs, measured "
            f"wall {1 / r['wall_dense_over_mst']['median']:.2f}x dense"
        )

    headline = (
        f"MST at reference defaults, {len(cfg['eval_seeds'])} paired test seeds: "
        f"on the KJV char-GPT its test loss is "
        f"{lm['arms']['mst']['test_loss']['median']:.3g} vs "
        f"{lm['arms']['dense_flops']['test_loss']['median']:.3g} for dense at equal "
        f"effective (theoretical) FLOPs ({lm['flop_fraction']['median']:.2f}x dense; "
        f"paired diff {lm['claims']['beats_dense_at_equal_flops']['median']:+.2g}, "
        f"90% lower bound "
        f"{lm['claims']['beats_dense_at_equal_flops']['bootstrap_lower_90']:+.2g}) "
        f"and {lm['arms']['dense_steps']['test_loss']['median']:.3g} at equal steps "
        f"(diff {lm['claims']['beats_dense_at_equal_steps']['median']:+.2g}), on the "
        f"digits MLP {dg['arms']['mst']['test_loss']['median']:.3g} vs "
        f"{dg['arms']['dense_flops']['test_loss']['median']:.3g} at equal FLOPs "
        f"({dg['flop_fraction']['median']:.2f}x; diff "
        f"{dg['claims']['beats_dense_at_equal_flops']['median']:+.2g}, bound "
        f"{dg['claims']['beats_dense_at_equal_flops']['bootstrap_lower_90']:+.2g}), "
        f"and its measured wall time is {1 / lm['wall_dense_over_mst']['median']:.2f}x "
        f"dense (no sparse kernel on CPU: the FLOP saving is theoretical)."
    )
    prev = previous_result()
    prev_txt = (
        "no previous result"
        if prev is None
        else f"previous result ({prev.get('date')}, {prev.get('commit', '')[:12]}): MST with "
        f"the Tune-swept schedule, LR grid of 3 per arm on one tuning seed, scored and "
        f"reported on the same validation windows over 3 seeds, met="
        f"{prev.get('met')} by 'beats dense at equal FLOPs by > 3x the seed range' "
        f"(notes: {str(prev.get('notes', ''))[:160]}...)"
    )
    stretch = {
        p.name: results[p.name]["claims"]["within_2pct_of_dense_at_equal_steps"]["met"]
        and results[p.name]["flop_fraction"]["median"] <= 0.5
        for p in problems
    }
    notes = (
        f"What changed: {prev_txt}. Now (issue 29): every arm is the product, a packaged "
        f"preset trained by the engine's Runner on a spawned gloo rank, scored on the tasks' "
        f"own validation and test splits, instead of the bench's own loop and problem copies; "
        f"MST runs at the reference defaults (MSTConfig; ΔT "
        f"scaled to the run), not the swept schedule (that departure is measured in "
        f"bench/results/mst_sweep.json); every arm tunes its LR with tune_bracketed on a grid of "
        f"{len(cfg['lm']['lrs'])} scored on tuning seeds {cfg['tuning_seeds']} and the "
        f"validation split; {len(cfg['eval_seeds'])} evaluation seeds {cfg['eval_seeds']} "
        f"report the loss on a test split selection never saw; claims are paired per-seed "
        f"differences (worst seed or 90% bootstrap bound), and a second, standard problem "
        f"(digits MLP) was added. Verdict: the claim (MST beats dense at equal effective FLOPs "
        f"on both problems) {'holds' if met else 'does NOT hold'}. "
        + "; ".join(line(p, results[p.name]) for p in problems)
        + f". Stretch (within {WITHIN:.0%} of dense at equal steps at <= 0.5x FLOPs): "
        + ", ".join(f"{k} {'met' if v else 'not met'}" for k, v in stretch.items())
        + f". Effective FLOPs are analytic (sparse matmuls at their density, attention at "
        f"{MSTConfig().attention_tile}-token tiles, dense dW on gradient-growth steps): what an "
        f"ideal sparse kernel would do. On this CPU MST ran the dense arithmetic plus mask "
        f"and topology work, so its wall ratio shows that overhead (and host noise), never "
        f"a saving. The block-sparse "
        f"attention kernel, which does skip untouched tiles, runs at {kernel['speedup']:.2f}x "
        f"masked SDPA (T={kernel['shape']['T']}, window {kernel['shape']['window']}, fwd+bwd). "
        f"Scale is tiny (LM {cfg['lm']['model']['n_layer']}x{cfg['lm']['model']['n_embd']}, "
        f"T={cfg['lm']['model']['seq_len']}, batch {cfg['lm']['batch']}, {cfg['lm']['steps']} "
        f"steps; the paper: GPT-2 on 9B tokens). Whole run {elapsed:.0f} s."
    )
    protocol = Protocol(
        kind="comparison",
        arms=arms,
        tuning=tuning,
        untuned={
            f"{p.name}/{MST_AT_STEPS}": f"the {p.name}/mst runs, compared at equal steps: "
            "tuned as mst"
            for p in problems
        },
        tuning_seeds=cfg["tuning_seeds"],
        eval_seeds=cfg["eval_seeds"],
        problems=[
            {
                "name": "kjv_char_gpt",
                "standard": False,
                "why": "the method's own setting (char-level GPT pre-training, as the "
                "paper's GPT-2), at a CPU-sized scale",
            },
            {
                "name": "digits_mlp",
                "standard": True,
                "why": "scikit-learn's bundled digits with an MLP: a standard problem the "
                "MST authors did not choose; MST sparsifies its Linear layers "
                "(no attention)",
            },
        ],
        baselines={
            "dense_steps": "the dense preset (gpt-dense / digits-dense-head) through the same "
            "Runner, recipe and optimizer with no masks, same steps (equal tokens); LR tuned "
            "like MST's",
            "dense_flops": "the same dense model trained for S_eq steps, its own full LR "
            "schedule: the dense run that spends MST's effective FLOPs; "
            "LR tuned like MST's",
        },
        departures={
            "update_every": f"reference default {REFERENCE_UPDATE_EVERY} steps (for runs"
            f" of thousands of steps); here steps // {UPDATES_PER_RUN} "
            f"(20 at 240 steps, 25 at 300) so that warm-up and "
            f"restoration see several topology updates",
            "schedule": "reference defaults here; the Ray Tune-swept schedule is a "
            "departure measured in bench/mst_sweep.py",
        },
        selection_split="validation: LM first half of the held-out tail, digits rows 60-80%",
        report_split="test: LM second half of the held-out tail, digits rows 80-100%",
        alternation="every evaluation seed runs all three arms, the order rotating per seed",
        claims=specs,
    )
    equal_flops, equal_steps = "beats_dense_at_equal_flops", "beats_dense_at_equal_steps"
    ratios = {
        "lm_flop_fraction_effective_theoretical": lm["flop_fraction"]["median"],
        "lm_test_diff_vs_dense_equal_flops": lm["claims"][equal_flops]["median"],
        "lm_test_diff_vs_dense_equal_steps": lm["claims"][equal_steps]["median"],
        "lm_wall_mst_over_dense_steps_measured": 1 / lm["wall_dense_over_mst"]["median"],
        "digits_flop_fraction_effective_theoretical": dg["flop_fraction"]["median"],
        "digits_test_diff_vs_dense_equal_flops": dg["claims"][equal_flops]["median"],
        "digits_test_diff_vs_dense_equal_steps": dg["claims"][equal_steps]["median"],
    }
    config = cfg | {
        "mst": dataclasses.asdict(
            dataclasses.replace(
                MSTConfig(), update_every=max(cfg["lm"]["steps"] // UPDATES_PER_RUN, 1)
            )
        )
        | {"seed": "eval seed"},
        "presets": {p.name: {"dense": p.dense_preset, "mst": p.mst_preset} for p in problems},
        "overrides": {p.name: list(p.shared) for p in problems},
        "splits": splits,
    }
    write_result(
        "mst",
        headline=headline,
        config=config,
        baseline={
            p.name: {a: results[p.name]["arms"][a] for a in ("dense_steps", "dense_flops")}
            for p in problems
        },
        method={
            p.name: results[p.name]["arms"]["mst"]
            | {
                "flop_fraction": results[p.name]["flop_fraction"],
                "wall_dense_over_mst": results[p.name]["wall_dense_over_mst"],
            }
            for p in problems
        },
        ratios=ratios,
        target={
            "claim": "MST's test loss below dense at equal effective FLOPs on both problems "
            "(paired difference: 90% bootstrap lower bound > 0)",
            "stretch": f"within {WITHIN:.0%} of dense at equal steps at <= 0.5x effective FLOPs",
            "stretch_met": stretch,
        },
        notes=notes,
        smoke=args.smoke,
        out=args.out,
        extra={"cpu_attention_kernel": kernel, "tuning_runs": tuning_runs},
        protocol=protocol,
    )
    print(headline)
    print(notes)


if __name__ == "__main__":
    main()
