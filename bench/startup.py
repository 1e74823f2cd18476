"""Start-up: `raytrain-eff train` from the command to its exit against `torchrun` running the
same 2 ranks of the package's Runner (same preset, steps, reports and checkpoints), no Ray.

Both arms are separate commands timed from their start to their exit, alternating within each
repetition (the order flips every repetition) so machine noise falls on both. The breakdown
comes from each run's summary.json (``engine.startup``: imports, Ray, controller and
placement group, worker start, task load, model build, first step, training, finish) plus
the exit after the last mark. An overhead benchmark under bench/README.md's protocol: nothing
tuned, each repetition an evaluation "seed"; the claim is the paired per-repetition ratio of
the two commands' wall times, met when the worst repetition's is <= TARGET_RATIO.

    python bench/startup.py            # full: 6 alternating repetitions, ~4 min on 2 idle cores
    python bench/startup.py --smoke    # checks the script end to end (~1 min)
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness

HERE = pathlib.Path(__file__).resolve().parent
TARGET_RATIO = 1.5  # raytrain-eff train / torchrun, command to exit
FULL = {"steps": 10, "repetitions": 6}
SMOKE = {"steps": 4, "repetitions": 1}
ARMS = ("raytrain-eff", "torchrun")
MAIN_CLAIM = "torchrun_over_raytrain_eff_wall"
# Ray settings a test session exports would change what the command does by default
CLEARED_ENV = ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")


def overrides(steps: int) -> list[str]:
    return [
        f"run.steps={steps}",
        f"run.report_interval={steps // 2}",
        f"run.checkpoint_interval={steps}",
        f"run.eval_interval={steps}",
        "run.eval_batches=2",
        "monitor.enabled=false",
    ]


def run_arm(arm: str, sets: list[str], storage: str, rep: int) -> dict:
    """One command, timed from its start to its exit; its run's start-up record."""
    name = f"{arm}-{rep}"
    run_dir = os.path.join(storage, name)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    start = time.time()
    if arm == "raytrain-eff":
        command = [sys.executable, "-m", "raytrain_eff.cli", "train", "--preset", "default"]
        command += [*sets, f"run.storage_path={storage}", f"run.name={name}"]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc_per_node", "2", str(HERE / "startup_torchrun.py")]
        command += [run_dir, repr(start), *sets]
    t0 = time.perf_counter()
    with open(os.path.join(storage, f"{name}.log"), "w") as log:
        proc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=storage)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = pathlib.Path(storage, f"{name}.log").read_text()[-3000:]
        raise RuntimeError(f"{arm} (repetition {rep}) exited {proc.returncode}:\n{tail}")
    record = json.loads(pathlib.Path(run_dir, "summary.json").read_text())["startup"]
    marks = record["marks_s"]
    # the torchrun arm's marks count from its command's start; the CLI's from its process's
    offset = record["origin"] - start
    last = max(marks.values()) + offset
    phases = dict(record["phases_s"])
    if "ray_init" not in marks:  # torchrun: its launcher, until a rank's process starts
        phases["launcher"] = round(marks["worker_process"] - marks["command"], 3)
    phases["exit"] = round(wall - last, 3)  # after the last mark: rank 0's or the driver's
    return {"wall_s": wall, "phases_s": phases, "marks_s": marks}


def main() -> None:
    args = harness.parser(__doc__.splitlines()[0]).parse_args()
    size = SMOKE if args.smoke else FULL
    sets = overrides(size["steps"])
    results: dict[str, dict[int, dict]] = {arm: {} for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="rte-startup-") as storage:
        for rep in range(size["repetitions"]):
            order = ARMS if rep % 2 == 0 else ARMS[::-1]  # neither arm always goes first
            for arm in order:
                results[arm][rep] = run_arm(arm, sets, storage, rep)
    ray, plain = results["raytrain-eff"], results["torchrun"]
    spec = harness.Claim(
        name=MAIN_CLAIM,
        arm="raytrain-eff",
        baseline="torchrun",
        metric="seconds from the command to its exit",
        baseline_values={r: v["wall_s"] for r, v in plain.items()},
        arm_values={r: v["wall_s"] for r, v in ray.items()},
        lower_is_better=True,
        threshold=1 / TARGET_RATIO,  # torchrun/ray > 1/1.5  <=>  ray/torchrun < 1.5
        statistic="worst",
    )
    claim = spec.judged()
    slower = [1 / r for r in claim["per_seed"]]  # raytrain-eff / torchrun per repetition
    headline = (
        f"`raytrain-eff train` (default preset, 2 workers, {size['steps']} steps) takes "
        f"{statistics.median(slower):.3g}x as long as torchrun running the same Runner from "
        f"command to exit (median of {len(slower)}, worst {max(slower):.3g}x; "
        f"{statistics.median(v['wall_s'] for v in ray.values()):.3g} s against "
        f"{statistics.median(v['wall_s'] for v in plain.values()):.3g} s; target <= "
        f"{TARGET_RATIO}x)."
    )
    path = harness.write_result(
        "startup",
        smoke=args.smoke,
        out=args.out,
        headline=headline,
        config={"preset": "default", "overrides": sets, "repetitions": size["repetitions"]},
        baseline=_arm_record("torchrun --standalone --nproc_per_node 2, the Runner", plain),
        method=_arm_record("raytrain-eff train, local Ray, 2 Ray Train workers", ray),
        ratios={"raytrain_eff_over_torchrun_wall": harness.summary(slower)},
        target={"raytrain_eff_over_torchrun_wall": f"<= {TARGET_RATIO} in the worst repetition"},
        notes=_notes(ray, plain, slower),
        protocol=_protocol(size["steps"], list(ray), spec),
        extra={"main_claim": MAIN_CLAIM},
        commands=("startup_torchrun.py",),
    )
    print(path.read_text())


def _arm_record(name: str, runs: dict[int, dict]) -> dict:
    phases = sorted({p for run in runs.values() for p in run["phases_s"]})
    return {
        "name": name,
        "wall_s": harness.summary([run["wall_s"] for run in runs.values()]),
        "phases_s": {
            p: harness.summary([run["phases_s"].get(p, 0.0) for run in runs.values()])
            for p in phases
        },
        "runs": {str(rep): run for rep, run in runs.items()},
    }


def _notes(ray: dict, plain: dict, slower: list[float]) -> str:
    def median_phases(runs: dict) -> dict[str, float]:
        names = {p for run in runs.values() for p in run["phases_s"]}
        return {
            p: statistics.median(run["phases_s"].get(p, 0.0) for run in runs.values())
            for p in names
        }

    ray_phases, plain_phases = median_phases(ray), median_phases(plain)
    extra = {p: s - plain_phases.get(p, 0.0) for p, s in ray_phases.items()}
    biggest = sorted(extra.items(), key=lambda item: -item[1])[:4]
    text = (
        f"Per-repetition raytrain-eff/torchrun wall ratios "
        f"{', '.join(f'{r:.2f}' for r in slower)}. Median phases of raytrain-eff (s): "
        + ", ".join(f"{p} {s:.2f}" for p, s in sorted(ray_phases.items()))
        + "; of torchrun: "
        + ", ".join(f"{p} {s:.2f}" for p, s in sorted(plain_phases.items()))
        + ". Where raytrain-eff spends most beyond torchrun: "
        + ", ".join(f"{p} +{s:.2f} s" for p, s in biggest)
        + ". "
    )
    return text + harness.loaded_machine_note(
        "start-up is mostly CPU-bound process starts and imports, which then wait for a core."
    )


def _protocol(steps: int, reps: list[int], claim: harness.Claim) -> harness.Protocol:
    same = "same preset, steps, reports, evaluation and checkpoints; nothing to tune"
    stop = harness.StoppingRule(
        kind="budget", metric="training steps of the default preset", target=steps, cadence="-"
    )
    timed = harness.TimedRegion(
        includes=("the whole command: start, imports, workers, training, writing, exit",),
        excludes=(),
        note="wall time of the command's process, start to exit (subprocess.run)",
    )
    return harness.Protocol(
        kind="overhead",
        arms=harness.same_rules(list(ARMS), stop, timed),
        untuned={arm: same for arm in ARMS},
        tuning_seeds=[],
        eval_seeds=reps,
        problems=[
            {
                "name": "default preset: char-level GPT (4 layers x 128) on KJV, batch 32, "
                f"AdamW, 2 workers, {steps} steps",
                "standard": False,
                "why": "the command users run first; start-up needs one workload",
            }
        ],
        baselines={
            "torchrun": "torchrun's own launcher (elastic agent, rendezvous) starting 2 "
            "processes that join one gloo group and run the package's Runner: the same "
            "imports, data, model, steps, metrics.parquet, summary.json and checkpoint "
            "writes, without Ray (the checkpoint goes to a temporary directory that no Ray "
            "uploads)"
        },
        departures={
            "monitor.enabled": "false (default true) in both arms: torchrun has no "
            "exporter to push to; the exporter's start is not measured here"
        },
        selection_split="none: nothing is selected",
        report_split="none: wall time, not quality",
        alternation="both arms in each repetition, the order flipping every repetition",
        claims=[claim],
    )


if __name__ == "__main__":
    main()
