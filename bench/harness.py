"""Shared benchmark plumbing: the fair-benchmark protocol of bench/README.md, enforced.

Every ``bench/<name>.py`` runs its method and baselines in one run and hands ``write_result``
its raw figures and a ``Protocol``: each arm's ``StoppingRule`` and ``TimedRegion``, how each
arm was tuned (``tune_bracketed``) or why it was not, the tuning and evaluation seeds, the
problems, and its ``Claim``s with their per-seed data. The harness derives ``met`` from those
data (a script states no verdict): every claim met, no protocol violation, and the code
committed; a result from a tree with uncommitted measured code is a draft (``met`` null).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
# the code a result depends on (generated files excluded); git pathspecs relative to ROOT
PROVENANCE_PATHS = ("raytrain_eff", "bench", ":(exclude)bench/results", ":(exclude)bench/README.md")
MIN_EVAL_SEEDS = 5  # a claim rests on at least this many paired evaluations
BOOTSTRAP_DRAWS = 10_000


def parser(description: str) -> argparse.ArgumentParser:
    """The scripts' common flags; called first thing, so it marks the start of the run and
    starts sampling the run's processes (``OwnTree``)."""
    if not _START:
        _OWN.start()
    mark_start()
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes: checks the script end to end in seconds (run by a test)",
    )
    p.add_argument("--out", default=None, help="result JSON path (default bench/results/)")
    return p


def machine() -> dict:
    import torch

    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


OTHERS_LIMIT = 0.25  # others' share of the cores above which a run counts as loaded
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_START: dict[str, Any] = {}


def mark_start() -> None:
    """Take the readings ``load`` compares with the end: load averages, the machine's busy
    CPU time, this run's own CPU time and the clock."""
    _START.update(
        load=list(os.getloadavg()), busy=_machine_busy_s(), own=_OWN.cpu_s(), at=time.time()
    )


def load(start: Sequence[float] | None = None) -> dict:
    """Load averages (1 / 5 / 15 min) at the start and end of the run beside the core count,
    and the CPU time other processes took during it as a share of the cores: ``overloaded``
    when that share passed ``OTHERS_LIMIT`` (timings then include other work's). Judged on
    CPU time, not the averages, which carry minutes of what ran before and count this run's
    own processes too (a 4-rank arm on 2 cores is a load of 4)."""
    if not _START:
        mark_start()
    wall = max(time.time() - _START["at"], 1e-9)
    cores = os.cpu_count() or 1
    others = max(0.0, (_machine_busy_s() - _START["busy"]) - (_OWN.cpu_s() - _START["own"]))
    share = others / (wall * cores)
    return {
        "cores": cores,
        "start": list(start if start is not None else _START["load"]),
        "end": list(os.getloadavg()),
        "others_cpu_s": round(others, 2),
        "wall_s": round(wall, 2),
        "others_share": round(share, 4),
        "overloaded": share > OTHERS_LIMIT,
    }


def _machine_busy_s() -> float:
    """CPU seconds every core has spent busy since boot (/proc/stat: user, nice, system, irq,
    softirq; idle, I/O wait and steal are not work done here)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / _CLOCK_TICKS


class OwnTree:
    """The CPU time of this process and of everything it started, sampled from /proc as it runs.

    A process counts as the run's from the first sample that finds it below this one (or below
    a process already counted) and stays counted after it is re-parented. A running process's
    reading includes the children it reaped, so a process reaped inside the tree is counted by
    its reaper; one reaped elsewhere (Ray's workers, orphaned when their raylet is killed at a
    command's exit and reaped by init) would be lost. So each sample groups the processes that
    vanished by their nearest running ancestor at the last sample: a group under a counted
    ancestor banks what it held beyond what that ancestor reaped since (``max(0, vanished -
    reaped)``), a group under another one (init) banks all of it. Both are lower bounds, like
    the work after a process's last sample, never read: the judgement can only err loaded."""

    def __init__(self) -> None:
        self._me = os.getpid()
        # (pid, start time) -> (parent pid, ticks with reaped children, reaped children's)
        self._seen: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._banked = 0  # ticks of counted processes that ended, reaped outside the tree
        self._lock = threading.Lock()

    def start(self, period_s: float = 0.5) -> None:
        """Sample in a daemon thread (2-4 ms of one core a sample with 100-200 processes)."""

        def loop() -> None:
            while True:
                time.sleep(period_s)
                self.cpu_s()

        threading.Thread(target=loop, name="bench-own-tree", daemon=True).start()

    def cpu_s(self) -> float:
        """CPU seconds of the run so far: its running processes' readings and the bank."""
        with self._lock:
            procs = _processes()
            own = self._own_pids(procs)
            now = {(pid, p[1]): (p[0], *p[2:]) for pid, p in procs.items() if pid in own}
            self._banked += self._lost(now, own)
            self._seen = now
            return (self._banked + sum(t for _, t, _ in now.values())) / _CLOCK_TICKS

    def _lost(self, now: dict[tuple[int, int], tuple[int, int, int]], own: set[int]) -> int:
        """Ticks of the processes that vanished since the last sample and that no counted
        process's reading took over (see the class's docstring)."""
        gone = {key[0]: key for key in self._seen if key not in now}
        groups: dict[int, int] = {}  # nearest running ancestor -> vanished ticks below it
        for key in gone.values():
            ancestor, hops = self._seen[key][0], 0
            while ancestor in gone and hops < len(gone):  # a parent that vanished too
                ancestor, hops = self._seen[gone[ancestor]][0], hops + 1
            groups[ancestor] = groups.get(ancestor, 0) + self._seen[key][1]
        seen_by_pid = {k[0]: v for k, v in self._seen.items()}
        now_by_pid = {k[0]: v for k, v in now.items()}
        lost = 0
        for ancestor, ticks in groups.items():
            before, after = seen_by_pid.get(ancestor), now_by_pid.get(ancestor)
            if ancestor in own and before is not None and after is not None:
                lost += max(0, ticks - (after[2] - before[2]))
            else:
                lost += ticks
        return lost

    def _own_pids(self, procs: dict[int, tuple[int, int, int, int]]) -> set[int]:
        own = {self._me} | {pid for pid, p in procs.items() if (pid, p[1]) in self._seen}
        while new := {pid for pid, p in procs.items() if p[0] in own} - own:
            own |= new
        return own


def _processes() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (parent pid, start time, CPU ticks with the children it reaped, those children's)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        except OSError:
            continue  # ended while we looked
        # fields[1] ppid; [11:15] utime stime cutime cstime; [19] start time
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        found[int(entry)] = (int(fields[1]), int(fields[19]), own + reaped, reaped)
    return found


_OWN = OwnTree()


# -- provenance -----------------------------------------------------------------------------
def _git(*args: str, root: pathlib.Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=root
    ).stdout


def measured_paths(commands: Sequence[str] = ()) -> list[str]:
    """The code a result depends on, as git pathspecs: the package, every bench module this
    process loaded (the script, the harness, shared helpers) and the bench scripts it runs as
    commands. A change to another benchmark leaves this one's result at HEAD."""
    bench_dir = RESULTS.parent
    files = (getattr(m, "__file__", None) for m in list(sys.modules.values()))
    loaded = {pathlib.Path(f).resolve() for f in files if f}
    modules = {f"bench/{f.name}" for f in loaded if f.parent == bench_dir and f.suffix == ".py"}
    return ["raytrain_eff", *sorted(modules | {f"bench/{c}" for c in commands})]


def provenance(root: pathlib.Path = ROOT, paths: Sequence[str] = PROVENANCE_PATHS) -> dict:
    """HEAD, the measured ``paths``, and every file under them (tracked or not) that differs
    from HEAD, with its git blob hash: a dirty result names exactly the code it ran, so a later
    commit holding those blobs can be checked to be what was measured."""
    try:
        head = _git("rev-parse", "HEAD", root=root).strip()
        lines = _git(
            "status", "--porcelain", "--untracked-files=all", "--", *paths, root=root
        ).splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"commit": "unknown", "dirty": None, "dirty_files": {}, "paths": list(paths)}
    dirty = {}
    for line in lines:
        path = line[3:].split(" -> ")[-1]
        full = root / path
        dirty[path] = (
            _git("hash-object", str(full), root=root).strip() if full.is_file() else "deleted"
        )
    return {"commit": head, "dirty": bool(dirty), "dirty_files": dirty, "paths": list(paths)}


# -- earlier results ---------------------------------------------------------------------------
def previous_records(name: str) -> list[tuple[str, dict]]:
    """The result a run replaces (read before it is overwritten) and, when it differs, the
    committed one: what a record's notes compare against."""
    path = RESULTS / f"{name}.json"
    committed = f"HEAD:{path.relative_to(ROOT)}"
    found: list[tuple[str, dict]] = []
    for label, read in (
        ("Previous result", path.read_text),
        ("Committed result", lambda: _git("show", committed)),
    ):
        try:
            record = json.loads(read())
        except (OSError, ValueError, subprocess.CalledProcessError):
            continue
        if not any(r.get("date") == record.get("date") for _, r in found):
            found.append((label, record))
    return found


def verdict_change(held: bool, met: bool) -> str:
    """How this run's verdict reads against an earlier record's."""
    if held:
        return "still holds. " if met else "no longer holds (a finding). "
    return "now holds. " if met else "still does not hold. "


def loaded_machine_note(consequence: str) -> str:
    """A sentence for a result's notes when other processes took more than ``OTHERS_LIMIT``
    of the cores during the run, saying what that does to this benchmark's figures; empty on
    a quiet machine."""
    reading = load()
    if not reading["overloaded"]:
        return ""
    return (
        f"The machine was loaded (other processes used {reading['others_share']:.0%} of the "
        f"{reading['cores']} cores during the run): {consequence} "
    )


def near(value: float, target: float) -> str:
    """3 significant digits, saying so when rounding would hide which side of the target."""
    text = f"{value:.3g}"
    if text == f"{target:.3g}" and value != target:
        return ("just under " if value < target else "just over ") + text
    return text


# -- figures --------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict:
    """Median, mean, standard deviation and range of per-seed figures, raw values kept."""
    vals = [float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    return {
        "median": statistics.median(vals),
        "mean": statistics.fmean(vals) if finite == vals else math.inf,
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(vals),
        "max": max(vals),
        "spread": max(vals) - min(vals),
        "values": vals,
    }


def paired(
    baseline: dict,
    method: dict,
    *,
    kind: str = "ratio",
    lower_is_better: bool = True,
    seed: int = 0,
) -> dict:
    """Paired per-seed comparison of ``method`` against ``baseline`` (seed -> figure).

    kind="ratio": per seed baseline/method when lower is better (time, steps), method/baseline
    otherwise; > 1 means the method wins. kind="difference": baseline - method (lower better)
    or method - baseline; > 0 means the method wins. ``wins`` needs the worst seed to win, or a
    90% bootstrap lower bound on the mean (geometric mean for ratios) above the no-win line.
    A figure that never reached its target is ``inf`` and counts against its arm.
    """
    seeds = sorted(set(baseline) & set(method))
    if set(baseline) != set(method):
        raise ValueError(f"paired: seeds differ: {sorted(baseline)} vs {sorted(method)}")
    b, m = ([float(d[s]) for s in seeds] for d in (baseline, method))
    if not lower_is_better:
        b, m = m, b
    if kind == "ratio":
        per_seed = [_ratio(x, y) for x, y in zip(b, m, strict=True)]
        logs = [
            math.log(r) if 0 < r < math.inf else (math.inf if r > 0 else -math.inf)
            for r in per_seed
        ]
        bound = math.exp(_bootstrap_lower(logs, seed))
        line = 1.0
    elif kind == "difference":
        per_seed = [x - y for x, y in zip(b, m, strict=True)]
        bound, line = _bootstrap_lower(per_seed, seed), 0.0
    else:
        raise ValueError(f"paired: kind must be 'ratio' or 'difference', got {kind!r}")
    worst = min(per_seed)
    return {
        "kind": kind,
        "seeds": seeds,
        "per_seed": per_seed,
        **_centre(per_seed, kind),
        "worst": worst,
        "bootstrap_lower_90": bound,
        "wins": bool(worst > line or bound > line),
        "n": len(seeds),
    }


def _ratio(base: float, method: float) -> float:
    if math.isinf(base) and math.isinf(method):
        return 1.0  # neither reached: no evidence either way
    return math.inf if method == 0 or math.isinf(base) else base / method


def _centre(values: list[float], kind: str) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if kind == "ratio" and all(v > 0 for v in values) and finite == values:
        geo = math.exp(statistics.fmean(math.log(v) for v in values))
    else:
        geo = None
    return {
        "median": statistics.median(values),
        "geometric_mean": geo,
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
    }


def _bootstrap_lower(values: list[float], seed: int) -> float:
    """10th percentile of the resampled mean (a one-sided 90% lower bound)."""
    if not values:
        return -math.inf
    rng = random.Random(seed)
    n = len(values)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(BOOTSTRAP_DRAWS))
    return means[int(0.1 * BOOTSTRAP_DRAWS)]


# -- tuning ---------------------------------------------------------------------------------
def tune_bracketed(
    arm: str,
    score: Callable[[float], Any],
    grid: Sequence[float],
    *,
    max_widenings: int = 4,
    log: bool = True,
) -> dict:
    """Grid search over one hyper-parameter whose winner must lie strictly inside the grid.

    ``score(value)`` is evaluated on tuning seeds and validation data only; lower is better (a
    tuple compares lexicographically, e.g. (steps to target, final val loss); non-finite means
    diverged). If the winner sits on an edge, the grid is extended past that edge by its own
    spacing (geometric when ``log``) and searched again, up to ``max_widenings`` times. The
    record keeps every value tried, its score, the winner and its position.
    """
    values = sorted(float(v) for v in grid)
    if len(values) < 3:
        raise ValueError(
            f"tune_bracketed({arm}): a grid needs >= 3 values to bracket, got {values}"
        )
    scores: dict[float, Any] = {}
    widenings = 0
    while True:
        for v in values:
            if v not in scores:
                scores[v] = score(v)
        winner = min(values, key=lambda v: _sortable(scores[v]))
        at = values.index(winner)
        if 0 < at < len(values) - 1 or widenings == max_widenings:
            break
        widenings += 1
        values.insert(0, _step(values[0], values[1], log)) if at == 0 else values.append(
            _step(values[-1], values[-2], log)
        )
    return {
        "arm": arm,
        "initial_grid": sorted(float(v) for v in grid),
        "grid": values,
        "scores": [_jsonable(scores[v]) for v in values],
        "winner": winner,
        "winner_index": at,
        "inside": 0 < at < len(values) - 1,
        "widenings": widenings,
        "budget": len(grid),
        "evaluations": len(scores),
    }


def _step(edge: float, neighbour: float, log: bool) -> float:
    return edge * (edge / neighbour) if log else edge + (edge - neighbour)


def _sortable(score: Any) -> tuple:
    parts = score if isinstance(score, tuple) else (score,)
    return tuple(p if isinstance(p, float | int) and math.isfinite(p) else math.inf for p in parts)


def _jsonable(score: Any) -> Any:
    return list(score) if isinstance(score, tuple) else score


# -- the protocol -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class StoppingRule:
    """When an arm stops. ``kind="target"``: at the first check of ``metric`` at or past
    ``target``; ``kind="budget"``: after ``target`` units of ``metric`` (steps, passes, ...).
    ``cadence`` says how often the rule is checked; ``note`` any detail a re-run needs."""

    kind: str
    metric: str
    target: float | str
    cadence: str
    note: str = ""

    def problems(self) -> list[str]:
        found = (
            []
            if self.kind in ("target", "budget")
            else [f"stopping rule kind must be 'target' or 'budget', got {self.kind!r}"]
        )
        if not self.metric.strip() or not self.cadence.strip() or self.target in ("", None):
            found.append("stopping rule needs its metric, target and cadence")
        return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class TimedRegion:
    """What the clock covers (``includes``) and what it leaves out (``excludes``)."""

    includes: tuple[str, ...]
    excludes: tuple[str, ...] = ()
    note: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Arm:
    """One arm's rules; every arm of a claim must share them."""

    stopping: StoppingRule
    timed: TimedRegion


def same_rules(names: Sequence[str], stopping: StoppingRule, timed: TimedRegion) -> dict[str, Arm]:
    """Arms that share one stopping rule and one timed region (the usual case)."""
    return {name: Arm(stopping=stopping, timed=timed) for name in names}


KINDS = ("ratio", "difference", "bound")
STATISTICS = ("worst", "bootstrap_lower_90")


@dataclasses.dataclass(kw_only=True)
class Claim:
    """One claim and the per-seed data it rests on; the harness judges it (``judged``).

    ``kind="ratio"`` / ``"difference"``: ``arm`` against ``baseline`` seed by seed
    (``paired``: > 1 / > 0 means the arm wins); ``kind="bound"``: ``arm``'s own figures against
    ``threshold`` (no baseline; each figure, e.g. a latency per node, must be inside).
    ``statistic``: the worst seed, or the bootstrap 90% lower bound of the mean (the worst
    seed's win implies the bound's), must be strictly past ``threshold``. A claim with
    ``required=False`` is reported, not a condition of ``met``; one in a ``group`` counts
    towards that group's quorum (``Protocol.quorum``) instead of on its own. A group
    ``"family/member"`` makes its claims one member of the family: the member is met when all
    its claims are, and the quorum counts members (e.g. settings that win at both gaps).
    """

    name: str
    arm: str
    baseline: str | None
    metric: str
    arm_values: dict
    baseline_values: dict | None = None
    kind: str = "ratio"
    lower_is_better: bool = True
    threshold: float | None = None  # default: 1 for a ratio, 0 for a difference
    statistic: str = "worst"
    required: bool = True
    group: str = ""

    @classmethod
    def bound(
        cls, name: str, arm: str, metric: str, value: float | dict, threshold: float, **more
    ) -> Claim:
        """``arm``'s own figure (one value, or one per seed/problem) against ``threshold``."""
        values = value if isinstance(value, dict) else {"0": value}
        return cls(
            name=name,
            arm=arm,
            baseline=None,
            metric=metric,
            arm_values=values,
            kind="bound",
            threshold=threshold,
            **more,
        )

    def problems(self) -> list[str]:
        found = []
        if self.kind not in KINDS:
            found.append(f"claim {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.statistic not in STATISTICS:
            found.append(
                f"claim {self.name!r}: statistic must be one of {STATISTICS}, "
                f"got {self.statistic!r}"
            )
        if (self.kind == "bound") != (self.baseline is None):
            found.append(
                f"claim {self.name!r}: a bound has no baseline arm; a ratio or difference needs one"
            )
        if self.kind == "bound" and self.threshold is None:
            found.append(f"claim {self.name!r}: a bound needs its threshold")
        return found

    def judged(self, seed: int = 0) -> dict:
        """The claim as stated with its data, the per-seed comparison, and ``met`` (strictly
        past the threshold on the stated statistic)."""
        spec = dataclasses.asdict(self)
        if self.problems():
            return {**spec, "met": False}
        if self.kind == "bound":
            result = _bound(self.arm_values, self.lower_is_better, seed)
            threshold = float(self.threshold)  # type: ignore[arg-type]
            value = result[self.statistic]
            met = value < threshold if self.lower_is_better else value > threshold
        else:
            result = paired(
                self.baseline_values or {},
                self.arm_values,
                kind=self.kind,
                lower_is_better=self.lower_is_better,
                seed=seed,
            )
            threshold = (
                self.threshold
                if self.threshold is not None
                else (1.0 if self.kind == "ratio" else 0.0)
            )
            value = result[self.statistic]
            met = value > threshold
        return {**spec, **result, "threshold": threshold, "value": value, "met": bool(met)}


def _bound(values: dict, lower_is_better: bool, seed: int) -> dict:
    """Per-seed figures of one arm; ``worst`` and the bootstrap bound on the bad side."""
    seeds = sorted(values)
    per_seed = [float(values[s]) for s in seeds]
    sign = -1.0 if lower_is_better else 1.0
    oriented = [sign * v for v in per_seed]
    return {
        "kind": "bound",
        "seeds": seeds,
        "per_seed": per_seed,
        "median": statistics.median(per_seed) if per_seed else math.nan,
        "worst": sign * min(oriented) if oriented else math.nan,
        "bootstrap_lower_90": sign * _bootstrap_lower(oriented, seed),
        "n": len(seeds),
    }


@dataclasses.dataclass(kw_only=True)
class Protocol:
    """What a skeptic needs to re-run the comparison, and what ``violations`` checks.

    ``kind="comparison"``: a method against tuned baselines (all rules apply).
    ``kind="overhead"``: the same workload with one component on and off (the seeds are
    repetitions; one problem may do). Either way every arm is tuned or says why not.
    """

    kind: str = "comparison"
    arms: dict[str, Arm]
    claims: list[Claim]
    tuning: dict[str, dict] = dataclasses.field(default_factory=dict)  # arm -> tune_bracketed
    untuned: dict[str, str] = dataclasses.field(default_factory=dict)  # arm -> why no tuning
    tuning_seeds: list[int] = dataclasses.field(default_factory=list)
    eval_seeds: list[int] = dataclasses.field(default_factory=list)
    problems: list[dict] = dataclasses.field(default_factory=list)  # {name, standard, why}
    baselines: dict[str, str] = dataclasses.field(default_factory=dict)  # arm -> why it's fair
    departures: dict[str, str] = dataclasses.field(default_factory=dict)  # option -> reference
    selection_split: str = "validation"
    report_split: str = "test"
    alternation: str = "arms alternate within each seed"
    quorum: dict[str, float] = dataclasses.field(default_factory=dict)  # group -> share met

    def violations(self) -> list[str]:
        found = []
        if self.kind not in ("comparison", "overhead"):
            found.append(f"kind must be 'comparison' or 'overhead', got {self.kind!r}")
        if len(self.eval_seeds) < MIN_EVAL_SEEDS:
            found.append(
                f"{len(self.eval_seeds)} evaluation seeds; claims need >= {MIN_EVAL_SEEDS}"
            )
        if set(self.eval_seeds) & set(self.tuning_seeds):
            found.append(
                f"evaluation seeds {sorted(set(self.eval_seeds) & set(self.tuning_seeds))}"
                " were also used for tuning"
            )
        found += self._arm_violations() + self._claim_violations() + self._tuning_violations()
        if self.kind == "comparison" and (
            len(self.problems) < 2 or not any(p.get("standard") for p in self.problems)
        ):
            found.append("needs >= 2 problems, one a standard problem the authors did not choose")
        return found

    def _arm_violations(self) -> list[str]:
        found = []
        if not self.arms:
            found.append("no arm states its stopping rule and timed region")
        for name, arm in self.arms.items():
            found += [f"{name}: {p}" for p in arm.stopping.problems()]
            if not arm.timed.includes:
                found.append(f"{name}: timed region includes nothing")
        return found

    def _claim_violations(self) -> list[str]:
        found = []
        if not self.claims:
            found.append("no claim backs the result")
        names = [c.name for c in self.claims]
        found += [f"claim {n!r} is stated twice" for n in sorted(set(names)) if names.count(n) > 1]
        for claim in self.claims:
            found += claim.problems()
            sides = [a for a in (claim.arm, claim.baseline) if a is not None]
            missing = [a for a in sides if a not in self.arms]
            if missing:
                found.append(f"claim {claim.name!r}: arm {missing[0]!r} is not in arms")
                continue
            if claim.baseline is not None:
                a, b = self.arms[claim.arm], self.arms[claim.baseline]
                for what, x, y in (
                    ("stopping rules", a.stopping, b.stopping),
                    ("timed regions", a.timed, b.timed),
                ):
                    if x != y:
                        found.append(
                            f"claim {claim.name!r}: arms {claim.arm!r} and "
                            f"{claim.baseline!r} use different {what}"
                        )
            n = len(claim.arm_values)
            if claim.kind != "bound" and n < MIN_EVAL_SEEDS:
                found.append(f"claim {claim.name!r} rests on {n} paired seeds")
        families = {c.group.partition("/")[0] for c in self.claims if c.group}
        found += [f"group {g!r} has no quorum" for g in sorted(families - set(self.quorum))]
        return found

    def _tuning_violations(self) -> list[str]:
        found = [
            f"{arm}: tuned winner {rec['winner']} on the edge of {rec['grid']} after "
            f"{rec['widenings']} widenings"
            for arm, rec in self.tuning.items()
            if not rec["inside"]
        ]
        budgets = {rec["budget"] for rec in self.tuning.values()}
        if len(budgets) > 1:
            found.append(
                f"tuning budgets differ between arms: "
                f"{ {a: r['budget'] for a, r in self.tuning.items()} }"
            )
        for arm in self.arms:
            if arm not in self.tuning and not self.untuned.get(arm, "").strip():
                found.append(f"{arm}: neither tuned nor a recorded reason why not")
        return found

    def judged(self) -> dict[str, dict]:
        return {c.name: c.judged() for c in self.claims}

    def claims_met(self, judged: dict[str, dict]) -> bool:
        """Every required claim met; a group's by its quorum (the share of members met)."""
        alone = [j["met"] for j in judged.values() if j["required"] and not j["group"]]
        families: dict[str, dict[str, list[bool]]] = {}
        for name, j in judged.items():
            if j["required"] and j["group"]:
                family, _, member = j["group"].partition("/")
                families.setdefault(family, {}).setdefault(member or name, []).append(j["met"])
        quorate = [
            sum(all(m) for m in members.values()) >= self.quorum.get(family, 1.0) * len(members)
            for family, members in families.items()
        ]
        return all(alone) and all(quorate)


def write_result(
    name: str,
    *,
    headline: str,
    config: dict,
    baseline: dict,
    method: dict,
    ratios: dict,
    target: dict,
    notes: str,
    smoke: bool,
    protocol: Protocol,
    out: str | None = None,
    extra: dict | None = None,
    commands: Sequence[str] = (),
    root: pathlib.Path = ROOT,
) -> pathlib.Path:
    """Write the JSON record with ``met`` derived here: every claim met by its own data and no
    protocol violation. Code under raytrain_eff/ or bench/ that differs from HEAD makes the
    result a draft (``status: "draft"``, ``met`` null, the files listed): a verdict belongs to
    committed code. ``headline`` is one plain sentence with the figures (2-3 significant
    digits); ``target`` describes the targets in words (the claims carry the thresholds).
    ``commands``: bench scripts the run starts as commands (file names), measured code too."""
    violations = protocol.violations()
    judged = protocol.judged()
    source = provenance(root, measured_paths(commands))
    verdict = protocol.claims_met(judged) and not violations
    draft = source["dirty"] is not False
    record = {
        "bench": name,
        "harness": HARNESS_VERSION,
        "status": "draft" if draft else "result",
        "machine": machine(),
        "load": load(),
        "commit": commit_string(source),
        "provenance": source,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "smoke": smoke,
        "headline": headline,
        "config": config,
        "protocol": dataclasses.asdict(protocol) | {"claims": judged},
        "protocol_violations": violations,
        "met": None if draft else verdict,
        "met_if_committed": verdict,
        "draft_files": sorted(source["dirty_files"]) if draft else [],
        "baseline": baseline,
        "method": method,
        "ratios": ratios,
        "target": target,
        "notes": notes,
        **(extra or {}),
    }
    default = RESULTS / (f"{name}.smoke.json" if smoke else f"{name}.json")
    path = pathlib.Path(out) if out else default
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_finite(record), indent=2, default=_json_default, allow_nan=False))
    tmp.replace(path)
    return path


HARNESS_VERSION = 2  # records without it were written by the first harness (legacy)


def commit_string(source: dict) -> str:
    return source["commit"] + ("+dirty" if source["dirty"] else "")


def _finite(value: Any) -> Any:
    """Standard JSON: a non-finite figure (a target never reached, a diverged run) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, float | int):
        return float(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
