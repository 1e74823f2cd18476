"""Start-up: `raytrain-eff train` from the command to its exit against `torchrun` running the
same 2 ranks of the package's Runner (same preset, steps, reports and checkpoints), no Ray.

Two raytrain-eff arms: the command as a first user runs it (it starts a local Ray and stops
it at exit), and the same command joining a Ray cluster already running on this machine
(``--address``; a ``ray start --head`` with token auth, started once before the repetitions
and served one untimed run first, skipped in ``--smoke``), as on a cluster and as every Tune
trial runs. All arms are separate commands timed from their start to their exit, in each
repetition in an order that rotates, so machine noise falls on all. The head idles beside the
other two arms' commands; the CPU its processes use during each command is recorded
(``head_cpu_s``) and reported in the notes. The breakdown
comes from each run's summary.json (``engine.startup``: imports, Ray, controller and
placement group, worker start, task load, model build, first step, training, finish) plus
the exit after the last mark. An overhead benchmark under bench/README.md's protocol: nothing
tuned, each repetition an evaluation "seed"; each raytrain-eff arm's claim is its paired
per-repetition ratio to torchrun's wall time, met when the worst repetition's is <= TARGET_RATIO.

    python bench/startup.py            # full: 6 repetitions of 3 arms, ~6 min on 2 idle cores
    python bench/startup.py --smoke    # checks the script end to end (~1 min)
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import signal
import socket
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
ARMS = ("raytrain-eff", "raytrain-eff-cluster", "torchrun")
MAIN_CLAIM = "torchrun_over_raytrain_eff_wall"
CLUSTER_CLAIM = "torchrun_over_raytrain_eff_cluster_wall"
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


def run_arm(arm: str, sets: list[str], storage: str, rep: int, head: RunningHead) -> dict:
    """One command, timed from its start to its exit; its run's start-up record."""
    name = f"{arm}-{rep}"
    run_dir = os.path.join(storage, name)
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    start = time.time()
    if arm.startswith("raytrain-eff"):
        command = [sys.executable, "-m", "raytrain_eff.cli", "train", "--preset", "default"]
        command += [*sets, f"run.storage_path={storage}", f"run.name={name}"]
        if arm == "raytrain-eff-cluster":
            command += ["--address", head.address]
            env.update(head.env)
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
    with (
        tempfile.TemporaryDirectory(prefix="rte-startup-") as storage,
        RunningHead(pathlib.Path(storage) / "head") as head,
    ):
        if not args.smoke:
            run_arm("raytrain-eff-cluster", sets, storage, -1, head)  # the cluster's first run
        for rep in range(size["repetitions"]):
            shift = rep % len(ARMS)  # no arm always goes first
            for arm in ARMS[shift:] + ARMS[:shift]:
                before = head.cpu_seconds()
                results[arm][rep] = run_arm(arm, sets, storage, rep, head)
                results[arm][rep]["head_cpu_s"] = round(head.cpu_seconds() - before, 3)
    plain = results["torchrun"]
    specs = {arm: _claim(name, arm, results[arm], plain) for name, arm in CLAIMS}
    judged = {arm: spec.judged() for arm, spec in specs.items()}
    # raytrain-eff / torchrun per repetition (the claims hold torchrun / raytrain-eff)
    slower = {arm: [1 / r for r in claim["per_seed"]] for arm, claim in judged.items()}
    cold, warm = slower["raytrain-eff"], slower["raytrain-eff-cluster"]
    headline = (
        f"`raytrain-eff train` (default preset, 2 workers, {size['steps']} steps) takes "
        f"{statistics.median(cold):.3g}x as long as torchrun running the same Runner from "
        f"command to exit (median of {len(cold)}, worst {max(cold):.3g}x; "
        f"{_median_wall(results['raytrain-eff']):.3g} s against {_median_wall(plain):.3g} s) "
        f"and {statistics.median(warm):.3g}x (worst {max(warm):.3g}x; "
        f"{_median_wall(results['raytrain-eff-cluster']):.3g} s) joining a Ray cluster already "
        f"running; target <= {TARGET_RATIO}x."
    )
    path = harness.write_result(
        "startup",
        smoke=args.smoke,
        out=args.out,
        headline=headline,
        config={"preset": "default", "overrides": sets, "repetitions": size["repetitions"]},
        baseline=_arm_record("torchrun --standalone --nproc_per_node 2, the Runner", plain),
        method=_arm_record(
            "raytrain-eff train, its own local Ray, 2 Ray Train workers", results["raytrain-eff"]
        ),
        ratios={
            "raytrain_eff_over_torchrun_wall": harness.summary(cold),
            "raytrain_eff_cluster_over_torchrun_wall": harness.summary(warm),
        },
        target={
            "raytrain_eff_over_torchrun_wall": f"<= {TARGET_RATIO} in the worst repetition",
            "raytrain_eff_cluster_over_torchrun_wall": f"<= {TARGET_RATIO} in the worst repetition",
        },
        notes=_notes(results, slower),
        protocol=_protocol(size["steps"], list(plain), list(specs.values())),
        extra={
            "main_claim": MAIN_CLAIM,
            "method_on_a_running_cluster": _arm_record(
                "raytrain-eff train --address <a running ray start --head>, 2 Ray Train workers",
                results["raytrain-eff-cluster"],
            ),
        },
        commands=("startup_torchrun.py",),
    )
    print(path.read_text())


CLAIMS = ((MAIN_CLAIM, "raytrain-eff"), (CLUSTER_CLAIM, "raytrain-eff-cluster"))


def _claim(name: str, arm: str, runs: dict[int, dict], plain: dict[int, dict]) -> harness.Claim:
    return harness.Claim(
        name=name,
        arm=arm,
        baseline="torchrun",
        metric="seconds from the command to its exit",
        baseline_values={r: v["wall_s"] for r, v in plain.items()},
        arm_values={r: v["wall_s"] for r, v in runs.items()},
        lower_is_better=True,
        threshold=1 / TARGET_RATIO,  # torchrun/ray > 1/1.5  <=>  ray/torchrun < 1.5
        statistic="worst",
    )


def _median_wall(runs: dict[int, dict]) -> float:
    return statistics.median(v["wall_s"] for v in runs.values())


class RunningHead:
    """``ray start --head --block`` with token auth in its own session, every port chosen
    here, its files under ``root``; stopped by signalling its process group (never
    ``ray stop``, which would stop every Ray on the machine)."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        root.mkdir(parents=True)
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        gcs, dashboard = _free_port(), _free_port()
        self.address = f"127.0.0.1:{gcs}"
        # Train's clean-up asks the State API without an address: name this cluster's
        self.env = {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dashboard}",
        }
        self._args = [
            str(pathlib.Path(sys.executable).with_name("ray")), "start", "--head", "--block",
            "--temp-dir", str(root / "ray"), "--node-ip-address", "127.0.0.1",
            "--port", str(gcs), "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(dashboard), "--ray-client-server-port", str(_free_port()),
            "--min-worker-port", "0", "--max-worker-port", "0", "--disable-usage-stats",
        ]  # fmt: skip

    def __enter__(self) -> RunningHead:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | self.env
        self._log = open(self.root / "head.log", "w")  # noqa: SIM115 (held for the head)
        self.proc = subprocess.Popen(
            self._args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        return self

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the head's session's live processes (its GCS, raylet,
        dashboard and workers; a process that ended since the last call is not counted)."""
        tick, total = os.sysconf("SC_CLK_TCK"), 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
            except OSError:  # ended while listed
                continue
            fields = stat.rsplit(")", 1)[1].split()  # after the command name
            if int(fields[3]) == self.proc.pid:  # session id: the head started a new session
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / tick

    def __exit__(self, *exc) -> None:
        for sig, grace_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline and _group_alive(self.proc.pid):
                time.sleep(0.2)
        self.proc.wait(timeout=10)
        self._log.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


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


def _notes(results: dict[str, dict[int, dict]], slower: dict[str, list[float]]) -> str:
    phases = {arm: _median_phases(runs) for arm, runs in results.items()}
    plain = phases["torchrun"]
    text = ""
    for arm in ("raytrain-eff", "raytrain-eff-cluster"):
        extra = {p: s - plain.get(p, 0.0) for p, s in phases[arm].items()}
        biggest = sorted(extra.items(), key=lambda item: -item[1])[:4]
        text += (
            f"{arm}/torchrun wall ratios per repetition "
            f"{', '.join(f'{r:.2f}' for r in slower[arm])}; its median phases (s): "
            + ", ".join(f"{p} {s:.2f}" for p, s in sorted(phases[arm].items()))
            + "; most beyond torchrun: "
            + ", ".join(f"{p} +{s:.2f} s" for p, s in biggest)
            + ". "
        )
    text += "torchrun's median phases (s): " + ", ".join(
        f"{p} {s:.2f}" for p, s in sorted(plain.items())
    )
    for arm in ("raytrain-eff", "torchrun"):  # beside the cluster arm's idle head
        runs = results[arm].values()
        cpu = statistics.median(r["head_cpu_s"] for r in runs)
        share = statistics.median(r["head_cpu_s"] / r["wall_s"] for r in runs)
        text += (
            f". The idle head used a median {cpu:.2f} CPU-s during each {arm} command "
            f"({share:.1%} of one core over it)"
        )
    return (
        text
        + ". "
        + harness.loaded_machine_note(
            "start-up is mostly CPU-bound process starts and imports, which then wait for a core."
        )
    )


def _median_phases(runs: dict[int, dict]) -> dict[str, float]:
    names = {p for run in runs.values() for p in run["phases_s"]}
    return {
        p: statistics.median(run["phases_s"].get(p, 0.0) for run in runs.values()) for p in names
    }


def _protocol(steps: int, reps: list[int], claims: list[harness.Claim]) -> harness.Protocol:
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
        # the cluster arm's head runs all along, as a cluster does; its first run is untimed
        departures={
            "monitor.enabled": "false (default true) in every arm: torchrun has no "
            "exporter to push to; the exporter's start is not measured here"
        },
        selection_split="none: nothing is selected",
        report_split="none: wall time, not quality",
        alternation="every arm in each repetition, the order rotating every repetition",
        claims=claims,
    )


if __name__ == "__main__":
    main()
