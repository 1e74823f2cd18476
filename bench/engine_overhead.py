"""Engine overhead: steady-state steps/s of the product's ``Runner`` (gpt-dense, every sink on:
metrics.parquet, reports with checkpoints, the Prometheus exporter) against a plain DDP loop
with fused AdamW on the same model, data, batch, LR schedule and grad clip. Both arms run on
the same 2 spawned gloo ranks (``engine.local_ranks``), one after the other, their order
alternating between repetitions: Ray's start-up is in neither, and a repetition's two figures
share the machine's state. Set-up (task, model, optimizer) is reported apart.

An overhead benchmark under the protocol of bench/README.md: the same workload with the engine
on and off, nothing tuned, each repetition an evaluation "seed". The claim is the paired
per-repetition ratio engine/plain steps/s; the harness derives it met when the 90% bootstrap
lower bound of its geometric mean is above TARGET_RATIO.

    python bench/engine_overhead.py            # full: 8 alternating repetitions, ~3 min
    python bench/engine_overhead.py --smoke    # checks the script end to end (< 1 min)
    python bench/engine_overhead.py --profile  # rank 0's engine arm under cProfile (CPU time)
"""

from __future__ import annotations

import math
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness

TARGET_RATIO = 0.97  # issue 31: the engine's step at the plain loop's
# full run: 8 repetitions x 2 arms x 50 steps, ~3 minutes on 2 idle cores. A checkpoint every
# 30 steps (a multiple of the report interval, as checkpoints travel with reports) keeps one
# checkpoint and four reports inside the 49 timed steps (the last step's fall after the clock
# stops): denser than gpt-dense's own (a report every 50 steps, a checkpoint every 100)
FULL = {"steps": 50, "repetitions": 8, "checkpoint_interval": 30}
SMOKE = {"steps": 12, "repetitions": 1, "checkpoint_interval": 10}
REPORT_INTERVAL = 10


PRESET = "gpt-dense"
ARMS = ("engine", "plain")
WORKERS = 2


def repetition(rank: int, world: int, overrides: list[str], root: str, order: list[str]) -> dict:
    """One repetition on this rank: each arm in ``order``, in the same two processes, so a
    repetition's two figures share the machine's state and its noise."""
    return {arm: ARM_FNS[arm](rank, world, overrides, f"{root}/{arm}") for arm in order}


def _cfg(overrides: list[str]):
    from raytrain_eff import config

    return config.load(preset=PRESET, overrides=overrides)


def engine_arm(rank: int, world: int, overrides: list[str], run_dir: str) -> dict:
    """The product's ``Runner`` with every sink on: metrics.parquet, the exporter, and reports
    with checkpoints, every rank's shards written into run_dir (as on Ray's local storage)."""
    from raytrain_eff.engine import local_ranks, records

    t0 = time.perf_counter()
    runner = local_ranks.runner(
        _cfg(overrides + ["monitor.progress=false"]),
        rank,
        world,
        run_dir,
    )
    runner.run()
    if rank != 0:
        return {}
    table = records.read_table(run_dir)
    assert table is not None, f"{run_dir}: the engine wrote no metrics.parquet"
    wall = table.column("wall_s").to_pylist()
    steps = table.column("step_time_s").to_pylist()
    return {
        "steps_per_s": _steady_rate(wall),
        "setup_s": runner.t_start - t0,  # task, model, optimizer, FLOP count
        # train_step's own clock (forward to after_step) against the whole iteration: the
        # rest is what the engine does around a step (statistics, sinks, reports)
        "outside_step_s": (wall[-1] - wall[0]) / (len(wall) - 1) - statistics.mean(steps[1:]),
    }


def plain_arm(rank: int, world: int, overrides: list[str], run_dir: str) -> dict:
    """The loop the engine replaces: DDP, fused AdamW on the same parameter groups, the same
    LR schedule, grad clip, task batches and loss; no statistic, no sink."""
    import torch

    from raytrain_eff.engine import accounting
    from raytrain_eff.engine.runner import build_task
    from raytrain_eff.methods.base import weight_decay_groups

    cfg = _cfg(overrides)
    t0 = time.perf_counter()
    torch.set_num_threads(cfg.train.threads_per_worker)
    task = build_task(cfg)
    task.load()
    torch.manual_seed(cfg.run.seed)
    model = torch.nn.parallel.DistributedDataParallel(task.build_model())
    a, t = cfg.methods["adamw"], cfg.train
    opt = torch.optim.AdamW(
        weight_decay_groups(model, a.weight_decay),
        lr=a.lr,
        betas=(a.beta1, a.beta2),
        eps=a.eps,
        fused=True,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: accounting.lr_factor(s, cfg.run.steps, t.warmup_steps, t.decay, t.min_lr_ratio),
    )
    wall, t_loop = [], time.perf_counter()
    for step in range(cfg.run.steps):
        batch = task.train_batch(step, 0, rank, world, cfg.data.batch_size)
        opt.zero_grad(set_to_none=True)
        task.loss(model, batch).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        schedule.step()
        wall.append(time.perf_counter())
    return {"steps_per_s": _steady_rate(wall), "setup_s": t_loop - t0}


ARM_FNS = {"engine": engine_arm, "plain": plain_arm}


def _steady_rate(wall: list[float]) -> float:
    """Steps per second after the first step (which carries one-off costs)."""
    return (len(wall) - 1) / (wall[-1] - wall[0])


def run_repetitions(overrides: list[str], reps: int) -> dict[str, dict[int, dict]]:
    """``reps`` repetitions, each on 2 fresh gloo ranks, the arms' order alternating."""
    from raytrain_eff.engine import local_ranks

    found: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    with tempfile.TemporaryDirectory() as storage:
        for rep in range(reps):
            order = list(ARMS) if rep % 2 == 0 else list(ARMS[::-1])
            root = f"{storage}/rep{rep}"
            rank0 = local_ranks.spawn(repetition, WORKERS, overrides, root, order)[0]
            for arm in ARMS:
                found[arm][rep] = rank0[arm]
    return found


def profiled(rank: int, world: int, overrides: list[str], root: str) -> str:
    """Rank 0's engine arm under cProfile on CPU time (waiting for a core or for the other
    rank costs none): the engine's own functions, by cumulative seconds."""
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile(time.process_time)
    profile.enable()
    engine_arm(rank, world, overrides, f"{root}/engine")
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats("raytrain_eff", 30)
    return text.getvalue()


def main() -> None:
    cli = harness.parser(__doc__.splitlines()[0])
    cli.add_argument(
        "--profile", action="store_true", help="print rank 0's engine profile; no result"
    )
    args = cli.parse_args()
    size = SMOKE if args.smoke else FULL
    steps, reps = size["steps"], size["repetitions"]
    overrides = [
        f"run.steps={steps}",
        "run.eval_interval=0",
        f"run.report_interval={REPORT_INTERVAL}",
        f"run.checkpoint_interval={size['checkpoint_interval']}",
    ]
    monitor_on = _monitor_available()
    if not monitor_on:
        overrides.append("monitor.enabled=false")
    if args.profile:
        from raytrain_eff.engine import local_ranks

        with tempfile.TemporaryDirectory() as root:
            print(local_ranks.spawn(profiled, WORKERS, overrides, root)[0])
        return
    found = run_repetitions(overrides, reps)
    engine, plain = found["engine"], found["plain"]
    spec = harness.Claim(
        name=MAIN_CLAIM,
        arm="engine",
        baseline="plain",
        metric="steady-state steps/s",
        baseline_values={r: p["steps_per_s"] for r, p in plain.items()},
        arm_values={r: e["steps_per_s"] for r, e in engine.items()},
        lower_is_better=False,
        threshold=TARGET_RATIO,
        statistic="bootstrap_lower_90",
    )
    claim = spec.judged()
    protocol = _protocol(steps, overrides, list(engine), spec)
    ratios = claim["per_seed"]
    centre = claim["geometric_mean"] or claim["median"]
    headline = (
        f"The engine trains {PRESET} at {centre:.3g}x a plain "
        f"DDP loop's steady-state steps/s (worst of {len(ratios)} repetitions "
        f"{_near(claim['worst'])}x, 90% lower bound {_near(claim['bootstrap_lower_90'])}x; "
        f"target >= {TARGET_RATIO}x)."
    )
    path = harness.write_result(
        "engine_overhead",
        smoke=args.smoke,
        out=args.out,
        headline=headline,
        config={
            "preset": PRESET,
            "overrides": overrides,
            "repetitions": reps,
            "workers": WORKERS,
            "exporter": monitor_on,
        },
        baseline={
            "name": "plain DDP loop with fused AdamW, 2 spawned gloo ranks",
            "steps_per_s": harness.summary([p["steps_per_s"] for p in plain.values()]),
            "setup_s": harness.summary([p["setup_s"] for p in plain.values()]),
        },
        method={
            "name": "raytrain_eff Runner, all sinks on, the same 2 spawned gloo ranks",
            "steps_per_s": harness.summary([e["steps_per_s"] for e in engine.values()]),
            "setup_s": harness.summary([e["setup_s"] for e in engine.values()]),
            "outside_step_s": harness.summary([e["outside_step_s"] for e in engine.values()]),
        },
        ratios={"steps_per_s": harness.summary(ratios)},
        target={
            "engine_over_plain_steps_per_s": f"> {TARGET_RATIO} at the 90% bootstrap lower "
            "bound of the geometric mean (implied by the worst repetition's)"
        },
        notes=_notes(claim, engine, plain, steps, overrides),
        protocol=protocol,
        extra={"main_claim": MAIN_CLAIM},
    )
    print(path.read_text())


MAIN_CLAIM = "engine_over_plain_steps_per_s"


def _near(value: float) -> str:
    return harness.near(value, TARGET_RATIO)


def _protocol(
    steps: int, overrides: list[str], reps: list[int], claim: harness.Claim
) -> harness.Protocol:
    same = "same workload, component on/off"
    stop = harness.StoppingRule(
        kind="budget",
        metric=f"training steps of {PRESET}",
        target=steps,
        cadence="no evaluation",
    )
    timed = harness.TimedRegion(
        includes=(
            "rank 0's steady state: end of step 1 to end of the last step, with everything "
            "each arm does between steps (the engine's statistics, reports, checkpoint)",
        ),
        excludes=(
            "process start and group join (shared by both arms)",
            "set-up: task, model, optimizer (measured for both, reported apart)",
        ),
        note="the engine's per-step wall_s from metrics.parquet, the plain loop's "
        "perf_counter after each step; neither compiles anything",
    )
    return harness.Protocol(
        kind="overhead",
        arms=harness.same_rules(["engine", "plain"], stop, timed),
        untuned={
            "engine": same + f" ({PRESET}'s AdamW settings)",
            "plain": same + " (the same AdamW settings, LR schedule, grad clip, batch and data)",
        },
        tuning_seeds=[],
        eval_seeds=reps,
        problems=[
            {
                "name": f"{PRESET}: char-level GPT (4 layers x 128) on KJV, batch 32, "
                "AdamW, 2 ranks",
                "standard": False,
                "why": "the engine's main job; an overhead benchmark needs one workload",
            }
        ],
        baselines={
            "plain": "torch DistributedDataParallel over gloo on the same 2 spawned ranks, 1 "
            "thread each, fused AdamW (as the engine's) on the same weight-decay groups, "
            "the same LR schedule (LambdaLR), task batches, loss and grad clip: the loop "
            "the engine would be replaced by, with no statistic and no sink"
        },
        departures={}
        if "monitor.enabled=false" not in overrides
        else {
            "monitor.enabled": "false (default true): raytrain_eff.monitor.push does not "
            "import here, so the exporter sink is off"
        },
        selection_split="none: nothing is selected",
        report_split="none: throughput, not quality",
        alternation="both arms in the same 2 processes per repetition; engine first in even "
        "repetitions, plain first in odd ones",
        claims=[claim],
    )


def _monitor_available() -> bool:
    try:
        import raytrain_eff.monitor.push  # noqa: F401

        return True
    except ImportError:
        return False


def _notes(claim, engine, plain, steps, overrides) -> str:
    ratios = claim["per_seed"]
    text = (
        f"Per-repetition engine/plain steady-state ratios "
        f"{', '.join(f'{r:.3f}' for r in ratios)} (geometric mean "
        f"{claim['geometric_mean'] or math.nan:.3f}, median {claim['median']:.3f}, worst "
        f"{claim['worst']:.3f}, 90% bootstrap lower bound {claim['bootstrap_lower_90']:.3f}) "
        f"over {len(ratios)} alternating repetitions of {steps} steps; set-up "
        f"{statistics.median(e['setup_s'] for e in engine.values()):.1f} s (engine: task, "
        f"model, optimizer, FLOP count) vs "
        f"{statistics.median(p['setup_s'] for p in plain.values()):.1f} s (plain). The "
        "engine spends a median "
        f"{1e3 * statistics.median(e['outside_step_s'] for e in engine.values()):.1f} ms "
        "per step outside its train_step clock (statistics, reports, the checkpoint). "
    )
    text += harness.loaded_machine_note(
        "wall-clock ratios then largely measure waiting for a core, and repetitions spread "
        "accordingly."
    )
    text += (
        f"Target > {TARGET_RATIO} {'met' if claim['met'] else 'NOT met'} at the "
        "bootstrap bound. " + _versus_previous(overrides, claim["met"])
    )
    if not claim["met"]:
        text += (
            " Both sides overlap bucketed gradient all-reduces with backward (the engine's "
            "buckets fill from Python hooks, DDP's in C++); the engine also measures each "
            "step's statistics and, at report steps, all-reduces the pending losses, writes "
            "Parquet and pushes to the exporter, and saves one checkpoint."
        )
    return text


def _versus_previous(overrides: list[str], met: bool) -> str:
    """What changed against the record this run replaces (read before it is overwritten) and,
    when that one is not yet committed, against the committed one too."""
    records = harness.previous_records("engine_overhead")
    if not records:
        return "No previous result to compare with."
    text = ""
    for label, rec in records:
        r = rec.get("ratios", {}).get("steps_per_s", {})
        held = bool(rec.get("met"))
        text += (
            f"{label} ({rec.get('date', '?')}, commit {str(rec.get('commit'))[:8]}, load "
            f"average {_load_of(rec)}): median ratio {r.get('median', math.nan):.3f}, "
            f"worst {r.get('min', math.nan):.3f}, met {rec.get('met')}; against it the "
            "claim " + harness.verdict_change(held, met)
        )
        before = rec.get("config", {}).get("overrides", [])
        if before != overrides:
            text += (
                f"Its overrides were {' '.join(before)}; this run's are "
                f"{' '.join(overrides)} (shrunk so the full run fits ~6 minutes). "
            )
        if not rec.get("protocol"):
            text += (
                "Its verdict was the median ratio; it now needs the worst repetition or "
                "the 90% bootstrap lower bound to reach the target, and the record carries "
                "the protocol. "
            )
    return text.strip()


def _load_of(record: dict) -> str:
    load = record.get("machine", {}).get("load_average")
    return f"{load[0]:.1f}" if load else "not recorded"


if __name__ == "__main__":
    main()
